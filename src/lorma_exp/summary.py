"""The one-screen summary printed when a run ends.

Tasks steer two optional parts through ``TaskData.info``: ``sample_predictions`` names the split whose
saved predictions (the final evaluation's, in the run folder's ``predictions/``) are shown, a few examples of
input and output. A split scored by more than two metrics is shown as a before / final table.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from lorma_exp.run_folder import RunFolder, prediction_files

SAMPLES_SHOWN = 3
WIDTH = 78


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _metrics(record: dict[str, Any] | None) -> str:
    if not record:
        return "—"
    return ", ".join(f"{name} {value:.4f}" for name, value in record["metrics"].items() if "/" not in name)


def _metric_table(initial: dict[str, Any] | None, final: dict[str, Any]) -> list[str]:
    """One row per metric of the first evaluation split: before training (if evaluated) and final."""
    names = [name for name in final["metrics"] if "/" not in name]
    before = initial["metrics"] if initial else {}
    rows = [f"  {'metric':<10} {'before':>10} {'final':>10}"]
    for name in names:
        start = f"{before[name]:>10.4f}" if name in before else f"{'—':>10}"
        rows.append(f"  {name:<10} {start} {final['metrics'][name]:>10.4f}")
    return rows


def _samples(path: Path) -> list[str]:
    """The first saved predictions: the example's input (or prompt), then the model's output."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()[:SAMPLES_SHOWN]]
    lines = [f"  samples    final model, {path.stem}:"]
    for row in rows:
        shown = str(row.get("input", row["prompt"])).strip()
        lines += textwrap.wrap(shown, WIDTH, initial_indent="    ", subsequent_indent="      ")
        lines += textwrap.wrap(
            row["hypothesis"] or "(empty)", WIDTH, initial_indent="    → ", subsequent_indent="      "
        )
    return lines


def format_summary(
    results: dict[str, Any], run_dir: Path, task_info: dict[str, Any], weights_name: str
) -> str:
    """What ran, what it reached and where everything is (``weights_name``: the method's weights folder),
    in about fifteen lines."""
    run = RunFolder(run_dir)
    outputs = [
        run.results.name,
        run.metrics.name,
        run.loss_curve.name,
        f"{weights_name}/",
        run.train_log.name,
    ]
    if run.peft_adapter.is_dir():  # written only for updates that are exactly LoRA updates
        outputs.insert(-1, f"{run.peft_adapter.name}/")
    counts = results["trainable_params"]
    train = results["train"]
    method = results["method"]
    if results["r"] is not None:
        details = [
            f"r={results['r']}",
            f"alpha={results['alpha']:g}",
            f"targets={','.join(results['targets'])}",
        ]
        if results["inflation"]:
            details[:0] = [f"inflation={results['inflation']}", f"mode={results['mode']}"]
        method += "  (" + " ".join(details) + ")"
    rows = ", ".join(
        f"{key.removesuffix('_rows')} {value:,}" for key, value in task_info.items() if key.endswith("_rows")
    )
    best = results["best"]
    best_line = (
        f"{results['main_metric']} {best['metrics'][results['main_metric']]:.4f} at epoch {best['epoch']:.2f} "
        f"(step {best['step']})"
        if best
        else "—"
    )
    lines = [
        ("task", f"{results['task']}  ({rows} rows)"),
        ("model", f"{results['model']}  ({results['model_name_or_path']})"),
        ("method", method),
        (
            "trainable",
            f"adapter {counts['adapter']:,} · head {counts['head']:,} · other {counts['other']:,} · "
            f"total {counts['total']:,}",
        ),
        (
            "training",
            f"{train['steps']:,} steps, {train['epochs']:.2f} epochs, {train['world_size']} process(es)"
            + (f", resumed at step {train['resumed_from_step']}" if train["resumed_from_step"] else ""),
        ),
        ("before", _metrics(results["initial"])),
        ("best", best_line),
        ("final", _metrics(results["final"])),
        ("wall time", _duration(train["wall_time_s"])),
        ("outputs", f"{run_dir}/  ({', '.join(outputs)})"),
    ]
    final = results["final"]
    as_table = final is not None and sum("/" not in name for name in final["metrics"]) > 2
    if as_table:
        lines = [(label, value) for label, value in lines if label not in ("before", "final")]
    body = [f"  {label:<10} {value}" for label, value in lines if value]
    if as_table:
        body += _metric_table(results["initial"], final)
    if "sample_predictions" in task_info:
        _, rows = prediction_files(run.predictions, task_info["sample_predictions"])
        body += _samples(rows)
    title = " lorma-exp: run finished "
    joined = "\n".join(body)
    return f"\n{title:─^{WIDTH}}\n{joined}\n{'─' * WIDTH}"
