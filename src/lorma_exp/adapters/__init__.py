"""LoRMA and LoRA adapters for torch / transformers models: exact, as cheap as LoRA, mergeable, exportable.

Usage::

    from lorma_exp.adapters import AdapterConfig, inject_adapters, merge_adapters, save_adapters

    config = AdapterConfig(method="lorma", inflation="rri", mode="pre", r=8, alpha=16, targets=["q", "v"])
    model = inject_adapters(model, config)  # in place: adapters on q and v, the rest frozen but task heads
    ...                                      # train as usual
    save_adapters(model, "run/adapter")      # adapter_config.json + adapter_model.safetensors
    plain = merge_adapters(model)            # the plain transformers model, adapters folded in

Layers: `LormaLinear` (W' = M·W or W·M, M = I(B·A)) and `LoraLinear` (W' = W + s·B·A) wrap the original
`nn.Linear` or GPT-2 `Conv1D` as `base_layer`; the maths of each method is a variant (`variants.py`), and
`INFLATIONS` names LoRMA's registered inflations. See docs/adapters.md for the maths, the config fields
and how each property is tested.
"""

from .config import AdapterConfig
from .io import export_peft_lora, load_adapters, save_adapters
from .layers import AdapterLayer, LoraLinear, LormaLinear, OutputSlice
from .model import (
    count_trainable,
    inject_adapters,
    iter_adapter_layers,
    merge_adapters,
    saved_parameters,
    unmerge_adapters,
)
from .targets import default_modules_to_save, resolve_target_names
from .variants import INFLATIONS

__all__ = [
    "INFLATIONS",
    "AdapterConfig",
    "AdapterLayer",
    "LoraLinear",
    "LormaLinear",
    "OutputSlice",
    "count_trainable",
    "default_modules_to_save",
    "export_peft_lora",
    "inject_adapters",
    "iter_adapter_layers",
    "load_adapters",
    "merge_adapters",
    "resolve_target_names",
    "save_adapters",
    "saved_parameters",
    "unmerge_adapters",
]
