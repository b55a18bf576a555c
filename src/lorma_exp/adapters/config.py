"""`AdapterConfig`: what to adapt and how, validated when it is built."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .variants import INFLATIONS, Variant, variant_class

METHODS = ("lorma", "lora")
MODES = ("pre", "post")
BIASES = ("none", "all", "adapter")
DROPOUT_PLACES = ("adapter", "input")
ALL_LINEAR = "all-linear"

#: What `inflation` and `mode` become when `method="lorma"` leaves them out (the paper's defaults).
LORMA_DEFAULTS = {"inflation": "rri", "mode": "pre"}


def _choice(field: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"AdapterConfig.{field}={value!r} is not one of {', '.join(map(repr, allowed))}")


@dataclass(frozen=True, kw_only=True)
class AdapterConfig:
    """How to adapt a model. Every field is checked when the config is built.

    - `method`: `"lorma"` (multiplicative, W' = M·W or W·M) or `"lora"` (additive, W' = W + s·B·A).
    - `inflation` (lorma only): one of `INFLATIONS`, the registered variants (`variants.py`): `"rri"`
      (LoRMA₊, M = I + s·B·A), `"shift"` (LoRMA_π, M = s·π(B·A)) or `"none"` (M = s·B·A, the paper's
      ablation). Defaults to `"rri"` for lorma; must be left out for lora.
    - `mode` (lorma only): `"pre"` (W' = M·W, M is d_out×d_out) or `"post"` (W' = W·M, M is d_in×d_in).
      Defaults to `"pre"` for lorma; must be left out for lora.
    - `r`, `alpha`: rank and scale numerator; the scaling is `s = alpha / r`.
    - `targets`: a list of exact module names, dotted suffixes or family aliases (`q k v o up down gate`),
      a single full-match regular expression string, or `"all-linear"`.
    - `dropout`, `dropout_on`: dropout probability, applied to the adapter branch only (`"adapter"`, as
      LoRA does) or to the whole layer input, frozen path included (`"input"`, the authors' code; on a
      fused layer only the input of the adapted slices, as their dropout touched adapted layers only).
    - `bias`: which biases train: `"none"`, `"all"`, or those of adapted layers (`"adapter"`).
    - `modules_to_save`: modules trained in full (task heads). `None` picks the model family's fresh
      heads (`classifier`, `score`, `qa_outputs`, where present); `[]` trains no head.
    """

    targets: str | tuple[str, ...]
    method: str = "lorma"
    inflation: str | None = None
    mode: str | None = None
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    dropout_on: str = "adapter"
    bias: str = "none"
    modules_to_save: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        if self.method == "lora":
            for field in LORMA_DEFAULTS:
                if getattr(self, field) is not None:
                    raise ValueError(
                        f"AdapterConfig.{field}={getattr(self, field)!r} only applies to method='lorma'; "
                        f"leave {field} out for method='lora'"
                    )
        else:
            for field, default in LORMA_DEFAULTS.items():
                if getattr(self, field) is None:
                    object.__setattr__(self, field, default)
            _choice("inflation", self.inflation, INFLATIONS)
            _choice("mode", self.mode, MODES)
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"AdapterConfig.r={self.r!r} must be a positive integer")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ValueError(f"AdapterConfig.alpha={self.alpha!r} must be a positive number")
        object.__setattr__(self, "alpha", float(self.alpha))
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"AdapterConfig.dropout={self.dropout!r} must be a number in [0, 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AdapterConfig.dropout={self.dropout!r} must be in [0, 1)")
        object.__setattr__(self, "dropout", float(self.dropout))
        _choice("dropout_on", self.dropout_on, DROPOUT_PLACES)
        variant = variant_class(self.method, self.inflation)
        if not variant.has_adapter_branch and self.dropout > 0 and self.dropout_on == "adapter":
            raise ValueError(
                f"AdapterConfig.dropout_on='adapter' is undefined for inflation={self.inflation!r}: its "
                "multiplier acts on the whole layer, there is no separate adapter branch; set "
                "dropout_on='input' (the authors' whole-input dropout) or dropout=0"
            )
        _choice("bias", self.bias, BIASES)
        object.__setattr__(self, "targets", normalise_targets(self.targets))
        if self.modules_to_save is not None:
            object.__setattr__(self, "modules_to_save", _names("modules_to_save", self.modules_to_save))

    @property
    def scale(self) -> float:
        """`s = alpha / r`, the factor in front of every low-rank product."""
        return self.alpha / self.r

    @property
    def variant(self) -> Variant:
        """The maths of this method (`variants.py`), bound to this config."""
        return variant_class(self.method, self.inflation)(self)

    @property
    def exports_exactly_to_lora(self) -> bool:
        """Whether every adapted layer's `W' − W` is exactly a rank-r LoRA update `B·A` (LoRA, LoRMA₊), so
        that `export_peft_lora` writes it losslessly and LoRA serving stacks can serve it unmerged."""
        return variant_class(self.method, self.inflation).exports_exactly_to_lora

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `AdapterConfig.from_dict` reads it back."""
        data = dataclasses.asdict(self)
        for field in ("targets", "modules_to_save"):
            if isinstance(data[field], tuple):
                data[field] = list(data[field])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterConfig:
        """Build a config from `to_dict` output, refusing keys it does not know."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown AdapterConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)


def normalise_targets(targets: object) -> str | tuple[str, ...]:
    """A regex / `"all-linear"` string as is, a list of names as a tuple; `ValueError` if empty or invalid."""
    if isinstance(targets, str):
        if not targets:
            raise ValueError("AdapterConfig.targets='' is empty; give module names, a regex or 'all-linear'")
        try:
            re.compile(targets)
        except re.error as error:
            raise ValueError(
                f"AdapterConfig.targets={targets!r} is not a valid regular expression: {error}"
            ) from None
        return targets
    names = _names("targets", targets)
    if not names:
        raise ValueError("AdapterConfig.targets is an empty list; give at least one module name or alias")
    return names


def _names(field: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"AdapterConfig.{field}={value!r} must be a list of module names")
    bad = [item for item in value if not isinstance(item, str) or not item]
    if bad:
        raise ValueError(f"AdapterConfig.{field} holds {bad!r}; every entry must be a non-empty string")
    return tuple(value)
