"""Figure 8: training against evaluation accuracy read from runs' eval events, on curves with known values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorma_exp.analysis import accuracy_curves
from lorma_exp.analysis.runs import collect_runs
from lorma_exp.report import main

from .run_folders import results_json, write_run_folder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_evaluations(folder: Path, rows: list[tuple[int, str, dict[str, float]]]) -> None:
    """Replace the run's metrics.jsonl by these (step, split, scores) eval events, 10 steps an epoch."""
    with (folder / "metrics.jsonl").open("w") as handle:
        for step, split, scores in rows:
            event = {"event": "eval", "step": step, "epoch": step / 10, "split": split, **scores}
            handle.write(json.dumps(event) + "\n")


def figure8_run(
    tmp_path: Path, name: str, method: str, seed: int, train: list[float], validation: list[float]
):
    results = results_json(table="figure8", task="cola", model="roberta_large", method=method, seed=seed,
                           metrics={"matthews": 0.5, "accuracy": validation[-1]}, main_metric="matthews")  # fmt: skip
    folder = write_run_folder(tmp_path / "runs" / name, results)
    rows = []
    for epoch, (train_accuracy, validation_accuracy) in enumerate(zip(train, validation, strict=True)):
        rows.append((10 * epoch, "validation", {"accuracy": validation_accuracy, "matthews": 0.1}))
        rows.append((10 * epoch, "train", {"accuracy": train_accuracy, "matthews": 0.2}))
    write_evaluations(folder, rows)
    return folder


def test_a_runs_curve_pairs_training_and_evaluation_scores_step_by_step(tmp_path):
    figure8_run(tmp_path, "plus", "lorma_plus", 1, train=[0.5, 0.8, 0.95], validation=[0.5, 0.7, 0.75])
    (run,) = collect_runs([tmp_path / "runs"]).finished
    curve = accuracy_curves.accuracy_curve(run)
    assert (curve.metric, curve.split) == ("accuracy", "validation")
    assert curve.steps.tolist() == [0, 10, 20] and curve.epochs.tolist() == [0.0, 1.0, 2.0]
    assert curve.gap.tolist() == pytest.approx([0.0, 0.1, 0.2])


def test_the_table_summarises_the_end_of_training_and_the_largest_gap_per_method(tmp_path):
    figure8_run(tmp_path, "plus1", "lorma_plus", 1, train=[0.5, 0.9, 0.8], validation=[0.5, 0.6, 0.7])
    figure8_run(tmp_path, "plus2", "lorma_plus", 2, train=[0.5, 0.7, 1.0], validation=[0.5, 0.6, 0.7])
    runs = collect_runs([tmp_path / "runs"]).finished
    table = accuracy_curves.figure8_table([accuracy_curves.accuracy_curve(run) for run in runs])
    # End of training: train 80 and 100 (mean 90), eval 70 and 70, gap 10 and 30 (mean 20);
    # largest gap: 30 (epoch 1 of seed 1) and 30 (epoch 2 of seed 2).
    cells = {
        column: table.cells[("lorma_plus", column)]
        for column in ("train", "evaluation", "gap", "largest_gap")
    }
    assert cells["train"].mean == pytest.approx(90.0) and cells["train"].n == 2
    assert cells["evaluation"].mean == pytest.approx(70.0)
    assert cells["gap"].mean == pytest.approx(20.0)
    assert cells["largest_gap"].mean == pytest.approx(30.0)
    assert cells["train"].paper is None  # the paper gives a plot, no numbers
    assert table.cells[("lora", "train")].n == 0


def test_a_resumed_runs_repeated_evaluation_keeps_the_last_value(tmp_path):
    folder = figure8_run(tmp_path, "plus", "lorma_plus", 1, train=[0.5], validation=[0.5])
    write_evaluations(
        folder,
        [
            (10, "validation", {"accuracy": 0.6}),
            (10, "train", {"accuracy": 0.7}),
            (10, "validation", {"accuracy": 0.65}),
            (10, "train", {"accuracy": 0.75}),
        ],
    )
    (run,) = collect_runs([tmp_path / "runs"]).finished
    curve = accuracy_curves.accuracy_curve(run)
    assert (curve.train.tolist(), curve.evaluation.tolist()) == ([0.75], [0.65])


def test_a_task_without_accuracy_falls_back_to_its_main_metric(tmp_path):
    results = results_json(table="figure8", task="stsb", model="roberta_large", method="lora", seed=1,
                           metrics={"pearson": 0.8}, main_metric="pearson")  # fmt: skip
    folder = write_run_folder(tmp_path / "runs" / "lora", results)
    write_evaluations(folder, [(10, "validation", {"pearson": 0.8}), (10, "train", {"pearson": 0.9})])
    (run,) = collect_runs([tmp_path / "runs"]).finished
    assert accuracy_curves.accuracy_curve(run).metric == "pearson"


def test_a_run_trained_without_eval_train_is_refused_with_the_fix(tmp_path, capsys):
    results = results_json(table="figure8", task="cola", model="roberta_large", method="lora", seed=1,
                           metrics={"accuracy": 0.8})  # fmt: skip
    write_run_folder(tmp_path / "runs" / "lora", results)  # eval events of the validation split only
    assert main(["accuracy-curves", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "no evaluation of the training rows" in error and "trainer.eval_train=true" in error


def test_cli_writes_the_figure_and_its_tables(tmp_path, capsys):
    for method in ("lora", "lorma_plus", "lorma_pi"):
        figure8_run(tmp_path, method, method, 1, train=[0.5, 0.9], validation=[0.5, 0.7])
    out = tmp_path / "out"
    assert (
        main(["accuracy-curves", "--runs", str(tmp_path / "runs"), "--out", str(out), "--table", "figure8"])
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "## Figure 8" in printed
        and "| LoRMA₊ | 90.0 (n=1) | 70.0 (n=1) | 20.0 (n=1) | 20.0 (n=1) |" in printed
    )
    assert (out / "figure8.png").read_bytes().startswith(PNG_MAGIC)
    for name in ("figure8", "figure8_curves"):
        assert {(out / f"{name}{suffix}").is_file() for suffix in (".md", ".csv", ".tex")} == {True}
    assert len((out / "figure8_curves.csv").read_text().splitlines()) == 1 + 3 * 2
