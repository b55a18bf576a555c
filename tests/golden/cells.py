"""The golden file of composed reproduction cells: how a cell is named, composed, read and written.

A cell is named by what identifies it in its table, never by ``run_name`` (run folder names may change
without any setting changing): ``<grid>[/smoke]/<model>/<task>/<method>/r<r>/<mode>/<targets>/seed<seed>``,
with model, task and method those of the paper cell (a SMOKE run's stand-ins are not its identity).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from lorma_exp.config import register_configs
from lorma_exp.paper import REPRODUCTIONS, Grid
from lorma_exp.reproduce import Selection, sweep_commands

GOLDEN_FILE = Path(__file__).resolve().parent / "composed_cells.jsonl"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def cell_key(grid: str, smoke: bool, config: Mapping[str, Any]) -> str:
    """The name of one composed cell of ``grid`` (its resolved config as a plain dict)."""
    cell = config["paper_cell"]
    method = config["method"]
    return "/".join(
        (
            grid + ("/smoke" if smoke else ""),
            cell["model"],
            cell["task"],
            cell["method"],
            f"r{config['r']}",
            str(config["mode"]),
            "-".join(method["targets"]),
            f"seed{config['seed']}",
        )
    )


def read_golden(path: Path = GOLDEN_FILE) -> dict[str, dict[str, Any]]:
    """Cell name -> resolved config, as the golden file holds them."""
    cells = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        cells[record["cell"]] = record["config"]
    return cells


def write_golden(cells: Mapping[str, Mapping[str, Any]], path: Path = GOLDEN_FILE) -> None:
    """One JSON object per line, sorted by cell name, so that a changed setting shows as changed lines."""
    lines = [
        json.dumps({"cell": name, "config": cells[name]}, sort_keys=True, separators=(",", ":"))
        for name in sorted(cells)
    ]
    path.write_text("\n".join(lines) + "\n")


def grids() -> dict[str, Grid]:
    """Every grid a reproduction trains, once (analyses that read part of another table's grid add none)."""
    return {
        name: item.grid
        for name, item in REPRODUCTIONS.items()
        if item.grid is not None and item.grid.name == name
    }


def job_overrides(command: list[str]) -> list[list[str]]:
    """The overrides of each job of a ``train.py -m`` command line, as Hydra's basic sweeper splits them
    (the run-folder settings aside: they do not change a cell's settings)."""
    arguments = [
        argument
        for argument in command[command.index("-m") + 1 :]
        if not argument.startswith("hydra.") and argument not in ("skip_finished=true", "resume=true")
    ]
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def compose_cells() -> dict[str, dict[str, Any]]:
    """Every cell of every grid, full and SMOKE, at seed 1: name -> resolved config, composed in-process.

    Each command is first composed as Hydra's multirun does before it launches any job (sweep overrides
    left out), which fails when a config needs a choice that only the jobs make.
    """
    register_configs()
    cells: dict[str, dict[str, Any]] = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for grid in grids().values():
            for smoke in (False, True):
                for command in sweep_commands(grid, Selection(smoke=smoke, seeds="1")):
                    arguments = command[command.index("-m") + 1 :]
                    GlobalHydra.instance().hydra.compose_config(
                        "config", arguments, run_mode=RunMode.MULTIRUN
                    )
                    for overrides in job_overrides(command):
                        config = OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)
                        name = cell_key(grid.name, smoke, config)
                        if name in cells:
                            raise ValueError(f"two jobs of {grid.name} compose the same cell {name}")
                        cells[name] = config
    return cells


if __name__ == "__main__":  # python -m tests.golden.cells: rewrite the golden file from the current configs
    write_golden(compose_cells())
