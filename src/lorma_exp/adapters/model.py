"""Model-level operations: inject adapters, merge them into the weights and back, count what trains.

`inject_adapters` records what it did on the model (`Injection`, a plain attribute: not a module, not in
`state_dict`), so that saving, counting and merging need nothing but the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .base_layers import set_weight_matrix, weight_matrix
from .config import AdapterConfig
from .layers import AdapterLayer, LoraLinear, LormaLinear
from .targets import TargetPlan, resolve_heads, resolve_targets

_INJECTION_ATTR = "_lorma_injection"
_MERGED_ATTR = "_lorma_merged_adapters"


@dataclass(frozen=True)
class Injection:
    """What `inject_adapters` did: the config, the adapted layers (with their slices) and the trained heads."""

    config: AdapterConfig
    plan: TargetPlan
    heads: tuple[str, ...]

    def slice_names(self) -> dict[str, list[str] | None]:
        """JSON-ready view of `plan`: layer name -> adapted slice names (`None` for a whole layer)."""
        return {
            name: None if slices is None else [piece.name for piece in slices]
            for name, slices in self.plan.items()
        }


@dataclass(frozen=True)
class _MergedAdapters:
    """What `merge_adapters` keeps (in memory only) so that `unmerge_adapters` can restore the layers."""

    injection: Injection
    layers: dict[str, AdapterLayer]


def injection_of(model: nn.Module) -> Injection | None:
    """The record `inject_adapters` left on `model`, or `None` if it holds no adapters."""
    return model.__dict__.get(_INJECTION_ATTR)


def iter_adapter_layers(model: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    """`(qualified name, layer)` for every adapter layer in `model`, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield name, module


def plan_injection(model: nn.Module, config: AdapterConfig) -> Injection:
    """Resolve heads and targets without touching the model (errors name the target or field)."""
    if injection_of(model) is not None or next(iter_adapter_layers(model), None) is not None:
        raise ValueError(
            "the model already holds adapters; merge_adapters it, or start from a fresh base model"
        )
    heads = resolve_heads(model, config.modules_to_save)
    plan = resolve_targets(model, config.targets, heads)
    _refuse_tied_weights(model, plan)
    return Injection(config=config, plan=plan, heads=heads)


def build_layers(model: nn.Module, injection: Injection) -> dict[str, AdapterLayer]:
    """Freshly initialised adapter layers for the plan, not yet placed in the model."""
    layer_class = LormaLinear if injection.config.method == "lorma" else LoraLinear
    return {
        name: layer_class(model.get_submodule(name), injection.config, slices)
        for name, slices in injection.plan.items()
    }


def install(model: nn.Module, injection: Injection, layers: dict[str, AdapterLayer]) -> None:
    """Put the layers in place, freeze everything else but heads (and biases as configured), record it."""
    for name, layer in layers.items():
        _replace_module(model, name, layer)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for layer in layers.values():
        for parameter in layer.adapter_parameters():
            parameter.requires_grad_(True)
    for name in injection.heads:
        for parameter in model.get_submodule(name).parameters():
            parameter.requires_grad_(True)
    for parameter in _trained_biases(model, injection, layers).values():
        parameter.requires_grad_(True)
    model.__dict__[_INJECTION_ATTR] = injection
    model.__dict__.pop(_MERGED_ATTR, None)  # earlier merged adapters are now part of the base weights


def uninstall(model: nn.Module, layers: dict[str, AdapterLayer], requires_grad: dict[int, bool]) -> None:
    """Undo `install`: put the base layers back and restore each parameter's `requires_grad` (by id)."""
    for name, layer in layers.items():
        _replace_module(model, name, layer.base_layer)
    for parameter in model.parameters():
        parameter.requires_grad_(requires_grad[id(parameter)])
    model.__dict__.pop(_INJECTION_ATTR, None)


def inject_adapters(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Replace every layer `config.targets` selects by an adapter layer wrapping it, in place; freeze all
    parameters but the adapters, the task heads and the biases `config.bias` names. Returns `model`.

    Raises `ValueError` if a target matches nothing (listing existing layer names), if the model already
    has adapters, or if a target's weight is tied to another module.
    """
    injection = plan_injection(model, config)
    install(model, injection, build_layers(model, injection))
    return model


def saved_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Qualified name -> parameter for everything an adapter checkpoint holds: factors, heads, trained biases."""
    injection = injection_of(model)
    if injection is None:
        raise ValueError("the model holds no adapters; call inject_adapters or load_adapters first")
    layers = dict(iter_adapter_layers(model))
    saved: dict[str, nn.Parameter] = {}
    for name, layer in layers.items():
        for factor in layer.factor_names:
            saved[f"{name}.{factor}"] = getattr(layer, factor)
    for head in injection.heads:
        for name, parameter in model.get_submodule(head).named_parameters():
            saved[f"{head}.{name}"] = parameter
    saved.update(_trained_biases(model, injection, layers))
    return saved


def count_trainable(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts: `adapter` (low-rank factors), `head` (task heads trained in full),
    `other` (anything else that trains, e.g. biases) and `total`. Shared parameters count once."""
    injection = injection_of(model)
    adapter_ids = {id(p) for _, layer in iter_adapter_layers(model) for p in layer.adapter_parameters()}
    head_ids = {
        id(p)
        for head in (injection.heads if injection else ())
        for p in model.get_submodule(head).parameters()
    }
    counts = {"adapter": 0, "head": 0, "other": 0}
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        kind = "adapter" if id(parameter) in adapter_ids else "head" if id(parameter) in head_ids else "other"
        counts[kind] += parameter.numel()
    counts["total"] = sum(counts.values())
    return counts


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (computed in float64, cast back) and put the original layers
    back: the result is the plain model, with zero inference overhead, that `save_pretrained` writes with no
    trace of this library. Heads keep their trained weights.

    Every merged weight is computed and checked for NaN/Inf before any weight is written, so a failure
    leaves the model untouched. The adapter factors stay in memory on the model (not in its `state_dict`)
    for `unmerge_adapters`.
    """
    injection = injection_of(model)
    layers = dict(iter_adapter_layers(model))
    if injection is None or not layers:
        raise ValueError("the model holds no adapters to merge")
    for name, layer in layers.items():
        _check_finite(name, layer.merged_weight(), weight_matrix(layer.base_layer).dtype, "merging")
    for name, layer in layers.items():
        set_weight_matrix(layer.base_layer, layer.merged_weight())
        _replace_module(model, name, layer.base_layer)
    del model.__dict__[_INJECTION_ATTR]
    model.__dict__[_MERGED_ATTR] = _MergedAdapters(injection, layers)
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Undo `merge_adapters` on the model it returned: recover each original weight (Woodbury closed form
    for `rri`, a linear solve for `shift`, subtraction for LoRA) and put the adapter layers back, ready for
    training to go on. LoRMA without inflation cannot be unmerged (its multiplier is singular).
    """
    merged: _MergedAdapters | None = model.__dict__.get(_MERGED_ATTR)
    if merged is None:
        raise ValueError(
            "the model has no merged adapters to restore: unmerge_adapters works on the model merge_adapters "
            "returned (in this process); to start from files, load_adapters onto the original base model"
        )
    restored = {}
    for name, layer in merged.layers.items():
        if model.get_submodule(name) is not layer.base_layer:
            raise ValueError(f"layer {name!r} was replaced since merge_adapters; cannot restore its adapter")
        layer.to(weight_matrix(layer.base_layer).device)  # follow the model if it moved since merging
        restored[name] = layer.restored_weight()
        _check_finite(name, restored[name], weight_matrix(layer.base_layer).dtype, "unmerging")
    for name, layer in merged.layers.items():
        set_weight_matrix(layer.base_layer, restored[name])
        _replace_module(model, name, layer)
    del model.__dict__[_MERGED_ATTR]
    model.__dict__[_INJECTION_ATTR] = merged.injection
    return model


def _trained_biases(
    model: nn.Module, injection: Injection, layers: dict[str, AdapterLayer]
) -> dict[str, nn.Parameter]:
    if injection.config.bias == "all":
        return {name: p for name, p in model.named_parameters() if name.split(".")[-1] == "bias"}
    if injection.config.bias == "adapter":
        return {
            f"{name}.base_layer.bias": layer.base_layer.bias
            for name, layer in layers.items()
            if layer.base_layer.bias is not None
        }
    return {}


def _check_finite(name: str, weight: torch.Tensor, dtype: torch.dtype, doing: str) -> None:
    if not torch.isfinite(weight.to(dtype)).all():
        raise ValueError(
            f"{doing} layer {name!r} gives NaN or Inf weights in {dtype}; no weight was changed. "
            "The adapter has diverged (check the learning rate), or the result overflows this dtype"
        )


def _refuse_tied_weights(model: nn.Module, plan: TargetPlan) -> None:
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            owners.setdefault(id(weight), []).append(name)
    for name in plan:
        sharing = [owner for owner in owners[id(model.get_submodule(name).weight)] if owner != name]
        if sharing:
            raise ValueError(
                f"target layer {name!r} shares its weight with {sharing} (tied weights): merging would change "
                "both; leave it out of targets"
            )


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)
