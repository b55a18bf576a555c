"""The variants a benchmark compares, and the authors' weight-building LoRMA written here as the reference.

Every variant is built the same way: from a model (a one-layer wrapper or a Llama-shaped decoder whose
frozen weights are shared with the other variants), the qualified names of the layers to adapt, and
`(r, alpha)`. Ours come from `lorma_exp.adapters`; PEFT's LoRA from `peft.get_peft_model`.
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

from lorma_exp.adapters import AdapterConfig, LormaLinear, inject_adapters
from lorma_exp.adapters.functional import pi

Builder = Callable[[nn.Module, list[str], int, float], nn.Module]


@dataclass(frozen=True)
class Variant:
    """A named way of adapting a model; `build(model, layer_names, r, alpha)` returns the adapted model."""

    name: str
    description: str
    build: Builder


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


def share_frozen_weights(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters are the original's tensors (buffers are copied): every variant
    adapts the same frozen weights, and a large model is held in memory once."""
    return copy.deepcopy(model, memo={id(parameter): parameter for parameter in model.parameters()})


def _frozen(model: nn.Module, names: list[str], r: int, alpha: float) -> nn.Module:
    return model.requires_grad_(False)


def _ours(method: str, inflation: str | None = None, mode: str | None = None) -> Builder:
    def build(model: nn.Module, names: list[str], r: int, alpha: float) -> nn.Module:
        config = AdapterConfig(
            method=method, inflation=inflation, mode=mode, r=r, alpha=alpha, targets=names, modules_to_save=[]
        )
        return inject_adapters(model, config)

    return build


def _peft_lora(model: nn.Module, names: list[str], r: int, alpha: float) -> nn.Module:
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=names, bias="none")
    with warnings.catch_warnings():
        # peft 0.21 asks transformers 5 a deprecated question; nothing a benchmark user can act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def _weight_built(inflation: str, mode: str) -> Builder:
    def build(model: nn.Module, names: list[str], r: int, alpha: float) -> nn.Module:
        model.requires_grad_(False)
        config = AdapterConfig(inflation=inflation, mode=mode, r=r, alpha=alpha, targets=names)
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, WeightBuiltLorma(getattr(parent, child), config))
        return model

    return build


#: What the layer and model scopes compare, in table order. `frozen` is the floor; `lora` and
#: `peft_lora` are the references the ratios are taken against.
TRAIN_VARIANTS: tuple[Variant, ...] = (
    Variant("frozen", "frozen, no adapter (the floor)", _frozen),
    Variant("lora", "our LoRA (LoraLinear)", _ours("lora")),
    Variant("peft_lora", "PEFT LoRA (get_peft_model)", _peft_lora),
    Variant("lorma_plus_pre", "LoRMA₊ pre, on activations", _ours("lorma", "rri", "pre")),
    Variant("lorma_plus_post", "LoRMA₊ post, on activations", _ours("lorma", "rri", "post")),
    Variant("lorma_pi_pre", "LoRMA_π pre (our path choice)", _ours("lorma", "shift", "pre")),
    Variant("lorma_pi_post", "LoRMA_π post (our path choice)", _ours("lorma", "shift", "post")),
    Variant(
        "lorma_plus_pre_weight", "LoRMA₊ pre, W' built each step (authors')", _weight_built("rri", "pre")
    ),
    Variant(
        "lorma_plus_post_weight", "LoRMA₊ post, W' built each step (authors')", _weight_built("rri", "post")
    ),
    Variant(
        "lorma_pi_pre_weight", "LoRMA_π pre, W' built each step (authors')", _weight_built("shift", "pre")
    ),
)
