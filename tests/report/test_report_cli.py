"""``python -m lorma_exp.report``: table and figure5 commands end to end on synthetic run folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lorma_exp.report import build_parser, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SOURCE = Path(__file__).resolve().parents[2] / "src"


def test_table_command_prints_markdown_and_writes_every_format(make_run, tmp_path, capsys):
    make_run("t6", table="table6", task="rte", model="roberta_large", method="lorma_plus", seed=1,
             metrics={"accuracy": 0.5}, inflation="none")  # fmt: skip
    out = tmp_path / "out"
    assert main(["table", "table2", "table6", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## Table 2" in printed and "## Table 6" in printed
    assert "50.0 (n=1) vs 52.7 [-2.7]" in printed
    assert sorted(path.name for path in out.iterdir()) == [
        "table2.csv", "table2.md", "table2.tex", "table6.csv", "table6.md", "table6.tex",
    ]  # fmt: skip


def test_bad_run_data_is_a_clear_error_not_a_traceback(make_run, tmp_path, capsys):
    make_run("cola", table="table2", task="cola", model="roberta_base", method="lora", seed=1,
             metrics={"matthews": 60.0})  # fmt: skip
    assert main(["table", "table2", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    assert "not a fraction" in capsys.readouterr().err


def test_no_source_of_runs_is_a_usage_error(tmp_path, capsys):
    assert main(["table", "table2", "--out", str(tmp_path)]) == 2
    assert "give --runs DIR" in capsys.readouterr().err


def test_a_missing_runs_root_is_reported(tmp_path, capsys):
    assert main(["table", "table2", "--runs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_figure5_writes_the_sweep_table_and_plot(make_run, tmp_path):
    # RTE LoRA at r=1 (seeds 0.70, 0.72 -> 71.0) and r=8 (0.75 -> 75.0); LoRMA₊ at r=8 (0.78 -> 78.0).
    for name, method, r, seed, value in (
        ("a", "lora", 1, 1, 0.70),
        ("b", "lora", 1, 2, 0.72),
        ("c", "lora", 8, 1, 0.75),
        ("d", "lorma_plus", 8, 1, 0.78),
    ):
        make_run(name, table="figure5", task="rte", model="roberta_base", method=method, seed=seed, r=r,
                 metrics={"accuracy": value})  # fmt: skip
    out = tmp_path / "out"
    assert main(["figure5", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    markdown = (out / "figure5.md").read_text()
    assert "| RTE LoRA | 71.0 ± 1.4 (n=2) | — (n=0) | — (n=0) | 75.0 (n=1) |" in markdown
    assert (out / "figure5.png").read_bytes().startswith(PNG_MAGIC)


def test_module_entry_point_prints_its_synopsis():
    completed = subprocess.run(
        [sys.executable, "-m", "lorma_exp.report", "--help"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SOURCE)},
        timeout=120,
        check=True,
    )
    for command in (
        "table",
        "figure5",
        "convergence",
        "rank",
        "similarity",
        "accuracy-curves",
        "datasets",
        "pretrained-rank",
    ):
        assert command in completed.stdout


@pytest.mark.parametrize("command", ["convergence", "rank", "similarity"])
def test_analyses_accept_the_filters(command, tmp_path):
    arguments = build_parser().parse_args(
        [
            command,
            "--runs",
            str(tmp_path),
            "--out",
            str(tmp_path),
            "--table",
            "table2",
            "--task",
            "cola",
            "rte",
        ]
    )
    assert (arguments.table, arguments.task) == ("table2", ["cola", "rte"])
