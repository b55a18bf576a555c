"""Every cell of every reproduction grid composes exactly as the golden file records it.

The golden file was made by the configs as they were before the experiment configs were restructured;
a deliberate change of a cell's settings updates it in the same commit (``python -m tests.golden.cells``),
so that its diff shows which cells changed. ``run_name`` is left out: it names a folder, not a setting.
"""

from __future__ import annotations

from typing import Any

from tests.golden.cells import read_golden


def _differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        keys = sorted(set(expected) | set(actual))
        return [
            line for key in keys for line in _differences(expected.get(key), actual.get(key), f"{path}{key}.")
        ]
    return [] if expected == actual else [f"{path.rstrip('.')}: {expected!r} -> {actual!r}"]


def test_every_cell_of_every_grid_composes_as_the_golden_file_records(composed_cells) -> None:
    golden = read_golden()
    assert sorted(composed_cells) == sorted(golden)
    differences = {
        name: _differences(
            {key: value for key, value in golden[name].items() if key != "run_name"},
            {key: value for key, value in config.items() if key != "run_name"},
        )
        for name, config in composed_cells.items()
    }
    changed = {name: lines for name, lines in differences.items() if lines}
    assert not changed, f"{len(changed)} cells differ, e.g. " + repr(dict(list(changed.items())[:3]))
