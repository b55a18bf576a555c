"""The user's own CSV / JSON Lines files as a classification or regression task."""

from __future__ import annotations

from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, Problem, TrainConfig
from lorma_exp.data.base import TaskData
from lorma_exp.data.classification import build_classification_task, check_columns
from lorma_exp.distributed import DistEnv

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}


def _file_format(path: str, field: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"{field}: {path!r} is not a .csv, .tsv, .json or .jsonl file. Convert it to one of these."
        )
    if not Path(path).is_file():
        raise ConfigError(f"{field}: {path!r} does not exist. Give the path of an existing file.")
    return FORMATS[suffix]


def build(settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    data, task = settings.data, settings.task
    files = {
        "train": (data.train_file, "data.train_file"),
        "validation": (data.validation_file, "data.validation_file"),
    }
    if data.test_file:
        files["test"] = (data.test_file, "data.test_file")
    formats = {_file_format(path, field) for path, field in files.values()}
    if len(formats) > 1:
        raise ConfigError(
            "data.train_file / data.validation_file: mix of CSV and JSON files. Use one format."
        )
    delimiter = {"delimiter": "\t"} if all(str(p).endswith(".tsv") for p, _ in files.values()) else {}
    loaded = datasets.load_dataset(
        formats.pop(), data_files={name: path for name, (path, _) in files.items()}, **delimiter
    )
    for name in data.eval_splits:
        if name not in loaded:
            raise ConfigError(
                f"data.eval_splits: {name!r} is not one of the given files' splits {sorted(loaded)}."
            )
    check_columns(loaded["train"], data, data.train_file)
    label_to_id = None
    if task.problem == Problem.classification:
        labels = sorted(set(loaded["train"][data.label_field]), key=str)
        if len(labels) != task.num_labels:
            raise ConfigError(
                f"task.num_labels: is {task.num_labels} but {data.train_file} has {len(labels)} distinct labels "
                f"({labels[:10]}). Set task.num_labels={len(labels)}."
            )
        label_to_id = {label: index for index, label in enumerate(labels)}
        for name, split in loaded.items():
            unseen = set(split[data.label_field]) - set(labels)
            if unseen:
                raise ConfigError(
                    f"data.label_field: the {name} file has labels {sorted(unseen, key=str)[:10]} that the "
                    "training file does not. Every label must appear in the training file."
                )
    splits = {"train": loaded["train"], **{name: loaded[name] for name in data.eval_splits}}
    task_data = build_classification_task(splits, tokenizer, task, data, env, label_to_id)
    if label_to_id is not None:
        task_data.info["labels"] = [str(label) for label in label_to_id]
    return task_data
