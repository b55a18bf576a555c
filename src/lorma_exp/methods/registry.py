"""``method.kind`` -> its :class:`Method`: the built-in methods, and how to add one."""

from __future__ import annotations

from torch import nn

from .base import Method
from .full_fine_tuning import FullFineTuning
from .library import Lora, Lorma
from .peft_lora import PeftDora, PeftLora

METHODS: dict[str, Method] = {}

#: How a model that carries no method's layers is treated (served as it is): a fully fine-tuned model.
PLAIN_MODEL: Method = FullFineTuning()


def register_method(method: Method) -> Method:
    """Make ``method`` the implementation of ``method.kind: <method.kind>`` in conf/method YAMLs."""
    if method.kind in METHODS:
        raise ValueError(
            f"method kind {method.kind!r} is already registered ({type(METHODS[method.kind]).__name__})"
        )
    METHODS[method.kind] = method
    return method


def method_kinds() -> tuple[str, ...]:
    """Every registered ``method.kind``, sorted."""
    return tuple(sorted(METHODS))


def find_method(kind: str | None) -> Method | None:
    """The method registered as ``kind``; None for an unknown kind (an old run, or a typo)."""
    return METHODS.get(kind) if kind is not None else None


def method_for(kind: str) -> Method:
    """The method registered as ``kind`` (``config.validate`` has checked that there is one)."""
    method = find_method(kind)
    if method is None:
        raise KeyError(f"no method of kind {kind!r}; registered: {', '.join(method_kinds())}")
    return method


def method_of(model: nn.Module) -> Method:
    """The method whose trained layers ``model`` holds; :data:`PLAIN_MODEL` when it holds none."""
    return next((method for method in METHODS.values() if method.carries(model)), PLAIN_MODEL)


for _builtin in (Lorma(), Lora(), PLAIN_MODEL, PeftLora(), PeftDora()):
    register_method(_builtin)
