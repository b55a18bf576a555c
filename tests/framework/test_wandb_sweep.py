"""conf/wandb_sweep/*.yaml: every point of each wandb sweep is a train.py command that composes, and the
metric the sweep optimises is one that logger=wandb logs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from .test_documented_commands import hydra_app_composes

REPO_ROOT = Path(__file__).resolve().parents[2]
SWEEPS = sorted((REPO_ROOT / "conf" / "wandb_sweep").glob("*.yaml"))


def point_commands(sweep: dict) -> list[list[str]]:
    """The command line of every grid point, as a wandb agent builds it (macros substituted)."""
    names = list(sweep["parameters"])
    points = itertools.product(*(sweep["parameters"][name]["values"] for name in names))
    commands = []
    for values in points:
        command = []
        for item in sweep["command"]:
            if item == "${env}":
                continue
            if item == "${args_no_hyphens}":
                command += [f"{name}={value}" for name, value in zip(names, values, strict=True)]
            else:
                command.append(sweep["program"] if item == "${program}" else item)
        commands.append(command)
    return commands


def test_there_is_a_wandb_sweep_and_the_readme_shows_how_to_run_it():
    assert SWEEPS
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"wandb sweep conf/wandb_sweep/{SWEEPS[0].name}" in readme


@pytest.mark.parametrize("path", SWEEPS, ids=[path.name for path in SWEEPS])
def test_every_point_of_a_wandb_sweep_composes_and_its_metric_is_logged(path, compose_settings):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "train.py" and sweep["method"] == "grid"
    commands = point_commands(sweep)
    assert len(commands) == 48
    for command in commands:
        assert command[:2] == ["python", "train.py"]
        hydra_app_composes("train.py", command[2:])
    fixed = [item for item in sweep["command"] if "=" in item and not item.startswith("$")]
    settings = compose_settings(*fixed)
    assert settings.logger.wandb
    assert sweep["metric"]["name"] == f"eval/{settings.data.eval_splits[0]}/{settings.task.main_metric}"
