"""Report tables built from synthetic run folders: placement, statistics, units, missing cells, outputs.

Expected numbers are worked out by hand in the comments beside them from the values the tests write.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from lorma_exp.analysis.render import SMOKE_TITLE, to_latex, to_markdown, write_outputs
from lorma_exp.analysis.runs import RunDataError, collect_runs, runs_of_table, unfinished_of_table
from lorma_exp.analysis.tables import render, table_from_runs
from lorma_exp.paper import (
    GLUE_METRIC,
    GLUE_TASKS,
    RESULT_TABLES,
    TABLE2,
    TABLE3,
    TABLE4,
    TABLE6,
    TABLE7,
    TABLE8,
    TABLE10,
    TABLE13,
)

from .run_folders import results_json, write_run_folder


def build(table, root: Path):
    collection = collect_runs([root])
    unfinished = unfinished_of_table(collection.unfinished, table.name)
    return table_from_runs(table, runs_of_table(collection.finished, table.name), unfinished)


def glue_run(make_run, name: str, task: str, value: float, seed: int, **fields):
    fields = {"table": "table2", "model": "roberta_base", "method": "lorma_plus", **fields}
    return make_run(name, task=task, seed=seed, metrics={GLUE_METRIC[task]: value}, **fields)


def test_cell_is_mean_sample_std_and_seed_count_beside_the_paper(make_run, tmp_path):
    for seed, value in ((1, 0.63), (2, 0.65), (3, 0.64)):
        glue_run(make_run, f"cola{seed}", "cola", value, seed)
    table = build(TABLE2, tmp_path / "runs")
    cell = table.cells[("roberta_base/lorma_plus", "cola")]
    # ×100: 63, 65, 64 -> mean 64, sample std sqrt((1 + 1 + 0) / 2) = 1; paper 64.2 -> diff -0.2.
    assert cell.n == 3
    assert cell.mean == pytest.approx(64.0)
    assert cell.std == pytest.approx(1.0)
    assert cell.seeds == (1, 2, 3)
    assert cell.paper == 64.2
    assert cell.diff == pytest.approx(-0.2)
    markdown = to_markdown(render(table))
    assert "64.0 ± 1.0 (n=3) vs 64.2 [-0.2]" in markdown


def test_single_seed_has_no_std(make_run, tmp_path):
    glue_run(make_run, "rte", "rte", 0.75, 1)
    cell = build(TABLE2, tmp_path / "runs").cells[("roberta_base/lorma_plus", "rte")]
    assert (cell.n, cell.std) == (1, None)
    assert "75.0 (n=1) vs 76.5 [-1.5]" in to_markdown(render(build(TABLE2, tmp_path / "runs")))


def test_cells_without_runs_stay_missing_and_unfinished_folders_are_listed(make_run, tmp_path):
    glue_run(make_run, "cola", "cola", 0.6, 1)
    write_run_folder(tmp_path / "runs" / "still_training", None, launched_for="table2")
    write_run_folder(tmp_path / "runs" / "other_table", None, launched_for="table6")
    table = build(TABLE2, tmp_path / "runs")
    missing = table.cells[("roberta_base/lorma_plus", "mnli")]
    assert (missing.n, missing.mean, missing.std, missing.paper) == (0, None, None, 87.5)
    rendered = render(table)
    markdown = to_markdown(rendered)
    assert "— (n=0) vs 87.5" in markdown
    assert any("still_training" in note and "no results.json" in note for note in rendered.notes)
    assert not any("other_table" in note for note in rendered.notes)


def test_a_results_file_that_is_not_finished_counts_as_missing(make_run, tmp_path):
    folder = glue_run(make_run, "cola", "cola", 0.6, 1)
    results = json.loads((folder / "results.json").read_text())
    results["status"] = "failed"
    (folder / "results.json").write_text(json.dumps(results))
    collection = collect_runs([tmp_path / "runs"])
    assert collection.finished == []
    assert collection.unfinished[0].reason == "status is 'failed'"


def test_average_is_the_mean_of_the_column_means(make_run, tmp_path):
    # MNLI has two seeds (0.60, 0.70 -> 65.0); the other seven tasks one seed at 0.80 (80.0).
    # Paper's way: (65 + 7 * 80) / 8 = 78.125; pooling all nine runs would give 76.67 instead.
    glue_run(make_run, "mnli1", "mnli", 0.60, 1)
    glue_run(make_run, "mnli2", "mnli", 0.70, 2)
    for task in GLUE_TASKS[1:]:
        glue_run(make_run, task, task, 0.80, 1)
    table = build(TABLE2, tmp_path / "runs")
    average = table.average("roberta_base/lorma_plus")
    assert average.mean == pytest.approx(78.125)
    assert average.n == 1  # the smallest column n
    assert average.paper == 86.0
    assert average.diff == pytest.approx(78.125 - 86.0)


def test_average_with_a_missing_column_is_missing(make_run, tmp_path):
    for task in GLUE_TASKS[:-1]:
        glue_run(make_run, task, task, 0.80, 1)
    average = build(TABLE2, tmp_path / "runs").average("roberta_base/lorma_plus")
    assert (average.mean, average.n) == (None, 0)


def test_params_column_reports_the_runs_adapter_parameter_counts(make_run, tmp_path):
    glue_run(make_run, "cola", "cola", 0.6, 1, adapter_params=294912)
    glue_run(make_run, "large_cola", "cola", 0.6, 1, model="roberta_large", adapter_params=786432)
    rendered = render(build(TABLE2, tmp_path / "runs"))
    rows = {row[0]: row for row in rendered.rows}
    params_column = rendered.header.index("#Params")
    # 294912 / 1e6 = 0.29M; 786432 / 1e6 = 0.79M
    assert rows["base LoRMA₊"][params_column] == "0.29M vs 0.3M"
    assert rows["large LoRMA₊"][params_column] == "0.79M vs 0.8M"
    assert rows["base LoRA"][params_column] == "— vs 0.3M"


def test_nlg_metrics_scale_fractions_only(make_run, tmp_path):
    # BLEU, METEOR, ROUGE-L are fractions (×100 in the paper); NIST and CIDEr are printed as computed.
    metrics = {"BLEU": 0.691, "NIST": 8.70, "METEOR": 0.465, "ROUGE_L": 0.712, "CIDEr": 2.5}
    make_run("e2e", table="table3", task="e2e", model="gpt2_medium", method="lora", seed=1, metrics=metrics)
    table = build(TABLE3, tmp_path / "runs")
    means = {column.key: table.cells[("lora", column.key)].mean for column in TABLE3.columns}
    assert means == pytest.approx({"bleu": 69.1, "nist": 8.70, "meteor": 46.5, "rouge_l": 71.2, "cider": 2.5})


def test_webnlg_style_bleu_is_already_on_the_papers_scale(make_run, tmp_path):
    # metrics.nlg.webnlg_scores: BLEU 0-100, METEOR and TER in [0, 1], as Table 13 prints them.
    make_run("dart", table="table13", task="dart", model="gpt2_medium", method="lorma_plus", seed=1,
             metrics={"BLEU": 43.64, "METEOR": 0.38, "TER": 0.53})  # fmt: skip
    table = build(TABLE13, tmp_path / "runs")
    means = {key: table.cells[("lorma_plus", key)].mean for key in ("dart/bleu", "dart/meteor", "dart/ter")}
    assert means == pytest.approx({"dart/bleu": 43.64, "dart/meteor": 0.38, "dart/ter": 0.53})
    assert table.cells[("lorma_plus", "dart/bleu")].diff == pytest.approx(0.0)


def test_generation_tables_report_the_final_evaluation_and_maths_columns_follow_the_model(make_run, tmp_path):
    make_run(
        "gemma",
        table="table4",
        task="gsm8k",
        model="gemma_2b",
        method="lorma_plus",
        seed=1,
        metrics={"accuracy": 0.9},
        final_metrics={"accuracy": 0.4738},
    )
    table = build(TABLE4, tmp_path / "runs")
    assert table.cells[("lorma_plus", "gemma_2b/gsm8k")].mean == pytest.approx(47.38)
    assert table.cells[("lorma_plus", "llama3_8b/gsm8k")].n == 0


def test_a_percentage_stored_where_a_fraction_belongs_is_refused(make_run, tmp_path):
    glue_run(make_run, "cola", "cola", 63.0, 1)
    with pytest.raises(RunDataError, match="not a fraction"):
        build(TABLE2, tmp_path / "runs")


def test_a_missing_metric_names_the_run_and_what_it_has(make_run, tmp_path):
    make_run(
        "cola", table="table2", task="cola", model="roberta_base", method="lora", seed=1, metrics={"mcc": 0.6}
    )
    with pytest.raises(RunDataError, match=r"no 'matthews' \(they have \['mcc'\]\)"):
        build(TABLE2, tmp_path / "runs")


def test_ablation_tables_place_runs_by_what_the_run_did(make_run, tmp_path):
    large = {"model": "roberta_large", "method": "lorma_plus"}
    glue_run(make_run, "t6_none", "mrpc", 0.81, 1, table="table6", inflation="none", **large)
    glue_run(make_run, "t6_rri", "mrpc", 0.93, 1, table="table6", inflation="rri", **large)
    glue_run(make_run, "t7_post", "cola", 0.69, 1, table="table7", mode="post", **large)
    glue_run(make_run, "t8", "stsb", 0.89, 1, table="table8", r=64, targets=["k", "q"])
    glue_run(make_run, "t10", "mrpc", 0.916, 1, table="table10", r=2, targets=["q", "k", "v", "o"])
    root = tmp_path / "runs"
    assert build(TABLE6, root).cells[("none", "mrpc")].mean == pytest.approx(81.0)
    assert build(TABLE6, root).cells[("rri", "mrpc")].mean == pytest.approx(93.0)
    assert build(TABLE7, root).cells[("post", "cola")].mean == pytest.approx(69.0)
    assert build(TABLE7, root).cells[("pre", "cola")].n == 0
    table8 = build(TABLE8, root)
    assert table8.cells[("stsb/k,q", "r64")].mean == pytest.approx(89.0)
    assert table8.cells[("stsb/k,q", "r64")].paper == 89.2
    assert build(TABLE10, root).cells[("k,o,q,v/r2", "mrpc")].mean == pytest.approx(91.6)


def test_runs_no_cell_takes_are_reported_not_dropped(make_run, tmp_path):
    glue_run(make_run, "dora", "cola", 0.6, 1, method="dora")
    table = build(TABLE2, tmp_path / "runs")
    assert len(table.unplaced) == 1
    assert "method='dora'" in table.unplaced[0].reason
    assert any(note.startswith("Not placed:") for note in render(table).notes)


def test_two_runs_with_one_seed_in_a_cell_are_an_error(make_run, tmp_path):
    glue_run(make_run, "a", "cola", 0.6, 1)
    glue_run(make_run, "b", "cola", 0.62, 1)
    with pytest.raises(RunDataError, match="two runs with seed 1"):
        build(TABLE2, tmp_path / "runs")


def test_runs_of_one_cell_with_different_settings_are_an_error(make_run, tmp_path):
    glue_run(make_run, "a", "cola", 0.6, 1, alpha=4.0)
    glue_run(make_run, "b", "cola", 0.62, 2, alpha=8.0)
    with pytest.raises(RunDataError, match="differ in 'alpha'"):
        build(TABLE2, tmp_path / "runs")


def test_smoke_runs_land_in_their_paper_cell_and_say_so_in_the_title(tmp_path):
    results = results_json(
        table="table2",
        task="cola",
        model="roberta_base",
        method="lora",
        seed=1,
        metrics={"accuracy": 0.7},
        smoke=True,
        main_metric="accuracy",
    )
    results["task"], results["model"] = "embedded", "minilm"  # what a smoke run actually trains
    write_run_folder(tmp_path / "runs" / "smoke", results)
    table = build(TABLE2, tmp_path / "runs")
    assert table.cells[("roberta_base/lora", "cola")].mean == pytest.approx(70.0)
    rendered = render(table)
    assert rendered.title.startswith(SMOKE_TITLE)
    assert any("main metric 'accuracy'" in note for note in rendered.notes)


def test_smoke_and_full_runs_are_not_mixed(make_run, tmp_path):
    glue_run(make_run, "full", "cola", 0.6, 1)
    glue_run(make_run, "smoke", "cola", 0.6, 2, smoke=True)
    with pytest.raises(RunDataError, match="1 smoke runs and 1 full runs"):
        build(TABLE2, tmp_path / "runs")


def test_outputs_are_markdown_csv_and_latex(make_run, tmp_path):
    for seed, value in ((1, 0.63), (2, 0.65)):
        glue_run(make_run, f"cola{seed}", "cola", value, seed)
    rendered = render(build(TABLE2, tmp_path / "runs"))
    paths = write_outputs(rendered, tmp_path / "out")
    assert [path.name for path in paths] == ["table2.md", "table2.csv", "table2.tex"]
    with (tmp_path / "out" / "table2.csv").open() as handle:
        records = list(csv.DictReader(handle))
    cola = next(r for r in records if r["row"] == "roberta_base/lorma_plus" and r["column"] == "cola")
    # 63 and 65: mean 64, sample std sqrt(2) = 1.414..., paper 64.2
    assert float(cola["mean"]) == pytest.approx(64.0)
    assert float(cola["std"]) == pytest.approx(math.sqrt(2))
    assert (cola["n"], cola["seeds"], cola["paper"]) == ("2", "1;2", "64.2")
    assert float(cola["diff"]) == pytest.approx(-0.2)
    missing = next(r for r in records if r["row"] == "roberta_base/lora" and r["column"] == "mnli")
    assert (missing["mean"], missing["n"]) == ("", "0")
    latex = to_latex(rendered)
    assert "\\begin{tabular}{l" + "c" * 10 + "}" in latex
    assert "\\#Params" in latex and "base LoRMA$_{+}$" in latex and "$\\pm$" in latex


def test_paper_averages_match_their_rows_except_the_svft_misprint():
    for row in TABLE2.rows:
        mean = sum(row.values) / len(row.values)
        if row.key == "roberta_large/svft_p":
            assert mean == pytest.approx(84.95)  # printed 83.7, as paper-results.md notes
        else:
            assert abs(mean - row.average) < 0.1, row.label


def test_every_result_cell_knows_its_metric():
    for table in RESULT_TABLES.values():
        for row in table.rows:
            for column in table.columns:
                assert (column.metric or row.metric) is not None, (table.name, row.key, column.key)


def test_a_run_that_never_evaluated_is_a_clear_error(make_run, tmp_path):
    folder = glue_run(make_run, "cola", "cola", 0.6, 1)
    results = json.loads((folder / "results.json").read_text())
    results["best"] = None
    (folder / "results.json").write_text(json.dumps(results))
    with pytest.raises(RunDataError, match="no 'best' evaluation"):
        build(TABLE2, tmp_path / "runs")


def _write_evaluation(run_folder: Path, stamp: str, task: str, accuracy: float, **fields) -> None:
    """An eval.py result (docs/architecture.md: evals/<stamp>/metrics.json) beside a training run."""
    folder = run_folder / "evals" / stamp
    folder.mkdir(parents=True)
    record = {
        "run_dir": str(run_folder),
        "weights": "adapter",
        "task": task,
        "paper_task": None,
        "splits": {"test": {"accuracy": accuracy, "answer_rate": 1.0}},
        **fields,
    }
    (folder / "metrics.json").write_text(json.dumps(record))


def test_benchmarks_scored_after_training_fill_the_maths_columns(make_run, tmp_path):
    """Table 4's runs train on MetaMathQA; `eval.py task=gsm8k` / `task=math` give its columns."""
    folder = make_run(
        "llama",
        table="table4",
        task="metamathqa",
        model="llama3_8b",
        method="lora",
        seed=1,
        metrics={"accuracy": 0.5},
    )
    _write_evaluation(folder, "2026-01-01_00-00-00_1", "gsm8k", 0.70)
    _write_evaluation(folder, "2026-01-02_00-00-00_1", "gsm8k", 0.749)  # the latest evaluation counts
    _write_evaluation(folder, "2026-01-01_00-00-00_2", "math", 0.2538)
    _write_evaluation(folder, "2026-01-01_00-00-00_3", "math", 0.99, weights="adapter_best")  # not final
    table = build(TABLE4, tmp_path / "runs")
    assert table.cells[("lora", "llama3_8b/gsm8k")].mean == pytest.approx(74.9)
    assert table.cells[("lora", "llama3_8b/math")].mean == pytest.approx(25.38)
    assert table.cells[("lora", "gemma_2b/gsm8k")].n == 0


def test_a_stand_in_evaluation_lands_in_the_paper_column_it_names(make_run, tmp_path):
    folder = make_run(
        "smoke",
        table="table4",
        task="metamathqa",
        model="gemma_2b",
        method="lorma_plus",
        seed=1,
        metrics={"accuracy": 0.5},
        smoke=True,
    )
    _write_evaluation(folder, "2026-01-01_00-00-00_1", "gsm_symbolic", 0.25, paper_task="math")
    table = build(TABLE4, tmp_path / "runs")
    assert table.cells[("lorma_plus", "gemma_2b/math")].mean == pytest.approx(25.0)
    assert table.cells[("lorma_plus", "gemma_2b/gsm8k")].n == 0


def test_maths_columns_set_the_authors_protocol_beside_the_paper_and_the_lenient_judge_after_it(
    make_run, tmp_path
):
    make_run(
        "gemma",
        table="table4",
        task="gsm8k",
        model="gemma_2b",
        method="lorma_plus",
        seed=1,
        metrics={"accuracy": 0.9},
        final_metrics={"accuracy": 0.4738, "accuracy_lenient": 0.5012},
    )
    make_run(  # an older run, scored before the lenient judge existed: its lenient cell stays empty
        "llama",
        table="table4",
        task="gsm8k",
        model="llama3_8b",
        method="lorma_plus",
        seed=1,
        metrics={"accuracy": 0.9},
        final_metrics={"accuracy": 0.7399},
    )
    table = build(TABLE4, tmp_path / "runs")
    strict, lenient = (
        table.cells[("lorma_plus", key)] for key in ("gemma_2b/gsm8k", "gemma_2b/gsm8k/lenient")
    )
    assert (strict.mean, strict.paper) == (pytest.approx(47.38), 47.38)
    assert (lenient.mean, lenient.paper) == (pytest.approx(50.12), None)
    assert table.cells[("lorma_plus", "llama3_8b/gsm8k")].mean == pytest.approx(73.99)
    assert table.cells[("lorma_plus", "llama3_8b/gsm8k/lenient")].n == 0
    rendered = render(table)
    assert rendered.header[:4] == ["Method", "Gemma-2B #Params", "GSM8K", "GSM8K lenient"]
    assert any("GSM8K lenient: empty for runs without 'accuracy_lenient'" in note for note in rendered.notes)
