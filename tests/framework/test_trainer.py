"""The training loop's arithmetic: data order, global batches, schedules and the loss normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from lorma_exp.config import Scheduler
from lorma_exp.data.base import IGNORE_INDEX
from lorma_exp.losses import loss_count, summed_loss
from lorma_exp.trainer import batch_plan, lr_lambda


def test_batch_plan_covers_every_row_once_per_epoch_in_a_seeded_order() -> None:
    plan = batch_plan(num_rows=50, global_batch=8, chunks=2, seed=3, epoch=0)
    rows = [i for batch in plan for chunk in batch for i in chunk]
    assert sorted(rows) == list(range(50))
    assert plan == batch_plan(50, 8, 2, seed=3, epoch=0)
    assert plan != batch_plan(50, 8, 2, seed=3, epoch=1)
    assert plan != batch_plan(50, 8, 2, seed=4, epoch=0)


def test_a_global_batch_is_the_same_rows_however_it_is_split() -> None:
    """1 process × 4 accumulation, 2 × 2 and 4 × 1 all see the same global batches."""
    one = batch_plan(37, global_batch=12, chunks=4, seed=0, epoch=2)
    flat = [[i for chunk in batch for i in chunk] for batch in one]
    for chunks in (1, 2, 4):
        plan = batch_plan(37, 12, chunks, seed=0, epoch=2)
        assert [[i for chunk in batch for i in chunk] for batch in plan][: len(flat)] == flat
        for batch in plan:
            sizes = [len(chunk) for chunk in batch]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_a_final_batch_too_small_for_every_chunk_is_dropped() -> None:
    plan = batch_plan(num_rows=17, global_batch=8, chunks=4, seed=0, epoch=0)
    assert len(plan) == 2  # 8 + 8 rows; the 17th row cannot feed 4 chunks
    assert len(batch_plan(num_rows=17, global_batch=8, chunks=1, seed=0, epoch=0)) == 3


@pytest.mark.parametrize("scheduler", list(Scheduler))
def test_warmup_rises_linearly_then_the_schedule_decays_as_named(scheduler) -> None:
    factor = lr_lambda(scheduler, warmup_steps=4, total_steps=20)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    end = factor(20)
    if scheduler == Scheduler.constant:
        assert end == 1.0
    else:
        assert end == pytest.approx(0.0, abs=1e-12)
    midpoint = factor(12)  # half-way through the decay
    expected = {
        Scheduler.linear: 0.5,
        Scheduler.cosine: 0.5 * (1 + math.cos(math.pi / 2)),
        Scheduler.constant: 1.0,
    }
    assert midpoint == pytest.approx(expected[scheduler])


def test_causal_lm_loss_counts_only_unmasked_next_tokens() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor(
        [[IGNORE_INDEX, IGNORE_INDEX, 3, 4, 1], [IGNORE_INDEX, 2, 2, IGNORE_INDEX, IGNORE_INDEX]]
    )
    total = summed_loss("causal_lm", logits, labels, label_smoothing=0.0)
    # token t is predicted from position t-1: the targets are labels[:, 1:]
    expected = sum(
        -torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]]
        for b in range(2)
        for t in range(1, 5)
        if labels[b, t] != IGNORE_INDEX
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss_count("causal_lm", labels) == 5


def test_label_smoothing_mixes_in_the_uniform_distribution() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    labels = torch.tensor([0])
    log_probs = torch.log_softmax(logits, -1)[0]
    expected = -(0.9 * log_probs[0] + 0.1 * log_probs.mean())
    assert summed_loss("classification", logits, labels, 0.1).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_regression_loss_is_the_summed_squared_error() -> None:
    predictions = torch.tensor([[1.0], [2.5]])
    labels = torch.tensor([0.0, 3.0])
    assert summed_loss("regression", predictions, labels, 0.0).item() == pytest.approx(1.0 + 0.25)
    assert loss_count("regression", labels) == 2
