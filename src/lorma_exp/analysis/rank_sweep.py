"""Figure 5: the evaluation metric against the rank r, one panel per task, one line per method."""

from __future__ import annotations

import math
from pathlib import Path

from lorma_exp.analysis.render import METHOD_COLOURS, SMOKE_TITLE, agg_figure
from lorma_exp.analysis.tables import ComparisonTable
from lorma_exp.paper import FIGURE5_ALPHA_RULE, GLUE_LABEL, METHOD_LABEL


def plot_metric_vs_rank(table: ComparisonTable, path: Path) -> Path:
    """Mean over seeds with ± one sample std as error bars, r on a log2 axis; missing cells break the line.

    Rows of ``table`` are keyed ``<task>/<method>`` and columns ``r<rank>`` (``paper.FIGURE5``).
    """
    tasks = list(dict.fromkeys(row.match["task"] for row in table.rows))
    ranks = [int(column.match["r"]) for column in table.columns]
    figure = agg_figure(4.0 * len(tasks), 3.6)
    axes_list = figure.subplots(1, len(tasks), squeeze=False)[0]
    for axes, task in zip(axes_list, tasks, strict=True):
        rows = [row for row in table.rows if row.match["task"] == task]
        for row in rows:
            method = str(row.match["method"])
            summaries = [table.cells[(row.key, column.key)] for column in table.columns]
            if all(summary.mean is None for summary in summaries):
                continue
            means = [math.nan if summary.mean is None else summary.mean for summary in summaries]
            stds = [summary.std or 0.0 for summary in summaries]
            colour = METHOD_COLOURS.get(method)
            label = METHOD_LABEL.get(method, method)
            axes.errorbar(ranks, means, yerr=stds, marker="o", capsize=3, color=colour, label=label)
        axes.set_xscale("log", base=2)
        axes.set_xticks(ranks, [str(r) for r in ranks])
        axes.set_xlabel("rank r")
        axes.set_ylabel(f"{rows[0].metric} ×100")
        axes.set_title(GLUE_LABEL.get(task, task))
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7)
    figure.suptitle(f"{SMOKE_TITLE}\n{FIGURE5_ALPHA_RULE}" if table.smoke else FIGURE5_ALPHA_RULE, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
