"""Run folders -> the paper's tables beside our numbers, and the paper's analyses.

    python -m lorma_exp.report table NAME [NAME ...] --runs DIR [DIR ...] [--wandb ENTITY/PROJECT] --out DIR
    python -m lorma_exp.report sweep --runs DIR [DIR ...] --out DIR [filters] [--checkpoint best|final]
    python -m lorma_exp.report figure5 --runs DIR [DIR ...] --out DIR
    python -m lorma_exp.report convergence --runs DIR [DIR ...] --out DIR [filters]
    python -m lorma_exp.report rank --runs DIR [DIR ...] --out DIR [filters] [--layers REGEX]
    python -m lorma_exp.report similarity --runs DIR [DIR ...] --out DIR [filters] [--layers REGEX]
    python -m lorma_exp.report accuracy-curves --runs DIR [DIR ...] --out DIR [filters]
    python -m lorma_exp.report datasets --cell "experiment=table2 model=roberta_base task=cola" [--cell ...] --out DIR
    python -m lorma_exp.report pretrained-rank --cell "experiment=table2 model=roberta_base task=cola" ... --out DIR

Every command writes ``<name>.md``, ``<name>.csv`` and ``<name>.tex`` per table (and PNGs) into ``--out``,
prints the markdown, and with ``--wandb-log ENTITY/PROJECT`` also logs the tables as wandb Tables.
Filters: ``--table NAME`` (the runs' ``paper_cell.table``), ``--task T ...``, ``--model M ...``.
``datasets`` (Table 12) and ``pretrained-rank`` read no runs: each ``--cell`` is the Hydra overrides of a
training run (as ``make reproduce-table12`` / ``-fullrank`` write them), composed and validated as train.py
would, and the report reads that cell's data or pretrained backbone.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from lorma_exp.analysis import convergence, sweep, wandb_io
from lorma_exp.analysis.render import RenderedTable, to_markdown, write_outputs
from lorma_exp.analysis.runs import (
    Run,
    RunCollection,
    RunDataError,
    cell_fields,
    collect_runs,
    runs_of_table,
    unfinished_of_table,
)
from lorma_exp.analysis.tables import render, table_from_runs
from lorma_exp.config import ConfigError, TrainConfig, compose_train, validate
from lorma_exp.data.hub import DataLoadError
from lorma_exp.models import ModelLoadError
from lorma_exp.paper import FIGURE5, FULL_RANK_FRACTION, RESULT_TABLES
from lorma_exp.run_folder import RESULTS_FILE

TABLE_CHOICES = tuple(name for name in RESULT_TABLES if name != FIGURE5.name)


class UsageError(ValueError):
    """Options that cannot work together or are missing."""


def _collect(arguments: argparse.Namespace) -> RunCollection:
    if not arguments.runs and not getattr(arguments, "wandb", None):
        raise UsageError("give --runs DIR (roots holding run folders) or --wandb ENTITY/PROJECT")
    collection = collect_runs(Path(root) for root in arguments.runs)
    if getattr(arguments, "wandb", None):
        collection.extend(wandb_io.collect_wandb_runs(arguments.wandb))
    return collection


def _filtered(arguments: argparse.Namespace, runs: Sequence[Run]) -> list[Run]:
    selected = []
    for run in runs:
        fields = cell_fields(run)
        if arguments.table and fields["table"] != arguments.table:
            continue
        if arguments.task and fields["task"] not in arguments.task:
            continue
        if arguments.model and fields["model"] not in arguments.model:
            continue
        selected.append(run)
    return selected


def _finish(arguments: argparse.Namespace, tables: list[RenderedTable], group: str | None) -> None:
    out_dir = Path(arguments.out)
    for table in tables:
        write_outputs(table, out_dir)
        print(to_markdown(table))
    if arguments.wandb_log:
        wandb_io.log_tables_to_project(tables, arguments.wandb_log, group)
    print(f"wrote {len(tables)} table(s) to {out_dir}", file=sys.stderr)


def skipped_runs_message(runs: Sequence[Run], table_name: str) -> str | None:
    """How many finished runs a paper table leaves out, and why (None when it takes them all)."""
    reasons = Counter(
        "no paper_cell (not launched for a paper table: compare them with `report sweep`)"
        if not run.results.get("paper_cell")
        else f"launched for {run.results['paper_cell'].get('table')}"
        for run in runs
        if (run.results.get("paper_cell") or {}).get("table") != table_name
    )
    if not reasons:
        return None
    total = sum(reasons.values())
    return f"{table_name}: skipped {total} finished run(s): " + "; ".join(
        f"{count} {reason}" for reason, count in reasons.most_common()
    )


def command_table(arguments: argparse.Namespace) -> None:
    collection = _collect(arguments)
    tables = []
    for name in arguments.names:
        runs = runs_of_table(collection.finished, name)
        skipped = skipped_runs_message(collection.finished, name)
        if skipped:
            print(skipped, file=sys.stderr)
        unfinished = unfinished_of_table(collection.unfinished, name)
        tables.append(render(table_from_runs(RESULT_TABLES[name], runs, unfinished)))
    _finish(arguments, tables, arguments.names[0])


def command_sweep(arguments: argparse.Namespace) -> None:
    runs = _filtered(arguments, _collect(arguments).finished)
    table, keys = sweep.sweep_table(runs, arguments.checkpoint)
    plot = sweep.plot_main_metric(
        table, keys, runs[0].results["main_metric"], Path(arguments.out) / "sweep.png"
    )
    if plot is None:
        table.notes.append("No plot: no numeric setting varies.")
    _finish(arguments, [table], None)


def command_figure5(arguments: argparse.Namespace) -> None:
    from lorma_exp.analysis.rank_sweep import plot_metric_vs_rank

    collection = _collect(arguments)
    runs = runs_of_table(collection.finished, FIGURE5.name)
    table = table_from_runs(FIGURE5, runs, unfinished_of_table(collection.unfinished, FIGURE5.name))
    plot_metric_vs_rank(table, Path(arguments.out) / "figure5.png")
    _finish(arguments, [render(table)], FIGURE5.name)


def command_convergence(arguments: argparse.Namespace) -> None:
    runs = _filtered(arguments, _collect(arguments).finished)
    pairs, notes = convergence.pair_with_reference(runs)
    comparisons = [convergence.compare(run, reference) for run, reference in pairs]
    convergence.plot_loss_curves(runs, comparisons, Path(arguments.out))
    tables = [
        render(convergence.auc_table(comparisons, notes)),
        render(convergence.first_reach_table(comparisons, notes)),
        convergence.comparisons_table(comparisons),
    ]
    _finish(arguments, tables, arguments.table)


def command_rank(arguments: argparse.Namespace) -> None:
    from lorma_exp.analysis import adapter_updates

    runs = adapter_updates.adapter_runs(_filtered(arguments, _collect(arguments).finished))
    loader, pattern = adapter_updates.untrained_backbone, arguments.layers
    tables = adapter_updates.delta_rank_tables(runs, loader, pattern)
    tables += adapter_updates.multiplier_rank_tables(runs, Path(arguments.out), loader, pattern)
    _finish(arguments, tables, arguments.table)


def command_similarity(arguments: argparse.Namespace) -> None:
    from lorma_exp.analysis import adapter_updates

    runs = adapter_updates.adapter_runs(_filtered(arguments, _collect(arguments).finished))
    tables = adapter_updates.similarity_report(
        runs, adapter_updates.untrained_backbone, layer_pattern=arguments.layers, seed=arguments.seed
    )
    _finish(arguments, tables, arguments.table)


def command_accuracy_curves(arguments: argparse.Namespace) -> None:
    from lorma_exp.analysis import accuracy_curves

    runs = _filtered(arguments, _collect(arguments).finished)
    if not runs:
        raise UsageError("no finished runs in --runs (after the filters) to draw Figure 8 from")
    curves = [accuracy_curves.accuracy_curve(run) for run in runs]
    accuracy_curves.plot_accuracy_curves(curves, Path(arguments.out) / "figure8.png")
    tables = [render(accuracy_curves.figure8_table(curves)), accuracy_curves.curves_table(curves)]
    _finish(arguments, tables, arguments.table)


def _cell_settings(arguments: argparse.Namespace) -> list[TrainConfig]:
    """Each ``--cell``'s training config, composed from conf/ and validated as train.py does."""
    return [validate(compose_train(shlex.split(cell), "--cell")) for cell in arguments.cell]


def command_datasets(arguments: argparse.Namespace) -> None:
    from lorma_exp.analysis import datasets

    statistics = [datasets.dataset_statistics(settings) for settings in _cell_settings(arguments)]
    tables = [render(datasets.table12(statistics)), datasets.statistics_table(statistics)]
    _finish(arguments, tables, "table12")


def command_pretrained_rank(arguments: argparse.Namespace) -> None:
    from lorma_exp.analysis import pretrained_rank

    cells = _cell_settings(arguments)
    records = [record for settings in cells for record in pretrained_rank.pretrained_rank_records(settings)]
    tables = pretrained_rank.full_rank_tables(records, smoke=any(settings.smoke for settings in cells))
    _finish(arguments, tables, "fullrank")


def _layer_pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"--layers {text!r} is not a regular expression: {error}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lorma_exp.report", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def add_common(command: argparse.ArgumentParser, *, wandb_source: bool) -> None:
        command.add_argument(
            "--runs",
            nargs="+",
            action="extend",
            default=[],
            metavar="DIR",
            help="roots searched for run folders",
        )
        if wandb_source:
            command.add_argument(
                "--wandb", metavar="ENTITY/PROJECT", help="also read finished runs from wandb"
            )
        command.add_argument("--out", required=True, metavar="DIR", help="where the tables and plots go")
        command.add_argument("--wandb-log", metavar="ENTITY/PROJECT", help="log the tables as wandb Tables")

    def add_filters(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--table", metavar="NAME", help="only runs launched for this table (paper_cell.table)"
        )
        command.add_argument("--task", nargs="+", metavar="T", help="only these tasks")
        command.add_argument("--model", nargs="+", metavar="M", help="only these models")

    table = commands.add_parser("table", help=f"paper tables from {RESULTS_FILE}, beside the paper's numbers")
    table.add_argument(
        "names", nargs="+", choices=TABLE_CHOICES, metavar="NAME", help=", ".join(TABLE_CHOICES)
    )
    add_common(table, wandb_source=True)
    table.set_defaults(handler=command_table)

    sweep_command = commands.add_parser(
        "sweep",
        help="any sweep: grouped by the settings that vary, mean ± std over seeds, best marked, a plot",
    )
    add_common(sweep_command, wandb_source=False)
    add_filters(sweep_command)
    sweep_command.add_argument(
        "--checkpoint", choices=("best", "final"), default="best", help="which evaluation of each run (best)"
    )
    sweep_command.set_defaults(handler=command_sweep)

    figure5 = commands.add_parser("figure5", help="metric vs rank per method (table and figure5.png)")
    add_common(figure5, wandb_source=True)
    figure5.set_defaults(handler=command_figure5)

    for name, handler, help_text in (
        (
            "convergence",
            command_convergence,
            "Table 5 AUC decrease and Figure 6 first-reach step vs LoRA, loss plots",
        ),
        ("rank", command_rank, "Table 15 rank of ΔW per layer and Figure 7 rank of I(BA) across snapshots"),
        (
            "similarity",
            command_similarity,
            "Table 9 similarity of ΔW_LoRMA to ΔW_LoRA, with a random baseline",
        ),
        (
            "accuracy-curves",
            command_accuracy_curves,
            "Figure 8 training vs evaluation accuracy over training (runs with trainer.eval_train=true)",
        ),
    ):
        command = commands.add_parser(name, help=help_text)
        add_common(command, wandb_source=False)
        add_filters(command)
        if name in ("rank", "similarity"):
            command.add_argument(
                "--layers",
                type=_layer_pattern,
                metavar="REGEX",
                help="only adapted layers whose name matches (re.search)",
            )
        if name == "similarity":
            command.add_argument(
                "--seed", type=int, default=0, help="seed of the random baseline (default 0)"
            )
        command.set_defaults(handler=handler)

    for name, handler, help_text in (
        ("datasets", command_datasets, "Table 12 dataset statistics of each cell, beside the paper's sizes"),
        (
            "pretrained-rank",
            command_pretrained_rank,
            f"the paper's check that every adapted pretrained matrix is ≥ {FULL_RANK_FRACTION * 100:.0f}%% of full rank",
        ),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--cell",
            action="append",
            required=True,
            metavar="OVERRIDES",
            help='a training run\'s overrides in one string, e.g. "experiment=table2 model=roberta_base task=cola"',
        )
        command.add_argument("--out", required=True, metavar="DIR", help="where the tables go")
        command.add_argument("--wandb-log", metavar="ENTITY/PROJECT", help="log the tables as wandb Tables")
        command.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        arguments.handler(arguments)
    except (UsageError, RunDataError, ConfigError, DataLoadError, ModelLoadError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
