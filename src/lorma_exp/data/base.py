"""The contract between task families and the trainer.

A task family (GLUE, user CSV files, NLG, maths, the embedded defaults) builds a :class:`TaskData`; the
trainer only ever sees this object, so adding a task never touches the training loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from lorma_exp.config import Problem

Batch = dict[str, torch.Tensor]
IGNORE_INDEX = -100
"""The label of a position that carries no loss (prompt and padding tokens of a causal LM row)."""


def input_tokens(batch: Batch) -> int:
    """The batch's input tokens that are not padding (all of them when it has no attention mask)."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


class Evaluator(Protocol):
    """Scores a model on one evaluation split of its task.

    Called on every rank (each rank handles its shard; the evaluator gathers), it returns the same
    metrics dict on every rank. ``output_dir``, when given, is where rank 0 may write per-example
    outputs such as decoded hypotheses.
    """

    main_metric: str
    greater_is_better: bool

    def __call__(
        self,
        model: torch.nn.Module,
        split: str,
        *,
        batch_size: int,
        output_dir: Path | None = None,
    ) -> dict[str, float]: ...


@dataclass
class TaskData:
    """Everything the trainer needs from a task.

    ``eval_splits`` is ordered: the first split selects the best epoch.
    """

    problem: Problem
    train: Sequence[Mapping[str, Any]]
    eval_splits: dict[str, Sequence[Mapping[str, Any]]]
    collate: Callable[[list[Mapping[str, Any]]], Batch]
    evaluator: Evaluator
    num_labels: int = 0
    info: dict[str, Any] = field(default_factory=dict)
