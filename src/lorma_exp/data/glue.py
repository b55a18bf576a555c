"""GLUE through ``datasets`` (hub ``nyu-mll/glue``, a local copy of it, or a ``save_to_disk`` folder)."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, TrainConfig
from lorma_exp.data.base import TaskData
from lorma_exp.data.classification import build_classification_task, check_columns
from lorma_exp.data.hub import load_dataset_dict
from lorma_exp.distributed import DistEnv


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
