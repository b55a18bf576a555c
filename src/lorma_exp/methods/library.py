"""LoRMA and LoRA through our adapter library (:mod:`lorma_exp.adapters`), which holds all of their maths."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from lorma_exp.adapters import (
    AdapterConfig,
    count_trainable,
    export_peft_lora,
    inject_adapters,
    iter_adapter_layers,
    load_adapters,
    merge_adapters,
    save_adapters,
    saved_parameters,
)

from .base import BackboneLoader, LoraFactors, Method, plain_value, save_merged_copy

if TYPE_CHECKING:
    from lorma_exp.config import MethodConfig


class LibraryAdapters(Method):
    """What LoRMA and LoRA share: inject, count, save and load through the adapter library."""

    settings: ClassVar[frozenset[str]] = frozenset({"r", "alpha", "targets", "dropout"})
    adapter_library: ClassVar[bool] = True

    def variant_settings(self, config: MethodConfig) -> dict[str, Any]:
        """The ``AdapterConfig`` fields only this kind has."""
        return {}

    def adapter_config(self, config: MethodConfig) -> AdapterConfig:
        """The adapter library's config for ``method.*`` (it validates itself: ValueError naming the field)."""
        return AdapterConfig(
            method=self.kind,
            r=config.r,
            alpha=config.alpha,
            targets=list(config.targets),
            dropout=config.dropout,
            dropout_on=plain_value(config.dropout_on),
            bias=plain_value(config.bias),
            modules_to_save=list(config.modules_to_save) if config.modules_to_save is not None else None,
            **self.variant_settings(config),
        )

    def check(self, config: MethodConfig) -> None:
        self.adapter_config(config)

    def apply(self, model: nn.Module, config: MethodConfig) -> nn.Module:
        return inject_adapters(model, self.adapter_config(config))

    def parameter_counts(self, model: nn.Module) -> dict[str, int]:
        return count_trainable(model)

    def save(self, model: nn.Module, folder: Path, base_model_name_or_path: str) -> None:
        save_adapters(model, folder, base_model_name_or_path=base_model_name_or_path)

    def saved_parameter_names(self, model: nn.Module) -> list[str]:
        return list(saved_parameters(model))

    def exported_parameter_names(self, model: nn.Module) -> list[str]:
        """The saved parameters, and for an exact LoRA export the adapted layers' frozen weights: LoRMA₊'s
        LoRA factors are ``B·(A·W)`` (pre) or ``(W·B)·A`` (post)."""
        names = self.saved_parameter_names(model)
        if self.exports_exactly_to_lora(model):
            names += [f"{name}.base_layer.weight" for name, _ in iter_adapter_layers(model)]
        return names

    def load(self, folder: Path, backbone: BackboneLoader, base_model_name_or_path: str) -> nn.Module:
        return load_adapters(backbone(None), folder, base_model_name_or_path=base_model_name_or_path)

    @staticmethod
    def _injected_config(model: nn.Module) -> AdapterConfig | None:
        layer = next((layer for _, layer in iter_adapter_layers(model)), None)
        return None if layer is None else layer.adapter_config

    def carries(self, model: nn.Module) -> bool:
        config = self._injected_config(model)
        return config is not None and config.method == self.kind

    def exports_exactly_to_lora(self, model: nn.Module) -> bool:
        config = self._injected_config(model)
        return config is not None and config.exports_exactly_to_lora

    def exact_lora_factors(self, model: nn.Module) -> LoraFactors | None:
        if not self.exports_exactly_to_lora(model):
            return None
        return {name: layer.exact_lora_factors() for name, layer in iter_adapter_layers(model)}

    def write_lora(
        self,
        model: nn.Module,
        folder: Path,
        base_model_name_or_path: str | None = None,
        task_type: str | None = None,
    ) -> None:
        export_peft_lora(model, folder, base_model_name_or_path=base_model_name_or_path, task_type=task_type)

    def write_lossy_lora(
        self, model: nn.Module, folder: Path, rank: int, base_model_name_or_path: str, task_type: str
    ) -> dict[str, float]:
        return export_peft_lora(
            model,
            folder,
            lossy_rank=rank,
            base_model_name_or_path=base_model_name_or_path,
            task_type=task_type,
        )

    def write_merged(self, model: nn.Module, folder: Path) -> None:
        save_merged_copy(model, folder, merge_adapters)


class Lorma(LibraryAdapters):
    """LoRMA: W' = M·W (pre) or W·M (post), M the inflated low-rank multiplier."""

    kind: ClassVar[str] = "lorma"
    settings: ClassVar[frozenset[str]] = LibraryAdapters.settings | {"inflation", "mode"}

    def variant_settings(self, config: MethodConfig) -> dict[str, Any]:
        return {"inflation": config.inflation, "mode": plain_value(config.mode)}


class Lora(LibraryAdapters):
    """LoRA: W' = W + s·B·A, our implementation."""

    kind: ClassVar[str] = "lora"
