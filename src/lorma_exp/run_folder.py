"""The run folder contract (docs/architecture.md): every path and file name inside a run folder.

Training, evaluation, tracking, summaries, reproductions and reports all find a run's files through
:class:`RunFolder`, so a file is named in one place. The module depends on nothing else of the project.

The weights folders are named by the method that trained the run (``Method.weights_name``: ``adapter``
for adapters, ``model`` for full fine-tuning): ``<name>/`` holds the weights at the end of training,
``<name>_best/`` those of the best evaluation, and ``snapshots/epoch_<k>/`` those at the end of epoch k.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_FILE = "config.yaml"
# Hydra's job log, named after the entry point (train.py -> train.log); eval.py's is eval.log.
TRAIN_LOG = "train.log"
METRICS_FILE = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
RESULTS_FILE = "results.json"
LABELS_FILE = "labels.json"
LOSS_CURVE = "loss_curve.png"
# A PEFT LoRA adapter of the final weights, for methods whose update is exactly a LoRA update.
PEFT_ADAPTER_DIR = "adapter_peft"
TOKENIZER_DIR = "tokenizer"
WANDB_ID_FILE = ".wandb_id"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last"
# While a checkpoint is replaced: the new copy is written into last.tmp, the previous one moved to last.old.
CHECKPOINT_STAGING_SUFFIX = ".tmp"
CHECKPOINT_PREVIOUS_SUFFIX = ".old"
CHECKPOINT_STATE = "state.pt"
# The process training in the folder: {"pid", "host", "started"}; removed when it ends.
LOCK_FILE = "run.lock"
# Hydra's record of the job, written once the run's checks pass (as Hydra names them).
HYDRA_DIR = ".hydra"
HYDRA_CONFIG, HYDRA_SETTINGS, HYDRA_OVERRIDES = "config.yaml", "hydra.yaml", "overrides.yaml"
SNAPSHOTS_DIR = "snapshots"
PREDICTIONS_DIR = "predictions"
EVALUATIONS_DIR = "evals"
EVALUATION_RECORD = "metrics.json"
BEST_SUFFIX = "_best"
HYPOTHESES_SUFFIX = ".hyp.txt"
PREDICTION_ROWS_SUFFIX = ".jsonl"
# The ``split`` of the metrics.jsonl eval events that score the training rows (trainer.eval_train).
TRAIN_SPLIT = "train"
# The loss of a metrics.jsonl event: the training loss of train events, the evaluation loss of eval events.
LOSS_KEY = "loss"
# The wall-clock fields of metrics.jsonl events: they differ between runs that are otherwise equal (a
# resumed and an uninterrupted run, one process and DDP), so comparisons of event logs leave them out.
TIMING_KEYS = frozenset({"time_s", "step_time_s", "tokens_per_s"})

# A strict-JSON record's non-finite numbers: set to null, their value kept here by dotted path ("nan", "inf").
NONFINITE_KEY = "nonfinite"

_SNAPSHOT_NAME = re.compile(r"epoch_(\d+)")

log = logging.getLogger(__name__)


def snapshot_name(epoch: int) -> str:
    return f"epoch_{epoch}"


def best_weights_name(weights_name: str) -> str:
    """``adapter`` -> ``adapter_best``: the weights of the best evaluation."""
    return weights_name + BEST_SUFFIX


def is_final_weights(weights: str | None) -> bool:
    """Whether an evaluation's ``weights`` names the end-of-training weights (``adapter``, ``model``),
    not the best evaluation's (``*_best``) or a snapshot (``snapshots/epoch_k``)."""
    return bool(weights) and "/" not in str(weights) and not str(weights).endswith(BEST_SUFFIX)


def prediction_files(folder: Path, split: str) -> tuple[Path, Path]:
    """A generation split's predictions in ``folder`` (the run's ``predictions/`` or an evaluation's
    folder): ``<split>.hyp.txt``, one hypothesis per line, and ``<split>.jsonl``, one row per example."""
    return folder / f"{split}{HYPOTHESES_SUFFIX}", folder / f"{split}{PREDICTION_ROWS_SUFFIX}"


def strict_json(record: Mapping[str, Any], indent: int | None = None) -> str:
    """``record`` as strict JSON: a non-finite number (NaN, ±Infinity, which strict parsers reject) becomes
    ``null``, and ``record["nonfinite"]`` maps its dotted path to its value as text (``"loss": "nan"``)."""
    flags: dict[str, str] = {}

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            flags[path] = str(value)
            return None
        if isinstance(value, Mapping):
            return {key: clean(item, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item, f"{path}.{index}") for index, item in enumerate(value)]
        return value

    cleaned = clean(record, "")
    if flags:
        cleaned[NONFINITE_KEY] = flags
    return json.dumps(cleaned, allow_nan=False, indent=indent)


def restore_nonfinite(record: dict[str, Any]) -> dict[str, Any]:
    """The record :func:`strict_json` wrote, with its non-finite numbers back in place (floats again)."""
    flags = record.pop(NONFINITE_KEY, None) or {}
    for path, text in flags.items():
        *parents, name = path.split(".")
        owner: Any = record
        for parent in parents:
            owner = owner[int(parent)] if isinstance(owner, list) else owner[parent]
        if isinstance(owner, list):
            owner[int(name)] = float(text)
        else:
            owner[name] = float(text)
    return record


def _write_json_record(path: Path, record: Mapping[str, Any]) -> None:
    """A JSON record, strict (see :func:`strict_json`) and indented for reading."""
    path.write_text(strict_json(record, indent=2) + "\n")


@dataclass(frozen=True)
class RunFolder:
    """One run's folder: where each of its files is, and how to read them."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # --- files ------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        """The fully resolved config the run was launched with."""
        return self.path / CONFIG_FILE

    @property
    def train_log(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def metrics(self) -> Path:
        """metrics.jsonl: one event per line, appended while training."""
        return self.path / METRICS_FILE

    @property
    def metrics_csv(self) -> Path:
        return self.path / METRICS_CSV

    @property
    def results(self) -> Path:
        """results.json, written once when the run finishes: its presence means "finished"."""
        return self.path / RESULTS_FILE

    @property
    def labels(self) -> Path:
        """labels.json: the class names in id order, for tasks with named classes (user files, reviews)."""
        return self.path / LABELS_FILE

    @property
    def loss_curve(self) -> Path:
        return self.path / LOSS_CURVE

    @property
    def wandb_id(self) -> Path:
        """The wandb run id, kept so that a resumed run continues the same wandb run."""
        return self.path / WANDB_ID_FILE

    # --- folders ----------------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        """Resume state; removed when the run finishes."""
        return self.path / CHECKPOINTS_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def checkpoint_staging(self) -> Path:
        """Where a new checkpoint is written before it replaces ``last``."""
        return self.checkpoints / (LAST_CHECKPOINT + CHECKPOINT_STAGING_SUFFIX)

    @property
    def checkpoint_previous(self) -> Path:
        """Where the previous checkpoint waits while a new one takes its place."""
        return self.checkpoints / (LAST_CHECKPOINT + CHECKPOINT_PREVIOUS_SUFFIX)

    @property
    def checkpoint_state(self) -> Path:
        return self.last_checkpoint / CHECKPOINT_STATE

    @property
    def lock(self) -> Path:
        """The lock file of the process training in this folder."""
        return self.path / LOCK_FILE

    @property
    def hydra_record(self) -> Path:
        """Hydra's own record of the job that started the run (``.hydra/``)."""
        return self.path / HYDRA_DIR

    @property
    def predictions(self) -> Path:
        """Generation tasks' decoded outputs of the latest evaluation during training."""
        return self.path / PREDICTIONS_DIR

    @property
    def evaluations(self) -> Path:
        return self.path / EVALUATIONS_DIR

    def evaluation(self, stamp: str) -> Path:
        """The folder of one ``eval.py`` run: its ``metrics.json``, log and predictions."""
        return self.evaluations / stamp

    def weights(self, weights_name: str) -> Path:
        """The end-of-training weights, in the folder the method names (``adapter``, ``model``)."""
        return self.path / weights_name

    def best_weights(self, weights_name: str) -> Path:
        """The weights of the best evaluation (``adapter_best``, ``model_best``)."""
        return self.path / best_weights_name(weights_name)

    @property
    def peft_adapter(self) -> Path:
        """The final weights as a PEFT LoRA adapter (``PeftModel.from_pretrained``), where that is exact."""
        return self.path / PEFT_ADAPTER_DIR

    @property
    def tokenizer(self) -> Path:
        """The run's tokenizer (``AutoTokenizer.from_pretrained``)."""
        return self.path / TOKENIZER_DIR

    def snapshot(self, epoch: int) -> Path:
        """The weights at the end of epoch ``epoch`` (``trainer.snapshot_every_epoch=true``)."""
        return self.path / SNAPSHOTS_DIR / snapshot_name(epoch)

    def snapshots(self) -> list[tuple[int, Path]]:
        """(epoch, folder) of every saved epoch snapshot, by epoch."""
        root = self.path / SNAPSHOTS_DIR
        found = []
        for folder in root.iterdir() if root.is_dir() else ():
            match = _SNAPSHOT_NAME.fullmatch(folder.name)
            if match and folder.is_dir():
                found.append((int(match.group(1)), folder))
        return sorted(found)

    def saved_weights(self, weights_name: str) -> list[str]:
        """The weights an evaluation can name (``weights=...``), as paths relative to the run folder."""
        names = [
            name for name in (weights_name, best_weights_name(weights_name)) if (self.path / name).is_dir()
        ]
        return names + [str(folder.relative_to(self.path)) for _, folder in self.snapshots()]

    # --- state ------------------------------------------------------------------------------------------
    def is_run_folder(self) -> bool:
        """Whether the folder holds a run (finished or not) rather than, say, a sweep of runs."""
        return any(path.is_file() for path in (self.results, self.config, self.metrics))

    def is_finished(self) -> bool:
        return self.results.exists()

    def has_started(self) -> bool:
        """Whether training wrote anything a new run would overwrite (events or resume state)."""
        return self.metrics.exists() or self.checkpoints.exists()

    # --- reading and writing ----------------------------------------------------------------------------
    def save_config(self, cfg: DictConfig) -> None:
        OmegaConf.save(cfg, self.config, resolve=True)

    def save_hydra_record(self, cfg: DictConfig, hydra: DictConfig, overrides: list[str]) -> None:
        """What Hydra itself writes into ``.hydra/`` (the composed config as composed, Hydra's own settings,
        the command line's overrides); the pipeline writes it once the run folder's checks have passed."""
        folder = self.hydra_record
        folder.mkdir(exist_ok=True)
        OmegaConf.save(cfg, folder / HYDRA_CONFIG)
        OmegaConf.save(OmegaConf.create({"hydra": hydra}), folder / HYDRA_SETTINGS)
        OmegaConf.save(OmegaConf.create(overrides), folder / HYDRA_OVERRIDES)

    def read_config(self) -> DictConfig:
        """The run's recorded config.yaml, as saved (FileNotFoundError when the run has none)."""
        loaded = OmegaConf.load(self.config)
        if not isinstance(loaded, DictConfig):
            raise ValueError(f"{self.config}: holds a list, not a config")
        return loaded

    def write_results(self, record: Mapping[str, Any]) -> None:
        """results.json, strict JSON (non-finite numbers as null, listed under ``nonfinite``)."""
        _write_json_record(self.results, record)

    def read_results(self) -> dict[str, Any]:
        """results.json as written, non-finite numbers restored (FileNotFoundError / json.JSONDecodeError for
        a missing or broken one)."""
        return restore_nonfinite(json.loads(self.results.read_text()))

    def read_events(self) -> list[dict[str, Any]]:
        """Every event of metrics.jsonl, in order, non-finite numbers restored; none when the run has not
        logged any. A last line that is not JSON is a write a hard kill cut short: it is dropped with a
        warning. Any other line that is not JSON is damage: ValueError naming the line."""
        if not self.metrics.exists():
            return []
        lines = self.metrics.read_text(errors="replace").splitlines()
        events = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                events.append(restore_nonfinite(json.loads(line)))
            except json.JSONDecodeError as error:
                if number == len(lines):
                    log.warning("%s:%d: dropped a half-written last line (%s)", self.metrics, number, error)
                    break
                raise ValueError(f"{self.metrics}:{number}: not a JSON object ({error})") from error
        return events

    def write_events(self, events: list[Mapping[str, Any]]) -> None:
        """Replace metrics.jsonl with ``events`` (strict JSON lines), atomically: a kill leaves the old or
        the new file, never a mix."""
        staging = self.metrics.with_name(self.metrics.name + CHECKPOINT_STAGING_SUFFIX)
        staging.write_text("".join(strict_json(event) + "\n" for event in events))
        staging.replace(self.metrics)

    def evaluation_records(self) -> list[tuple[Path, dict[str, Any]]]:
        """(folder, metrics.json) of every ``eval.py`` run of this run, oldest first."""
        return [
            (path.parent, restore_nonfinite(json.loads(path.read_text())))
            for path in sorted(self.evaluations.glob(f"*/{EVALUATION_RECORD}"))
        ]


def write_evaluation_record(folder: Path, record: Mapping[str, Any]) -> Path:
    """An ``eval.py`` run's scores, ``<folder>/metrics.json`` (docs/architecture.md), strict JSON."""
    path = folder / EVALUATION_RECORD
    _write_json_record(path, record)
    return path
