"""Sentence(-pair) classification and regression, shared by GLUE, user files and the embedded task.

Rows with one or two text fields and a label become token ids; evaluation runs the model over a split
(sharded over ranks, gathered back in order) and scores it with :mod:`lorma_exp.metrics.glue`, with the
training objective's loss (without label smoothing) as the evaluation loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, DataConfig, Problem, TaskConfig
from lorma_exp.data.base import Batch, TaskData
from lorma_exp.distributed import DistEnv, all_gather_objects
from lorma_exp.losses import summed_loss
from lorma_exp.metrics.glue import compute_metrics
from lorma_exp.run_folder import LOSS_KEY, TRAIN_SPLIT

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def check_columns(dataset: datasets.Dataset, data: DataConfig, where: str) -> None:
    """Fail with the field name when the configured text or label columns are not in the data."""
    columns = set(dataset.column_names)
    for name in data.text_fields:
        if name not in columns:
            raise ConfigError(
                f"data.text_fields: column {name!r} is not in {where} (columns: {sorted(columns)}). "
                "Set data.text_fields to the text column(s)."
            )
    if data.label_field not in columns:
        raise ConfigError(
            f"data.label_field: column {data.label_field!r} is not in {where} (columns: {sorted(columns)}). "
            "Set data.label_field to the label column."
        )
    if not 1 <= len(data.text_fields) <= 2:
        raise ConfigError(
            f"data.text_fields: give one or two text columns (a sentence or a pair), got {data.text_fields}."
        )


def encode(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    data: DataConfig,
    problem: Problem,
    label_to_id: Mapping[Any, int] | None = None,
) -> datasets.Dataset:
    """Tokenise the text field(s) and turn labels into ids (or floats for regression)."""
    label_field = data.label_field

    def encode_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        texts = [batch[name] for name in data.text_fields]
        encoded = tokenizer(*texts, truncation=True, max_length=data.max_length)
        labels = batch[label_field]
        if problem == Problem.regression:
            encoded["labels"] = [float(label) for label in labels]
        elif label_to_id is not None:
            encoded["labels"] = [label_to_id[label] for label in labels]
        else:
            encoded["labels"] = [int(label) for label in labels]
        return dict(encoded)

    return dataset.map(
        encode_batch,
        batched=True,
        remove_columns=dataset.column_names,
        desc="Tokenising",
        load_from_cache_file=True,
    )


def subsample(dataset: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """A reproducible random subset of ``limit`` rows (all rows when ``limit`` is None or larger)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


class PaddingCollator:
    """Pads a list of encoded rows to the longest row of the batch."""

    def __init__(self, pad_token_id: int, problem: Problem) -> None:
        self.pad_token_id = pad_token_id
        self.label_dtype = torch.float32 if problem == Problem.regression else torch.long

    def __call__(self, rows: list[Mapping[str, Any]]) -> Batch:
        length = max(len(row["input_ids"]) for row in rows)
        batch: Batch = {}
        for key in MODEL_INPUTS:
            if key not in rows[0]:
                continue
            pad = self.pad_token_id if key == "input_ids" else 0
            batch[key] = torch.tensor([list(row[key]) + [pad] * (length - len(row[key])) for row in rows])
        batch["labels"] = torch.tensor([row["labels"] for row in rows], dtype=self.label_dtype)
        return batch


class ClassificationEvaluator:
    """Scores a classifier (or regressor) on a split with the task's metrics."""

    def __init__(
        self,
        splits: Mapping[str, Sequence[Mapping[str, Any]]],
        collate: PaddingCollator,
        task: TaskConfig,
        env: DistEnv,
    ) -> None:
        self.splits = splits
        self.collate = collate
        self.problem = task.problem
        self.metric_names = list(task.metrics)
        self.main_metric = task.main_metric
        self.greater_is_better = task.greater_is_better
        self.env = env

    @torch.no_grad()
    def __call__(
        self, model: torch.nn.Module, split: str, *, batch_size: int, output_dir: Path | None = None
    ) -> dict[str, float]:
        dataset = self.splits[split]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        indices = list(range(self.env.rank, len(dataset), self.env.world_size))
        # A sharded (FSDP) model's forward pass is collective: every rank runs as many as rank 0, which
        # has the most rows; a rank out of rows runs one on row 0 and keeps no prediction.
        lockstep = isinstance(model, FSDPModule)
        rows = len(range(0, len(dataset), self.env.world_size)) if lockstep else len(indices)
        predictions: list[tuple[int, float]] = []
        loss_sums: list[float] = []
        for start in range(0, rows, batch_size):
            chunk = indices[start : start + batch_size]
            batch = self.collate([dataset[i] for i in chunk or [0]])
            labels = batch.pop("labels")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
            if not chunk:
                continue
            values = logits.squeeze(-1) if self.problem == Problem.regression else logits.argmax(-1)
            predictions.extend(zip(chunk, values.cpu().tolist(), strict=True))
            loss_sums.append(summed_loss(self.problem, logits.cpu(), labels, label_smoothing=0.0).item())
        model.train(was_training)
        shards = all_gather_objects((predictions, loss_sums), self.env)
        merged = sorted(pair for shard, _ in shards for pair in shard)
        predicted = np.array([value for _, value in merged])
        labels = np.array([dataset[i]["labels"] for i, _ in merged])
        scores = compute_metrics(self.metric_names, predicted, labels)
        # Every rank's batch sums over the number of examples of the whole split: the mean over all of them.
        scores[LOSS_KEY] = math.fsum(value for _, sums in shards for value in sums) / max(len(merged), 1)
        return scores


def build_classification_task(
    splits: Mapping[str, datasets.Dataset],
    tokenizer: PreTrainedTokenizerBase,
    task: TaskConfig,
    data: DataConfig,
    env: DistEnv,
    label_to_id: Mapping[Any, int] | None = None,
) -> TaskData:
    """Encode raw splits (``train`` plus ``data.eval_splits``) into the trainer's TaskData."""
    encoded = {
        name: encode(
            subsample(split, data.limit if name == "train" else data.eval_limit, data.sample_seed),
            tokenizer,
            data,
            task.problem,
            label_to_id,
        )
        for name, split in splits.items()
    }
    collate = PaddingCollator(tokenizer.pad_token_id, task.problem)
    eval_splits = {name: encoded[name] for name in data.eval_splits}
    # The evaluator also scores the training rows, under TRAIN_SPLIT, when the trainer asks (eval_train).
    scored = {**eval_splits, TRAIN_SPLIT: encoded["train"]}
    return TaskData(
        problem=task.problem,
        train=encoded["train"],
        eval_splits=eval_splits,
        collate=collate,
        evaluator=ClassificationEvaluator(scored, collate, task, env),
        num_labels=task.num_labels,
        info={"train_rows": len(encoded["train"]), **{f"{k}_rows": len(v) for k, v in eval_splits.items()}},
    )
