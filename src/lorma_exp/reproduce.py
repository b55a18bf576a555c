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

The console shows one line per run (its cell, status, main metric and time) as runs finish; everything
the training processes print (transformers' load reports, progress) goes to ``<root>/<grid>/reproduce.log``,
and each run's own log stays in its ``train.log``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorma_exp.paper import REPRODUCTIONS, Cell, Grid, Reproduction
from lorma_exp.run_folder import METRICS_FILE, RESULTS_FILE, RunFolder, is_final_weights

CONSOLE_LOG = "reproduce.log"
POLL_SECONDS = 2.0


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
        console_script("lorma-train"),
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


def console_script(name: str) -> str:
    """The installed console script ``name`` of this interpreter's environment (``lorma-train``, ...)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise SystemExit(
            f"error: {name} is not installed in this environment. Install lorma-exp: make install."
        )
    return found


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
                command = [console_script("lorma-eval"), f"run_dir={results.parent}", f"task={task}"]
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
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="where the grids' runs go (default: outputs/reproduce[-smoke])",
    )
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


def selected_cell(record: dict[str, Any], grid: Grid, selection: Selection) -> bool:
    """Whether a finished run (its results.json) is one of the selected cells of ``grid``."""
    cell = record.get("paper_cell") or {}
    seeds = selection.seeds or ("1" if selection.smoke else ",".join(str(seed) for seed in grid.seeds))
    return (
        cell.get("table") == grid.name
        and cell.get("model") in (selection.models or grid.models)
        and cell.get("task") in (selection.tasks or grid.tasks)
        and cell.get("method") in (selection.methods or grid.methods)
        and str(record.get("seed")) in seeds.split(",")
    )


def run_line(run_dir: Path, folder: Path, status: str, record: dict[str, Any] | None) -> str:
    """One run as one line: its cell (the folder under the grid), status, main metric at the best
    evaluation (the paper's rule) and training time."""
    cell = run_dir.relative_to(folder).as_posix() if run_dir.is_relative_to(folder) else str(run_dir)
    metric = time_taken = ""
    if record is not None:
        name = record.get("main_metric")
        value = ((record.get("best") or {}).get("metrics") or {}).get(name)
        metric = f"{name} {value:.4f}" if isinstance(value, float) else f"{name} —"
        time_taken = f"{(record.get('train') or {}).get('wall_time_s', 0.0):.0f} s"
    return f"  {cell:<58} {status:<10} {metric:<22} {time_taken}"


def _read_results(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):  # being written, or broken: read again at the next look
        return None


def _finished_since(folder: Path, since: float) -> Iterable[Path]:
    return (path for path in folder.rglob(RESULTS_FILE) if path.stat().st_mtime >= since)


def run_sweep(command: list[str], folder: Path, dry_run: bool) -> None:
    """Run one ``lorma-train -m`` command with its console output sent to ``folder/reproduce.log``,
    printing a line for each run as it finishes (and, should the sweep fail, where its error is)."""
    print("+ " + shlex.join(command), flush=True)
    if dry_run:
        return
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / CONSOLE_LOG
    started = time.time()
    reported: set[Path] = set()

    def report_new() -> None:
        for path in sorted(_finished_since(folder, started)):
            record = _read_results(path)
            if path not in reported and record is not None:
                reported.add(path)
                print(run_line(path.parent, folder, "finished", record), flush=True)

    with log.open("a") as console:
        console.write(f"\n+ {shlex.join(command)}\n")
        console.flush()
        process = subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT)
        while process.poll() is None:
            time.sleep(POLL_SECONDS)
            report_new()
    report_new()
    if process.returncode != 0:
        unfinished = [
            path.parent
            for path in folder.rglob(METRICS_FILE)
            if path.stat().st_mtime >= started and not RunFolder(path.parent).is_finished()
        ]
        for run_dir in unfinished:
            print(run_line(run_dir, folder, "failed", None) + f"  (see {RunFolder(run_dir).train_log})")
        raise SystemExit(
            f"error: the sweep stopped (exit status {process.returncode}); its output is in {log}. Fix the "
            "cause and run the same command again: finished runs are skipped, interrupted ones resumed."
        )


def report_skipped(grid: Grid, selection: Selection) -> None:
    """A line for each selected run that is already finished (the sweeps will skip it)."""
    folder = output_root(selection) / grid.name
    for path in sorted(folder.rglob(RESULTS_FILE)) if folder.is_dir() else ():
        record = _read_results(path)
        if record is not None and selected_cell(record, grid, selection):
            print(run_line(path.parent, folder, "skipped", record), flush=True)


def run_evaluation(command: list[str], dry_run: bool) -> None:
    """One ``lorma-eval`` command, as one line: the run, the task it scored, its main metric, the time."""
    print("+ " + shlex.join(command), flush=True)
    if dry_run:
        return
    run_dir = Path(next(a.split("=", 1)[1] for a in command if a.startswith("run_dir=")))
    folder = run_dir.parent
    log = folder / CONSOLE_LOG
    started = time.time()
    with log.open("a") as console:
        console.write(f"\n+ {shlex.join(command)}\n")
        console.flush()
        finished = subprocess.run(command, stdout=console, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        raise SystemExit(
            f"error: {shlex.join(command)} failed (exit status {finished.returncode}); see {log}"
        )
    _, record = RunFolder(run_dir).evaluation_records()[-1]
    scores = " ".join(
        f"{split}: " + " ".join(f"{name} {value:.4f}" for name, value in list(metrics.items())[:2])
        for split, metrics in record["splits"].items()
    )
    print(f"  {run_dir}  task={record['task']}  {scores}  {time.time() - started:.0f} s", flush=True)


def run_report(command: list[str], dry_run: bool) -> None:
    print("+ " + shlex.join(command), flush=True)
    if not dry_run:
        subprocess.run(command, check=True)


def main(argv: Sequence[str] | None = None) -> None:
    reproduction, selection, dry_run = parse_arguments(sys.argv[1:] if argv is None else argv)
    grid = reproduction.grid
    if grid is not None:
        folder = output_root(selection) / grid.name
        if not dry_run:
            print(
                f"{reproduction.name}: runs in {folder}/ (console output: {folder / CONSOLE_LOG})", flush=True
            )
            report_skipped(grid, selection)
        for command in sweep_commands(grid, selection):
            run_sweep(command, folder, dry_run)
        for command in evaluation_commands(grid, selection):  # needs the finished runs: after the sweeps
            run_evaluation(command, dry_run)
    run_report(report_command(reproduction, selection), dry_run)


if __name__ == "__main__":
    main()
