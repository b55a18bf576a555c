"""Reproduce a table of the paper: its grid of runs as Hydra multiruns, then the table beside the paper's.

    python -m lorma_exp.reproduce table2 [--models ...] [--tasks ...] [--methods ...] [--seeds 1,2,3]
                                         [--launcher basic|joblib|slurm|submitit_slurm] [--smoke] [--dry-run]

(``make reproduce-table2 MODELS=... TASKS=... SEEDS=... LAUNCHER=... SMOKE=1`` calls this.) Every run gets
a fixed folder, ``<root>/<table>/<model>/<task>/<method><settings>/seed<k>`` (the run's ``run_name``;
``<settings>`` is what the method has, e.g. ``_r8_a16_pre_q-v`` for LoRMA, none for full fine-tuning), and is launched
with ``skip_finished=true resume=true``: re-running after an interruption skips finished runs, continues
interrupted ones from their checkpoint and starts the missing ones. ``--smoke`` runs the same grid on the
embedded model and task for a few steps each (one seed unless ``--seeds`` says otherwise), offline.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lorma_exp.run_folder import RESULTS_FILE, RunFolder, is_final_weights

REPO_ROOT = Path(__file__).resolve().parents[2]
GLUE_TASKS = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")
ROBERTA = ("roberta_base", "roberta_large")

MATHS_SMOKE = (
    "task=gsm_symbolic",
    "model=smollm2_135m",
    "smoke=true",
    "model.dtype=float32",
    "trainer.precision=fp32",
    "data.num_examples=16",
    "data.eval_limit=4",
    "data.max_length=256",
    "generation.max_new_tokens=24",
    "trainer.max_steps=2",
    "trainer.batch_size=4",
    "trainer.global_batch_size=null",
    "trainer.eval_batch_size=4",
    "trainer.eval_before_training=false",
    "trainer.progress_bar=false",
)
NLG_SMOKE = (
    "task=restaurants",
    "model=smollm2_135m",
    "smoke=true",
    "data.num_examples=24",
    "data.eval_limit=4",
    "data.eval_splits=[validation]",
    "generation.num_beams=1",
    "generation.max_new_tokens=24",
    "trainer.max_steps=2",
    "trainer.batch_size=4",
    "trainer.eval_batch_size=4",
    "trainer.eval_before_training=false",
    "trainer.progress_bar=false",
)
CLASSIFICATION_SMOKE = (
    "task=reviews",
    "model=minilm",
    "smoke=true",
    "data.num_examples=96",
    "data.max_length=32",
    "trainer.max_steps=2",
    "trainer.batch_size=8",
    "trainer.eval_batch_size=64",
    "trainer.eval_before_training=false",
    "trainer.progress_bar=false",
)


@dataclass(frozen=True)
class Grid:
    """The runs behind one table: experiments × sweeps × seeds.

    ``experiment`` is formatted with each (model, task, method); ``sweep`` adds Hydra sweep overrides to
    the multirun; each entry of ``variants`` is a separate multirun (for settings that change together,
    which a Hydra sweep would cross instead of pair). ``evaluations`` are (task, paper column) pairs every
    finished run is scored on afterwards with ``eval.py`` (Table 4: trained on MetaMathQA, scored on GSM8K
    and MATH); smoke reproductions score a stand-in task for each column instead.
    """

    name: str
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    experiment: str = "table2/{model}_{task}_{method}"
    sweep: tuple[str, ...] = ()
    variants: tuple[tuple[str, ...], ...] = ((),)
    smoke: tuple[str, ...] = CLASSIFICATION_SMOKE
    report: str = "table"
    evaluations: tuple[tuple[str, str], ...] = ()
    smoke_evaluations: tuple[tuple[str, str], ...] = ()
    smoke_eval_overrides: tuple[str, ...] = ()


GRIDS: dict[str, Grid] = {
    grid.name: grid
    for grid in (
        Grid("table2", ROBERTA, GLUE_TASKS, ("lora", "lorma_pi", "lorma_plus")),
        Grid(
            "table6",
            ("roberta_large",),
            ("mrpc", "stsb", "rte", "qqp"),
            ("lorma_none", "lorma_plus"),
            experiment="table2/{model}_{task}_lorma_plus",
            sweep=("paper_cell.method=choice(${method.name})",),
        ),
        Grid(
            "table7",
            ("roberta_large",),
            ("cola", "mrpc", "stsb", "rte"),
            ("lorma_plus",),
            sweep=("mode=pre,post",),
        ),
        Grid(
            "table8",
            ("roberta_base",),
            ("mrpc", "stsb"),
            ("lorma_plus",),
            sweep=("method.targets=[q],[q,k],[q,k,v,o]", "r=1,2,4,8,64"),
        ),
        Grid(
            "table10",
            ("roberta_base",),
            ("mrpc", "stsb"),
            ("lorma_plus",),
            sweep=("alpha=${r}",),
            variants=tuple(
                (f"method.targets=[{targets}]", f"r={rank}")
                for targets, rank in (("q", 8), ("k", 8), ("v", 8), ("q,v", 4), ("q,k", 4), ("q,k,v,o", 2))
            ),
        ),
        Grid(
            "table3",
            ("gpt2_medium",),
            ("e2e",),
            ("lora", "lorma_pi", "lorma_plus"),
            experiment="table3/{model}_{task}_{method}",
            smoke=NLG_SMOKE,
        ),
        Grid(
            "table13",
            ("gpt2_medium",),
            ("e2e", "webnlg", "dart"),
            ("lora", "lorma_plus"),
            experiment="table13/{model}_{task}_{method}",
            smoke=NLG_SMOKE,
        ),
        Grid(
            "table4",
            ("gemma_2b", "llama3_8b"),
            ("metamathqa",),
            ("lora", "peft_dora", "lorma_plus"),
            experiment="table4/{model}_{task}_{method}",
            smoke=MATHS_SMOKE,
            evaluations=(("gsm8k", "gsm8k"), ("math", "math")),
            smoke_evaluations=(("gsm_symbolic", "gsm8k"), ("gsm_symbolic", "math")),
            smoke_eval_overrides=("+data.eval_limit=4", "+generation.max_new_tokens=24"),
        ),
        Grid(
            "figure5",
            ("roberta_base",),
            ("rte", "stsb", "cola", "mrpc"),
            ("lora", "lorma_plus", "lorma_pi"),
            sweep=("r=1,2,4,8,16,32,64",),
            report="figure5",
        ),
    )
}


@dataclass
class Selection:
    """What the user asked for; empty tuples mean the table's own lists."""

    models: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    seeds: str = ""
    launcher: str = "basic"
    smoke: bool = False
    root: Path | None = None


def _pick(asked: Sequence[str], allowed: tuple[str, ...], what: str, table: str) -> tuple[str, ...]:
    unknown = [value for value in asked if value not in allowed]
    if unknown:
        raise SystemExit(f"error: {what} {unknown} are not in {table} (it has {', '.join(allowed)}).")
    return tuple(asked) or allowed


def sweep_commands(grid: Grid, selection: Selection) -> list[list[str]]:
    """The ``train.py -m`` command lines that run the selected cells of ``grid``."""
    models = _pick(selection.models, grid.models, "MODELS", grid.name)
    tasks = _pick(selection.tasks, grid.tasks, "TASKS", grid.name)
    methods = _pick(selection.methods, grid.methods, "METHODS", grid.name)
    experiments = sorted(
        {grid.experiment.format(model=m, task=t, method=x) for m in models for t in tasks for x in methods}
    )
    seeds = selection.seeds or ("1" if selection.smoke else "1,2,3")
    method_sweep = () if "{method}" in grid.experiment else (f"method={','.join(methods)}",)
    common = [
        sys.executable,
        "train.py",
        "-m",
        f"experiment={','.join(experiments)}",
        *method_sweep,
        *grid.sweep,
        f"seed={seeds}",
        # choice(...) makes it a sweep parameter, applied per job after the experiment sets paper_cell
        f"paper_cell.table=choice({grid.name})",
        f"hydra.sweep.dir={output_root(selection) / grid.name}",
        "hydra.sweep.subdir=${run_name}",
        "skip_finished=true",
        "resume=true",
    ]
    if selection.launcher != "basic":
        common.append(f"hydra/launcher={selection.launcher}")
    if selection.smoke:
        common.extend(grid.smoke)
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
    pairs = grid.smoke_evaluations if selection.smoke else grid.evaluations
    extra = grid.smoke_eval_overrides if selection.smoke else ()
    folder = output_root(selection) / grid.name
    commands = []
    for results in sorted(folder.rglob(RESULTS_FILE)) if pairs else ():
        for task, paper_task in pairs:
            if not already_evaluated(results.parent, task, paper_task):
                run_dir = f"run_dir={results.parent}"
                commands.append(
                    [sys.executable, "eval.py", run_dir, f"task={task}", f"paper_task={paper_task}", *extra]
                )
    return commands


def report_command(grid: Grid, selection: Selection) -> list[str]:
    folder = output_root(selection) / grid.name
    subcommand = ["figure5"] if grid.report == "figure5" else ["table", grid.name]
    return [
        sys.executable,
        "-m",
        "lorma_exp.report",
        *subcommand,
        "--runs",
        str(folder),
        "--out",
        str(folder / "report"),
    ]


def parse_arguments(argv: Sequence[str]) -> tuple[Grid, Selection, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m lorma_exp.reproduce", description=__doc__.splitlines()[0]
    )
    parser.add_argument("table", choices=sorted(GRIDS))
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--tasks", nargs="*", default=[])
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument("--seeds", default="", help="comma-separated, e.g. 1,2,3 (default: 1,2,3; smoke: 1)")
    parser.add_argument("--launcher", default="basic", choices=("basic", "joblib", "slurm", "submitit_slurm"))
    parser.add_argument("--smoke", action="store_true", help="embedded model and task, a few steps per run")
    parser.add_argument("--root", type=Path, default=None, help="default: outputs/reproduce[-smoke]")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    arguments = parser.parse_args(argv)
    selection = Selection(
        models=tuple(arguments.models),
        tasks=tuple(arguments.tasks),
        methods=tuple(arguments.methods),
        seeds=arguments.seeds,
        launcher=arguments.launcher,
        smoke=arguments.smoke,
        root=arguments.root,
    )
    return GRIDS[arguments.table], selection, arguments.dry_run


def _run(commands: list[list[str]], dry_run: bool) -> None:
    for command in commands:
        print("+ " + shlex.join(command), flush=True)
        if not dry_run:
            subprocess.run(command, cwd=REPO_ROOT, check=True)


def main(argv: Sequence[str] | None = None) -> None:
    grid, selection, dry_run = parse_arguments(sys.argv[1:] if argv is None else argv)
    _run(sweep_commands(grid, selection), dry_run)
    _run(evaluation_commands(grid, selection), dry_run)  # needs the finished runs: listed after the sweeps
    _run([report_command(grid, selection)], dry_run)


if __name__ == "__main__":
    main()
