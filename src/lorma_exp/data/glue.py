"""GLUE through ``datasets`` (hub ``nyu-mll/glue``, a local copy of it, or a ``save_to_disk`` folder)."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, TrainConfig
from lorma_exp.data.base import TaskData
from lorma_exp.data.classification import build_classification_task, check_columns
from lorma_exp.distributed import DistEnv


class DataLoadError(RuntimeError):
    """A dataset that cannot be loaded; the message says what was tried and the fix."""


def load_dataset_dict(name_or_path: str, subset: str | None) -> datasets.DatasetDict:
    """A hub dataset, a local copy of a hub repository, or a folder written by ``save_to_disk``."""
    local = Path(name_or_path)
    try:
        if (local / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(local))
            return loaded[subset] if subset and subset in loaded else loaded
        return datasets.load_dataset(name_or_path, subset)
    except (OSError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        offline = (
            " HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set, so the hub was not asked."
            if os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE")
            else ""
        )
        where = "a local folder (exists but unreadable)" if local.exists() else "the Hugging Face hub"
        raise DataLoadError(
            f"data.dataset={name_or_path!r} (subset {subset!r}) could not be loaded from {where}.{offline} "
            f"Cause: {error}. Fix: connect to the hub, or set data.dataset to a local copy "
            "(a folder from `datasets.DatasetDict.save_to_disk`, or a clone of the hub repository)."
        ) from error


def build(settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    data = settings.data
    if not data.dataset:
        raise ConfigError("data.dataset: not set for a GLUE task. Use data.dataset=nyu-mll/glue.")
    loaded = load_dataset_dict(data.dataset, data.subset)
    wanted = [data.train_split, *data.eval_splits]
    missing = [name for name in wanted if name not in loaded]
    if missing:
        raise ConfigError(
            f"data.eval_splits / data.train_split: {missing} not in {data.dataset} "
            f"(splits: {sorted(loaded)}). Pick from the available splits."
        )
    check_columns(loaded[data.train_split], data, f"{data.dataset}/{data.subset}")
    splits = {"train": loaded[data.train_split], **{name: loaded[name] for name in data.eval_splits}}
    return build_classification_task(splits, tokenizer, settings.task, data, env)
