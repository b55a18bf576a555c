"""`make reproduce-*`: the grids' command lines, restartability, the old experiment form, and one SMOKE cell
end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorma_exp.paper import GLUE_TASKS, REPRODUCTIONS, Cell, Reproduction
from lorma_exp.reproduce import (
    Selection,
    already_evaluated,
    evaluation_commands,
    report_command,
    sweep_commands,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _override(command: list[str], key: str) -> str:
    return next(arg.split("=", 1)[1] for arg in command if arg.startswith(f"{key}="))


def test_table2_runs_every_cell_of_the_paper_with_three_seeds() -> None:
    (command,) = sweep_commands(REPRODUCTIONS["table2"].grid, Selection())
    assert _override(command, "experiment") == "table2"
    assert _override(command, "model").split(",") == ["roberta_base", "roberta_large"]
    assert _override(command, "task").split(",") == list(GLUE_TASKS)
    assert _override(command, "method").split(",") == ["lora", "lorma_pi", "lorma_plus"]
    assert _override(command, "seed") == "1,2,3"
    assert "skip_finished=true" in command and "resume=true" in command
    assert _override(command, "hydra.sweep.subdir") == "${run_name}"


def test_a_selection_narrows_the_grid_and_rejects_what_the_table_lacks() -> None:
    selection = Selection(
        models=("roberta_base",), tasks=("cola", "rte"), methods=("lorma_plus",), seeds="1,2"
    )
    (command,) = sweep_commands(REPRODUCTIONS["table2"].grid, selection)
    assert (_override(command, "model"), _override(command, "task")) == ("roberta_base", "cola,rte")
    assert (_override(command, "method"), _override(command, "seed")) == ("lorma_plus", "1,2")
    with pytest.raises(SystemExit, match="TASKS"):
        sweep_commands(REPRODUCTIONS["table7"].grid, Selection(tasks=("qqp",)))


def test_smoke_keeps_every_cell_and_its_settings_and_swaps_in_the_grids_stand_in() -> None:
    (full,) = sweep_commands(REPRODUCTIONS["table8"].grid, Selection())
    (smoke,) = sweep_commands(REPRODUCTIONS["table8"].grid, Selection(smoke=True))
    assert _override(smoke, "settings") == "roberta_base_mrpc,roberta_base_stsb"
    assert _override(smoke, "debug") == "smoke" and "debug" not in " ".join(full)
    assert "model=" not in " ".join(smoke) and "task=" not in " ".join(smoke)
    assert _override(smoke, "r") == _override(full, "r") == "1,2,4,8,64"
    assert _override(smoke, "seed") == "1"
    assert "outputs/reproduce-smoke/table8" in _override(smoke, "hydra.sweep.dir")
    (nlg,) = sweep_commands(REPRODUCTIONS["table3"].grid, Selection(smoke=True))
    assert _override(nlg, "debug") == "smoke_nlg"


def test_table10_pairs_targets_with_ranks_rather_than_crossing_them() -> None:
    commands = sweep_commands(REPRODUCTIONS["table10"].grid, Selection())
    pairs = [(_override(c, "method.targets"), _override(c, "r")) for c in commands]
    assert pairs == [
        ("[q]", "8"),
        ("[k]", "8"),
        ("[v]", "8"),
        ("[q,v]", "4"),
        ("[q,k]", "4"),
        ("[q,k,v,o]", "2"),
    ]


def test_an_analysis_trains_the_part_of_a_grid_it_reads_and_reports_on_those_runs_only() -> None:
    table5 = REPRODUCTIONS["table5"]
    (command,) = sweep_commands(table5.grid, Selection())
    assert _override(command, "experiment") == "table2"  # Table 2's runs, shared with make reproduce-table2
    assert (_override(command, "model"), _override(command, "task")) == ("roberta_base", "sst2,cola")
    report = report_command(table5, Selection())
    assert report[3:5] == ["convergence", "--table"]
    assert report[report.index("--task") + 1 : report.index("--runs")] == ["sst2", "cola"]
    assert report[-1] == str(Path("outputs/reproduce/table2/report/table5"))
    assert report_command(REPRODUCTIONS["table2"], Selection())[3:5] == ["table", "table2"]


def test_table4_scores_each_finished_run_once_per_benchmark(tmp_path) -> None:
    run = tmp_path / "table4" / "gemma_2b" / "metamathqa" / "lora_r4" / "seed1"
    run.mkdir(parents=True)
    (run / "results.json").write_text("{}")
    grid = REPRODUCTIONS["table4"].grid
    commands = evaluation_commands(grid, Selection(root=tmp_path))
    assert [(_override(c, "task"), _override(c, "paper_task")) for c in commands] == [
        ("gsm8k", "gsm8k"),
        ("math", "math"),
    ]
    done = run / "evals" / "stamp"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text(
        json.dumps({"weights": "adapter", "task": "gsm8k", "paper_task": "gsm8k"})
    )
    assert already_evaluated(run, "gsm8k", "gsm8k")
    assert [_override(c, "task") for c in evaluation_commands(grid, Selection(root=tmp_path))] == ["math"]
    smoke = evaluation_commands(grid, Selection(root=tmp_path, smoke=True))
    assert [(_override(c, "task"), _override(c, "debug")) for c in smoke] == [
        ("gsm_symbolic", "smoke"),
        ("gsm_symbolic", "smoke"),
    ]


def test_make_help_lists_every_reproduction_from_the_declarations() -> None:
    listed = subprocess.run(["make", "help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    for name, reproduction in REPRODUCTIONS.items():
        assert f"reproduce-{name}" in listed.stdout
        assert reproduction.title in listed.stdout


def _train_cfg_job(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "train.py", *overrides, "--cfg", "job", "--resolve"]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_the_old_one_file_per_cell_experiment_form_runs_as_the_new_one() -> None:
    old = _train_cfg_job("experiment=table2/roberta_large_mrpc_lorma_plus", "seed=2")
    new = _train_cfg_job(
        "experiment=table2", "model=roberta_large", "task=mrpc", "method=lorma_plus", "seed=2"
    )
    assert old.returncode == 0, old.stderr[-2000:]
    assert old.stdout == new.stdout
    assert "now written experiment=table2 model=roberta_large task=mrpc method=lorma_plus" in old.stderr
    swept = _train_cfg_job("experiment=table2/roberta_base_cola_lora,table2/roberta_base_rte_lora")
    assert swept.returncode == 2
    assert "experiment=table2 model=" in swept.stderr


def _reproduce(*args: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lorma_exp.reproduce", *args, "--smoke", "--root", str(root)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow  # ~40 s; every grid runs end to end in the slow smoke-grid tests
def test_one_smoke_cell_runs_end_to_end_to_the_table_and_is_skipped_when_rerun(tmp_path) -> None:
    cell = ("table2", "--models", "roberta_base", "--tasks", "rte", "--methods", "lorma_plus")
    first = _reproduce(*cell, root=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "SMOKE" in first.stdout and "| base LoRMA₊ |" in first.stdout
    # One line for the run (cell, status, main metric, time); what the training process printed (the
    # transformers load report among it) is in the grid's reproduce.log, the run's own log in train.log.
    (line,) = [text for text in first.stdout.splitlines() if "roberta_base/rte/lorma_plus" in text]
    assert line.split()[:3] == ["roberta_base/rte/lorma_plus_r8_a8_pre_q-v/seed1", "finished", "accuracy"]
    assert line.endswith(" s")
    console = (tmp_path / "table2" / "reproduce.log").read_text()
    assert "LOAD REPORT" not in first.stdout + first.stderr and "LOAD REPORT" in console
    (results,) = tmp_path.glob("table2/**/results.json")
    record = json.loads(results.read_text())
    assert record["paper_cell"] == {
        "table": "table2",
        "model": "roberta_base",
        "task": "rte",
        "method": "lorma_plus",
    }
    assert record["smoke"] is True
    # r and α are the protocol's (Table 14, RoBERTa-base on RTE), whatever the stand-in model
    assert (record["r"], record["alpha"]) == (8, 8.0)
    for name in ("table2.md", "table2.csv", "table2.tex"):
        assert (tmp_path / "table2" / "report" / name).exists()
    before = results.stat().st_mtime_ns
    again = _reproduce(*cell, root=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert results.stat().st_mtime_ns == before  # the finished run was skipped, not redone
    (line,) = [text for text in again.stdout.splitlines() if "roberta_base/rte/lorma_plus" in text]
    assert line.split()[1] == "skipped"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_the_whole_smoke_grid_of_each_reproduction_runs_offline(tmp_path, name) -> None:
    result = _reproduce(name, root=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_reproduction_of_cells_trains_nothing_and_composes_each_cell_in_its_report() -> None:
    table12 = REPRODUCTIONS["table12"]
    assert table12.grid is None
    report = report_command(table12, Selection())
    assert report[3] == "datasets"
    cells = [report[i + 1] for i, arg in enumerate(report) if arg == "--cell"]
    assert cells == [f"experiment=table2 model=roberta_base task={task}" for task in GLUE_TASKS]
    assert report[-2:] == ["--out", str(Path("outputs/reproduce/table12/report"))]
    smoke = report_command(
        REPRODUCTIONS["fullrank"], Selection(smoke=True, models=("gpt2_medium", "llama3_8b"))
    )
    assert [smoke[i + 1] for i, arg in enumerate(smoke) if arg == "--cell"] == [
        "experiment=table3 settings=gpt2_medium_e2e debug=smoke_nlg",
        "experiment=table4 settings=llama3_8b_metamathqa debug=smoke_maths",
    ]
    with pytest.raises(SystemExit, match="MODELS"):
        report_command(table12, Selection(models=("gpt2_medium",)))


def test_a_reproduction_has_either_a_grid_or_cells() -> None:
    grid = REPRODUCTIONS["table2"].grid
    with pytest.raises(ValueError, match="either a grid of runs or cells"):
        Reproduction("both", "title", grid, ("table",), cells=(Cell("table2", "roberta_base", "cola"),))
    with pytest.raises(ValueError, match="either a grid of runs or cells"):
        Reproduction("neither", "title", None, ("datasets",))
