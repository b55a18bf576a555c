"""The variants a benchmark compares, and the authors' weight-building LoRMA written here as the reference.

Every variant is built the same way: from a model (a one-layer wrapper or a decoder whose frozen weights
are shared with the other variants) and the group's `Adaptation`. Ours come from `lorma_exp.adapters`
(targets as family aliases, as users write them); PEFT's LoRA from `peft.get_peft_model` (targets as layer
names: PEFT cannot adapt a slice of GPT-2's fused `c_attn`, so it adapts all of it).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn

from lorma_exp.adapters import (
    AdapterConfig,
    AdapterLayer,
    LoraLinear,
    LormaLinear,
    inject_adapters,
    iter_adapter_layers,
)
from lorma_exp.adapters.base_layers import compute_dtype, is_conv1d, weight_matrix
from lorma_exp.adapters.functional import SHIFT_COMPUTATIONS, ShiftComputation, low_rank_branch, pi

ALL_SCOPES = frozenset({"layer", "model"})


@dataclass(frozen=True)
class Adaptation:
    """What every variant of a group adapts: `aliases` (our target syntax), the `layer_names` they resolve to
    (PEFT's and the authors' way), whether they are slices of fused layers, rank, alpha, adapter dropout."""

    aliases: tuple[str, ...]
    layer_names: tuple[str, ...]
    sliced: bool
    r: int
    alpha: float
    dropout: float


Builder = Callable[[nn.Module, Adaptation], nn.Module]


@dataclass(frozen=True)
class Variant:
    """A named way of adapting a model; `build(model, adaptation)` returns the adapted model.

    `scopes`: where it runs (`"layer"`, `"model"`). `with_dropout`: whether it runs in groups with adapter
    dropout (the authors' weight-building forms have no dropout of their own). `slices`: `"any"`, `"only"`
    (a reference that means something only where the targets are slices of a fused layer) or `"never"`
    (the authors' forms, written for whole `nn.Linear` layers).
    """

    name: str
    description: str
    build: Builder
    scopes: frozenset[str] = ALL_SCOPES
    with_dropout: bool = True
    slices: str = "any"

    def runs_in(self, scope: str, adaptation: Adaptation) -> bool:
        if scope not in self.scopes or (adaptation.dropout > 0 and not self.with_dropout):
            return False
        return self.slices == "any" or (self.slices == "only") == adaptation.sliced


class OneLinear(nn.Module):
    """A model made of one linear layer (named `linear`), so that layers are adapted as models are."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class WeightBuiltLorma(LormaLinear):
    """LoRMA as the authors compute it: build `W' = M·W` (pre) or `W·M` (post) on every forward, then
    `F.linear`. The reference the library's activation forms have to beat.

    LoRMA₊ (`M = I + s·B·A`) builds `W' = W + s·B·(A·W)` (pre) or `W + s·(W·B)·A` (post), associated so
    that no n × n matrix is formed; LoRMA_π builds `P = s·π(B·A)` (n × n) and multiplies it into `W`.
    Autograd then keeps `W'` for the input gradient and computes the weight-sized gradient `G^T·X`.
    Parameters and initialisation are `LormaLinear`'s, so both forms compute the same function.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.base_layer.weight
        config = self.adapter_config
        if config.inflation == "rri":
            factor_a, factor_b = self.lorma_A.to(weight.dtype), self.lorma_B.to(weight.dtype)
            if config.mode == "pre":
                adapted = weight + config.scale * (factor_b @ (factor_a @ weight))
            else:
                adapted = weight + config.scale * ((weight @ factor_b) @ factor_a)
        elif config.inflation == "shift":
            multiplier = (config.scale * pi(self.lorma_B @ self.lorma_A)).to(weight.dtype)
            adapted = multiplier @ weight if config.mode == "pre" else weight @ multiplier
        else:
            raise ValueError(f"WeightBuiltLorma covers inflation 'rri' and 'shift', not {config.inflation!r}")
        return F.linear(x, adapted, self.base_layer.bias)


class UnfusedLora(LoraLinear):
    """Our LoRA as it ran before its dropout and sliced paths were fused: the frozen layer's output, each
    slice's branch (`functional.low_rank_branch`, `nn.Dropout` on its input) added to its rows, the slices
    concatenated. The reference that shows what fusing them (`functional.adapted_linear`) gains."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = weight_matrix(self.base_layer)
        rows = self.dropout(x).to(compute_dtype(x, weight)).reshape(-1, self.in_features)
        frozen = self.base_layer(x)
        scale = self.adapter_config.scale
        branches = [
            low_rank_branch(rows, factor_a, factor_b, weight[piece.start : piece.stop], scale, "none")
            for piece, factor_a, factor_b in self.factors()
        ]
        if not self.is_sliced:
            return frozen + branches[0].view(frozen.shape)
        parts = [
            frozen[..., start:stop]
            if index is None
            else frozen[..., start:stop] + branches[index].view(*x.shape[:-1], -1)
            for start, stop, index in self.segments()
        ]
        return torch.cat(parts, dim=-1)


def share_frozen_weights(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters are the original's tensors (buffers are copied): every variant
    adapts the same frozen weights, and a large model is held in memory once."""
    return copy.deepcopy(model, memo={id(parameter): parameter for parameter in model.parameters()})


def _frozen(model: nn.Module, adaptation: Adaptation) -> nn.Module:
    return model.requires_grad_(False)


def _config(adaptation: Adaptation, targets: tuple[str, ...], **method: str) -> AdapterConfig:
    """Our config for a group; LoRMA_π drops the layer input (it has no adapter branch), as Table 3 runs it."""
    dropout_on = "input" if method.get("inflation") == "shift" and adaptation.dropout > 0 else "adapter"
    return AdapterConfig(
        r=adaptation.r,
        alpha=adaptation.alpha,
        dropout=adaptation.dropout,
        dropout_on=dropout_on,
        targets=list(targets),
        modules_to_save=[],
        **method,
    )


def _ours(method: str, inflation: str | None = None, mode: str | None = None) -> Builder:
    def build(model: nn.Module, adaptation: Adaptation) -> nn.Module:
        config = _config(adaptation, adaptation.aliases, method=method, inflation=inflation, mode=mode)
        return inject_adapters(model, config)

    return build


def _lora_on_whole_layers(model: nn.Module, adaptation: Adaptation) -> nn.Module:
    """Our LoRA wrapping each target layer whole (`LoraLinear` without slices): on GPT-2 all of `c_attn`'s
    rows in one branch, the fused path, whereas targeting `c_attn` by name adapts its three slices."""
    model.requires_grad_(False)
    config = _config(adaptation, adaptation.aliases, method="lora")
    for name in adaptation.layer_names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoraLinear(getattr(parent, child), config))
    return model


def _peft_lora(same_dtype: bool) -> Builder:
    """PEFT's LoRA at its default (`autocast_adapter_dtype=True`: float32 factors and adapter branch under
    half-precision weights) or in the weights' dtype (`autocast_adapter_dtype=False`)."""

    def build(model: nn.Module, adaptation: Adaptation) -> nn.Module:
        config = LoraConfig(
            r=adaptation.r,
            lora_alpha=adaptation.alpha,
            lora_dropout=adaptation.dropout,
            target_modules=list(adaptation.layer_names),
            bias="none",
            fan_in_fan_out=any(is_conv1d(model.get_submodule(name)) for name in adaptation.layer_names),
        )
        with warnings.catch_warnings():
            # peft 0.21 asks transformers 5 a deprecated question; nothing a benchmark user can act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, config, autocast_adapter_dtype=not same_dtype)

    return build


def _replace_layers(layer_class: type[AdapterLayer], **method: str) -> Builder:
    """Wrap each target with `layer_class` (one of our layer classes with another forward), configured as
    `_config(adaptation, ..., **method)`, on the layers and slices our targets resolve to."""

    def build(model: nn.Module, adaptation: Adaptation) -> nn.Module:
        model.requires_grad_(False)
        config = _config(adaptation, adaptation.aliases, **method)
        probe = inject_adapters(share_frozen_weights(model), config)  # where our targets land, with slices
        for name, layer in iter_adapter_layers(probe):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            replacement = layer_class(
                getattr(parent, child), config, layer.slices if layer.is_sliced else None
            )
            setattr(parent, child, replacement)
        return model

    return build


def _shift_forced(mode: str, computation: ShiftComputation) -> Builder:
    """The library's LoRMA_π with every layer's `shift_path` set to `computation`."""
    ours = _ours("lorma", "shift", mode)

    def build(model: nn.Module, adaptation: Adaptation) -> nn.Module:
        model = ours(model, adaptation)
        for _, layer in iter_adapter_layers(model):
            layer.shift_path = computation
        return model

    return build


def _computation_label(computation: ShiftComputation) -> str:
    """`dense_weight`, `structured_activations`, …: a name that cannot be taken for the authors' `_weight`."""
    return computation if computation.startswith("structured") else f"dense_{computation}"


def _pi_computations() -> tuple[Variant, ...]:
    """LoRMA_π forced through each computation (layer scope: what the cost model weighs)."""
    return tuple(
        Variant(
            f"lorma_pi_{mode}_{_computation_label(computation)}",
            f"LoRMA_π {mode}, shift_path={computation!r}",
            _shift_forced(mode, computation),
            scopes=frozenset({"layer"}),
        )
        for mode in ("pre", "post")
        for computation in SHIFT_COMPUTATIONS
    )


#: What the layer and model scopes compare, in table order. `frozen` is the floor; `lora`, `peft_lora` and
#: `peft_lora_same_dtype` are the references the ratios are taken against.
TRAIN_VARIANTS: tuple[Variant, ...] = (
    Variant("frozen", "frozen, no adapter (the floor)", _frozen),
    Variant("lora", "our LoRA (LoraLinear)", _ours("lora")),
    Variant("peft_lora", "PEFT LoRA at its default (float32 adapter branch)", _peft_lora(same_dtype=False)),
    Variant(
        "peft_lora_same_dtype",
        "PEFT LoRA, autocast_adapter_dtype=False (our precision)",
        _peft_lora(same_dtype=True),
    ),
    Variant(
        "lora_unfused",
        "our LoRA unfused: frozen output + branch, slices concatenated (before fusion)",
        _replace_layers(UnfusedLora, method="lora"),
    ),
    Variant(
        "lora_fused_c_attn",
        "our LoRA on all of c_attn: the fused path, what q,v slices would cost fused",
        _lora_on_whole_layers,
        slices="only",
    ),
    Variant("lorma_plus_pre", "LoRMA₊ pre, on activations", _ours("lorma", "rri", "pre")),
    Variant("lorma_plus_post", "LoRMA₊ post, on activations", _ours("lorma", "rri", "post")),
    Variant(
        "lorma_pi_pre", "LoRMA_π pre, the cost model's computation per layer", _ours("lorma", "shift", "pre")
    ),
    Variant(
        "lorma_pi_post",
        "LoRMA_π post, the cost model's computation per layer",
        _ours("lorma", "shift", "post"),
    ),
    *_pi_computations(),
    Variant(
        "lorma_plus_pre_weight",
        "LoRMA₊ pre, W' built each step (authors')",
        _replace_layers(WeightBuiltLorma, method="lorma", inflation="rri", mode="pre"),
        with_dropout=False,
        slices="never",
    ),
    Variant(
        "lorma_plus_post_weight",
        "LoRMA₊ post, W' built each step (authors')",
        _replace_layers(WeightBuiltLorma, method="lorma", inflation="rri", mode="post"),
        with_dropout=False,
        slices="never",
    ),
    Variant(
        "lorma_pi_pre_weight",
        "LoRMA_π pre, W' built each step (authors')",
        _replace_layers(WeightBuiltLorma, method="lorma", inflation="shift", mode="pre"),
        with_dropout=False,
        slices="never",
    ),
)

#: Variants `--compile` adds compiled (`torch.compile(model, fullgraph=True)`) beside their eager selves.
COMPILED = (
    "frozen",
    "lora",
    "lorma_plus_pre",
    "lorma_plus_post",
    "lorma_pi_pre",
    "lorma_pi_post",
)


def compiled(variant: Variant) -> Variant:
    """`variant` built, then compiled whole with `fullgraph=True` (any graph break is an error)."""

    def build(model: nn.Module, adaptation: Adaptation) -> nn.Module:
        return torch.compile(variant.build(model, adaptation), fullgraph=True)

    return Variant(
        f"{variant.name}_compiled",
        f"{variant.description}, torch.compile(fullgraph=True)",
        build,
        variant.scopes,
        variant.with_dropout,
        variant.slices,
    )


def shift_computations(model: nn.Module, tokens: int, dtype: torch.dtype, device_type: str) -> dict[str, int]:
    """How many of the model's LoRMA_π layers compute each way (their forced `shift_path`, or the cost
    model's choice) in a training step of `tokens` rows in `dtype`: the choice behind a variant's time,
    recorded with it."""
    counts: dict[str, int] = {}
    for _, layer in iter_adapter_layers(model):
        if not isinstance(layer, LormaLinear) or layer.adapter_config.inflation != "shift":
            continue
        chosen = layer.shift_path
        if chosen == "auto":
            with torch.enable_grad():
                chosen = layer.variant.chosen_computation(layer, tokens, device_type, dtype)
        counts[chosen] = counts.get(chosen, 0) + 1
    return counts
