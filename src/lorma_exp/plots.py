"""The per-run loss-curve figure (comparisons across runs live in lorma_exp.report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display; must be chosen before pyplot loads
import matplotlib.pyplot as plt


def plot_loss_curve(events: list[dict[str, Any]], main_metric: str, title: str, path: Path) -> Path:
    """Training loss against step, with the first evaluation split's main metric on a second axis."""
    train = [(event["step"], event["loss"]) for event in events if event["event"] == "train"]
    first_split = next((event["split"] for event in events if event["event"] == "eval"), None)
    evals = [
        (event["step"], event[main_metric])
        for event in events
        if event["event"] == "eval" and event["split"] == first_split and main_metric in event
    ]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    if train:
        loss_axis.plot(*zip(*train, strict=True), color="tab:blue", label="training loss")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    if evals:
        metric_axis = loss_axis.twinx()
        metric_axis.plot(
            *zip(*evals, strict=True), "o-", color="tab:orange", label=f"{first_split} {main_metric}"
        )
        metric_axis.set_ylabel(f"{first_split} {main_metric}", color="tab:orange")
    loss_axis.set_title(title)
    loss_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
