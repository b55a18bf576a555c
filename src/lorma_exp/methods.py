"""Turn ``method.*`` into a trainable model: our adapters, PEFT's LoRA / DoRA, or full fine-tuning.

The LoRMA and LoRA maths live in :mod:`lorma_exp.adapters`; this module only maps the config onto it and
onto the external baselines, and saves what a method trained.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lorma_exp.adapters import (
    AdapterConfig,
    count_trainable,
    default_modules_to_save,
    inject_adapters,
    load_adapters,
    resolve_target_names,
    save_adapters,
)
from lorma_exp.config import MethodConfig, MethodKind

ADAPTER_KINDS = (MethodKind.lorma, MethodKind.lora)
PEFT_KINDS = (MethodKind.peft_lora, MethodKind.peft_dora)


def adapter_config(method: MethodConfig) -> AdapterConfig:
    """The adapter library's config for a ``lorma`` / ``lora`` method."""
    is_lorma = method.kind == MethodKind.lorma
    return AdapterConfig(
        method=method.kind.value,
        inflation=method.inflation.value if is_lorma and method.inflation else None,
        mode=method.mode.value if is_lorma else None,
        r=method.r,
        alpha=method.alpha,
        targets=list(method.targets),
        dropout=method.dropout,
        dropout_on=method.dropout_on.value,
        bias=method.bias.value,
        modules_to_save=list(method.modules_to_save) if method.modules_to_save is not None else None,
    )


def apply_method(model: torch.nn.Module, method: MethodConfig) -> torch.nn.Module:
    """Make exactly the parameters the method trains require gradients."""
    if method.kind in ADAPTER_KINDS:
        return inject_adapters(model, adapter_config(method))
    if method.kind in PEFT_KINDS:
        from peft import LoraConfig, get_peft_model

        heads = (
            method.modules_to_save if method.modules_to_save is not None else default_modules_to_save(model)
        )
        peft_config = LoraConfig(
            r=method.r,
            lora_alpha=method.alpha,
            lora_dropout=method.dropout,
            target_modules=resolve_target_names(model, list(method.targets)),
            bias=method.bias.value if method.bias.value != "adapter" else "lora_only",
            use_dora=method.kind == MethodKind.peft_dora,
            modules_to_save=list(heads) or None,
        )
        return get_peft_model(model, peft_config)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def parameter_counts(model: torch.nn.Module, method: MethodConfig) -> dict[str, int]:
    """Trainable parameters split into adapter / head / other (full fine-tuning counts all as other)."""
    if method.kind in ADAPTER_KINDS:
        return count_trainable(model)
    trainable = [(name, p.numel()) for name, p in model.named_parameters() if p.requires_grad]
    if method.kind in PEFT_KINDS:
        adapter = sum(n for name, n in trainable if "lora_" in name)
        head = sum(n for name, n in trainable if "modules_to_save" in name)
        return {
            "adapter": adapter,
            "head": head,
            "other": sum(n for _, n in trainable) - adapter - head,
            "total": sum(n for _, n in trainable),
        }
    total = sum(n for _, n in trainable)
    return {"adapter": 0, "head": 0, "other": total, "total": total}


def save_trained(
    model: torch.nn.Module, path: Path, method: MethodConfig, base_model_name_or_path: str
) -> None:
    """Adapter methods save adapter + head weights; PEFT saves its adapter; full fine-tuning the model."""
    if method.kind in ADAPTER_KINDS:
        save_adapters(model, path, base_model_name_or_path=base_model_name_or_path)
    else:
        model.save_pretrained(path)


def load_trained(base: torch.nn.Module, path: Path, method: MethodConfig) -> torch.nn.Module:
    """Put saved adapter (or PEFT) weights onto a freshly loaded base model."""
    if method.kind in ADAPTER_KINDS:
        return load_adapters(base, path)
    if method.kind in PEFT_KINDS:
        from peft import PeftModel

        return PeftModel.from_pretrained(base, path)
    raise ValueError("full fine-tuning saves the whole model: load it with its folder as model.name_or_path.")
