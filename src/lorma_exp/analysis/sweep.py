"""Any sweep's runs compared: ``python -m lorma_exp.report sweep --runs DIR``.

The runs are grouped by every setting that varies across them (among the task, model and method, the
method's settings, and the ``trainer.*`` settings of their configs), the seeds of a group pooled: each
metric as mean ± std over the seeds, the group with the best main metric marked. One figure plots the main
metric against the first numeric setting that varies (r, α, ...), one line per method.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lorma_exp.analysis.render import METHOD_COLOURS, RenderedTable, agg_figure
from lorma_exp.analysis.runs import Run, RunDataError
from lorma_exp.methods import IDENTITY_FIELDS
from lorma_exp.run_folder import RESULTS_FILE, RunFolder

# The results.json fields a run is grouped by, in column order; trainer.* settings follow.
RUN_KEYS: tuple[str, ...] = ("task", "model", "method", *IDENTITY_FIELDS)
BEST_MARK = " ★"


def _trainer_settings(run: Run) -> dict[str, Any]:
    """The run's ``trainer.*`` settings from its config.yaml (none for runs without a folder)."""
    if run.folder is None or not RunFolder(run.folder).config.is_file():
        return {}
    trainer = RunFolder(run.folder).read_config().get("trainer")
    if not isinstance(trainer, DictConfig):
        return {}
    values = OmegaConf.to_container(trainer)  # saved resolved
    return {f"trainer.{key}": value for key, value in values.items() if not isinstance(value, dict | list)}


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def run_settings(run: Run) -> dict[str, Any]:
    return {**{key: run.results.get(key) for key in RUN_KEYS}, **_trainer_settings(run)}


def varying_keys(settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys whose value differs between runs, in column order."""
    keys = list(dict.fromkeys(key for setting in settings for key in setting))
    return [key for key in keys if len({_hashable(setting.get(key)) for setting in settings}) > 1]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def sweep_table(runs: Sequence[Run], checkpoint: str = "best") -> tuple[RenderedTable, list[str]]:
    """The table (see the module docstring) and the keys it groups by."""
    if not runs:
        raise RunDataError(f"no finished runs ({RESULTS_FILE}) under --runs")
    main_metrics = {run.results["main_metric"] for run in runs}
    if len(main_metrics) != 1:
        raise RunDataError(
            f"the runs have different main metrics {sorted(main_metrics)}: pass one task's runs"
        )
    (main_metric,) = main_metrics
    greater_is_better = bool(runs[0].results.get("greater_is_better", True))
    settings = [run_settings(run) for run in runs]
    keys = varying_keys(settings)
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run, setting in zip(runs, settings, strict=True):
        groups.setdefault(tuple(_hashable(setting.get(key)) for key in keys), []).append(run)
    metric_names = list(dict.fromkeys(name for run in runs for name in run.metrics_at(checkpoint)))
    records = []
    for group, members in groups.items():
        record: dict[str, Any] = dict(zip(keys, group, strict=True))
        record.setdefault("method", members[0].results.get("method"))  # the plot's lines, varying or not
        record["seeds"] = len(members)
        for name in metric_names:
            values = [
                float(run.metrics_at(checkpoint)[name])
                for run in members
                if name in run.metrics_at(checkpoint)
            ]
            record[f"{name}_mean"], record[f"{name}_std"] = _mean_std(values) if values else (None, None)
        records.append(record)
    pick = max if greater_is_better else min
    best = pick(records, key=lambda record: record[f"{main_metric}_mean"])
    for record in records:
        record["best"] = record is best
    header = [*keys, "seeds", *metric_names]
    rows = []
    for record in records:
        cells = [_display(record[key]) for key in keys] + [str(record["seeds"])]
        for name in metric_names:
            mean, std = record[f"{name}_mean"], record[f"{name}_std"]
            cell = "—" if mean is None else f"{mean:.4f} ± {std:.4f}"
            cells.append(cell + (BEST_MARK if record["best"] and name == main_metric else ""))
        rows.append(cells)
    notes = [
        f"{checkpoint} evaluation of each run; mean ± std over seeds (sample std, 0 for one seed); "
        f"{BEST_MARK.strip()}: the best {main_metric} ({'highest' if greater_is_better else 'lowest'})."
    ]
    title = "Sweep: " + (", ".join(keys) if keys else "one setting") + f" ({len(runs)} runs)"
    return RenderedTable("sweep", title, header, rows, records, notes), keys


def _display(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(item) for item in value)
    return "—" if value is None else str(value)


def plot_main_metric(table: RenderedTable, keys: Sequence[str], main_metric: str, path: Path) -> Path | None:
    """Main metric (mean, std as error bars) against the first numeric varying key, a line per method;
    None when no varying key is numeric."""
    numeric = [
        key
        for key in keys
        if all(
            isinstance(record[key], int | float) and not isinstance(record[key], bool)
            for record in table.records
        )
    ]
    if not numeric:
        return None
    x_key = numeric[0]
    figure = agg_figure(6, 4)
    axis = figure.add_subplot()
    methods = list(dict.fromkeys(str(record.get("method")) for record in table.records))
    for method in methods:
        points = sorted(
            (record[x_key], record[f"{main_metric}_mean"], record[f"{main_metric}_std"])
            for record in table.records
            if str(record.get("method")) == method
        )
        xs, means, stds = zip(*points, strict=True)
        axis.errorbar(
            xs, means, yerr=stds, marker="o", capsize=3, label=method, color=METHOD_COLOURS.get(method)
        )
    axis.set_xlabel(x_key)
    axis.set_ylabel(main_metric)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
