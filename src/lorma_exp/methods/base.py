"""The one protocol every fine-tuning method implements, so that the framework never asks "which kind?".

A :class:`Method` is a stateless strategy, registered under its ``method.kind``: it applies itself to a
backbone, counts what trains, saves, loads and exports what it trained, says which ``method.*`` settings
it has (they go into results.json; the others are recorded as null) and what its weights folder is called.
The settings it reads come from ``MethodConfig`` (``lorma_exp.config``); this package imports nothing of
the framework, so that the config schema can validate ``method.kind`` against the registry.
"""

from __future__ import annotations

import copy
import gc
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from lorma_exp.adapters import OutputSlice
    from lorma_exp.config import MethodConfig

# results.json fields that describe the method's settings, in the order they are written.
IDENTITY_FIELDS: tuple[str, ...] = ("inflation", "mode", "r", "alpha", "targets")

# The run's backbone freshly loaded: from ``name_or_path`` when given (a fully fine-tuned model's folder),
# else from the run's own ``model.name_or_path``.
BackboneLoader = Callable[[str | None], nn.Module]

# Per adapted layer, ``(slice, B, A)`` with ``W' − W = B·A`` on that slice's output rows.
LoraFactors = dict[str, list[tuple["OutputSlice", torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class ServingExport:
    """What :meth:`Method.export_for_serving` wrote: a PEFT LoRA adapter folder (for the base model named
    in its ``adapter_config.json``) or a merged model folder (``save_pretrained``)."""

    path: Path
    is_lora: bool


def plain_value(value: Any) -> Any:
    """A setting as results.json stores it: enum values as their string, lists as lists."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return list(value)
    return value


class Method(ABC):
    """How a backbone is fine-tuned: apply, count, save, load, export (see the module docstring).

    Subclasses set ``kind`` (the ``method.kind`` of their conf/method YAMLs) and ``settings`` (the
    ``method.*`` fields they use, which ``config.validate`` checks and results.json records).
    """

    kind: ClassVar[str]
    #: The ``method.*`` fields the method uses among ``inflation``, ``mode``, ``r``, ``alpha``,
    #: ``targets`` and ``dropout``: validated when set (``r > 0``, a known inflation, ...), recorded in
    #: results.json; fields not listed are recorded as null.
    settings: ClassVar[frozenset[str]] = frozenset()
    #: The run folder's weights folder: ``<weights_name>/`` at the end, ``<weights_name>_best/`` at the best
    #: evaluation.
    weights_name: ClassVar[str] = "adapter"
    #: Whether the saved weights folders are ``lorma_exp.adapters`` folders (``load_adapters`` reads them;
    #: the rank and similarity analyses need them).
    adapter_library: ClassVar[bool] = False

    def check(self, config: MethodConfig) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Reject settings the method cannot run with (ValueError naming the field), before any model loads.

        The generic rules (``settings``) are checked by ``config.validate``; this is for the rest.
        """

    def run_identity(self, config: MethodConfig) -> dict[str, Any]:
        """The results.json fields that describe the method: ``kind`` and :data:`IDENTITY_FIELDS`."""
        return {
            "kind": self.kind,
            **{
                name: plain_value(getattr(config, name)) if name in self.settings else None
                for name in IDENTITY_FIELDS
            },
        }

    @abstractmethod
    def apply(self, model: nn.Module, config: MethodConfig) -> nn.Module:
        """The model to train: exactly the parameters the method trains require gradients."""

    @abstractmethod
    def parameter_counts(self, model: nn.Module) -> dict[str, int]:
        """Trainable parameters of an applied model: ``adapter``, ``head``, ``other`` and ``total``."""

    @abstractmethod
    def save(self, model: nn.Module, folder: Path, base_model_name_or_path: str) -> None:
        """Write what the method trained to ``folder`` (a weights folder of the run)."""

    def saved_parameter_names(self, model: nn.Module) -> list[str]:
        """The parameters :meth:`save` reads from ``model`` (qualified names): all that a sharded run gathers
        onto one process to save. The others are on the meta device there, where some operations return
        garbage instead of failing (``cpu @ meta``), so a method names everything it reads (tests/framework/
        test_fsdp.py checks every built-in method's files). Default: every parameter."""
        return [name for name, _ in model.named_parameters()]

    def exported_parameter_names(self, model: nn.Module) -> list[str]:
        """The parameters :meth:`save` and :meth:`write_lora` read together (a finished run writes both).
        Default: :meth:`saved_parameter_names`."""
        return self.saved_parameter_names(model)

    @abstractmethod
    def load(self, folder: Path, backbone: BackboneLoader, base_model_name_or_path: str) -> nn.Module:
        """The trained model from a folder :meth:`save` wrote; ``base_model_name_or_path`` is the name the
        run saved under (the configured one, not the folder it resolved to)."""

    def carries(self, model: nn.Module) -> bool:
        """Whether ``model`` holds this method's trained layers (how a model met in serving is recognised)."""
        return False

    def exports_exactly_to_lora(self, model: nn.Module) -> bool:
        """Whether a PEFT LoRA adapter computes exactly what ``model`` computes."""
        return False

    def exact_lora_factors(self, model: nn.Module) -> LoraFactors | None:
        """Per adapted layer (base model names), ``(slice, B, A)`` with ``W' − W = B·A`` exactly; None when
        the update is not a LoRA update."""
        return None

    def write_lora(
        self,
        model: nn.Module,
        folder: Path,
        base_model_name_or_path: str | None = None,
        task_type: str | None = None,
    ) -> None:
        """Write ``model`` as a PEFT LoRA adapter (only when :meth:`exports_exactly_to_lora`) for the base
        model named (default: the one the model was loaded from) and PEFT's ``task_type`` (``SEQ_CLS``...)."""
        raise ValueError(f"method kind {self.kind!r}: the trained update is not a LoRA update")

    def write_lossy_lora(
        self, model: nn.Module, folder: Path, rank: int, base_model_name_or_path: str, task_type: str
    ) -> dict[str, float]:
        """Write ``model``'s full-rank update as a rank-``rank`` PEFT LoRA adapter (a truncated SVD per
        layer); returns each layer's relative Frobenius error."""
        raise ValueError(f"method kind {self.kind!r}: no rank-{rank} LoRA export of this method's update")

    @abstractmethod
    def write_merged(self, model: nn.Module, folder: Path) -> None:
        """Write ``model`` as a plain transformers model, adapters folded in (``model`` is left as it is)."""

    def export_for_serving(
        self, model: nn.Module, folder: Path, accept_lora: Callable[[Path], bool] | None = None
    ) -> ServingExport:
        """A PEFT LoRA adapter in ``folder/lora`` when that is exact (and ``accept_lora`` takes it: a server
        may refuse trained heads or a high rank), else the merged model in ``folder/merged``."""
        if self.exports_exactly_to_lora(model):
            lora = folder / "lora"
            self.write_lora(model, lora)
            if accept_lora is None or accept_lora(lora):
                return ServingExport(lora, is_lora=True)
        merged = folder / "merged"
        self.write_merged(model, merged)
        return ServingExport(merged, is_lora=False)


def count_by_name(model: nn.Module, adapter_marker: str, head_marker: str) -> dict[str, int]:
    """Trainable parameter counts, telling adapter and head parameters apart by a marker in their name."""
    trainable = [(name, p.numel()) for name, p in model.named_parameters() if p.requires_grad]
    adapter = sum(n for name, n in trainable if adapter_marker in name)
    head = sum(n for name, n in trainable if head_marker in name)
    total = sum(n for _, n in trainable)
    return {"adapter": adapter, "head": head, "other": total - adapter - head, "total": total}


def save_merged_copy(model: nn.Module, folder: Path, merge: Callable[[nn.Module], nn.Module]) -> None:
    """``merge`` a CPU copy of ``model`` and save it, so that the model itself keeps its adapters."""
    merged = merge(copy.deepcopy(model).cpu())
    merged.save_pretrained(folder)
    del merged
    gc.collect()
