"""Divergence: a non-finite loss or gradient norm stops the run at that step (or drops the step), the run
folder says so in strict JSON, and no weights that are not finite are ever saved."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorma_exp import pipeline, trainer
from lorma_exp.data.classification import ClassificationEvaluator
from lorma_exp.run_folder import RunFolder


def _strict(text: str):
    """Parse JSON the way strict parsers do: NaN and Infinity are not JSON."""

    def refuse(constant: str):
        raise AssertionError(f"bare {constant} in JSON")

    return json.loads(text, parse_constant=refuse)


def _assert_strict_json_files(run_dir: Path) -> None:
    _strict((run_dir / "results.json").read_text())
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        _strict(line)


def _nan_losses_at(monkeypatch, calls: set[int]) -> None:
    """Make the loss of the listed micro-batches (counted from 1) NaN."""
    original = trainer.summed_loss
    count = {"n": 0}

    def loss(*args, **kwargs):
        count["n"] += 1
        value = original(*args, **kwargs)
        return value * float("nan") if count["n"] in calls else value

    monkeypatch.setattr(trainer, "summed_loss", loss)


def test_a_run_whose_loss_blows_up_stops_there_as_diverged_and_saves_no_nan(
    compose_train, tiny_run_overrides, capsys
):
    cfg = compose_train(
        *tiny_run_overrides,
        "trainer.lr=1e30",
        "trainer.max_grad_norm=null",
        "trainer.eval_strategy=steps",
        "trainer.eval_steps=1",
        "trainer.checkpoint_every_steps=1",
    )
    with pytest.raises(SystemExit) as stopped:
        pipeline.train(cfg)
    assert stopped.value.code == 3
    message = [line for line in capsys.readouterr().err.splitlines() if "diverged" in line]
    assert len(message) == 1 and message[0].startswith("error: diverged at step ")  # one line
    assert "Lower trainer.lr (now 1e+30)" in message[0] and "trainer.max_grad_norm=1.0" in message[0]

    run_dir = Path(cfg.run_dir)
    _assert_strict_json_files(run_dir)
    record = RunFolder(run_dir).read_results()
    assert record["status"] == "diverged"
    step = record["divergence"]["step"]
    assert message[0].startswith(f"error: diverged at step {step}:")
    assert record["train"]["steps"] == step - 1
    assert not math.isfinite(record["divergence"]["loss"])
    events = RunFolder(run_dir).read_events()
    assert [e["step"] for e in events if e["event"] == "nonfinite"] == [step]
    assert max(e["step"] for e in events if e["event"] != "nonfinite") == step - 1
    assert not (run_dir / "adapter").exists()  # the end of a diverged run is not worth keeping
    state = torch.load(run_dir / "checkpoints" / "last" / "state.pt", weights_only=False)
    assert state["step"] == step - 1  # the last finite checkpoint is kept
    assert all(torch.isfinite(value).all() for value in state["trainable"].values())
    if (run_dir / "adapter_best").exists():
        best = load_file(run_dir / "adapter_best" / "adapter_model.safetensors")
        assert all(torch.isfinite(value).all() for value in best.values())


def test_skip_step_drops_a_non_finite_step_counts_it_and_trains_on(
    compose_train, tiny_run_overrides, monkeypatch
):
    _nan_losses_at(monkeypatch, {5})  # one batch a step: step 5
    cfg = compose_train(*tiny_run_overrides, "trainer.on_nonfinite=skip_step", "trainer.log_every=1")
    record = pipeline.train(cfg)
    assert record["status"] == "finished" and record["train"]["skipped_steps"] == [5]
    assert record["divergence"] is None
    events = RunFolder(cfg.run_dir).read_events()
    (skipped,) = (e for e in events if e["event"] == "nonfinite")
    assert (skipped["step"], skipped["action"]) == (5, "skip_step") and math.isnan(skipped["loss"])
    assert 5 not in [e["step"] for e in events if e["event"] == "train"]
    _assert_strict_json_files(Path(cfg.run_dir))


def test_skip_step_stops_as_diverged_past_max_skipped_steps(compose_train, tiny_run_overrides, monkeypatch):
    _nan_losses_at(monkeypatch, set(range(2, 100)))
    cfg = compose_train(*tiny_run_overrides, "trainer.on_nonfinite=skip_step", "trainer.max_skipped_steps=2")
    with pytest.raises(SystemExit) as stopped:
        pipeline.train(cfg)
    assert stopped.value.code == 3
    record = RunFolder(cfg.run_dir).read_results()
    assert record["train"]["skipped_steps"] == [2, 3]
    assert (record["status"], record["divergence"]["step"]) == ("diverged", 4)


def test_non_finite_metrics_are_null_and_flagged_in_strict_json(
    compose_train, tiny_run_overrides, monkeypatch
):
    original = ClassificationEvaluator.__call__

    def scores(self, *args, **kwargs):
        return {**original(self, *args, **kwargs), "f1": float("nan")}

    monkeypatch.setattr(ClassificationEvaluator, "__call__", scores)
    cfg = compose_train(*tiny_run_overrides, "trainer.max_steps=2")
    pipeline.train(cfg)
    run_dir = Path(cfg.run_dir)
    _assert_strict_json_files(run_dir)
    written = _strict((run_dir / "results.json").read_text())
    assert written["final"]["metrics"]["f1"] is None
    assert written["nonfinite"]["final.metrics.f1"] == "nan"
    assert math.isnan(RunFolder(run_dir).read_results()["final"]["metrics"]["f1"])
