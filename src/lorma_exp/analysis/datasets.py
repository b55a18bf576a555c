"""Table 12: the statistics of each cell's dataset, computed from the data the runs train and evaluate on.

A cell's data is built exactly as its training run builds it (its composed config, the model's tokenizer,
the task family's builder), and counted: training rows, rows of each evaluation split, the number of
classes, and the token length of the training rows after truncation at ``data.max_length`` (mean,
maximum, and the share of rows that reach the limit, i.e. that may have been cut). The first evaluation
split is the paper's validation column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lorma_exp.analysis.render import RenderedTable, records_table
from lorma_exp.analysis.tables import ComparisonTable, Observation, build_table
from lorma_exp.config import Problem, TrainConfig
from lorma_exp.data import build_task_data
from lorma_exp.distributed import init_distributed
from lorma_exp.models import load_tokenizer
from lorma_exp.paper import GLUE_LABEL, TABLE12, PaperColumn, PaperRow


def dataset_statistics(settings: TrainConfig) -> dict[str, Any]:
    """The statistics of one composed cell's data (its paper cell's task names it)."""
    task = build_task_data(
        settings, load_tokenizer(settings.model, settings.task.problem), init_distributed("cpu")
    )
    lengths = np.array([len(row["input_ids"]) for row in task.train])
    first_split = next(iter(task.eval_splits))
    cell = settings.paper_cell
    return {
        "task": cell.task if cell else settings.task.name,
        "data": settings.task.name,
        "dataset": "/".join(part for part in (settings.data.dataset, settings.data.subset) if part) or None,
        "tokenizer": settings.model.name,
        "train": len(task.train),
        "validation": len(task.eval_splits[first_split]),
        "validation_split": first_split,
        "splits": {name: len(rows) for name, rows in task.eval_splits.items()},
        "classes": task.num_labels if settings.task.problem == Problem.classification else None,
        "metric": settings.task.main_metric,
        "mean_tokens": float(lengths.mean()),
        "max_tokens": int(lengths.max()),
        "max_length": settings.data.max_length,
        "at_max_length": float((lengths >= settings.data.max_length).mean()),
        "smoke": settings.smoke,
    }


def table12(statistics: Sequence[dict[str, Any]]) -> ComparisonTable:
    """Our sizes beside the paper's, one row per task; the other statistics in columns the paper lacks."""
    extra = {"classes": "classes", "mean_tokens": "mean tokens", "max_tokens": "max tokens"}
    observations = [
        Observation(record["task"], column, float(record[column]), None, record["data"])
        for record in statistics
        for column in ("train", "validation", *extra)
        if record[column] is not None
    ]
    return build_table(
        TABLE12,
        observations,
        smoke=any(record["smoke"] for record in statistics),
        new_row=lambda key: PaperRow(key, GLUE_LABEL.get(key, key), ()),
        new_column=lambda key: PaperColumn(key, extra[key], decimals=1 if key == "mean_tokens" else 0),
    )


def statistics_table(statistics: Sequence[dict[str, Any]]) -> RenderedTable:
    """Every statistic of every cell, with the data it was computed from."""
    records = [
        {**record, "splits": [f"{name}={rows}" for name, rows in record["splits"].items()]}
        for record in statistics
    ]
    columns = ["task", "dataset", "tokenizer", "train", "splits", "classes", "metric", "mean_tokens"]
    columns += ["max_tokens", "max_length", "at_max_length"]
    title = "Dataset statistics of each cell (rows as the runs read them; tokens of the training rows)"
    notes = ["at_max_length: the share of training rows whose length reaches data.max_length (may be cut)."]
    return records_table("table12_data", title, records, columns, notes)
