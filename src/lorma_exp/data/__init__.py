"""Task families: raw rows -> tokenised datasets, a collate function and an evaluator.

Each family module has a ``build(settings, tokenizer, env) -> TaskData``; ``task.family`` picks one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, TrainConfig
from lorma_exp.data.base import TaskData
from lorma_exp.distributed import DistEnv

FamilyBuilder = Callable[[TrainConfig, PreTrainedTokenizerBase, DistEnv], TaskData]

FAMILIES = {
    "glue": "lorma_exp.data.glue:build",
    "text_classification": "lorma_exp.data.text_classification:build",
    "embedded_reviews": "lorma_exp.data.embedded:build_reviews",
    "e2e": "lorma_exp.data.nlg:build_e2e",
    "webnlg": "lorma_exp.data.nlg:build_webnlg",
    "dart": "lorma_exp.data.nlg:build_dart",
    "embedded_restaurants": "lorma_exp.data.restaurants:build",
    "metamathqa": "lorma_exp.data.maths:build_metamathqa",
    "gsm8k": "lorma_exp.data.maths:build_gsm8k",
    "competition_math": "lorma_exp.data.maths:build_competition_math",
    "gsm_symbolic": "lorma_exp.data.maths:build_gsm_symbolic",
}


def family_builder(family: str) -> FamilyBuilder:
    """The builder of a task family (modules import lazily: some need heavy or optional dependencies)."""
    target = FAMILIES.get(family)
    if target is None:
        raise ConfigError(f"task.family: unknown family {family!r}. Known: {sorted(FAMILIES)}.")
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def build_task_data(settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    """The TaskData of the configured task."""
    return family_builder(settings.task.family)(settings, tokenizer, env)
