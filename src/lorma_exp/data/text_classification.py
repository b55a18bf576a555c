"""The user's own CSV / TSV / JSON Lines files as a classification or regression task.

Files are read by :mod:`lorma_exp.data.files`, so that every fault is one line naming the field, the file,
the line and the column, before the model loads. Labels: integers are class ids (``0 .. task.num_labels-1``);
other labels are names, given ids in sorted order unless ``data.labels`` lists them in id order. The
names, in id order, become the run folder's ``labels.json``, which ``eval.py`` reads back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, DataConfig, Problem, TaskConfig, TrainConfig
from lorma_exp.data.base import TaskData
from lorma_exp.data.classification import build_classification_task
from lorma_exp.data.files import DataFile, read_rows
from lorma_exp.data.hub import DataLoadError
from lorma_exp.distributed import DistEnv

_INTEGER = re.compile(r"[+-]?\d+")


def _files(data: DataConfig) -> dict[str, DataFile]:
    """Every given file, read, with the used columns checked in each."""
    if not 1 <= len(data.text_fields) <= 2:
        raise ConfigError(
            f"data.text_fields: give one or two text columns (a sentence or a pair), got {data.text_fields}."
        )
    named = {
        "train": ("data.train_file", data.train_file),
        "validation": ("data.validation_file", data.validation_file),
    }
    if data.test_file:
        named["test"] = ("data.test_file", data.test_file)
    for name in data.eval_splits:
        if name not in named:
            raise ConfigError(
                f"data.eval_splits: {name!r} is not one of the given files' splits {sorted(named)}."
            )
    used = [(column, "data.text_fields") for column in data.text_fields] + [
        (data.label_field, "data.label_field")
    ]
    files = {}
    for split, (field, path) in named.items():
        files[split] = read_rows(path, field)
        files[split].require_columns(used)
    return files


def _label_text(value: Any) -> str:
    """A label as written: JSON numbers and strings alike (``1`` and ``"1"`` are the same class)."""
    return str(value).strip()


def _regression_targets(file: DataFile, column: str) -> list[float]:
    targets = []
    for row, value in zip(file.rows, file.column(column, "data.label_field"), strict=True):
        try:
            target = float(value)
        except (TypeError, ValueError):
            target = math.nan
        if not math.isfinite(target):
            raise DataLoadError(
                f"{file.where(row, column)} is {value!r}, not a finite number: a regression task needs numeric labels."
            )
        targets.append(target)
    return targets


def label_names(files: dict[str, DataFile], data: DataConfig, task: TaskConfig) -> list[str]:
    """The class names in id order: ``data.labels``, else ``0 .. num_labels-1`` for integer labels, else
    the training file's distinct labels sorted. Every label of every file must be one of them."""
    labels = {
        split: [_label_text(v) for v in file.column(data.label_field, "data.label_field")]
        for split, file in files.items()
    }
    if data.labels:
        names = [str(name) for name in data.labels]
        if len(names) != task.num_labels:
            raise ConfigError(
                f"data.labels: lists {len(names)} classes but task.num_labels={task.num_labels}. Make them agree."
            )
    elif all(_INTEGER.fullmatch(label) for values in labels.values() for label in values):
        names = [str(index) for index in range(task.num_labels)]
    else:
        names = sorted(set(labels["train"]))
        if len(names) != task.num_labels:
            raise ConfigError(
                f"task.num_labels: is {task.num_labels} but {files['train'].path} has {len(names)} distinct labels "
                f"({names[:10]}). Set task.num_labels={len(names)}, or list the classes in data.labels."
            )
    known = set(names)
    for split, file in files.items():
        for row, label in zip(file.rows, labels[split], strict=True):
            if label not in known:
                if _INTEGER.fullmatch(label) and not data.labels:
                    expected = f"a class id in 0..{task.num_labels - 1} (task.num_labels={task.num_labels})"
                    fix = "Fix the label, or set task.num_labels."
                else:
                    expected = f"one of the classes {names[:10]}"
                    fix = (
                        "Fix the label, or list every class in data.labels."
                        if data.labels
                        else ("Every label must appear in the training file.")
                    )
                raise DataLoadError(
                    f"{file.where(row, data.label_field)} is {label!r}, not {expected}. {fix}"
                )
    return names


def _dataset(file: DataFile, data: DataConfig, labels: Sequence[Any]) -> datasets.Dataset:
    texts = {
        column: [str(value) for value in file.column(column, "data.text_fields")]
        for column in data.text_fields
    }
    return datasets.Dataset.from_dict({**texts, data.label_field: list(labels)})


def build(settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    data, task = settings.data, settings.task
    files = _files(data)
    names: list[str] | None = None
    if task.problem == Problem.classification:
        names = label_names(files, data, task)
        ids = {name: index for index, name in enumerate(names)}
        labels = {
            split: [ids[_label_text(v)] for v in file.column(data.label_field, "data.label_field")]
            for split, file in files.items()
        }
    else:
        labels = {split: _regression_targets(file, data.label_field) for split, file in files.items()}
    splits = {name: _dataset(files[name], data, labels[name]) for name in ("train", *data.eval_splits)}
    task_data = build_classification_task(splits, tokenizer, task, data, env)
    if names is not None:
        task_data.info["labels"] = names
    return task_data
