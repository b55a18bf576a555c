"""`make reproduce-*`: the grids' command lines, restartability, and one SMOKE cell end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorma_exp.reproduce import GRIDS, Selection, already_evaluated, evaluation_commands, sweep_commands

REPO_ROOT = Path(__file__).resolve().parents[2]


def _override(command: list[str], key: str) -> str:
    return next(arg.split("=", 1)[1] for arg in command if arg.startswith(f"{key}="))


def test_table2_runs_every_cell_of_the_paper_with_three_seeds() -> None:
    (command,) = sweep_commands(GRIDS["table2"], Selection())
    experiments = _override(command, "experiment").split(",")
    assert len(experiments) == 2 * 8 * 3
    assert "table2/roberta_large_rte_lorma_pi" in experiments
    assert _override(command, "seed") == "1,2,3"
    assert "skip_finished=true" in command and "resume=true" in command
    assert _override(command, "hydra.sweep.subdir") == "${run_name}"


def test_a_selection_narrows_the_grid_and_rejects_what_the_table_lacks() -> None:
    selection = Selection(
        models=("roberta_base",), tasks=("cola", "rte"), methods=("lorma_plus",), seeds="1,2"
    )
    (command,) = sweep_commands(GRIDS["table2"], selection)
    assert _override(command, "experiment").split(",") == [
        "table2/roberta_base_cola_lorma_plus",
        "table2/roberta_base_rte_lorma_plus",
    ]
    assert _override(command, "seed") == "1,2"
    with pytest.raises(SystemExit, match="TASKS"):
        sweep_commands(GRIDS["table7"], Selection(tasks=("qqp",)))


def test_smoke_keeps_the_grid_and_swaps_in_the_embedded_model_with_one_seed() -> None:
    (full,) = sweep_commands(GRIDS["table8"], Selection())
    (smoke,) = sweep_commands(GRIDS["table8"], Selection(smoke=True))
    assert _override(smoke, "experiment") == _override(full, "experiment")
    assert _override(smoke, "r") == _override(full, "r") == "1,2,4,8,64"
    assert _override(smoke, "model") == "minilm" and _override(smoke, "seed") == "1"
    assert "outputs/reproduce-smoke/table8" in _override(smoke, "hydra.sweep.dir")


def test_table10_pairs_targets_with_ranks_rather_than_crossing_them() -> None:
    commands = sweep_commands(GRIDS["table10"], Selection())
    pairs = [(_override(c, "method.targets"), _override(c, "r")) for c in commands]
    assert pairs == [
        ("[q]", "8"),
        ("[k]", "8"),
        ("[v]", "8"),
        ("[q,v]", "4"),
        ("[q,k]", "4"),
        ("[q,k,v,o]", "2"),
    ]


def test_table4_scores_each_finished_run_once_per_benchmark(tmp_path) -> None:
    run = tmp_path / "table4" / "gemma_2b" / "metamathqa" / "lora_r4" / "seed1"
    run.mkdir(parents=True)
    (run / "results.json").write_text("{}")
    selection = Selection(root=tmp_path)
    commands = evaluation_commands(GRIDS["table4"], selection)
    assert [_override(c, "task") for c in commands] == ["gsm8k", "math"]
    done = run / "evals" / "stamp"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text(
        json.dumps({"weights": "adapter", "task": "gsm8k", "paper_task": "gsm8k"})
    )
    assert already_evaluated(run, "gsm8k", "gsm8k")
    assert [_override(c, "task") for c in evaluation_commands(GRIDS["table4"], selection)] == ["math"]


def _reproduce(*args: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lorma_exp.reproduce", *args, "--smoke", "--root", str(root)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=env)


def test_one_smoke_cell_runs_end_to_end_to_the_table_and_is_skipped_when_rerun(tmp_path) -> None:
    cell = ("table2", "--models", "roberta_base", "--tasks", "rte", "--methods", "lorma_plus")
    first = _reproduce(*cell, root=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "SMOKE" in first.stdout and "| base LoRMA₊ |" in first.stdout
    (results,) = tmp_path.glob("table2/**/results.json")
    record = json.loads(results.read_text())
    assert record["paper_cell"] == {
        "table": "table2",
        "model": "roberta_base",
        "task": "rte",
        "method": "lorma_plus",
    }
    assert record["smoke"] is True
    for name in ("table2.md", "table2.csv", "table2.tex"):
        assert (tmp_path / "table2" / "report" / name).exists()
    before = results.stat().st_mtime_ns
    again = _reproduce(*cell, root=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert results.stat().st_mtime_ns == before  # the finished run was skipped, not redone


@pytest.mark.slow
@pytest.mark.parametrize("table", sorted(GRIDS))
def test_the_whole_smoke_grid_of_each_table_runs_offline(tmp_path, table) -> None:
    result = _reproduce(table, root=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SMOKE" in result.stdout
