"""Benchmarks: what LoRMA costs next to LoRA (ours and PEFT's) and the authors' weight-building form, in
time and memory, per layer, per training step of a Llama-shaped model, and at inference.

Run `python -m lorma_exp.bench --preset cpu|gpu [--scope layer|model|inference|all] [--compile]`; results go
to `benchmarks/results/<date>-<device>.json` and `.md`. `benchmark()` returns the same JSON document.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .measure import CPU_CLOCKS, CUDA_EVENTS, keep_freed_memory
from .presets import PRECISIONS, PRESETS, Preset
from .report import check_targets, device_label, machine_info
from .run import SCOPES, Setting, run_scopes
from .variants import COMPILED, TRAIN_VARIANTS, Variant, compiled

__all__ = ["PRESETS", "SCOPES", "Preset", "benchmark"]


def benchmark(
    preset: Preset,
    scopes: Sequence[str] = SCOPES,
    repeats: int | None = None,
    clock: str = "wall",
    command: str = "",
    variants: Sequence[Variant] = TRAIN_VARIANTS,
    progress: Callable[[list[dict[str, Any]]], None] | None = None,
    compile_variants: bool = False,
) -> dict[str, Any]:
    """Run `scopes` of `preset` in this process and return the JSON document: `machine`, `records` (one per
    variant and group), `checks` (performance.md's targets). `clock` times CPU runs (`"wall"` or
    `"process"`, see `measure`); GPU runs use CUDA events. `progress` gets each group's records.
    `compile_variants` adds, beside each variant named in `variants.COMPILED`, its compiled self, and
    labels the run `<device>-compile`."""
    if preset.device_type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"preset {preset.name!r} runs on CUDA, but torch.cuda.is_available() is False; use --preset cpu"
        )
    if clock not in CPU_CLOCKS:
        raise ValueError(f"clock={clock!r} must be one of {sorted(CPU_CLOCKS)}")
    if preset.device_type == "cuda" and clock != "wall":
        raise ValueError(f"clock={clock!r} applies to CPU runs; GPU runs are timed with CUDA events")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"scopes {unknown} are not among {SCOPES}")
    device = torch.device(preset.device_type)
    label = device_label(device)
    if preset.name in PRESETS and PRESETS[preset.name].precision != preset.precision:
        # another precision, another table
        label += "-" + next(name for name, known in PRECISIONS.items() if known == preset.precision)
    machine = machine_info(device)
    if device.type == "cpu":
        machine["freed_memory_kept"] = keep_freed_memory()
    clock_used = CUDA_EVENTS if device.type == "cuda" else clock
    if compile_variants:
        # minutes of compilation and another variant set: a table of its own beside the eager one
        label += "-compile"
        variants = [*variants, *(compiled(variant) for variant in variants if variant.name in COMPILED)]
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    setting = Setting(preset, device, label, repeats or preset.repeats, clock_used)
    records: list[dict[str, Any]] = []
    for group in run_scopes(setting, scopes, variants):
        records += group
        if progress is not None:
            progress(group)
    machine["load_average_end"] = list(os.getloadavg())
    return {
        "preset": preset.name,
        "date": datetime.date.today().isoformat(),
        "device": label,
        "precision": preset.precision.label,
        "repeats": setting.repeats,
        "clock": clock_used,
        "scopes": list(scopes),
        "compiled": compile_variants,
        "command": command,
        "machine": machine,
        "records": records,
        "checks": check_targets(records),
    }
