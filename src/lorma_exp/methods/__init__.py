"""Fine-tuning methods as strategies: one :class:`Method` per ``method.kind``, found in a registry.

The framework (pipeline, evaluation, serving, reports) asks a method to apply, count, save, load and export
itself and never branches on its kind. Built in: ``lorma`` and ``lora`` (our adapter library,
:mod:`lorma_exp.adapters`), ``peft_lora`` and ``peft_dora`` (Hugging Face PEFT), ``full_ft``. A new kind is a
:class:`Method` subclass passed to :func:`register_method`, and a conf/method YAML naming its kind.
"""

from .base import IDENTITY_FIELDS, BackboneLoader, LoraFactors, Method, ServingExport
from .full_fine_tuning import FullFineTuning
from .library import LibraryAdapters, Lora, Lorma
from .peft_lora import PeftDora, PeftLora
from .registry import METHODS, PLAIN_MODEL, find_method, method_for, method_kinds, method_of, register_method

__all__ = [
    "IDENTITY_FIELDS",
    "METHODS",
    "PLAIN_MODEL",
    "BackboneLoader",
    "FullFineTuning",
    "LibraryAdapters",
    "Lora",
    "LoraFactors",
    "Lorma",
    "Method",
    "PeftDora",
    "PeftLora",
    "ServingExport",
    "find_method",
    "method_for",
    "method_kinds",
    "method_of",
    "register_method",
]
