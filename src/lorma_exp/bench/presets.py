"""What a benchmark run measures: the layer shapes, the models and their training cases, per preset.

`GPU` follows shared/reference/performance.md (its H200 anchors were measured at these shapes, grouped-query
attention included) and the paper's GPT-2 setting (Table 16); `CPU` keeps the same proportions (tokens per
step to hidden size, key/value heads to heads, intermediate to hidden) at sizes two shared cores run in
minutes. Every model trains the way the trainer trains its table (`Precision`): the Llama shapes with
bfloat16 weights under bfloat16 autocast (Table 17: `model.dtype=bfloat16`, `trainer.precision=bf16`),
GPT-2 in float32 (Table 16: the defaults).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

#: Adapted projections per target set, as family aliases (docs/adapters.md, "Targets and heads"); on GPT-2
#: `q` and `v` are slices of the fused `c_attn`.
TARGET_SETS: dict[str, tuple[str, ...]] = {"qv": ("q", "v"), "mlp": ("o", "gate", "up", "down")}
FAMILIES = ("llama", "gpt2")


@dataclass(frozen=True)
class Precision:
    """How the trainer runs a model: the dtype its weights are loaded in (`model.dtype`) and autocast's
    dtype (`trainer.precision`; `None`: autocast off). Adapter factors stay float32 either way."""

    weights: torch.dtype
    autocast: torch.dtype | None

    @property
    def label(self) -> str:
        weights = str(self.weights).removeprefix("torch.")
        autocast = "off" if self.autocast is None else str(self.autocast).removeprefix("torch.")
        return f"{weights} weights, autocast {autocast}"


#: `trainer.precision` → how a run with bf16/fp16 weights or the float32 default computes.
PRECISIONS: dict[str, Precision] = {
    "bf16": Precision(torch.bfloat16, torch.bfloat16),
    "fp16": Precision(torch.float16, torch.float16),
    "fp32": Precision(torch.float32, None),
}


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
class ModelCase:
    """One training-step group of a model: the target set (a key of `TARGET_SETS`) and the adapter dropout
    (on the adapter branch; LoRMA_π, which has none, drops the layer input, as Table 3 runs it)."""

    targets: str
    dropout: float = 0.0


@dataclass(frozen=True)
class ModelShape:
    """A decoder with random weights built from its transformers config (`family`: `"llama"` or `"gpt2"`),
    its batch, its rank and the cases trained at this shape. `precision` is the trainer's for this model's
    table (`None`: the preset's). Inference always uses the first model of a preset."""

    name: str
    family: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    batch: int
    seq: int
    r: int
    cases: tuple[ModelCase, ...]
    precision: Precision | None = None

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    def describe(self) -> dict[str, Any]:
        described = asdict(self)
        del described["cases"], described["precision"]
        return described


@dataclass(frozen=True)
class Preset:
    """Everything one run measures, on which kind of device (`"cpu"` or `"cuda"`); `precision` applies to the
    layer scope and to models without their own; `repeats` and `warmup` count timed and untimed calls."""

    name: str
    device_type: str
    precision: Precision
    layers: tuple[LayerShape, ...]
    models: tuple[ModelShape, ...]
    repeats: int
    warmup: int
    alpha_over_r: float = 2.0  # alpha = 2r, the paper's most common setting; timing does not depend on it

    def precision_of(self, model: ModelShape) -> Precision:
        return model.precision or self.precision


LLAMA_CASES = (ModelCase("qv"), ModelCase("mlp"), ModelCase("mlp", dropout=0.1))
#: Table 16: r = 4 on the q, v slices of `c_attn`, adapter dropout 0.1 (E2E, WebNLG) or none (DART).
GPT2_CASES = (ModelCase("qv"), ModelCase("qv", dropout=0.1))

CPU = Preset(
    name="cpu",
    device_type="cpu",
    precision=PRECISIONS["bf16"],
    layers=(
        LayerShape("square", d_out=512, d_in=512, tokens=1024, r=8),
        # d_out = 3.5·d_in and tokens ≈ 0.57·d_out: LLaMA-3-8B's up/gate (14336 × 4096) at 8192 tokens
        LayerShape("wide", d_out=1792, d_in=512, tokens=1024, r=8),
    ),
    models=(
        # the 1.3B anchor's proportions: 4 tokens per hidden unit per step, intermediate 2.75×, kv heads 1/8
        ModelShape(
            "llama-tiny",
            family="llama",
            hidden=256,
            intermediate=704,
            layers=2,
            heads=8,
            kv_heads=1,
            vocab=1024,
            batch=4,
            seq=256,
            r=8,
            cases=LLAMA_CASES,
        ),
        # GPT-2 medium's proportions (Table 16: 8 × 512 tokens at hidden 1024), float32 as its table trains
        ModelShape(
            "gpt2-tiny",
            family="gpt2",
            hidden=256,
            intermediate=1024,
            layers=2,
            heads=4,
            kv_heads=4,
            vocab=1024,
            batch=4,
            seq=256,
            r=4,
            cases=GPT2_CASES,
            precision=PRECISIONS["fp32"],
        ),
    ),
    repeats=10,
    warmup=2,
)

GPU = Preset(
    name="gpu",
    device_type="cuda",
    precision=PRECISIONS["bf16"],
    layers=(
        LayerShape("square", d_out=4096, d_in=4096, tokens=8192, r=8),
        LayerShape("wide", d_out=14336, d_in=4096, tokens=8192, r=8),
    ),
    models=(
        # performance.md's 1.3B model: hidden 2048, 22 layers, 32 heads, 4 key/value heads, 8 × 1024 tokens
        ModelShape(
            "llama-1.3b",
            family="llama",
            hidden=2048,
            intermediate=5632,
            layers=22,
            heads=32,
            kv_heads=4,
            vocab=32000,
            batch=8,
            seq=1024,
            r=8,
            cases=LLAMA_CASES,
        ),
        # the paper's maths setting: LLaMA-3-8B's shape, r = 8 on o, gate, up, down, 2 × 512 tokens
        ModelShape(
            "llama-3-8b",
            family="llama",
            hidden=4096,
            intermediate=14336,
            layers=32,
            heads=32,
            kv_heads=8,
            vocab=128256,
            batch=2,
            seq=512,
            r=8,
            cases=(ModelCase("mlp"),),
        ),
        # the paper's NLG setting (Table 16): GPT-2 medium, 8 × 512 tokens, float32
        ModelShape(
            "gpt2-medium",
            family="gpt2",
            hidden=1024,
            intermediate=4096,
            layers=24,
            heads=16,
            kv_heads=16,
            vocab=50257,
            batch=8,
            seq=512,
            r=4,
            cases=GPT2_CASES,
            precision=PRECISIONS["fp32"],
        ),
    ),
    repeats=20,
    warmup=3,
)

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (CPU, GPU)}
