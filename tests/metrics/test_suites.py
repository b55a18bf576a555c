"""Metric suites: every family's metric names are checked at start-up, and each scorer reports its suite."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lorma_exp.config import ConfigError, Problem, TaskConfig
from lorma_exp.data import FAMILIES, check_task
from lorma_exp.metrics.glue import METRICS as CLASSIFIER_METRICS
from lorma_exp.metrics.glue import compute_metrics
from lorma_exp.metrics.math import judge_generation, score_predictions
from lorma_exp.metrics.nlg import e2e_scores, webnlg_scores
from lorma_exp.metrics.suites import CLASSIFICATION, E2E, MATHS, REGRESSION, SUITES, WEBNLG

REPO_ROOT = Path(__file__).resolve().parents[2]
TASKS = sorted(path.stem for path in (REPO_ROOT / "conf" / "task").glob("*.yaml"))
USER_FILES = ("data.train_file=train.csv", "data.validation_file=dev.csv")


@pytest.fixture(scope="module")
def shipped_tasks(compose_settings) -> dict[str, TaskConfig]:
    """One composed task config per task family (the first task config, by name, of each family)."""
    chosen: dict[str, TaskConfig] = {}
    for task in TASKS:
        settings = compose_settings(f"task={task}", *USER_FILES)
        chosen.setdefault(settings.task.family, settings.task)
    return chosen


@pytest.fixture
def task_of_family(shipped_tasks) -> dict[str, TaskConfig]:
    """A copy each test may change."""
    return copy.deepcopy(shipped_tasks)


def test_every_family_has_a_task_config_and_every_suite_a_family(task_of_family) -> None:
    assert set(task_of_family) == set(FAMILIES)
    used = {suite.name for family in FAMILIES.values() for suite in family.suites.values()}
    assert used == set(SUITES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_metric_name_typo_is_refused_naming_the_field_and_the_valid_names(task_of_family, family) -> None:
    task = task_of_family[family]
    check_task(task)  # the shipped config passes
    suite = FAMILIES[family].suites[task.problem]
    task.metrics = [*task.metrics, "acuracy"]
    with pytest.raises(ConfigError) as raised:
        check_task(task)
    message = str(raised.value)
    assert message.startswith("task.metrics: ['acuracy'] are not reported by")
    assert str(list(suite.metrics)) in message


def test_a_problem_the_family_does_not_handle_is_refused(task_of_family) -> None:
    reviews = task_of_family["embedded_reviews"]
    reviews.problem = Problem.regression
    with pytest.raises(
        ConfigError, match=r"task.problem: the embedded_reviews family handles \['classification'\]"
    ):
        check_task(reviews)


def test_an_unknown_family_is_refused_with_the_known_ones(task_of_family) -> None:
    task = task_of_family["glue"]
    task.family = "glu"
    with pytest.raises(
        ConfigError, match=r"task.family: unknown family 'glu'. Known: \['competition_math', 'dart', "
    ):
        check_task(task)


def test_a_glue_metric_typo_exits_2_at_start_before_any_data_is_read(tmp_path) -> None:
    # Before the check existed, this was a traceback (exit 1) after GLUE had been loaded and tokenised.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "train.py",
        "task=cola",
        "task.metrics=[matthews,acuracy]",
        f"run_dir={tmp_path}",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 2
    assert (
        "error: task.metrics: ['acuracy'] are not reported by the classification metric suite. "
        "Choose from ['accuracy', 'f1', 'macro_f1', 'matthews']." in result.stderr
    )
    assert "could not be loaded" not in result.stderr  # offline, GLUE itself was never asked for
    assert not (tmp_path / "config.yaml").exists()


def test_the_classifier_metrics_are_the_classification_and_regression_suites() -> None:
    assert set(CLASSIFIER_METRICS) == set(CLASSIFICATION.metrics) | set(REGRESSION.metrics)
    labels = np.array([0, 1, 1, 0])
    assert set(compute_metrics(CLASSIFICATION.metrics, np.array([0, 1, 0, 0]), labels)) == set(
        CLASSIFICATION.metrics
    )


def test_the_generation_scorers_report_exactly_their_suites_names() -> None:
    text = "the eagle is a riverside pub"
    assert tuple(e2e_scores([text], [[text]])) == E2E.metrics
    assert tuple(webnlg_scores([text], [[text]])) == WEBNLG.metrics
    assert tuple(score_predictions([judge_generation("#### 3", "3", "gsm8k")])) == MATHS.metrics
