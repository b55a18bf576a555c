"""Run logging: metrics.jsonl / metrics.csv round trips, resume truncation, and wandb's mode choice."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from lorma_exp import pipeline, tracking
from lorma_exp.config import ConfigError, EvalConfig, load_run_settings, validate
from lorma_exp.data import build_task_data
from lorma_exp.distributed import init_distributed
from lorma_exp.models import load_tokenizer
from lorma_exp.run_folder import RunFolder
from lorma_exp.tracking import RunLogger, wandb_mode

from .helpers import tokens_per_train_event


def test_events_round_trip_and_resume_drops_events_after_the_checkpoint(tmp_path):
    logger = RunLogger(tmp_path, enabled=True)
    for step in (1, 2, 3):
        logger.log({"event": "train", "step": step, "loss": 1.0 / step})
    logger.log({"event": "eval", "step": 3, "split": "validation", "accuracy": 0.5})
    logger.truncate_after(2)
    assert [e["step"] for e in RunFolder(tmp_path).read_events()] == [1, 2]
    rows = list(csv.DictReader(logger.write_csv().open()))
    assert [float(row["loss"]) for row in rows] == [1.0, 0.5]


def test_train_events_report_step_time_and_the_non_padding_tokens_per_second(
    compose_train, tiny_run_overrides
):
    """Over a run, the tokens the train events account for (tokens/s × s/step × steps) are every training
    row's unpadded length once per epoch (96 rows, global batch 8: no row dropped)."""
    cfg = compose_train(*tiny_run_overrides)
    pipeline.train(cfg)
    run_dir = Path(cfg.run_dir)
    events = RunFolder(run_dir).read_events()
    train = [event for event in events if event["event"] == "train"]
    assert train and all(event["step_time_s"] > 0 for event in train)
    settings = load_run_settings(run_dir, EvalConfig(run_dir=str(run_dir)))
    task = build_task_data(
        settings, load_tokenizer(settings.model, settings.task.problem), init_distributed("cpu")
    )
    row_tokens = sum(len(row["input_ids"]) for row in task.train)
    assert sum(tokens_per_train_event(events)) == settings.trainer.epochs * row_tokens


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
    cfg = compose_train(
        *tiny_run_overrides, "trainer.max_steps=2", "logger=wandb", "logger.log_artifacts=true"
    )
    record = pipeline.train(cfg)
    assert len(list((Path(cfg.run_dir) / "wandb").glob("offline-run-*"))) == 1
    assert published == [record]


class FakeWandb:
    """Stands in for the wandb module: records what the logger asks of it (the offline run's files are
    binary), as ``calls`` of (name, arguments)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.run = FakeWandbRun(self.calls)

    def init(self, **kwargs):
        return self.run

    def Table(self, columns, data):
        return ("table", columns, data)

    def Image(self, path):
        return ("image", path)

    def Artifact(self, name, type, metadata):
        return FakeArtifact(name, type, metadata)


class FakeWandbRun:
    id = "fake"

    def __init__(self, calls: list[tuple[str, object]]) -> None:
        self.calls = calls
        self.summary: dict[str, object] = {}

    def define_metric(self, name, summary):
        self.calls.append(("define_metric", (name, summary)))

    def log(self, values, step=None):
        self.calls.append(("log", values))

    def log_artifact(self, artifact):
        self.calls.append(("log_artifact", artifact))

    def finish(self):
        self.calls.append(("finish", None))


class FakeArtifact:
    def __init__(self, name, type, metadata):
        self.name, self.type, self.metadata = name, type, metadata
        self.folders: dict[str, set[str]] = {}

    def add_dir(self, local_path, name):
        # what the folder holds when it is added (the run folder is gone once the test ends)
        self.folders[name] = {path.name for path in Path(local_path).iterdir()}


@pytest.fixture
def fake_wandb(monkeypatch) -> FakeWandb:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def test_a_wandb_run_gets_parameter_counts_best_value_summaries_the_results_table_and_the_loss_curve(
    compose_train, tiny_run_overrides, fake_wandb
):
    calls, run = fake_wandb.calls, fake_wandb.run
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
    assert not [name for name, _ in calls if name == "log_artifact"]  # artifacts are opt-in


def test_wandb_gets_the_eval_loss_and_the_throughput_of_the_events(
    compose_train, tiny_run_overrides, fake_wandb
):
    cfg = compose_train(*tiny_run_overrides, "trainer.max_steps=2", "trainer.log_every=1", "logger=wandb")
    pipeline.train(cfg)
    events = RunFolder(Path(cfg.run_dir)).read_events()
    logged = [values for name, values in fake_wandb.calls if name == "log" and "results_table" not in values]
    assert len(logged) == len(events)
    for event, values in zip(events, logged, strict=True):
        if event["event"] == "train":
            for key in ("loss", "step_time_s", "tokens_per_s"):
                assert values[f"train/{key}"] == event[key]
        else:
            assert values[f"eval/{event['split']}/loss"] == event["loss"]


def test_log_artifacts_logs_the_final_adapter_and_its_peft_copy_as_one_model_artifact(
    compose_train, tiny_run_overrides, fake_wandb
):
    cfg = compose_train(
        *tiny_run_overrides, "trainer.max_steps=2", "logger=wandb", "logger.log_artifacts=true"
    )
    record = pipeline.train(cfg)
    run_dir = Path(cfg.run_dir)
    (artifact,) = [value for name, value in fake_wandb.calls if name == "log_artifact"]
    assert (artifact.name, artifact.type) == ("model-fake", "model")
    assert artifact.folders == {
        "adapter": {path.name for path in (run_dir / "adapter").iterdir()},
        "adapter_peft": {path.name for path in (run_dir / "adapter_peft").iterdir()},
    }
    assert "adapter_model.safetensors" in artifact.folders["adapter"]
    assert artifact.metadata["method"] == record["method"] and artifact.metadata["seed"] == record["seed"]
    assert fake_wandb.calls[-1] == ("finish", None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["logger.log_artifacts=true"], r"^logger\.log_artifacts: .*logger\.wandb=false"),
        (["logger=wandb", "logger.log_artifacts=maybe"], "log_artifacts"),
    ],
)
def test_log_artifacts_is_a_boolean_that_needs_wandb(compose_train, overrides, message):
    with pytest.raises((ConfigError, ConfigCompositionException), match=message):
        validate(compose_train(*overrides))
