"""Run logging: metrics.jsonl (and metrics.csv) in the run folder always, wandb when asked; train.log.

Only rank 0 writes. Events are strict JSON (a non-finite loss is written as null and flagged, see
``run_folder.strict_json``). wandb runs online when this machine is logged in and offline otherwise (the run
folder can be synced later with ``wandb sync``), so ``logger=wandb`` never stops a run for want of a key.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import netrc
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lorma_exp.config import WandbConfig
from lorma_exp.run_folder import RunFolder, strict_json

log = logging.getLogger(__name__)

RESULTS_SUMMARY_KEY = "results"
# Summary keys of the trainable parameter counts: model/params/adapter, .../head, .../total, ...
PARAMS_PREFIX = "model/params"
# What a finished run logs besides its metrics: results.json as a table, and loss_curve.png.
RESULTS_TABLE_KEY = "results_table"
LOSS_CURVE_KEY = "loss_curve"
# logger.log_artifacts: the final weights as an artifact named model-<wandb run id>, of wandb's type for models.
MODEL_ARTIFACT_PREFIX = "model-"
MODEL_ARTIFACT_TYPE = "model"
TAG_FIELDS: tuple[str, ...] = ("task", "model", "method", "r", "alpha", "mode", "seed")
SMOKE_GROUP_SUFFIX = "-smoke"


def wandb_group_and_tags(fields: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(group, tags) for a run described by results.json-style ``fields`` (the trainer knows them all
    before training starts: task, model, method, r, alpha, mode, seed, paper_cell, smoke)."""
    smoke = bool(fields.get("smoke", False))
    reproduction = (fields.get("paper_cell") or {}).get("table")
    group = None if reproduction is None else f"{reproduction}{SMOKE_GROUP_SUFFIX if smoke else ''}"
    tags = [f"{name}:{_tag_value(fields[name])}" for name in TAG_FIELDS if fields.get(name) is not None]
    if smoke:
        tags.append("smoke")
    return group, tags


def _tag_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def publish_results(run: Any, results: Mapping[str, Any]) -> None:
    """Store a finished run's results.json object in the wandb run summary, where reports find it."""
    run.summary[RESULTS_SUMMARY_KEY] = dict(results)


def wandb_logged_in() -> bool:
    """True when an API key is in the environment or in ~/.netrc for the wandb host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode(requested: str) -> str:
    """``auto`` becomes online when logged in, offline otherwise; ``WANDB_MODE`` in the environment wins."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if requested != "auto":
        return requested
    return "online" if wandb_logged_in() else "offline"


@dataclass
class Throughput:
    """The optimizer steps since the last train event: their wall time and the non-padding input tokens
    they processed on every process, which that event reports as ``step_time_s`` and ``tokens_per_s``.

    Evaluations and checkpoints between steps are not counted. It is not checkpointed: after a resume,
    the first event measures the steps since the restart.
    """

    steps: int = 0
    seconds: float = 0.0
    tokens: float = 0.0

    def add(self, seconds: float, tokens: float) -> None:
        self.steps += 1
        self.seconds += seconds
        self.tokens += tokens

    def take(self) -> dict[str, float]:
        """The event fields of the steps so far (none when no step was timed), and start over."""
        fields = (
            {"step_time_s": self.seconds / self.steps, "tokens_per_s": self.tokens / max(self.seconds, 1e-9)}
            if self.steps
            else {}
        )
        self.steps, self.seconds, self.tokens = 0, 0.0, 0.0
        return fields


class RunLogger:
    """Appends events to metrics.jsonl and forwards them to wandb (rank 0 only; other ranks do nothing)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.run = RunFolder(run_dir)
        self.enabled = enabled
        self.wandb_run: Any = None

    def start_wandb(
        self,
        settings: WandbConfig,
        config: dict[str, Any],
        name: str,
        group: str,
        tags: list[str],
        params: Mapping[str, int] | None = None,
        best_metric: tuple[str, bool] | None = None,
    ) -> None:
        """Open the wandb run (rank 0); its files go under the run folder.

        ``params`` (trainable parameter counts) go into the summary as ``model/params/<kind>``;
        ``best_metric`` (logged name, greater is better) gets its best value as its summary, as the
        training loss gets its lowest.
        """
        if not self.enabled:
            return
        import wandb

        mode = wandb_mode(settings.mode)
        self.wandb_run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            group=settings.group or group,
            tags=[*tags, *settings.tags],
            name=name,
            config=config,
            dir=str(self.run.path),
            mode=mode,
            resume="allow",
            id=self._wandb_id(),
        )
        for kind, count in (params or {}).items():
            self.wandb_run.summary[f"{PARAMS_PREFIX}/{kind}"] = count
        self.wandb_run.define_metric("train/loss", summary="min")
        if best_metric is not None:
            metric, greater_is_better = best_metric
            self.wandb_run.define_metric(metric, summary="max" if greater_is_better else "min")
        log.info("wandb run %s (%s mode)", self.wandb_run.id, mode)

    def _wandb_id(self) -> str:
        """One wandb id per run folder, so a resumed run continues the same wandb run."""
        path = self.run.wandb_id
        if path.exists():
            return path.read_text().strip()
        run_id = secrets.token_hex(4)
        path.write_text(run_id)
        return run_id

    def log(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.run.metrics.open("a") as handle:
            handle.write(strict_json(event) + "\n")
        if self.wandb_run is not None:
            prefix = f"eval/{event.get('split', '')}" if event["event"] == "eval" else event["event"]
            values = {
                f"{prefix}/{key}": value
                for key, value in event.items()
                if key not in ("event", "step", "split") and isinstance(value, (int, float))
            }
            self.wandb_run.log(values, step=event["step"])

    def truncate_after(self, step: int | None) -> None:
        """Drop the events a resumed run logs again: those after its checkpoint's ``step`` (an interrupted
        run logged them after its last checkpoint), or all of them when it starts over (``None``)."""
        if not self.enabled or not self.run.metrics.exists():
            return
        kept = [] if step is None else [event for event in self.run.read_events() if event["step"] <= step]
        self.run.write_events(kept)

    def write_csv(self) -> Path | None:
        """metrics.csv: the same events as metrics.jsonl, one column per key."""
        if not self.enabled:
            return None
        events = self.run.read_events()
        columns = list(dict.fromkeys(key for event in events for key in event))
        path = self.run.metrics_csv
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(events)
        return path

    def finish(self, results: dict[str, Any], weights: Sequence[Path] = ()) -> None:
        """Close the wandb run with results.json in its summary, where reports read it back, and as a
        table (one row per field), with the loss curve figure; the ``weights`` folders, when given,
        become one artifact of type ``model`` (each folder a subfolder of it)."""
        if self.wandb_run is not None:
            import wandb

            publish_results(self.wandb_run, results)
            rows = [[key, json.dumps(value)] for key, value in results.items()]
            media: dict[str, Any] = {RESULTS_TABLE_KEY: wandb.Table(columns=["field", "value"], data=rows)}
            if self.run.loss_curve.is_file():
                media[LOSS_CURVE_KEY] = wandb.Image(str(self.run.loss_curve))
            self.wandb_run.log(media)
            if weights:
                artifact = wandb.Artifact(
                    f"{MODEL_ARTIFACT_PREFIX}{self.wandb_run.id}",
                    type=MODEL_ARTIFACT_TYPE,
                    metadata={name: results.get(name) for name in TAG_FIELDS},
                )
                for folder in weights:
                    artifact.add_dir(str(folder), name=folder.name)
                self.wandb_run.log_artifact(artifact)
            self.wandb_run.finish()
            self.wandb_run = None


class RunLog(logging.Handler):
    """Copies this process's log records into the run's train.log, once :meth:`open` says every check on
    the run has passed; until then it holds them in memory (a refused run leaves the folder as it was).

    Hydra's own log file is turned off (conf/hydra/job_logging/run_folder.yaml); the file takes the format
    of the console handler Hydra set up, when there is one. A resumed run appends to its train.log.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._held: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None
        console = next(
            (h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler and h.formatter),
            None,
        )
        if console is not None:
            self.setFormatter(console.formatter)

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:
            self._held.append(record)
        else:
            self._file.emit(record)

    def open(self) -> None:
        """Write the records held so far to train.log, and every later one as it comes."""
        if self._file is not None:
            return
        self._file = logging.FileHandler(self.path)
        self._file.setFormatter(self.formatter)
        for record in self._held:
            self._file.emit(record)
        self._held.clear()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


@contextlib.contextmanager
def run_log(path: Path, enabled: bool) -> Iterator[RunLog | None]:
    """A :class:`RunLog` on the root logger while the block runs (None where ``enabled`` is false)."""
    if not enabled:
        yield None
        return
    handler = RunLog(path)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()
