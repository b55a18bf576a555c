"""The per-run loss-curve figure (comparisons across runs live in lorma_exp.report)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display; must be chosen before pyplot loads
import matplotlib.pyplot as plt

from lorma_exp.run_folder import LOSS_KEY

# The run settings a curve's title spells, as results.json names them, and how the title writes them.
_TITLE_SETTINGS = (("r", "r"), ("alpha", "α"), ("mode", "mode"), ("seed", "seed"))


def curve_title(identity: Mapping[str, Any]) -> str:
    """``task · model · method``, then the method settings the run has and its seed: runs of a sweep
    differ in these, so their figures say which is which."""
    settings = [f"{label}={identity[key]}" for key, label in _TITLE_SETTINGS if identity.get(key) is not None]
    return f"{identity['task']} · {identity['model']} · {identity['method']}\n" + "  ".join(settings)


def plot_loss_curve(events: list[dict[str, Any]], main_metric: str, title: str, path: Path) -> Path:
    """Training loss against step (and the evaluation loss where the evaluations report one), with the
    first evaluation split's main metric on a second axis, one legend for both. Lines carry markers, so
    that a run with a single logged point still shows it."""
    train = [(event["step"], event[LOSS_KEY]) for event in events if event["event"] == "train"]
    first_split = next((event["split"] for event in events if event["event"] == "eval"), None)
    first_evals = [event for event in events if event["event"] == "eval" and event["split"] == first_split]
    eval_losses = [(event["step"], event[LOSS_KEY]) for event in first_evals if LOSS_KEY in event]
    evals = [(event["step"], event[main_metric]) for event in first_evals if main_metric in event]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    if train:
        loss_axis.plot(*zip(*train, strict=True), ".-", color="tab:blue", label="training loss")
    if eval_losses:
        loss_axis.plot(*zip(*eval_losses, strict=True), "s--", color="tab:green", label=f"{first_split} loss")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("loss")
    handles, labels = loss_axis.get_legend_handles_labels()
    if evals:
        metric_axis = loss_axis.twinx()
        metric_axis.plot(
            *zip(*evals, strict=True), "o-", color="tab:orange", label=f"{first_split} {main_metric}"
        )
        metric_axis.set_ylabel(f"{first_split} {main_metric}", color="tab:orange")
        more_handles, more_labels = metric_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        loss_axis.legend(handles, labels, loc="best", fontsize="small")
    loss_axis.set_title(title, fontsize="medium")
    loss_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
