"""How fast a run's training loss falls compared with LoRA (Table 5 and Figure 6).

Definitions (``metrics.jsonl`` ``train`` events: the mean loss over each ``log_every`` optimizer steps):

- The loss curve is the piecewise-linear interpolant of the logged (step, loss) points.
- AUC over ``[s0, s1]`` is the exact integral of that interpolant, i.e. the trapezoid rule over the logged
  steps inside the interval, with the curve's values at ``s0`` and ``s1`` interpolated.
- Two runs are compared over the steps both cover: ``s0 = max(first steps)``, ``s1 = min(last steps)``;
  their step grids need not agree (different ``log_every``, batch sizes or run lengths).
- % AUC decrease vs LoRA (Table 5) = 100 · (AUC_LoRA − AUC_run) / AUC_LoRA; positive means the run's loss
  sits lower overall.
- LoRA's minimum is the smallest logged LoRA loss; a run "reaches" it at the first logged step whose loss
  is ≤ that minimum (Figure 6), and its speed-up is LoRA's own first step at its minimum divided by that
  step. A run that never reaches it has no step (listed as not reached).
- A curve needs at least two logged points, and the two runs' curves a common interval of positive length;
  otherwise the comparison fails naming the runs (a run of a few steps must log every step:
  ``trainer.log_every=1``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorma_exp.analysis.render import METHOD_COLOURS, RenderedTable, agg_figure, records_table
from lorma_exp.analysis.runs import Run, RunDataError, cell_fields
from lorma_exp.analysis.tables import ComparisonTable, Observation, build_table
from lorma_exp.paper import FIGURE6, GLUE_LABEL, METHOD_LABEL, TABLE5, PaperColumn, PaperRow

REFERENCE_METHOD = "lora"
MIN_CURVE_POINTS = 2


def trapezoid_area(steps: np.ndarray, losses: np.ndarray) -> float:
    """Trapezoid-rule integral of losses over steps (exact for the piecewise-linear curve)."""
    steps, losses = np.asarray(steps, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    return float(np.sum((losses[1:] + losses[:-1]) * np.diff(steps)) / 2.0)


def area_between(steps: np.ndarray, losses: np.ndarray, start: float, end: float) -> float:
    """Integral of the piecewise-linear curve through (steps, losses) over ``[start, end]``.

    ``steps`` must be increasing and cover the interval.
    """
    steps, losses = np.asarray(steps, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if steps.ndim != 1 or steps.shape != losses.shape or steps.size < 2:
        raise ValueError("a loss curve needs at least two (step, loss) points of equal count")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be strictly increasing")
    if not steps[0] <= start < end <= steps[-1]:
        raise ValueError(
            f"interval [{start}, {end}] is not inside the curve's steps [{steps[0]}, {steps[-1]}]"
        )
    inside = (steps > start) & (steps < end)
    grid = np.concatenate(([start], steps[inside], [end]))
    return trapezoid_area(grid, np.interp(grid, steps, losses))


def common_steps(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """The step interval both curves cover."""
    start, end = max(first[0], second[0]), min(first[-1], second[-1])
    if not start < end:
        raise ValueError(
            f"the curves share no step interval ([{first[0]}, {first[-1]}] vs [{second[0]}, {second[-1]}])"
        )
    return float(start), float(end)


def auc_decrease_percent(
    steps: np.ndarray, losses: np.ndarray, reference_steps: np.ndarray, reference_losses: np.ndarray
) -> tuple[float, float, float, tuple[float, float]]:
    """(% decrease, AUC, reference AUC, interval) over the steps both curves cover."""
    interval = common_steps(steps, reference_steps)
    area = area_between(steps, losses, *interval)
    reference_area = area_between(reference_steps, reference_losses, *interval)
    if reference_area <= 0:
        raise ValueError("the reference curve's area is not positive; a % decrease is undefined")
    return 100.0 * (reference_area - area) / reference_area, area, reference_area, interval


def first_step_reaching(steps: np.ndarray, losses: np.ndarray, threshold: float) -> float | None:
    """The first logged step whose loss is ≤ ``threshold``; None if none is."""
    reached = np.flatnonzero(np.asarray(losses) <= threshold)
    return float(np.asarray(steps)[reached[0]]) if reached.size else None


@dataclass(frozen=True)
class Comparison:
    """One run against the LoRA run of the same task, model, r, targets and seed."""

    run: Run
    reference: Run
    decrease_percent: float
    auc: float
    reference_auc: float
    interval: tuple[float, float]
    reference_min_loss: float
    reference_min_step: float
    first_reach_step: float | None

    @property
    def speedup(self) -> float | None:
        return None if self.first_reach_step is None else self.reference_min_step / self.first_reach_step


def pairing_key(run: Run) -> tuple[Any, ...]:
    """Runs compared with each other: same table, task, model, rank, targets and seed."""
    fields = cell_fields(run)
    return (fields["table"], fields["task"], fields["model"], fields["r"], fields["targets"], run.seed)


def pair_with_reference(runs: Sequence[Run]) -> tuple[list[tuple[Run, Run]], list[str]]:
    """(run, its LoRA run) pairs, and notes on runs without a LoRA run to compare with."""
    references: dict[tuple[Any, ...], Run] = {}
    for run in runs:
        if cell_fields(run)["method"] == REFERENCE_METHOD:
            key = pairing_key(run)
            if key in references:
                raise RunDataError(
                    f"two LoRA runs for {key}: {references[key].source} and {run.source}; "
                    "narrow --runs or filter with --table/--task/--model"
                )
            references[key] = run
    pairs, notes = [], []
    for run in runs:
        if cell_fields(run)["method"] == REFERENCE_METHOD:
            continue
        reference = references.get(pairing_key(run))
        if reference is None:
            notes.append(f"No LoRA run to compare with: {run.source}")
        else:
            pairs.append((run, reference))
    return pairs, notes


def loss_curve(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """The run's logged training-loss curve, refused with the fix when it has too few points to integrate."""
    steps, losses = run.train_loss_curve()
    if steps.size < MIN_CURVE_POINTS:
        logged = ", ".join(f"{step:g}" for step in steps)
        raise RunDataError(
            f"{run.source}: its training loss was logged at {steps.size} step(s) ({logged}); comparing loss "
            f"curves needs at least {MIN_CURVE_POINTS}. Train it with a smaller trainer.log_every (the mean "
            "loss is logged every log_every steps; trainer.log_every=1 for a run of a few steps)."
        )
    return steps, losses


def compare(run: Run, reference: Run) -> Comparison:
    steps, losses = loss_curve(run)
    reference_steps, reference_losses = loss_curve(reference)
    try:
        decrease, area, reference_area, interval = auc_decrease_percent(
            steps, losses, reference_steps, reference_losses
        )
    except ValueError as error:
        raise RunDataError(f"{run.source} against {reference.source}: {error}") from error
    minimum = float(reference_losses.min())
    reference_min_step = first_step_reaching(reference_steps, reference_losses, minimum)
    return Comparison(
        run=run,
        reference=reference,
        decrease_percent=decrease,
        auc=area,
        reference_auc=reference_area,
        interval=interval,
        reference_min_loss=minimum,
        reference_min_step=float(reference_min_step),
        first_reach_step=first_step_reaching(steps, losses, minimum),
    )


def _task_label(task: str) -> str:
    return GLUE_LABEL.get(task, task)


def _settings(run: Run) -> tuple[tuple[str, Any], ...]:
    fields = cell_fields(run)
    return tuple((name, fields[name]) for name in ("model", "r", "targets"))


def auc_table(comparisons: Sequence[Comparison], notes: Sequence[str] = ()) -> ComparisonTable:
    """Table 5: % AUC decrease per method (rows) and task (columns), mean ± std over seeds."""
    observations = [
        Observation(
            row=cell_fields(item.run)["method"],
            column=cell_fields(item.run)["task"],
            value=item.decrease_percent,
            seed=item.run.seed,
            source=item.run.source,
            settings=_settings(item.run),
        )
        for item in comparisons
    ]
    return build_table(
        TABLE5,
        observations,
        smoke=any(item.run.smoke for item in comparisons),
        notes=notes,
        new_row=lambda key: PaperRow(key, METHOD_LABEL.get(key, key), ()),
        new_column=lambda key: PaperColumn(key, _task_label(key), decimals=2),
    )


def first_reach_table(comparisons: Sequence[Comparison], notes: Sequence[str] = ()) -> ComparisonTable:
    """Figure 6: first step reaching LoRA's minimum loss, and the speed-up, per method and task."""
    observations = []
    notes = list(notes)
    for item in comparisons:
        fields = cell_fields(item.run)
        if item.first_reach_step is None:
            notes.append(
                f"Never reached LoRA's minimum loss {item.reference_min_loss:.4g}: {item.run.source}"
            )
            continue
        for quantity, value in (("step", item.first_reach_step), ("speedup", item.speedup)):
            observations.append(
                Observation(
                    fields["method"],
                    f"{fields['task']}/{quantity}",
                    value,
                    item.run.seed,
                    item.run.source,
                    settings=_settings(item.run),
                )
            )

    def new_column(key: str) -> PaperColumn:
        task, quantity = key.split("/")
        if quantity == "step":
            return PaperColumn(key, f"{_task_label(task)} step", decimals=0)
        return PaperColumn(key, f"{_task_label(task)} speed-up ×", decimals=1)

    return build_table(
        FIGURE6,
        observations,
        smoke=any(item.run.smoke for item in comparisons),
        notes=notes,
        new_row=lambda key: PaperRow(key, METHOD_LABEL.get(key, key), ()),
        new_column=new_column,
    )


def comparisons_table(comparisons: Sequence[Comparison]) -> RenderedTable:
    """Every run against its LoRA run: the numbers behind Table 5 and Figure 6."""
    records = []
    for item in comparisons:
        fields = cell_fields(item.run)
        records.append(
            {
                "task": fields["task"],
                "model": fields["model"],
                "r": fields["r"],
                "targets": fields["targets"],
                "method": fields["method"],
                "seed": item.run.seed,
                "step_start": item.interval[0],
                "step_end": item.interval[1],
                "auc": item.auc,
                "lora_auc": item.reference_auc,
                "auc_decrease_percent": item.decrease_percent,
                "lora_min_loss": item.reference_min_loss,
                "lora_min_step": item.reference_min_step,
                "first_reach_step": item.first_reach_step,
                "speedup": item.speedup,
                "run": item.run.source,
                "lora_run": item.reference.source,
            }
        )
    columns = ["task", "model", "r", "method", "seed", "step_start", "step_end", "auc", "lora_auc"]
    columns += ["auc_decrease_percent", "lora_min_step", "first_reach_step", "speedup"]
    title = "Training-loss convergence of each run vs the LoRA run of the same task, model, r and seed"
    notes = [
        "AUC over [step_start, step_end], the steps both runs logged; first_reach_step — = never reached."
    ]
    return records_table("convergence_runs", title, records, columns, notes)


def _file_part(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(value)).strip("-")


def plot_loss_curves(runs: Sequence[Run], comparisons: Sequence[Comparison], out_dir: Path) -> list[Path]:
    """One PNG per (table, task, model, r, targets): every run's loss curve, LoRA's minimum as a dashed
    line and the step where each run first reaches it as a dot."""
    reached = {item.run.source: item for item in comparisons}
    groups: dict[tuple[Any, ...], list[Run]] = defaultdict(list)
    for run in runs:
        groups[pairing_key(run)[:-1]].append(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (table, task, model, r, targets), members in sorted(groups.items(), key=lambda item: str(item[0])):
        figure = agg_figure(7, 4.5)
        axes = figure.subplots()
        for run in sorted(members, key=lambda item: (cell_fields(item)["method"], item.seed)):
            method = cell_fields(run)["method"]
            steps, losses = run.train_loss_curve()
            colour = METHOD_COLOURS.get(method)
            axes.plot(
                steps,
                losses,
                color=colour,
                linewidth=1,
                label=f"{METHOD_LABEL.get(method, method)} seed {run.seed}",
            )
            if run.source in reached:
                item = reached[run.source]
                axes.axhline(
                    item.reference_min_loss, color=METHOD_COLOURS["lora"], linestyle="--", linewidth=0.6
                )
                if item.first_reach_step is not None:
                    axes.plot(
                        [item.first_reach_step], [item.reference_min_loss], "o", color=colour, markersize=4
                    )
        axes.set_xlabel("optimizer step")
        axes.set_ylabel("training loss")
        axes.set_title(f"{_task_label(task)} · {model} · r={r} · {','.join(targets)}")
        axes.legend(fontsize=7)
        figure.tight_layout()
        path = (
            out_dir
            / f"loss_{_file_part(table or 'runs')}_{_file_part(task)}_{_file_part(model)}_r{r}_{_file_part('-'.join(targets))}.png"
        )
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths
