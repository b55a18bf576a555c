"""Which layers to adapt and which heads to train: target matching, per-family aliases and fused layouts.

Rules (the same for every model):
- a list entry that is an alias of the model's family (`q k v o up down gate`) selects the layers the alias
  names; any other entry selects the layers whose qualified name equals it or ends with `"." + entry`;
- a string is a regular expression that must match a whole qualified name, except `"all-linear"`: every
  `nn.Linear`/`Conv1D` but the output embedding;
- layers inside trained heads (`modules_to_save`) are never adapted;
- GPT-2's fused `c_attn` is adapted per projection slice: aliases `q`, `k`, `v` pick one slice each, and
  naming the layer itself picks all three (one multiplier per projection, never one that mixes them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from .base_layers import is_adaptable, weight_matrix
from .config import ALL_LINEAR, normalise_targets
from .layers import OutputSlice

#: How many existing layer names an error message lists.
_EXAMPLES_SHOWN = 6


@dataclass(frozen=True)
class Alias:
    """A short target name: a full-match regex of qualified layer names, and the fused slice it picks."""

    pattern: str
    slice: str | None = None


@dataclass(frozen=True)
class Family:
    """Naming conventions shared by a group of `config.model_type`s."""

    name: str
    model_types: tuple[str, ...]
    aliases: Mapping[str, Alias]
    heads: tuple[str, ...]
    #: Full-match regex of fused layers -> their output slices, equal parts in this order.
    fused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_ANY_PREFIX = r"(?:.*\.)?"
_LLAMA_STYLE_ALIASES = {
    alias: Alias(_ANY_PREFIX + rf"{alias}_proj") for alias in ("q", "k", "v", "o", "up", "down", "gate")
}
_GPT2_FUSED_QKV = _ANY_PREFIX + r"attn\.c_attn"

FAMILIES: tuple[Family, ...] = (
    Family(
        name="bert",
        model_types=("bert", "roberta", "xlm-roberta"),
        aliases={
            "q": Alias(_ANY_PREFIX + r"attention\.self\.query"),
            "k": Alias(_ANY_PREFIX + r"attention\.self\.key"),
            "v": Alias(_ANY_PREFIX + r"attention\.self\.value"),
            "o": Alias(_ANY_PREFIX + r"attention\.output\.dense"),
            "up": Alias(_ANY_PREFIX + r"intermediate\.dense"),
            "down": Alias(_ANY_PREFIX + r"layer\.\d+\.output\.dense"),
        },
        heads=("classifier", "qa_outputs"),
    ),
    Family(
        name="gpt2",
        model_types=("gpt2",),
        aliases={
            "q": Alias(_GPT2_FUSED_QKV, "q"),
            "k": Alias(_GPT2_FUSED_QKV, "k"),
            "v": Alias(_GPT2_FUSED_QKV, "v"),
            "o": Alias(_ANY_PREFIX + r"attn\.c_proj"),
            "up": Alias(_ANY_PREFIX + r"mlp\.c_fc"),
            "down": Alias(_ANY_PREFIX + r"mlp\.c_proj"),
        },
        heads=("score", "classifier", "qa_outputs"),
        fused={_GPT2_FUSED_QKV: ("q", "k", "v")},
    ),
    Family(name="llama", model_types=("llama",), aliases=_LLAMA_STYLE_ALIASES, heads=("score", "qa_outputs")),
    Family(
        name="gemma",
        model_types=("gemma", "gemma2"),
        aliases=_LLAMA_STYLE_ALIASES,
        heads=("score", "qa_outputs"),
    ),
    Family(
        name="mistral-qwen",
        model_types=("mistral", "qwen2", "qwen3"),
        aliases=_LLAMA_STYLE_ALIASES,
        heads=("score", "qa_outputs"),
    ),
)

#: Plan of an injection: qualified layer name -> the slices to adapt (`None`: the whole layer).
TargetPlan = dict[str, tuple[OutputSlice, ...] | None]


def family_of(model: nn.Module) -> Family | None:
    """The model's family from `model.config.model_type`, or `None` (plain torch models, other families)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return next((family for family in FAMILIES if model_type in family.model_types), None)


def _name_matches(name: str, entry: str) -> bool:
    return name == entry or name.endswith("." + entry)


def _inside(name: str, parents: tuple[str, ...]) -> bool:
    return any(name == parent or name.startswith(parent + ".") for parent in parents)


def default_modules_to_save(model: nn.Module) -> tuple[str, ...]:
    """Qualified names of the fresh task heads of the model's family that this model has (e.g.
    `("classifier",)` for `RobertaForSequenceClassification`, `()` for a causal LM or a plain model)."""
    return resolve_heads(model, None)


def resolve_heads(model: nn.Module, modules_to_save: tuple[str, ...] | None) -> tuple[str, ...]:
    """Qualified names of the modules trained in full: `modules_to_save`, each entry of which must match
    (exactly or as a dotted suffix), or (when it is `None`) the family's fresh task heads the model has."""
    names = [name for name, _ in model.named_modules() if name]
    explicit = modules_to_save is not None
    if explicit:
        wanted = modules_to_save
    else:
        family = family_of(model)
        wanted = family.heads if family else ()
    matched: list[str] = []
    for entry in wanted:
        matches = [name for name in names if _name_matches(name, entry)]
        if explicit and not matches:
            raise ValueError(
                f"AdapterConfig.modules_to_save entry {entry!r} matches no module; some module names: "
                f"{_examples(names)}"
            )
        matched.extend(matches)
    unique = list(dict.fromkeys(matched))
    return tuple(name for name in unique if not any(name.startswith(other + ".") for other in unique))


def resolve_target_names(model: nn.Module, targets: str | Sequence[str]) -> list[str]:
    """Qualified names of the layers `targets` selects (same rules as `AdapterConfig.targets`, default heads
    excluded), for tools that take plain layer names such as PEFT. A fused GPT-2 `c_attn` is listed once,
    as a whole: such tools cannot adapt its slices."""
    return list(resolve_targets(model, normalise_targets(targets), default_modules_to_save(model)))


def resolve_targets(model: nn.Module, targets: str | tuple[str, ...], heads: tuple[str, ...]) -> TargetPlan:
    """Map every layer `targets` selects (see `AdapterConfig.targets`) to the slices to adapt, in module
    order, never reaching into the `heads`.

    Raises `ValueError` naming the target when one matches nothing or matches a module that is not an
    `nn.Linear`/`Conv1D`.
    """
    family = family_of(model)
    modules = {name: module for name, module in model.named_modules() if name and not _inside(name, heads)}
    adaptable = [name for name, module in modules.items() if is_adaptable(module)]
    selected: dict[str, set[str] | None] = {}

    def select(target: str, name: str, slice_name: str | None) -> None:
        if not is_adaptable(modules[name]):
            raise ValueError(
                f"target {target!r} matches {name!r}, a {type(modules[name]).__name__}; only nn.Linear and "
                f"GPT-2 Conv1D layers can be adapted: name the linear layers inside it"
            )
        if slice_name is None or (name in selected and selected[name] is None):
            selected[name] = None
        else:
            selected.setdefault(name, set()).add(slice_name)

    if targets == ALL_LINEAR:
        output_embedding = _output_embedding_name(model)
        matches = [name for name in adaptable if name != output_embedding]
        _require_match(ALL_LINEAR, matches, adaptable, heads)
        for name in matches:
            select(ALL_LINEAR, name, None)
    elif isinstance(targets, str):
        matches = [name for name in modules if re.fullmatch(targets, name)]
        _require_match(targets, matches, adaptable, heads)
        for name in matches:
            select(targets, name, None)
    else:
        for entry in targets:
            alias = family.aliases.get(entry) if family else None
            if alias is not None:
                matches = [name for name in modules if re.fullmatch(alias.pattern, name)]
            else:
                matches = [name for name in modules if _name_matches(name, entry)]
            _require_match(entry, matches, adaptable, heads, family, is_alias_word=_is_alias_word(entry))
            for name in matches:
                select(entry, name, alias.slice if alias else None)
    return {name: _slices(model, family, name, selected[name]) for name in modules if name in selected}


def _is_alias_word(entry: str) -> bool:
    return any(entry in family.aliases for family in FAMILIES)


def _require_match(
    target: str,
    matches: list[str],
    adaptable: list[str],
    heads: tuple[str, ...],
    family: Family | None = None,
    is_alias_word: bool = False,
) -> None:
    if matches:
        return
    message = f"target {target!r} matches no layer"
    if heads:
        message += f" outside the trained heads {list(heads)}"
    if is_alias_word:
        if family is None:
            message += (
                f"; {target!r} is an alias only for known model families "
                f"({', '.join(f.name for f in FAMILIES)}), and this model's config.model_type is not one of them"
            )
        else:
            message += f"; the {family.name} family's aliases are {sorted(family.aliases)}"
    raise ValueError(f"{message}. Some layer names: {_examples(adaptable)}")


def _examples(names: list[str]) -> str:
    shown = ", ".join(names[:_EXAMPLES_SHOWN])
    return f"{shown} (… {len(names)} in all)" if len(names) > _EXAMPLES_SHOWN else shown or "(none)"


def _output_embedding_name(model: nn.Module) -> str | None:
    getter = getattr(model, "get_output_embeddings", None)
    output = getter() if callable(getter) else None
    return (
        next((name for name, module in model.named_modules() if module is output), None) if output else None
    )


def _slices(
    model: nn.Module, family: Family | None, name: str, slice_names: set[str] | None
) -> tuple[OutputSlice, ...] | None:
    """The output slices to adapt for a fused layer (all of them when the layer was named as a whole);
    `None` for an ordinary layer."""
    layout = next(
        (
            slices
            for pattern, slices in (family.fused if family else {}).items()
            if re.fullmatch(pattern, name)
        ),
        None,
    )
    if layout is None:
        return None
    out_features = weight_matrix(model.get_submodule(name)).shape[0]
    size = out_features // len(layout)
    wanted = set(layout) if slice_names is None else slice_names
    return tuple(
        OutputSlice(slice_name, index * size, (index + 1) * size)
        for index, slice_name in enumerate(layout)
        if slice_name in wanted
    )
