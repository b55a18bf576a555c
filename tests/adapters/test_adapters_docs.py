"""The example in docs/adapters.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    example = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(DOC), "exec"), {})
    printed = capsys.readouterr().out
    documented = re.search(r"print\(count_trainable\(model\)\)\s+# (\{.*\})", example).group(1)
    assert printed.strip() == documented
    assert (tmp_path / "out" / "peft" / "adapter_config.json").is_file()
