"""Reproduce a table or analysis of the paper: its grid of runs as Hydra multiruns, then its report.

    python -m lorma_exp.reproduce NAME [--models ...] [--tasks ...] [--methods ...] [--seeds 1,2,3]
                                       [--launcher basic|joblib|slurm|submitit_slurm] [--smoke] [--dry-run]
    python -m lorma_exp.reproduce --list

(``make reproduce-NAME MODELS=... TASKS=... SEEDS=... LAUNCHER=... SMOKE=1`` calls this.) What NAME runs is
declared once, in ``lorma_exp.paper.REPRODUCTIONS``: the grid (experiment config × models × tasks ×
methods × seeds × sweeps) and the report; a reproduction of cells (Table 12, the full-rank check) trains
nothing and its report reads each cell's data or pretrained weights. Every run gets a fixed folder,
``<root>/<grid>/<model>/<task>/<method><settings>/seed<k>`` (the run's ``run_name``: ``<settings>`` is
what the method has, e.g. ``_r8_a16_pre_q-v`` for LoRMA, none for full fine-tuning), and is launched with
``skip_finished=true resume=true``: re-running after an interruption skips finished runs, continues
interrupted ones from their checkpoint and starts the missing ones. ``--smoke`` runs the same cells with
the grid's SMOKE stand-in (``debug=smoke*``: an embedded model and task, a few steps, offline; one seed
unless ``--seeds`` says otherwise).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lorma_exp.paper import REPRODUCTIONS, Cell, Grid, Reproduction
from lorma_exp.run_folder import RESULTS_FILE, RunFolder, is_final_weights

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Selection:
    """What the user asked for; empty tuples mean the grid's own lists."""

    models: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    seeds: str = ""
    launcher: str = "basic"
    smoke: bool = False
    root: Path | None = None


def _pick(asked: Sequence[str], allowed: tuple[str, ...], what: str, grid: str) -> tuple[str, ...]:
    unknown = [value for value in asked if value not in allowed]
    if unknown:
        raise SystemExit(f"error: {what} {unknown} are not in {grid} (it has {', '.join(allowed)}).")
    return tuple(asked) or allowed


def sweep_commands(grid: Grid, selection: Selection) -> list[list[str]]:
    """The ``train.py -m`` command lines that run the selected cells of ``grid``.

    A full run names its cell by ``model`` and ``task``; a SMOKE run trains its stand-in model and task
    instead, so it names the cell by its settings (``settings=<model>_<task>``, which carry the paper cell).
    """
    models = _pick(selection.models, grid.models, "MODELS", grid.name)
    tasks = _pick(selection.tasks, grid.tasks, "TASKS", grid.name)
    methods = _pick(selection.methods, grid.methods, "METHODS", grid.name)
    seeds = selection.seeds or ("1" if selection.smoke else ",".join(str(seed) for seed in grid.seeds))
    if selection.smoke:
        cells = [f"settings={','.join(f'{model}_{task}' for model in models for task in tasks)}"]
        cells.append(f"debug={grid.smoke}")
    else:
        cells = [f"model={','.join(models)}", f"task={','.join(tasks)}"]
    common = [
        sys.executable,
        "train.py",
        "-m",
        f"experiment={grid.name}",
        *cells,
        f"method={','.join(methods)}",
        *grid.sweep,
        f"seed={seeds}",
        f"hydra.sweep.dir={output_root(selection) / grid.name}",
        "hydra.sweep.subdir=${run_name}",
        "skip_finished=true",
        "resume=true",
    ]
    if selection.launcher != "basic":
        common.append(f"hydra/launcher={selection.launcher}")
    return [[*common, *variant] for variant in grid.variants]


def output_root(selection: Selection) -> Path:
    if selection.root is not None:
        return selection.root
    return Path("outputs") / ("reproduce-smoke" if selection.smoke else "reproduce")


def already_evaluated(run_dir: Path, task: str, paper_task: str) -> bool:
    """Whether ``eval.py`` has scored this run's final weights on ``task`` for the ``paper_task`` column."""
    return any(
        is_final_weights(record.get("weights"))
        and (record.get("task"), record.get("paper_task")) == (task, paper_task)
        for _, record in RunFolder(run_dir).evaluation_records()
    )


def evaluation_commands(grid: Grid, selection: Selection) -> list[list[str]]:
    """``eval.py`` command lines for the finished runs of ``grid`` not yet scored on its evaluation tasks."""
    folder = output_root(selection) / grid.name
    commands = []
    for results in sorted(folder.rglob(RESULTS_FILE)) if grid.evaluations else ():
        for evaluation in grid.evaluations:
            task = evaluation.smoke_task if selection.smoke else evaluation.task
            if not already_evaluated(results.parent, task, evaluation.task):
                command = [sys.executable, "eval.py", f"run_dir={results.parent}", f"task={task}"]
                command.append(f"paper_task={evaluation.task}")
                commands.append([*command, *(["debug=smoke"] if selection.smoke else [])])
    return commands


def cell_overrides(cell: Cell, smoke: bool) -> str:
    """The overrides that compose ``cell`` as its runs would be (one string): by model and task, or by its
    settings with its SMOKE stand-in."""
    if smoke:
        return f"experiment={cell.experiment} settings={cell.model}_{cell.task} debug={cell.smoke}"
    return f"experiment={cell.experiment} model={cell.model} task={cell.task}"


def selected_cells(reproduction: Reproduction, selection: Selection) -> list[Cell]:
    """The reproduction's cells of the selected models and tasks (all of them by default)."""
    cells = reproduction.cells
    models = _pick(
        selection.models, tuple(dict.fromkeys(c.model for c in cells)), "MODELS", reproduction.name
    )
    tasks = _pick(selection.tasks, tuple(dict.fromkeys(c.task for c in cells)), "TASKS", reproduction.name)
    return [cell for cell in cells if cell.model in models and cell.task in tasks]


def report_command(reproduction: Reproduction, selection: Selection) -> list[str]:
    """The report on the grid's runs; an analysis reads only the selected cells of its grid, a reproduction
    of cells composes each selected cell."""
    grid = reproduction.grid
    command = [sys.executable, "-m", "lorma_exp.report", *reproduction.report]
    if grid is None:
        for cell in selected_cells(reproduction, selection):
            command += ["--cell", cell_overrides(cell, selection.smoke)]
        return [*command, "--out", str(output_root(selection) / reproduction.name / "report")]
    folder = output_root(selection) / grid.name
    if reproduction.filtered:
        command += ["--table", grid.name]
        command += ["--model", *_pick(selection.models, grid.models, "MODELS", grid.name)]
        command += ["--task", *_pick(selection.tasks, grid.tasks, "TASKS", grid.name)]
    out = folder / "report" / reproduction.name if reproduction.filtered else folder / "report"
    return [*command, "--runs", str(folder), "--out", str(out)]


def targets_help() -> str:
    """One line per ``make reproduce-<name>`` target and its title, for ``make help``."""
    return "\n".join(
        f"reproduce-{name}\t{reproduction.title}" for name, reproduction in REPRODUCTIONS.items()
    )


def parse_arguments(argv: Sequence[str]) -> tuple[Reproduction, Selection, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m lorma_exp.reproduce", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "name", nargs="?", choices=list(REPRODUCTIONS), metavar="NAME", help=", ".join(REPRODUCTIONS)
    )
    parser.add_argument("--list", action="store_true", help="print every NAME with its title, run nothing")
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--tasks", nargs="*", default=[])
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument(
        "--seeds", default="", help="comma-separated, e.g. 1,2,3 (default: the grid's; smoke: 1)"
    )
    parser.add_argument("--launcher", default="basic", choices=("basic", "joblib", "slurm", "submitit_slurm"))
    parser.add_argument("--smoke", action="store_true", help="embedded stand-ins, a few steps per run")
    parser.add_argument("--root", type=Path, default=None, help="default: outputs/reproduce[-smoke]")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    arguments = parser.parse_args(argv)
    if arguments.list:
        print(targets_help())
        raise SystemExit(0)
    if arguments.name is None:
        parser.error(f"name a reproduction: {', '.join(REPRODUCTIONS)}")
    selection = Selection(
        models=tuple(arguments.models),
        tasks=tuple(arguments.tasks),
        methods=tuple(arguments.methods),
        seeds=arguments.seeds,
        launcher=arguments.launcher,
        smoke=arguments.smoke,
        root=arguments.root,
    )
    return REPRODUCTIONS[arguments.name], selection, arguments.dry_run


def _run(commands: list[list[str]], dry_run: bool) -> None:
    for command in commands:
        print("+ " + shlex.join(command), flush=True)
        if not dry_run:
            subprocess.run(command, cwd=REPO_ROOT, check=True)


def main(argv: Sequence[str] | None = None) -> None:
    reproduction, selection, dry_run = parse_arguments(sys.argv[1:] if argv is None else argv)
    if reproduction.grid is not None:
        _run(sweep_commands(reproduction.grid, selection), dry_run)
        # needs the finished runs: after the sweeps
        _run(evaluation_commands(reproduction.grid, selection), dry_run)
    _run([report_command(reproduction, selection)], dry_run)


if __name__ == "__main__":
    main()
