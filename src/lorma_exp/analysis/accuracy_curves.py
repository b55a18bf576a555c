"""Training against evaluation accuracy over training (the paper's Figure 8).

What "training accuracy" is here: the accuracy of the model on its whole training set (the rows the run
trains on), scored in eval mode (no dropout) with the same metric code as the evaluation split, at every
evaluation of the run (the end of each epoch, and before training when it evaluates then). A run records
it when trained with ``trainer.eval_train=true`` (``experiment=figure8`` sets it): each evaluation logs an
``eval`` event of split ``train`` beside the evaluation split's. Both numbers then describe the same
weights under the same conditions, so their difference is the generalisation gap at that point; an
average of the training batches' accuracy while they are trained on would mix weights of a whole epoch
and dropout into it.

The metric is ``accuracy`` (Figure 8's), or the run's main metric for a task without accuracy (STS-B).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorma_exp.analysis.render import METHOD_COLOURS, RenderedTable, agg_figure, records_table
from lorma_exp.analysis.runs import Run, RunDataError, cell_fields
from lorma_exp.analysis.tables import ComparisonTable, Observation, build_table
from lorma_exp.paper import FIGURE8, GLUE_LABEL, METHOD_LABEL, PERCENT, PaperRow
from lorma_exp.run_folder import METRICS_FILE, TRAIN_SPLIT

PREFERRED_METRIC = "accuracy"


@dataclass(frozen=True)
class AccuracyCurve:
    """One run's metric on its training rows and on its evaluation split, at each evaluation (fractions)."""

    run: Run
    metric: str
    split: str
    steps: np.ndarray
    epochs: np.ndarray
    train: np.ndarray
    evaluation: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        return self.train - self.evaluation


def accuracy_curve(run: Run) -> AccuracyCurve:
    """The run's training and evaluation scores at every step where both were logged.

    The evaluation split is the first non-training split the run logged (its best-epoch split). A resumed
    run's repeated evaluations keep the last value logged for each step.
    """
    scores: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for event in run.metric_events():
        if event.get("event") == "eval" and "split" in event:
            scores[event["split"]][int(event["step"])] = event
    if TRAIN_SPLIT not in scores:
        raise RunDataError(
            f"{run.source}: {METRICS_FILE} has no evaluation of the training rows; train the run with "
            "trainer.eval_train=true (experiment=figure8 sets it)"
        )
    splits = [split for split in scores if split != TRAIN_SPLIT]
    if not splits:
        raise RunDataError(f"{run.source}: {METRICS_FILE} has no evaluation split besides the training rows")
    split = splits[0]
    steps = sorted(set(scores[TRAIN_SPLIT]) & set(scores[split]))
    first = scores[split][steps[0]] if steps else {}
    metric = PREFERRED_METRIC if PREFERRED_METRIC in first else run.results.get("main_metric")
    if not steps or metric not in first or metric not in scores[TRAIN_SPLIT][steps[0]]:
        raise RunDataError(
            f"{run.source}: no step has '{metric}' for both the training rows and {split} in {METRICS_FILE}"
        )
    return AccuracyCurve(
        run=run,
        metric=metric,
        split=split,
        steps=np.array(steps, dtype=np.float64),
        epochs=np.array([float(scores[split][step].get("epoch", np.nan)) for step in steps]),
        train=np.array([float(scores[TRAIN_SPLIT][step][metric]) for step in steps]),
        evaluation=np.array([float(scores[split][step][metric]) for step in steps]),
    )


def figure8_table(curves: Sequence[AccuracyCurve]) -> ComparisonTable:
    """Per method: the training and evaluation metric at the end of training, their gap and the largest
    gap along the way (%, mean ± std over seeds). The paper gives a plot, no numbers."""
    observations = []
    notes = []
    for curve in curves:
        method = cell_fields(curve.run)["method"]
        values = {
            "train": curve.train[-1],
            "evaluation": curve.evaluation[-1],
            "gap": curve.gap[-1],
            "largest_gap": curve.gap.max(),
        }
        for column, value in values.items():
            observations.append(
                Observation(method, column, float(value) * PERCENT, curve.run.seed, curve.run.source)
            )
        note = f"{curve.metric} on the training rows vs {curve.split}"
        if note not in notes:
            notes.append(note)
    return build_table(
        FIGURE8,
        observations,
        smoke=any(curve.run.smoke for curve in curves),
        notes=notes,
        new_row=lambda key: PaperRow(key, METHOD_LABEL.get(key, key), ()),
    )


def curves_table(curves: Sequence[AccuracyCurve]) -> RenderedTable:
    """Every run's training and evaluation metric at each evaluation: the numbers behind figure8.png."""
    records = []
    for curve in curves:
        fields = cell_fields(curve.run)
        for step, epoch, train, evaluation in zip(
            curve.steps, curve.epochs, curve.train, curve.evaluation, strict=True
        ):
            records.append(
                {
                    "task": fields["task"],
                    "model": fields["model"],
                    "method": fields["method"],
                    "seed": curve.run.seed,
                    "step": int(step),
                    "epoch": float(epoch),
                    "metric": curve.metric,
                    "train": float(train),
                    "evaluation": float(evaluation),
                    "gap": float(train - evaluation),
                    "split": curve.split,
                    "run": curve.run.source,
                }
            )
    columns = ["task", "model", "method", "seed", "step", "epoch", "metric", "train", "evaluation", "gap"]
    title = "Training and evaluation metric of each run at each evaluation (fractions)"
    return records_table("figure8_curves", title, records, columns)


def plot_accuracy_curves(curves: Sequence[AccuracyCurve], path: Path) -> Path:
    """figure8.png: one panel per (task, model); per run, the training rows (solid) and the evaluation
    split (dashed) against epoch, coloured by method."""
    groups: dict[tuple[str, str], list[AccuracyCurve]] = defaultdict(list)
    for curve in curves:
        fields = cell_fields(curve.run)
        groups[(fields["task"], fields["model"])].append(curve)
    figure = agg_figure(6 * len(groups), 4.2)
    panels = figure.subplots(1, len(groups), squeeze=False)[0]
    for axes, ((task, model), members) in zip(panels, sorted(groups.items()), strict=True):
        for curve in sorted(members, key=lambda item: (cell_fields(item.run)["method"], item.run.seed)):
            method = cell_fields(curve.run)["method"]
            label = f"{METHOD_LABEL.get(method, method)} seed {curve.run.seed}"
            colour = METHOD_COLOURS.get(method)
            axes.plot(
                curve.epochs, PERCENT * curve.train, color=colour, label=f"{label} train", linewidth=1.2
            )
            axes.plot(
                curve.epochs,
                PERCENT * curve.evaluation,
                color=colour,
                linestyle="--",
                label=f"{label} {curve.split}",
                linewidth=1.2,
            )
        metric = members[0].metric
        axes.set_title(f"{GLUE_LABEL.get(task, task)} · {model}")
        axes.set_xlabel("epoch")
        axes.set_ylabel(f"{metric} (%)")
        axes.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
