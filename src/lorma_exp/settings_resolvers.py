"""Resolvers with which the paper's settings (conf/settings/, conf/experiment/) state a value per cell.

A settings file holds one column of a paper's settings table (a model and a task), but some of its
values differ per method (Table 14: LoRMA₊'s α; Table 16: each method's lr and α) or per task (Table 13's
beam), and some follow the rank (Table 17: α = 2r). Written as data once, next to the rest of the column:

    alpha: "${by_method:{lorma_plus: 4}, 8}"                      # LoRMA₊ 4, any other method 8
    trainer:
      lr: "${by_method:{lora: 2e-4, lorma_pi: 1e-4}}"            # no default: an unlisted method fails
    generation:
      num_beams: "${by_task:{e2e: 15, webnlg: 10, dart: 10}}"
    alpha: ${mul:${r},2}

``by_method`` reads the run's ``method.name``; ``by_task`` reads ``paper_cell.task``, the paper's task,
which a SMOKE run keeps while it trains on a stand-in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from omegaconf.errors import InterpolationResolutionError

_NO_DEFAULT = object()


class SettingNotGiven(InterpolationResolutionError):
    """A per-method or per-task setting that names neither the run's method or task nor a default."""


def _pick(values: Mapping[str, Any], key: Any, default: Any, what: str) -> Any:
    if key in values:
        return values[key]
    if default is not _NO_DEFAULT:
        return default
    listed = ", ".join(str(name) for name in values)
    raise SettingNotGiven(
        f"this setting is given for {what} {listed}, not for {key!r} and has no default. "
        f"Pick one of those, or set the value on the command line."
    )


def by_method(values: Mapping[str, Any], default: Any = _NO_DEFAULT, *, _root_: Any) -> Any:
    """``values[method.name]``, else ``default``."""
    return _pick(values, _root_.method.name, default, "the methods")


def by_task(values: Mapping[str, Any], default: Any = _NO_DEFAULT, *, _root_: Any) -> Any:
    """``values[paper_cell.task]``, else ``default``."""
    cell = _root_.paper_cell
    return _pick(values, cell.task if cell is not None else None, default, "the paper's tasks")


def mul(first: float, second: float) -> float:
    """``first × second`` (α = 2r: ``${mul:${r},2}``)."""
    return first * second


SETTINGS_RESOLVERS: dict[str, Callable[..., Any]] = {"by_method": by_method, "by_task": by_task, "mul": mul}
