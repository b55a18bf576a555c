"""scripts/prefetch.py: what a reproduction needs from the hub, and a clear failure when it is out of reach."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def prefetch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "scripts/prefetch.py", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_lists_the_models_and_datasets_of_a_table_and_its_evaluations():
    listed = prefetch("table4", "--list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = set(listed.stdout.splitlines())
    assert {"model   google/gemma-2b", "model   meta-llama/Meta-Llama-3-8B"} <= lines
    assert {
        "dataset meta-math/MetaMathQA-40K",
        "dataset openai/gsm8k (main)",
    } <= lines  # trained on, scored on


def test_every_unreachable_item_is_reported_and_the_exit_is_non_zero():
    fetched = prefetch("table7")
    assert fetched.returncode != 0
    assert "model FacebookAI/roberta-large" in fetched.stderr
    assert "data.dataset='nyu-mll/glue'" in fetched.stderr


@pytest.mark.slow  # ~12 s; the fast suite keeps the table listing and the offline error
def test_the_overrides_of_one_run_list_what_that_run_needs():
    listed = prefetch("task=cola", "model=roberta_base", "--list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout.splitlines() == ["model   FacebookAI/roberta-base", "dataset nyu-mll/glue (cola)"]
    mixed = prefetch("table2", "task=cola", "--list")
    assert mixed.returncode == 2 and "not both" in mixed.stderr


def test_offline_a_hub_task_or_model_says_to_prefetch_it_or_use_a_local_folder(tmp_path):
    """The error a user meets on an offline machine names the two ways out."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for number, (overrides, field) in enumerate(
        [
            (["task=cola"], "data.dataset to a folder"),
            (["model=roberta_base", "task=reviews"], "point model.name_or_path at a local folder"),
        ]
    ):
        command = [sys.executable, "train.py", *overrides, f"run_dir={tmp_path / str(number)}"]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 2
        assert "python scripts/prefetch.py <this run's overrides>" in result.stderr
        assert field in result.stderr
