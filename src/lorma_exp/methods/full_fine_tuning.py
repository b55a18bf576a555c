"""Full fine-tuning: every parameter of the backbone trains; the whole model is saved."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from .base import BackboneLoader, Method

if TYPE_CHECKING:
    from lorma_exp.config import MethodConfig


class FullFineTuning(Method):
    """Trains everything; its weights folders hold whole transformers models (``model/``, ``model_best/``)."""

    kind: ClassVar[str] = "full_ft"
    weights_name: ClassVar[str] = "model"

    def apply(self, model: nn.Module, config: MethodConfig) -> nn.Module:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    def parameter_counts(self, model: nn.Module) -> dict[str, int]:
        """Everything that trains counts as ``other``: there is no adapter and no separate head."""
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {"adapter": 0, "head": 0, "other": total, "total": total}

    def save(self, model: nn.Module, folder: Path, base_model_name_or_path: str) -> None:
        model.save_pretrained(folder)

    def load(self, folder: Path, backbone: BackboneLoader, base_model_name_or_path: str) -> nn.Module:
        return backbone(str(folder))

    def write_merged(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)
