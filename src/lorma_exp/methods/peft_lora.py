"""LoRA and DoRA through Hugging Face PEFT: the external baselines (peft is imported when first used)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from lorma_exp.adapters import OutputSlice, default_modules_to_save, resolve_target_names

from .base import BackboneLoader, LoraFactors, Method, count_by_name, plain_value, save_merged_copy

if TYPE_CHECKING:
    from lorma_exp.config import MethodConfig

# ``method.bias`` -> PEFT's ``bias`` (PEFT calls "biases of adapted layers" lora_only).
PEFT_BIAS = {"none": "none", "all": "all", "adapter": "lora_only"}
# PEFT wraps the base model twice: its parameter and module names start with this.
PEFT_PREFIX = "base_model.model."
ADAPTER_CONFIG_FILE = "adapter_config.json"


def _peft_config(model: nn.Module) -> Any | None:
    """The LoRA config of a PEFT model, None for any other model.

    Looks at peft only if it is already imported: otherwise no model can be a PEFT model.
    """
    peft = sys.modules.get("peft")
    if peft is None or not isinstance(model, peft.PeftModel):
        return None
    config = next(iter(model.peft_config.values()))
    return config if getattr(config, "peft_type", None) == "LORA" else None


class PeftLora(Method):
    """PEFT's LoRA (``get_peft_model``), saved and loaded as PEFT adapter folders."""

    kind: ClassVar[str] = "peft_lora"
    settings: ClassVar[frozenset[str]] = frozenset({"r", "alpha", "targets", "dropout"})
    use_dora: ClassVar[bool] = False

    def apply(self, model: nn.Module, config: MethodConfig) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        heads = (
            config.modules_to_save if config.modules_to_save is not None else default_modules_to_save(model)
        )
        peft_config = LoraConfig(
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=resolve_target_names(model, list(config.targets)),
            bias=PEFT_BIAS[plain_value(config.bias)],
            use_dora=self.use_dora,
            modules_to_save=list(heads) or None,
        )
        return get_peft_model(model, peft_config)

    def parameter_counts(self, model: nn.Module) -> dict[str, int]:
        return count_by_name(model, adapter_marker="lora_", head_marker="modules_to_save")

    def save(self, model: nn.Module, folder: Path, base_model_name_or_path: str) -> None:
        model.save_pretrained(folder)

    def saved_parameter_names(self, model: nn.Module) -> list[str]:
        """PEFT saves what trains: the LoRA (and DoRA magnitude) factors, the heads' trained copies, biases."""
        return [name for name, parameter in model.named_parameters() if parameter.requires_grad]

    def load(self, folder: Path, backbone: BackboneLoader, base_model_name_or_path: str) -> nn.Module:
        from peft import PeftModel

        return PeftModel.from_pretrained(backbone(None), folder)

    def carries(self, model: nn.Module) -> bool:
        config = _peft_config(model)
        return config is not None and bool(getattr(config, "use_dora", False)) == self.use_dora

    def exports_exactly_to_lora(self, model: nn.Module) -> bool:
        return not self.use_dora and self.carries(model)

    def exact_lora_factors(self, model: nn.Module) -> LoraFactors | None:
        if not self.exports_exactly_to_lora(model):
            return None
        from peft.tuners.lora import LoraLayer

        factors: LoraFactors = {}
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer):
                (adapter,) = module.active_adapters
                lora_a = module.lora_A[adapter].weight.detach().to(torch.float64)
                lora_b = module.lora_B[adapter].weight.detach().to(torch.float64) * module.scaling[adapter]
                whole = OutputSlice("", 0, lora_b.shape[0])
                factors[name.removeprefix(PEFT_PREFIX)] = [(whole, lora_b, lora_a)]
        return factors

    def write_lora(
        self,
        model: nn.Module,
        folder: Path,
        base_model_name_or_path: str | None = None,
        task_type: str | None = None,
    ) -> None:
        model.save_pretrained(folder)
        given = {"base_model_name_or_path": base_model_name_or_path, "task_type": task_type}
        given = {key: value for key, value in given.items() if value is not None}
        if given:  # PEFT writes the folder the base came from and the task type it was created with
            config_file = folder / ADAPTER_CONFIG_FILE
            config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **given}, indent=2))

    def write_merged(self, model: nn.Module, folder: Path) -> None:
        save_merged_copy(model, folder, lambda copy: copy.merge_and_unload())


class PeftDora(PeftLora):
    """PEFT's DoRA (``use_dora=True``): a magnitude-rescaled LoRA, not a LoRA update."""

    kind: ClassVar[str] = "peft_dora"
    use_dora: ClassVar[bool] = True
