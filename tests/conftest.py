"""Shared test set-up: no network, a private Hugging Face cache, and tiny models built from configs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lorma_exp.config import TrainConfig, register_configs, validate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


@pytest.fixture(autouse=True, scope="session")
def _private_hf_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the user's Hugging Face cache out of the tests (and the tests out of it)."""
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))


@pytest.fixture(scope="session")
def compose_train() -> Callable[..., DictConfig]:
    """Compose conf/config.yaml with overrides, as `python train.py <overrides>` would."""
    register_configs()

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose


@pytest.fixture(scope="session")
def compose_settings(compose_train: Callable[..., DictConfig]) -> Callable[..., TrainConfig]:
    """The validated settings of a composed config."""

    def _settings(*overrides: str) -> TrainConfig:
        return validate(compose_train(*overrides))

    return _settings
