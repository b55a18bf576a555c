"""Resuming a run with its config of record (docs/architecture.md, "Resume").

``resume=true run_dir=X`` continues X with X's own config.yaml, whatever the default config composes to
today. Overrides given with it may restate the record but not change it: every setting they would change
is listed (recorded value → new value) in one error, before anything is written. Run control
(:data:`CONTROL_KEYS`) may differ. The run's length (:data:`LENGTH_KEYS`) may change only under a constant
learning rate, where the resumed run can equal a run started with the new length; the trainer checks that
against the checkpoint (``trainer.schedule_change_error``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lorma_exp.config import ConfigError, Scheduler, TrainConfig, compose_train
from lorma_exp.run_folder import CONFIG_FILE, RunFolder

#: Settings that say how to run, not what: they may differ between a run and its resumption.
CONTROL_KEYS: frozenset[str] = frozenset({"resume", "run_dir", "skip_finished", "trainer.progress_bar"})
#: Settings that say how long the run is.
LENGTH_KEYS: frozenset[str] = frozenset({"trainer.epochs", "trainer.max_steps"})


def _leaves(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_leaves(value, path + "."))
        else:
            flat[path] = value
    return flat


def _settings(cfg: DictConfig) -> dict[str, Any]:
    """A config's leaves on the current schema (a record from an older version gains today's defaults)."""
    typed = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
    return _leaves(OmegaConf.to_container(typed, resolve=True, enum_to_str=True))  # type: ignore[arg-type]


def _named_keys(overrides: list[str]) -> list[str]:
    """The config keys and config groups the command-line ``overrides`` name (``trainer.lr``, ``method``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [override.key_or_group.replace("/", ".") for override in parsed]


def set_by(overrides: list[str], given: dict[str, Any]) -> set[str]:
    """The settings ``overrides`` set: those they give another value than the default composition, and
    every setting under a key or config group they name (``method=lorma_plus`` sets all of ``method.*``,
    default or not)."""
    default = _settings(compose_train([]))
    keys = {key for key, value in given.items() if default.get(key) != value}
    for named in _named_keys(overrides):
        keys.update(key for key in given if key == named or key.startswith(named + "."))
    return keys


def _format(value: Any) -> str:
    return "null" if value is None else str(value)


@dataclass(frozen=True)
class Resumption:
    """What a resumed run runs with, and the record to write back once the checkpoint accepted it."""

    config: DictConfig
    #: The config of record with the new length, when the length changed (None: the record stands).
    new_record: DictConfig | None


def config_of_record(given: DictConfig, run: RunFolder, overrides: list[str] | None) -> Resumption:
    """The config a resumed run trains with: the run's recorded config.yaml, run control from ``given``.

    ``overrides`` are the command line's (Hydra's task overrides); None when the config did not come from a
    command line (the in-process API), where all of ``given`` must agree with the record. ConfigError
    listing every setting the overrides would change.
    """
    record = run.read_config()
    recorded, asked = _settings(record), _settings(given)
    keys = set(asked) if overrides is None else set_by(overrides, asked)
    changed = sorted(
        key for key in keys - CONTROL_KEYS if key in recorded and recorded[key] != asked.get(key)
    )
    length = [key for key in changed if key in LENGTH_KEYS]
    others = [key for key in changed if key not in LENGTH_KEYS]
    listing = "; ".join(f"{key}: {_format(recorded[key])} → {_format(asked.get(key))}" for key in changed)
    hint = (
        f"Resume with `resume=true run_dir={run.path}` alone (the run's own settings), or start a new run "
        "in another run_dir."
    )
    if others:
        raise ConfigError(
            f"resume: these overrides differ from the run's {CONFIG_FILE} in {run.path}: {listing}. {hint}"
        )
    if length and recorded["trainer.scheduler"] != Scheduler.constant.value:
        raise ConfigError(
            f"resume: {listing}: a run's length can change only under trainer.scheduler=constant; its "
            f"{recorded['trainer.scheduler']} learning-rate schedule already gave the steps taken rates that a "
            f"run of the new length would not have. {hint}"
        )
    resumed = OmegaConf.merge(OmegaConf.structured(TrainConfig), record)
    for key in sorted(CONTROL_KEYS | set(length)):
        OmegaConf.update(resumed, key, OmegaConf.select(given, key), merge=False)
    new_record = None
    if length:
        new_record = OmegaConf.merge(OmegaConf.structured(TrainConfig), record)
        for key in length:
            OmegaConf.update(new_record, key, OmegaConf.select(given, key), merge=False)
    return Resumption(resumed, new_record)  # type: ignore[arg-type]


def check_resume_arguments(arguments: list[str]) -> None:
    """Before Hydra creates a run folder: ``resume=true`` on the command line of a single run needs
    ``run_dir=<folder>``, and that folder must hold a run (ConfigError otherwise)."""
    if any(argument in ("-m", "--multirun") for argument in arguments):
        return  # each job of a sweep resumes its own folder when it holds a run
    overrides = [argument for argument in arguments if not argument.startswith("-") and "=" in argument]
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:
        return  # Hydra reports a malformed override itself, with its own message
    values = {override.key_or_group: override.value() for override in parsed}
    if values.get("resume") is not True:
        return
    run_dir = values.get("run_dir")
    if run_dir is None:
        raise ConfigError("resume=true: name the run to continue with run_dir=<its folder>.")
    check_resumable(RunFolder(str(run_dir)))


def check_resumable(run: RunFolder) -> None:
    """``run_dir`` of ``resume=true`` names a folder holding a run (its config.yaml); ConfigError if not."""
    if not run.path.is_dir():
        raise ConfigError(
            f"run_dir: {run.path} does not exist, so there is no run to resume. Check the path, or drop "
            "resume=true to start a new run there."
        )
    if not run.config.is_file():
        raise ConfigError(
            f"run_dir: {run.path} holds no run to resume (no {CONFIG_FILE}). Point run_dir at a run folder "
            "made by train.py, or drop resume=true to start a new run there."
        )
