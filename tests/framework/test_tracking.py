"""Run logging: metrics.jsonl / metrics.csv round trips, resume truncation, and wandb's mode choice."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest

from lorma_exp import pipeline, tracking
from lorma_exp.run_folder import RunFolder
from lorma_exp.tracking import RunLogger, wandb_mode


def test_events_round_trip_and_resume_drops_events_after_the_checkpoint(tmp_path):
    logger = RunLogger(tmp_path, enabled=True)
    for step in (1, 2, 3):
        logger.log({"event": "train", "step": step, "loss": 1.0 / step})
    logger.log({"event": "eval", "step": 3, "split": "validation", "accuracy": 0.5})
    logger.truncate_after(2)
    assert [e["step"] for e in RunFolder(tmp_path).read_events()] == [1, 2]
    rows = list(csv.DictReader(logger.write_csv().open()))
    assert [float(row["loss"]) for row in rows] == [1.0, 0.5]


def test_a_disabled_logger_writes_nothing(tmp_path):
    logger = RunLogger(tmp_path, enabled=False)
    logger.log({"event": "train", "step": 1, "loss": 0.3})
    assert logger.write_csv() is None
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("environment", "requested", "expected"),
    [
        ({"WANDB_MODE": "disabled"}, "online", "disabled"),  # the environment always wins
        ({}, "offline", "offline"),
        ({"WANDB_API_KEY": "x" * 40}, "auto", "online"),
        ({}, "auto", "offline"),  # no key, no netrc: never stop a run for want of a login
    ],
)
def test_wandb_mode(monkeypatch, tmp_path, environment, requested, expected):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert wandb_mode(requested) == expected


def test_logger_wandb_writes_an_offline_run_with_the_results(compose_train, tiny_run_overrides, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    published = []
    original = tracking.publish_results
    monkeypatch.setattr(
        tracking, "publish_results", lambda run, results: published.append(results) or original(run, results)
    )
    cfg = compose_train(*tiny_run_overrides, "trainer.max_steps=2", "logger=wandb")
    record = pipeline.train(cfg)
    assert len(list((Path(cfg.run_dir) / "wandb").glob("offline-run-*"))) == 1
    assert published == [record]


def test_a_wandb_run_gets_parameter_counts_best_value_summaries_the_results_table_and_the_loss_curve(
    compose_train, tiny_run_overrides, monkeypatch
):
    """A fake wandb records what the logger asks of it (the offline run's files are binary)."""
    calls: list[tuple[str, object]] = []

    class FakeRun:
        id = "fake"

        def __init__(self):
            self.summary = {}

        def define_metric(self, name, summary):
            calls.append(("define_metric", (name, summary)))

        def log(self, values, step=None):
            calls.append(("log", values))

        def finish(self):
            calls.append(("finish", None))

    run = FakeRun()
    fake = types.SimpleNamespace(
        init=lambda **kwargs: run,
        Table=lambda columns, data: ("table", columns, data),
        Image=lambda path: ("image", path),
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = compose_train(*tiny_run_overrides, "trainer.max_steps=2", "logger=wandb")
    record = pipeline.train(cfg)
    split = next(
        event["split"] for event in RunFolder(Path(cfg.run_dir)).read_events() if event["event"] == "eval"
    )
    best = "max" if record["greater_is_better"] else "min"
    for kind in ("adapter", "head", "total"):
        assert run.summary[f"model/params/{kind}"] == record["trainable_params"][kind]
    assert ("define_metric", (f"eval/{split}/{record['main_metric']}", best)) in calls
    assert ("define_metric", ("train/loss", "min")) in calls
    media = [values for name, values in calls if name == "log" and "results_table" in values]
    (last,) = media
    kind, columns, rows = last["results_table"]
    assert kind == "table" and columns == ["field", "value"]
    assert dict(rows)["method"] == json.dumps(record["method"])
    assert last["loss_curve"] == ("image", str(Path(cfg.run_dir) / "loss_curve.png"))
    assert calls[-1] == ("finish", None)
