"""What a benchmark run measures: the layer shapes, the Llama-shaped models and their sizes, per preset.

`GPU` follows shared/reference/performance.md (its H200 anchors were measured at these sizes); `CPU` keeps
the same proportions at sizes that run in about a minute on two cores. Both train bf16 weights (the
paper's precision; adapters keep float32 factors), so the mixed-precision paths that differ between
implementations are measured on both; a CPU without native bf16 should run `--dtype float32`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

#: Adapted projections per model target set, as family aliases (docs/adapters.md, "Targets and heads").
TARGET_SETS: dict[str, tuple[str, ...]] = {"qv": ("q", "v"), "mlp": ("o", "gate", "up", "down")}


@dataclass(frozen=True)
class LayerShape:
    """One adapted linear layer: weight `d_out × d_in`, `tokens` input rows, adapter rank `r`."""

    name: str
    d_out: int
    d_in: int
    tokens: int
    r: int

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelShape:
    """A Llama-shaped decoder (random weights, built from a `LlamaConfig`) and its batch.

    `targets` names the target sets (keys of `TARGET_SETS`) trained at this shape; inference always uses
    the first model of a preset.
    """

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    batch: int
    seq: int
    r: int
    targets: tuple[str, ...]

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    def describe(self) -> dict[str, Any]:
        described = asdict(self)
        del described["targets"]
        return described


@dataclass(frozen=True)
class Preset:
    """Everything one run measures, on which kind of device (`"cpu"` or `"cuda"`); `repeats` and `warmup`
    count the timed and untimed calls per variant."""

    name: str
    device_type: str
    dtype: torch.dtype
    layers: tuple[LayerShape, ...]
    models: tuple[ModelShape, ...]
    repeats: int
    warmup: int
    alpha_over_r: float = 2.0  # alpha = 2r, the paper's most common setting; timing does not depend on it


CPU = Preset(
    name="cpu",
    device_type="cpu",
    dtype=torch.bfloat16,
    layers=(
        LayerShape("square", d_out=512, d_in=512, tokens=1024, r=8),
        # d_out = 3.5·d_in: the proportion of LLaMA-3-8B's up/gate (14336 × 4096)
        LayerShape("wide", d_out=1792, d_in=512, tokens=1024, r=8),
    ),
    models=(
        ModelShape(
            "llama-tiny",
            hidden=256,
            intermediate=688,
            layers=2,
            heads=4,
            kv_heads=4,
            vocab=1024,
            batch=4,
            seq=256,
            r=8,
            targets=("qv", "mlp"),
        ),
    ),
    repeats=10,
    warmup=2,
)

GPU = Preset(
    name="gpu",
    device_type="cuda",
    dtype=torch.bfloat16,
    layers=(
        LayerShape("square", d_out=4096, d_in=4096, tokens=8192, r=8),
        LayerShape("wide", d_out=14336, d_in=4096, tokens=8192, r=8),
    ),
    models=(
        # performance.md's 1.3B model: hidden 2048, 22 layers, 8 × 1024 tokens (TinyLlama's MLP, full MHA)
        ModelShape(
            "llama-1.3b",
            hidden=2048,
            intermediate=5632,
            layers=22,
            heads=32,
            kv_heads=32,
            vocab=32000,
            batch=8,
            seq=1024,
            r=8,
            targets=("qv", "mlp"),
        ),
        # the paper's maths setting: LLaMA-3-8B's shape, r = 8 on o, gate, up, down, 2 × 512 tokens
        ModelShape(
            "llama-3-8b",
            hidden=4096,
            intermediate=14336,
            layers=32,
            heads=32,
            kv_heads=8,
            vocab=128256,
            batch=2,
            seq=512,
            r=8,
            targets=("mlp",),
        ),
    ),
    repeats=20,
    warmup=3,
)

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (CPU, GPU)}
