"""Synthetic run folders, written the way docs/architecture.md says the trainer writes them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def results_json(
    *,
    table: str,
    task: str,
    model: str,
    method: str,
    seed: int,
    metrics: dict[str, float],
    r: int = 8,
    targets: Sequence[str] = ("q", "v"),
    mode: str | None = "pre",
    inflation: str | None = "rri",
    alpha: float = 8.0,
    adapter_params: int = 294912,
    smoke: bool = False,
    final_metrics: dict[str, float] | None = None,
    main_metric: str = "accuracy",
) -> dict[str, Any]:
    return {
        "status": "finished",
        "task": task,
        "model": model,
        "model_name_or_path": f"hub/{model}",
        "method": method,
        "kind": "lora" if method == "lora" else "lorma",
        "inflation": inflation,
        "mode": mode,
        "r": r,
        "alpha": alpha,
        "targets": list(targets),
        "seed": seed,
        "experiment": f"{table}/{model}_{task}_{method}",
        "main_metric": main_metric,
        "greater_is_better": True,
        "trainable_params": {
            "adapter": adapter_params,
            "head": 1000,
            "other": 0,
            "total": adapter_params + 1000,
        },
        "best": {"step": 100, "epoch": 1.0, "metrics": metrics},
        "final": {
            "step": 200,
            "epoch": 2.0,
            "metrics": final_metrics if final_metrics is not None else metrics,
        },
        "train": {"steps": 200, "epochs": 2.0, "final_loss": 0.1, "wall_time_s": 1.0, "world_size": 1},
        "paper_cell": {"table": table, "model": model, "task": task, "method": method},
        "smoke": smoke,
        "lorma_exp_version": "0.1.0",
    }


def write_run_folder(
    folder: Path,
    results: dict[str, Any] | None,
    loss_curve: Sequence[tuple[float, float]] = (),
    launched_for: str | None = None,
) -> Path:
    """A run folder: config.yaml always (with ``paper_cell.table`` = ``launched_for`` or the results'),
    metrics.jsonl from ``loss_curve``, results.json when given."""
    folder.mkdir(parents=True, exist_ok=True)
    table = launched_for or ((results or {}).get("paper_cell") or {}).get("table")
    config: dict[str, Any] = {"seed": 0, "paper_cell": {"table": table} if table else None}
    OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")
    with (folder / "metrics.jsonl").open("w") as handle:
        for step, loss in loss_curve:
            handle.write(
                json.dumps({"event": "train", "step": step, "epoch": step / 100, "loss": loss}) + "\n"
            )
        handle.write(json.dumps({"event": "eval", "step": 10, "split": "validation", "accuracy": 0.5}) + "\n")
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results))
    return folder
