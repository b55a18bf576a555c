"""The run summary shows a generation run's metric table and sample outputs; classification is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from lorma_exp.summary import format_summary

E2E_NAMES = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")


def _record(initial: dict | None, final: dict) -> dict:
    """A results.json record (docs/architecture.md) with the fields the summary reads."""
    return {
        "task": "restaurants",
        "model": "smollm2_135m",
        "model_name_or_path": "embedded:SmolLM2-135M-Instruct",
        "method": "lorma_plus",
        "inflation": "rri",
        "mode": "pre",
        "r": 8,
        "alpha": 16.0,
        "targets": ["q", "v"],
        "main_metric": "BLEU",
        "trainable_params": {"adapter": 10, "head": 0, "other": 0, "total": 10},
        "initial": {"step": 0, "epoch": 0.0, "metrics": initial} if initial else None,
        "best": {"step": 30, "epoch": 1.0, "metrics": final},
        "final": {"step": 30, "epoch": 1.0, "metrics": final},
        "train": {
            "steps": 30,
            "epochs": 1.0,
            "world_size": 1,
            "resumed_from_step": None,
            "wall_time_s": 75.0,
        },
    }


def test_many_metrics_are_a_before_and_final_table(tmp_path: Path):
    before = dict(zip(E2E_NAMES, (0.01, 0.2, 0.03, 0.04, 0.05), strict=True))
    after = dict(zip(E2E_NAMES, (0.61, 7.2, 0.43, 0.64, 3.05), strict=True))
    text = format_summary(
        _record(before, {**after, "test/BLEU": 0.5}), tmp_path, {"train_rows": 10}, "adapter"
    )
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["metric"] == ["before", "final"]
    for name in E2E_NAMES:
        assert rows[name] == [f"{before[name]:.4f}", f"{after[name]:.4f}"]
    assert "test/BLEU" not in rows  # the first evaluation split only, as the other lines
    assert "before" not in rows and "final" not in rows


def test_a_table_without_an_initial_evaluation_marks_it_missing(tmp_path: Path):
    after = dict.fromkeys(E2E_NAMES, 0.5)
    text = format_summary(_record(None, after), tmp_path, {}, "adapter")
    assert any(line.split() == ["BLEU", "—", "0.5000"] for line in text.splitlines())


def test_sample_predictions_show_input_and_output_of_the_named_split(tmp_path: Path):
    rows = [
        {"id": f"validation-{i}", "prompt": f"mr {i}<eos>", "input": f"mr {i}", "hypothesis": f"text {i}"}
        for i in range(5)
    ]
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = format_summary(
        _record(None, dict.fromkeys(E2E_NAMES, 0.5)),
        tmp_path,
        {"sample_predictions": "validation"},
        "adapter",
    )
    lines = [line.strip() for line in text.splitlines()]
    assert "samples    final model, validation:" in lines
    for i in range(3):
        assert lines[lines.index(f"mr {i}") + 1] == f"→ text {i}"
    assert "mr 3" not in lines


def test_two_metrics_keep_the_one_line_form(tmp_path: Path):
    record = {
        **_record({"accuracy": 0.5, "f1": 0.4}, {"accuracy": 0.9, "f1": 0.8}),
        "main_metric": "accuracy",
    }
    text = format_summary(record, tmp_path, {"train_rows": 10}, "adapter")
    labels = [line.split()[0] for line in text.splitlines() if line.startswith("  ")]
    assert "before" in labels and "final" in labels and "metric" not in labels
    assert "samples" not in labels
