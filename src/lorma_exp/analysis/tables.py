"""Runs -> a paper table with our numbers beside the paper's.

Each cell is the mean ± sample standard deviation (ddof=1; none for a single seed) over the runs placed in
it, with their number n, the paper's number and the difference ours − paper. A cell without runs is
missing ("—", n=0) and never filled; an average over columns is missing when any of its columns is.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lorma_exp.analysis.render import SMOKE_TITLE, RenderedTable
from lorma_exp.analysis.runs import Run, RunDataError, UnfinishedRun, cell_fields, normalise_field
from lorma_exp.paper import PERCENT, PaperColumn, PaperRow, PaperTable
from lorma_exp.run_folder import RESULTS_FILE

MISSING = "—"

# Settings every run of one cell must share; runs that differ in one of them are different experiments.
CELL_SETTINGS: tuple[str, ...] = (
    "model_name_or_path",
    "method",
    "kind",
    "inflation",
    "mode",
    "r",
    "alpha",
    "targets",
    "smoke",
)


@dataclass(frozen=True)
class Observation:
    """One run's value for one cell, already in the paper's unit."""

    row: str
    column: str
    value: float
    seed: int | None
    source: str
    adapter_params: int | None = None
    settings: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class UnplacedRun:
    source: str
    reason: str


@dataclass(frozen=True)
class CellSummary:
    """Our number for a cell: mean, sample std (ddof=1; None below two values), n, and the paper's."""

    mean: float | None
    std: float | None
    n: int
    paper: float | None
    seeds: tuple[int, ...] = ()

    @classmethod
    def of(cls, values: Sequence[float], seeds: Sequence[int | None], paper: float | None) -> CellSummary:
        n = len(values)
        mean = math.fsum(values) / n if n else None
        std = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (n - 1)) if n >= 2 else None
        return cls(mean, std, n, paper, tuple(seed for seed in seeds if seed is not None))

    @property
    def diff(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


@dataclass
class ComparisonTable:
    """A paper table filled with observations; ``rows``/``columns`` may extend the paper's (analyses)."""

    paper: PaperTable
    rows: list[PaperRow]
    columns: list[PaperColumn]
    cells: dict[tuple[str, str], CellSummary]
    adapter_params: dict[tuple[str, str], tuple[int, ...]]
    smoke: bool = False
    unplaced: list[UnplacedRun] = field(default_factory=list)
    unfinished: list[UnfinishedRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def average(self, row_key: str) -> CellSummary | None:
        """The row's Avg over ``paper.average_of``: the mean of the column means (how the paper averages).

        Missing (no values) when any of those columns is missing; its n is the smallest column n.
        """
        if not self.paper.average_of:
            return None
        row = next(row for row in self.rows if row.key == row_key)
        summaries = [self.cells[(row_key, key)] for key in self.paper.average_of]
        if any(summary.mean is None for summary in summaries):
            return CellSummary(None, None, 0, row.average)
        mean = math.fsum(summary.mean for summary in summaries) / len(summaries)
        return CellSummary(mean, None, min(summary.n for summary in summaries), row.average)


def _matches(match: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    return all(fields.get(name) == normalise_field(value) for name, value in match.items())


def _describe(fields: Mapping[str, Any], names: Sequence[str]) -> str:
    return ", ".join(f"{name}={fields.get(name)!r}" for name in names)


def _cell_value(table: PaperTable, row: PaperRow, column: PaperColumn, run: Run) -> tuple[float, str | None]:
    """The run's value for one cell in the paper's unit, and a note when a smoke run's main metric stood
    in for a metric its embedded task does not compute."""
    metric = column.metric or row.metric
    if metric is None:
        raise ValueError(f"{table.name}: neither column {column.key} nor row {row.key} names a metric")
    metrics = run.metrics_at(table.checkpoint)
    if metric in metrics:
        value = float(metrics[metric])
        if column.scale == PERCENT and abs(value) > 1.0:
            raise RunDataError(
                f"{run.source}: metric '{metric}' = {value} is not a fraction; {RESULTS_FILE} stores fractions "
                "(accuracy 0.85, not 85) and reports scale them"
            )
        return value * column.scale, None
    main_metric = run.results.get("main_metric")
    if run.smoke and main_metric in metrics:
        note = f"smoke runs lack '{metric}'; their main metric '{main_metric}' is shown instead"
        return float(metrics[main_metric]) * column.scale, note
    raise RunDataError(
        f"{run.source}: {table.checkpoint} metrics have no '{metric}' (they have {sorted(metrics)}); "
        f"{table.name} column {column.label} needs it"
    )


def place_runs(
    table: PaperTable, runs: Sequence[Run]
) -> tuple[list[Observation], list[UnplacedRun], list[str]]:
    """Observations for every cell each run fills; runs no row or column of ``table`` takes; notes."""
    observations: list[Observation] = []
    unplaced: list[UnplacedRun] = []
    notes: list[str] = []
    for run in runs:
        fields = cell_fields(run)
        rows = [row for row in table.rows if _matches(row.match, fields)]
        columns = [column for column in table.columns if _matches(column.match, fields)]
        if len(rows) > 1:
            raise ValueError(f"{table.name}: rows {[row.key for row in rows]} all match {run.source}")
        if not rows or not columns:
            names = sorted({name for item in (*table.rows, *table.columns) for name in item.match})
            unplaced.append(
                UnplacedRun(
                    run.source, f"no {'row' if not rows else 'column'} for {_describe(fields, names)}"
                )
            )
            continue
        settings = tuple((name, normalise_field(run.results.get(name))) for name in CELL_SETTINGS)
        for column in columns:
            if not column.required and column.metric not in run.metrics_at(table.checkpoint):
                note = f"{column.label}: empty for runs without '{column.metric}' (e.g. {run.source})"
                if not any(known.startswith(f"{column.label}: empty") for known in notes):
                    notes.append(note)
                continue
            value, note = _cell_value(table, rows[0], column, run)
            if note and note not in notes:
                notes.append(note)
            observations.append(
                Observation(
                    rows[0].key, column.key, value, run.seed, run.source, run.adapter_params, settings
                )
            )
    return observations, unplaced, notes


def _check_cell(row: str, column: str, observations: Sequence[Observation]) -> None:
    seen: dict[int | None, str] = {}
    for observation in observations:
        if observation.seed is not None and observation.seed in seen:
            raise RunDataError(
                f"cell {row} / {column}: two runs with seed {observation.seed}: {seen[observation.seed]} and "
                f"{observation.source}; keep one (pass fewer --runs roots or delete the duplicate)"
            )
        seen[observation.seed] = observation.source
    first = observations[0]
    for observation in observations[1:]:
        for (name, expected), (_, actual) in zip(first.settings, observation.settings, strict=True):
            if expected != actual:
                raise RunDataError(
                    f"cell {row} / {column}: runs differ in '{name}' ({expected!r} in {first.source}, {actual!r} "
                    f"in {observation.source}); a cell averages seeds of one setting"
                )


def build_table(
    table: PaperTable,
    observations: Sequence[Observation],
    *,
    smoke: bool = False,
    unplaced: Sequence[UnplacedRun] = (),
    unfinished: Sequence[UnfinishedRun] = (),
    notes: Sequence[str] = (),
    new_row: Callable[[str], PaperRow] | None = None,
    new_column: Callable[[str], PaperColumn] | None = None,
) -> ComparisonTable:
    """Summarise observations per cell.

    Analyses pass ``new_row`` / ``new_column`` to add the rows or columns the paper lacks (a task it did
    not analyse), without a paper number; otherwise an observation outside the paper's cells is an error.
    """
    rows, columns = list(table.rows), list(table.columns)
    for observation in observations:
        if observation.row not in {row.key for row in rows}:
            if new_row is None:
                raise ValueError(f"{table.name}: no row {observation.row!r}")
            rows.append(new_row(observation.row))
        if observation.column not in {column.key for column in columns}:
            if new_column is None:
                raise ValueError(f"{table.name}: no column {observation.column!r}")
            columns.append(new_column(observation.column))
    by_cell: dict[tuple[str, str], list[Observation]] = defaultdict(list)
    for observation in observations:
        by_cell[(observation.row, observation.column)].append(observation)
    cells: dict[tuple[str, str], CellSummary] = {}
    params: dict[tuple[str, str], tuple[int, ...]] = {}
    paper_columns = [column.key for column in table.columns]
    for row in rows:
        for column in columns:
            found = sorted(
                by_cell.get((row.key, column.key), []), key=lambda item: (item.seed is None, item.seed)
            )
            if found:
                _check_cell(row.key, column.key, found)
            paper = None
            if row.values and column.key in paper_columns:
                paper = row.values[paper_columns.index(column.key)]
            cells[(row.key, column.key)] = CellSummary.of(
                [item.value for item in found], [item.seed for item in found], paper
            )
            params[(row.key, column.key)] = tuple(
                sorted({item.adapter_params for item in found if item.adapter_params is not None})
            )
    return ComparisonTable(
        paper=table,
        rows=rows,
        columns=columns,
        cells=cells,
        adapter_params=params,
        smoke=smoke,
        unplaced=list(unplaced),
        unfinished=list(unfinished),
        notes=list(notes),
    )


def table_from_runs(
    table: PaperTable, runs: Sequence[Run], unfinished: Sequence[UnfinishedRun] = ()
) -> ComparisonTable:
    """The paper table filled from the finished runs launched for it."""
    smoke_flags = {run.smoke for run in runs}
    if len(smoke_flags) > 1:
        count = sum(run.smoke for run in runs)
        raise RunDataError(
            f"{table.name}: {count} smoke runs and {len(runs) - count} full runs; smoke numbers are not comparable, "
            "so build their tables from separate --runs roots"
        )
    observations, unplaced, notes = place_runs(table, runs)
    return build_table(
        table,
        observations,
        smoke=smoke_flags == {True},
        unplaced=unplaced,
        unfinished=unfinished,
        notes=notes,
    )


def format_number(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"


def format_cell(summary: CellSummary, decimals: int) -> str:
    """``mean ± std (n=k) vs paper [diff]``; the paper part is left out where the paper has no number."""
    if summary.mean is None:
        ours = f"{MISSING} (n=0)"
    elif summary.std is None:
        ours = f"{format_number(summary.mean, decimals)} (n={summary.n})"
    else:
        ours = f"{format_number(summary.mean, decimals)} ± {format_number(summary.std, decimals)} (n={summary.n})"
    if summary.paper is None:
        return ours
    paper = f"{ours} vs {format_number(summary.paper, decimals)}"
    return paper if summary.diff is None else f"{paper} [{summary.diff:+.{decimals}f}]"


def format_params(counts: Sequence[int]) -> str:
    """Adapter parameter counts in millions, as the paper prints them (a range when runs disagree)."""
    if not counts:
        return MISSING
    low, high = min(counts), max(counts)
    return f"{low / 1e6:.2f}M" if low == high else f"{low / 1e6:.2f}M–{high / 1e6:.2f}M"


def render(table: ComparisonTable) -> RenderedTable:
    paper = table.paper
    groups_before = {group.before: group for group in paper.params_groups}
    header = [paper.row_header]
    for column in table.columns:
        if column.key in groups_before:
            header.append(groups_before[column.key].label)
        header.append(column.label)
    if paper.average_of:
        header.append("Avg")
    average_decimals = max((paper.column(key).decimals for key in paper.average_of), default=1)

    rows: list[list[str]] = []
    records: list[dict[str, Any]] = []
    for row in table.rows:
        line = [row.label]
        for column in table.columns:
            if column.key in groups_before:
                group = groups_before[column.key]
                counts = sorted(
                    {count for key in group.columns for count in table.adapter_params[(row.key, key)]}
                )
                printed = row.params[paper.params_groups.index(group)] if row.params else None
                line.append(format_params(counts) + (f" vs {printed}" if printed else ""))
                records.append(_params_record(paper.name, row, group.label, counts, printed))
            summary = table.cells[(row.key, column.key)]
            line.append(format_cell(summary, column.decimals))
            records.append(
                _record(
                    paper.name,
                    row,
                    column.key,
                    column.label,
                    summary,
                    table.adapter_params[(row.key, column.key)],
                )
            )
        average = table.average(row.key)
        if average is not None:
            line.append(format_cell(average, average_decimals))
            records.append(_record(paper.name, row, "avg", "Avg", average, ()))
        rows.append(line)

    notes = list(table.notes)
    if any(row.copied for row in table.rows):
        notes.append(
            "∗ rows: numbers the paper copies from earlier work; the reproduction does not run them."
        )
    notes.extend(paper.notes)
    notes.append(
        "Cells: mean ± sample std (n = values averaged, one per run unless noted) vs the paper [ours − paper]."
    )
    notes.extend(f"Not placed: {item.source} ({item.reason})" for item in table.unplaced)
    notes.extend(f"Missing (unfinished): {item.source} ({item.reason})" for item in table.unfinished)
    title = f"{SMOKE_TITLE} — {paper.title}" if table.smoke else paper.title
    return RenderedTable(paper.name, title, header, rows, records, notes)


def _record(
    table: str, row: PaperRow, column: str, label: str, summary: CellSummary, params: Sequence[int]
) -> dict[str, Any]:
    return {
        "table": table,
        "row": row.key,
        "row_label": row.label,
        "column": column,
        "column_label": label,
        "mean": summary.mean,
        "std": summary.std,
        "n": summary.n,
        "seeds": list(summary.seeds),
        "paper": summary.paper,
        "diff": summary.diff,
        "adapter_params": list(params),
    }


def _params_record(
    table: str, row: PaperRow, label: str, counts: Sequence[int], printed: str | None
) -> dict[str, Any]:
    return {
        "table": table,
        "row": row.key,
        "row_label": row.label,
        "column": "params",
        "column_label": label,
        "mean": counts[0] if len(counts) == 1 else None,
        "std": None,
        "n": None,
        "seeds": [],
        "paper": None,
        "diff": None,
        "adapter_params": list(counts),
        "paper_params": printed,
    }
