"""``report sweep``: any sweep's runs grouped by what varies, mean ± std over seeds, best marked, a plot;
``report table`` says which finished runs it left out."""

from __future__ import annotations

import csv
import statistics

from lorma_exp.report import main

from .run_folders import results_json, write_run_folder

PNG_MAGIC = b"\x89PNG"


def sweep_runs(root, *, paper_cell: bool = False) -> dict[tuple[str, int], list[float]]:
    """LoRA and LoRMA₊ at r = 2 and 8, two seeds each, on one task; returns the accuracies per group."""
    accuracies: dict[tuple[str, int], list[float]] = {}
    for method in ("lora", "lorma_plus"):
        for r in (2, 8):
            for seed in (1, 2):
                accuracy = 0.5 + 0.01 * r + (0.05 if method == "lorma_plus" else 0.0) + 0.003 * seed
                accuracies.setdefault((method, r), []).append(accuracy)
                results = results_json(
                    table="t",
                    task="cola",
                    model="minilm",
                    method=method,
                    seed=seed,
                    r=r,
                    metrics={"accuracy": accuracy},
                )
                if not paper_cell:
                    results["paper_cell"] = None
                write_run_folder(root / f"cola/{method}_r{r}/seed{seed}", results)
    return accuracies


def test_sweep_groups_by_what_varies_and_pools_the_seeds(tmp_path, capsys):
    accuracies = sweep_runs(tmp_path / "runs")
    assert main(["sweep", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    with (tmp_path / "out" / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert {key for key in rows[0] if not key.startswith("accuracy")} == {"method", "r", "seeds", "best"}
    assert "task" not in rows[0] and "alpha" not in rows[0]  # the same in every run: not a grouping key
    for row in rows:
        values = accuracies[(row["method"], int(row["r"]))]
        assert float(row["accuracy_mean"]) == statistics.fmean(values)
        assert float(row["accuracy_std"]) == statistics.stdev(values)
        assert row["seeds"] == "2"
    (best,) = [row for row in rows if row["best"] == "True"]
    assert (best["method"], best["r"]) == ("lorma_plus", "8")
    (marked,) = [line for line in printed.splitlines() if "★" in line and line.startswith("|")]
    assert "lorma_plus" in marked and "| 8 |" in marked
    assert (tmp_path / "out" / "sweep.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "out" / "sweep.md").is_file()


def test_table_says_how_many_finished_runs_it_skipped_and_why(tmp_path, capsys):
    sweep_runs(tmp_path / "runs")
    assert main(["table", "table2", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert "table2: skipped 8 finished run(s): 8 no paper_cell" in capsys.readouterr().err
    sweep_runs(tmp_path / "other", paper_cell=True)
    assert main(["table", "table2", "--runs", str(tmp_path / "other"), "--out", str(tmp_path / "out")]) == 0
    assert "skipped 8 finished run(s): 8 launched for t" in capsys.readouterr().err
