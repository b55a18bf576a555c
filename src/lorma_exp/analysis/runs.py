"""Finding finished runs: run folders on disk (and, through ``analysis.wandb_io``, wandb runs).

A run folder (docs/architecture.md) is a directory holding ``config.yaml``, ``metrics.jsonl`` and, once the
run has finished, ``results.json``. Folders with a config or metrics but no ``results.json`` (or one whose
``status`` is not ``finished``) are unfinished: reports list them as missing and never use their numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from lorma_exp.run_folder import METRICS_FILE, RESULTS_FILE, RunFolder, is_final_weights

# results.json fields every report relies on.
REQUIRED_RESULT_FIELDS: tuple[str, ...] = ("status", "task", "model", "method", "seed", "best", "final")


class RunDataError(ValueError):
    """A run folder or wandb run whose files do not follow docs/architecture.md."""


@dataclass(frozen=True)
class Run:
    """A finished run: its ``results.json`` object and where it came from.

    ``folder`` is the run folder (None for runs read from wandb, which carry no metrics file or adapter).
    """

    source: str
    results: Mapping[str, Any]
    folder: Path | None = None

    @property
    def seed(self) -> int:
        return int(self.results["seed"])

    @property
    def smoke(self) -> bool:
        return bool(self.results.get("smoke", False))

    @property
    def adapter_params(self) -> int | None:
        params = self.results.get("trainable_params") or {}
        return int(params["adapter"]) if "adapter" in params else None

    def metrics_at(self, checkpoint: str) -> Mapping[str, float]:
        """The evaluation metrics at ``best`` or ``final`` (fractions, as computed)."""
        evaluation = self.results[checkpoint]
        if evaluation is None:
            raise RunDataError(
                f"{self.source}: {RESULTS_FILE} has no '{checkpoint}' evaluation (the run never evaluated)"
            )
        return evaluation["metrics"]

    def metric_events(self) -> list[dict[str, Any]]:
        """Every event of ``metrics.jsonl``, in file order."""
        if self.folder is None:
            raise RunDataError(
                f"{self.source}: a wandb run has no {METRICS_FILE}; analyse its run folder instead"
            )
        run = RunFolder(self.folder)
        if not run.metrics.is_file():
            raise RunDataError(f"{run.metrics}: missing; the trainer writes it while training")
        try:
            return run.read_events()
        except ValueError as error:
            raise RunDataError(str(error)) from error

    def train_loss_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, losses) of the ``train`` events, sorted by step; a resumed run's repeated steps keep
        the last value logged for them."""
        by_step: dict[int, float] = {}
        for event in self.metric_events():
            if event.get("event") == "train" and "loss" in event:
                by_step[int(event["step"])] = float(event["loss"])
        if not by_step:
            raise RunDataError(f"{self.source}: {METRICS_FILE} has no train events with a loss")
        steps = np.array(sorted(by_step), dtype=np.float64)
        losses = np.array([by_step[int(step)] for step in steps], dtype=np.float64)
        return steps, losses


@dataclass(frozen=True)
class UnfinishedRun:
    """A run folder (or wandb run) without usable results, why, and the table it was launched for (its
    config's ``paper_cell.table``; None outside reproductions or when the config cannot tell)."""

    source: str
    reason: str
    table: str | None = None


@dataclass
class RunCollection:
    finished: list[Run] = field(default_factory=list)
    unfinished: list[UnfinishedRun] = field(default_factory=list)

    def extend(self, other: RunCollection) -> None:
        self.finished.extend(other.finished)
        self.unfinished.extend(other.unfinished)


def validate_results(results: Mapping[str, Any], source: str) -> None:
    """Raise :class:`RunDataError` naming the first field a report needs that ``results`` lacks."""
    for name in REQUIRED_RESULT_FIELDS:
        if name not in results:
            raise RunDataError(f"{source}: {RESULTS_FILE} has no '{name}' field (see docs/architecture.md)")
    for checkpoint in ("best", "final"):
        evaluation = results[checkpoint]
        if evaluation is not None and (not isinstance(evaluation, Mapping) or "metrics" not in evaluation):
            raise RunDataError(
                f"{source}: {RESULTS_FILE} '{checkpoint}' must be null or an object with 'metrics'"
            )


def find_run_folders(root: Path) -> Iterator[Path]:
    """Run folders under ``root`` (``root`` itself included), in sorted order.

    Hidden directories (Hydra's ``.hydra/``) are skipped, and a run folder's own subfolders (adapter,
    checkpoints, snapshots) are not searched.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"--runs {root}: not a directory")
    for current, subdirectories, _ in os.walk(root):
        path = Path(current)
        if RunFolder(path).is_run_folder():
            subdirectories.clear()
            yield path
        else:
            subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))


def launched_for(config: Mapping[str, Any] | None) -> str | None:
    """The table a run was launched for, from its resolved config (``paper_cell.table``)."""
    paper_cell = (config or {}).get("paper_cell") if isinstance(config, Mapping) else None
    return paper_cell.get("table") if isinstance(paper_cell, Mapping) else None


def _config_table(run: RunFolder) -> str | None:
    if not run.config.is_file():
        return None
    return launched_for(OmegaConf.to_container(run.read_config()))


def load_run_folder(folder: Path) -> Run | UnfinishedRun:
    run = RunFolder(folder)
    if not run.results.is_file():
        return UnfinishedRun(str(folder), f"no {RESULTS_FILE}", _config_table(run))
    try:
        results = run.read_results()
    except json.JSONDecodeError as error:
        raise RunDataError(f"{run.results}: not valid JSON ({error})") from error
    validate_results(results, str(folder))
    if results["status"] != "finished":
        return UnfinishedRun(str(folder), f"status is {results['status']!r}", _config_table(run))
    return Run(source=str(folder), results=results, folder=folder)


def evaluation_runs(run: Run) -> list[Run]:
    """A finished run scored on other tasks by ``eval.py task=<name>`` (its ``evals/*/metrics.json``).

    Each such task becomes a run of its own, for tables whose columns are benchmarks the model never
    trained on (Table 4: trained on MetaMathQA, scored on GSM8K and MATH): the training run's fields, with
    the task (and ``paper_cell.task``: the evaluation's ``paper_task`` when a stand-in task was scored)
    replaced, and the first split's metrics as the ``final`` evaluation. Only the end-of-training weights
    count, and of repeated evaluations of one task the latest.
    """
    if run.folder is None:
        return []
    own_cell_task = (run.results.get("paper_cell") or {}).get("task", run.results["task"])
    latest: dict[str, dict[str, Any]] = {}
    for folder, record in RunFolder(run.folder).evaluation_records():
        cell_task = record.get("paper_task") or record.get("task")
        if (
            is_final_weights(record.get("weights"))
            and cell_task not in (None, own_cell_task)
            and record.get("splits")
        ):
            latest[cell_task] = {**record, "source": str(folder)}
    derived = []
    for paper_task, record in sorted(latest.items()):
        metrics = next(iter(record["splits"].values()))
        final = {**(run.results["final"] or {}), "metrics": metrics}
        paper_cell = run.results.get("paper_cell")
        results = {
            **run.results,
            "task": record["task"],
            "best": None,
            "final": final,
            "paper_cell": {**paper_cell, "task": paper_task} if paper_cell else None,
        }
        derived.append(Run(source=record["source"], results=results, folder=run.folder))
    return derived


def collect_runs(roots: Iterable[Path]) -> RunCollection:
    """Every run folder found recursively under ``roots``, and the evaluations of each on other tasks."""
    collection = RunCollection()
    for root in roots:
        for folder in find_run_folders(Path(root)):
            loaded = load_run_folder(folder)
            if isinstance(loaded, Run):
                collection.finished.append(loaded)
                collection.finished.extend(evaluation_runs(loaded))
            else:
                collection.unfinished.append(loaded)
    return collection


def normalise_field(value: Any) -> Any:
    """A run field in the form ``paper.py``'s ``match`` entries use (target lists become sorted tuples)."""
    if isinstance(value, list | tuple):
        return tuple(sorted(str(item) for item in value))
    return value


def cell_fields(run: Run) -> dict[str, Any]:
    """The fields that place a run in a paper table.

    ``task``, ``model`` and ``method`` come from ``paper_cell`` when present (a smoke run stands for the
    real cell while training the embedded model), else from the run; ``r``, ``targets``, ``mode`` and
    ``inflation`` always come from the run, as the tables that vary them are about what the run did.
    """
    results = run.results
    paper_cell = results.get("paper_cell") or {}
    return {
        "table": paper_cell.get("table"),
        "task": paper_cell.get("task", results["task"]),
        "model": paper_cell.get("model", results["model"]),
        "method": paper_cell.get("method", results["method"]),
        "r": results.get("r"),
        "targets": normalise_field(results.get("targets", ())),
        "mode": results.get("mode"),
        "inflation": results.get("inflation"),
    }


def runs_of_table(runs: Sequence[Run], table_name: str) -> list[Run]:
    """The runs launched for ``table_name`` (their ``paper_cell.table``)."""
    return [run for run in runs if (run.results.get("paper_cell") or {}).get("table") == table_name]


def unfinished_of_table(runs: Sequence[UnfinishedRun], table_name: str) -> list[UnfinishedRun]:
    """Unfinished runs launched for ``table_name``, and those whose config does not say which table."""
    return [run for run in runs if run.table in (table_name, None)]
