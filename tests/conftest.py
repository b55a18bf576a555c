"""Shared test set-up: no network, a private Hugging Face cache, and tiny models built from configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _private_hf_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the user's Hugging Face cache out of the tests (and the tests out of it)."""
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))
