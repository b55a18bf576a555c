"""Task families: raw rows -> tokenised datasets, a collate function and an evaluator.

Each family module has a ``build(settings, tokenizer, env) -> TaskData``; ``task.family`` picks one. A family
also says which metric suite scores each problem type it supports, so a task's metric names are checked
at start-up, before any data is read (:func:`check_task`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, Problem, TaskConfig, TrainConfig
from lorma_exp.data.base import TaskData
from lorma_exp.distributed import DistEnv
from lorma_exp.metrics.suites import (
    CLASSIFICATION,
    E2E,
    MATHS,
    REGRESSION,
    WEBNLG,
    MetricSuite,
    check_task_metrics,
)
from lorma_exp.run_folder import RunFolder

FamilyBuilder = Callable[[TrainConfig, PreTrainedTokenizerBase, DistEnv], TaskData]


@dataclass(frozen=True)
class TaskFamily:
    """Where a family's builder lives, and the metric suite of each problem type it handles."""

    builder: str
    """``module:function``; modules import lazily (some need heavy or optional dependencies)."""
    suites: Mapping[Problem, MetricSuite]


SENTENCE_TASK = {Problem.classification: CLASSIFICATION, Problem.regression: REGRESSION}

FAMILIES: Mapping[str, TaskFamily] = {
    "glue": TaskFamily("lorma_exp.data.glue:build", SENTENCE_TASK),
    "text_classification": TaskFamily("lorma_exp.data.text_classification:build", SENTENCE_TASK),
    "embedded_reviews": TaskFamily("lorma_exp.data.reviews:build", {Problem.classification: CLASSIFICATION}),
    "e2e": TaskFamily("lorma_exp.data.nlg:build_e2e", {Problem.causal_lm: E2E}),
    "webnlg": TaskFamily("lorma_exp.data.nlg:build_webnlg", {Problem.causal_lm: WEBNLG}),
    "dart": TaskFamily("lorma_exp.data.nlg:build_dart", {Problem.causal_lm: WEBNLG}),
    "embedded_restaurants": TaskFamily("lorma_exp.data.restaurants:build", {Problem.causal_lm: E2E}),
    "metamathqa": TaskFamily("lorma_exp.data.maths:build_metamathqa", {Problem.causal_lm: MATHS}),
    "gsm8k": TaskFamily("lorma_exp.data.maths:build_gsm8k", {Problem.causal_lm: MATHS}),
    "competition_math": TaskFamily("lorma_exp.data.maths:build_competition_math", {Problem.causal_lm: MATHS}),
    "gsm_symbolic": TaskFamily("lorma_exp.data.maths:build_gsm_symbolic", {Problem.causal_lm: MATHS}),
}


def metric_suite(task: TaskConfig) -> MetricSuite:
    """The suite that scores ``task``: its family's for ``task.problem`` (a clear error if none)."""
    family = FAMILIES.get(task.family)
    if family is None:
        raise ConfigError(f"task.family: unknown family {task.family!r}. Known: {sorted(FAMILIES)}.")
    suite = family.suites.get(task.problem)
    if suite is None:
        raise ConfigError(
            f"task.problem: the {task.family} family handles {[str(p) for p in family.suites]}, not "
            f"{task.problem}. Set task.problem to one of those."
        )
    return suite


def check_task(task: TaskConfig) -> FamilyBuilder:
    """The builder of ``task.family``, once the family, ``task.problem`` and ``task.metrics`` fit together.

    Cheap (no data read, no scorer imported), so the entry points run it before loading anything.
    """
    check_task_metrics(metric_suite(task), task.metrics)
    module_name, function_name = FAMILIES[task.family].builder.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def build_task_data(settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    """The TaskData of the configured task."""
    return check_task(settings.task)(settings, tokenizer, env)


def save_label_names(task: TaskData, run: RunFolder) -> None:
    """Writes the run's ``labels.json`` for a task with named classes (user files, the reviews task), so
    that a re-evaluation (``eval.py``) scores with the training ids."""
    names = task.info.get("labels")
    if names is not None:
        run.labels.write_text(json.dumps(list(names)) + "\n", encoding="utf-8")


def restore_label_names(settings: TrainConfig, run: RunFolder) -> None:
    """Sets ``data.labels`` from the run's ``labels.json`` (if it has one and no labels were given)."""
    path = run.labels
    if path.is_file() and settings.data.labels is None:
        settings.data.labels = json.loads(path.read_text(encoding="utf-8"))
