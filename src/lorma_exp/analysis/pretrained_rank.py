"""The paper's premise that pretrained weights are (almost) full rank, checked on every adapted matrix.

LoRMA's multiplicative update (I + s·BA)·W can reach the updates an additive one reaches only where W is
invertible (or nearly: full rank); the paper checks that the pretrained weights it adapts have a numerical
rank of at least ``paper.FULL_RANK_FRACTION`` (99 %) of full. For each cell, the backbone its runs start
from is loaded and each matrix its ``method.targets`` select is read as the adapter library sees it
(``(d_out, d_in)``; a slice of a fused layer, as GPT-2's q and v of ``c_attn``, on its own). Its numerical
rank is counted as in :mod:`lorma_exp.analysis.rank`, in float64 with numpy's default tolerance
``σ_max · max(m, n) · eps`` taken at float32's eps whatever the stored dtype: the weights are exact values,
and bfloat16's eps (2⁻⁷) would put that threshold above σ_max for a wide matrix and call every matrix
rank 0. The fraction is rank / min(d_out, d_in).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from lorma_exp.adapters import default_modules_to_save
from lorma_exp.adapters.base_layers import weight_matrix
from lorma_exp.adapters.targets import resolve_targets
from lorma_exp.analysis.rank import numerical_rank
from lorma_exp.analysis.render import RenderedTable, records_table
from lorma_exp.config import TrainConfig
from lorma_exp.models import load_backbone
from lorma_exp.paper import FULL_RANK_FRACTION

RANK_PRECISION = torch.float32


def adapted_matrices(
    model: torch.nn.Module, targets: Sequence[str] | str
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, weight as (d_out, d_in)) of every matrix ``targets`` select, fused slices one by one."""
    plan = resolve_targets(
        model, targets if isinstance(targets, str) else tuple(targets), default_modules_to_save(model)
    )
    for name, slices in plan.items():
        weight = weight_matrix(model.get_submodule(name)).detach()
        if slices is None:
            yield name, weight
        else:
            for output in slices:
                yield f"{name}[{output.name}]", weight[output.start : output.stop]


def pretrained_rank_records(settings: TrainConfig) -> list[dict[str, Any]]:
    """One record per adapted matrix of the cell's backbone: its shape, numerical rank and rank fraction."""
    model = load_backbone(settings.model, settings.task.problem, settings.task.num_labels)
    records = []
    for name, weight in adapted_matrices(model, settings.method.targets):
        rank = numerical_rank(weight.to(torch.float64), precision=RANK_PRECISION)
        smaller = min(weight.shape)
        records.append(
            {
                "model": settings.paper_cell.model if settings.paper_cell else settings.model.name,
                "backbone": settings.model.name,
                "matrix": name,
                "rows": weight.shape[0],
                "columns": weight.shape[1],
                "stored_dtype": str(weight.dtype).removeprefix("torch."),
                "rank": rank,
                "fraction": rank / smaller,
                "full_rank": rank / smaller >= FULL_RANK_FRACTION,
            }
        )
    return records


def full_rank_tables(records: Sequence[dict[str, Any]], smoke: bool) -> list[RenderedTable]:
    """Per backbone: how many adapted matrices, the lowest and mean rank fraction, and whether every one
    reaches the paper's fraction; then every matrix."""
    by_backbone: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_backbone[(record["model"], record["backbone"])].append(record)
    summary = []
    for (model, backbone), members in by_backbone.items():
        fractions = [member["fraction"] for member in members]
        lowest = min(members, key=lambda member: member["fraction"])
        summary.append(
            {
                "model": model,
                "backbone": backbone,
                "matrices": len(members),
                "lowest_fraction": lowest["fraction"],
                "lowest_matrix": lowest["matrix"],
                "mean_fraction": sum(fractions) / len(fractions),
                "below": sum(not member["full_rank"] for member in members),
                "holds": all(member["full_rank"] for member in members),
            }
        )
    threshold = f"{FULL_RANK_FRACTION:.0%}"
    title = f"Pretrained weights ≥ {threshold} of full rank: numerical rank / min(d_out, d_in) of each adapted matrix"
    if smoke:
        title = f"SMOKE — embedded backbones — {title}"
    notes = [
        "Numerical rank in float64 with tolerance σ_max·max(m, n)·eps(float32) (the stored weights as exact "
        "values); below: matrices under the paper's fraction.",
    ]
    columns = ["model", "backbone", "matrices", "lowest_fraction", "lowest_matrix", "mean_fraction", "below"]
    matrix_columns = ["model", "matrix", "rows", "columns", "stored_dtype", "rank", "fraction", "full_rank"]
    return [
        records_table("fullrank", title, summary, [*columns, "holds"], notes),
        records_table(
            "fullrank_matrices",
            "Numerical rank of every adapted pretrained matrix",
            list(records),
            matrix_columns,
        ),
    ]
