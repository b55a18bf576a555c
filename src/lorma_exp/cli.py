"""The Hydra entry points, defined once: ``train.py`` and ``lorma-train``, ``eval.py`` and ``lorma-eval``.

The scripts at the repository root and the console scripts of an installed package run the same apps on
the same configs (:data:`lorma_exp.conf_dir.CONF_DIR`). Each app names its Hydra job in its root config
(``hydra.job.name``: ``train``, ``eval``), which names its log file (``train.log``). The work
itself is imported when a job runs, so ``--help`` answers without it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lorma_exp.conf_dir import CONF_DIR
from lorma_exp.launch import prepare_launch

Job = Callable[[DictConfig], object]


def _run_app(config_dir: Path, config_name: str, job: Job) -> None:
    prepare_launch()

    @hydra.main(config_path=str(config_dir), config_name=config_name, version_base="1.3")
    def app(cfg: DictConfig) -> None:
        job(cfg)

    app()


def _train_job(cfg: DictConfig) -> None:
    from lorma_exp import pipeline

    pipeline.train(cfg)


def _eval_job(cfg: DictConfig) -> None:
    from lorma_exp import pipeline

    pipeline.evaluate(cfg)


def train() -> None:
    """Train one run, or a sweep with ``-m`` (conf/config.yaml)."""
    _run_app(CONF_DIR, "config", _train_job)


def evaluate() -> None:
    """Re-evaluate a finished run's saved weights (conf/eval/eval.yaml: there ``task=`` is a value, not a
    choice of conf/task/, hence its own config folder)."""
    _run_app(CONF_DIR / "eval", "eval", _eval_job)
