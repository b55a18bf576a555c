"""Datasets by hub name or local copy, with one error that says what was tried and how to fix it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import datasets

log = logging.getLogger(__name__)

PARQUET_EXPORT_REVISION = "refs/convert/parquet"
# What an offline machine's error says to do about a hub name it does not have.
PREFETCH_HINT = (
    "on a machine with network, `python scripts/prefetch.py <this run's overrides>` (or a paper table: "
    "`python scripts/prefetch.py table2`) downloads it into the Hugging Face cache"
)
SCRIPT_DATASET_ERROR = "Dataset scripts are no longer supported"


class DataLoadError(RuntimeError):
    """A dataset that cannot be loaded; the message says what was tried and the fix."""


def load_dataset_dict(
    name_or_path: str,
    subset: str | None,
    local_alternative: str = "a folder from `datasets.DatasetDict.save_to_disk`, or a clone of the hub repository",
) -> datasets.DatasetDict:
    """A hub dataset (config ``subset``), or a folder written by ``save_to_disk``.

    Some canonical repositories (E2E, WebNLG, DART) hold loading scripts, which ``datasets`` 4 and later no
    longer run; for those the hub's parquet export of the same data (``refs/convert/parquet``, one folder
    per config) is read instead.
    """
    local = Path(name_or_path)
    try:
        if (local / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(local))
            return loaded[subset] if subset and subset in loaded else loaded
        try:
            return datasets.load_dataset(name_or_path, subset)
        except RuntimeError as error:
            if SCRIPT_DATASET_ERROR not in str(error):
                raise
            log.info("%s is a script dataset: reading its parquet export instead", name_or_path)
            return datasets.load_dataset(
                name_or_path, revision=PARQUET_EXPORT_REVISION, data_dir=subset or "default"
            )
    except (
        OSError,
        ValueError,
        RuntimeError,
        ConnectionError,
        datasets.exceptions.DatasetNotFoundError,
    ) as error:
        offline = bool(os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE"))
        where = "a save_to_disk folder" if local.exists() else "the Hugging Face hub (no local folder there)"
        fix = (
            f"{PREFETCH_HINT}; or set data.dataset to {local_alternative}"
            if offline
            else f"connect to the hub, or set data.dataset to {local_alternative}"
        )
        raise DataLoadError(
            f"data.dataset={name_or_path!r} (subset {subset!r}) could not be loaded from {where}."
            + (" HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set, so the hub was not asked." if offline else "")
            + f" Cause: {error}. Fix: {fix}."
        ) from error
