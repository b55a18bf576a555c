"""The one-screen summary printed when a run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _metrics(record: dict[str, Any] | None) -> str:
    if not record:
        return "—"
    return ", ".join(f"{name} {value:.4f}" for name, value in record["metrics"].items() if "/" not in name)


def format_summary(results: dict[str, Any], run_dir: Path, task_info: dict[str, Any]) -> str:
    """What ran, what it reached and where everything is, in about fifteen lines."""
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
        ("outputs", f"{run_dir}/  (results.json, metrics.jsonl, loss_curve.png, adapter/, train.log)"),
    ]
    title = " lorma-exp: run finished "
    width = 78
    body = "\n".join(f"  {label:<10} {value}" for label, value in lines if value)
    return f"\n{title:─^{width}}\n{body}\n{'─' * width}"
