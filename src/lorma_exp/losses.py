"""The training objective, shared by the trainer and the evaluators that report an evaluation loss.

Both sum the loss over examples (or target tokens) and divide by the global count themselves, so a loss
split over micro-batches or ranks is the mean over all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lorma_exp.data.base import IGNORE_INDEX


def summed_loss(
    problem: str, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """The loss summed over examples (or target tokens), before division by the global count."""
    logits = logits.float()
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.float(), reduction="sum")
    if problem == "causal_lm":
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        label_smoothing=label_smoothing,
        reduction="sum",
    )


def loss_count(problem: str, labels: torch.Tensor) -> int:
    """How many terms :func:`summed_loss` adds up for these labels."""
    if problem == "causal_lm":
        return int((labels[:, 1:] != IGNORE_INDEX).sum())
    return labels.shape[0]
