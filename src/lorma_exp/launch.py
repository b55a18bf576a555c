"""What the entry points do before Hydra starts: register the schema, put the overrides where Hydra's
argument parser takes them, read the old experiment form, refuse a resume of nothing, and agree on one
run folder.

Hydra 1.3 parses its command line with argparse, whose overrides are one run of positionals: in
``train.py task=cola -m seed=1,2,3`` the overrides after ``-m`` are "unrecognized arguments". Every entry
point therefore moves the overrides in front of Hydra's flags first (a flag keeps its value: ``--cfg job``,
``-cd DIR``, ``--config-name X``), so that overrides work on both sides of ``-m``.

Hydra creates the run folder before any of our code runs, so ``resume=true run_dir=X`` with no run in X
is refused here, before X is created. Under torchrun every rank runs Hydra, and Hydra names the run
folder from the clock; ranks starting a second apart would scatter a run over several folders. So the
process group is joined first, rank 0's time stamp is shared through ``LORMA_RUN_STAMP``, and ranks other
than 0 are told not to write Hydra's own files or logs.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from lorma_exp.conf_dir import CONF_DIR
from lorma_exp.config import RUN_STAMP_ENV, ConfigError, register_configs, run_stamp
from lorma_exp.distributed import broadcast_object, init_distributed, launched_world_size
from lorma_exp.resume import check_resume_arguments

# Before the experiment configs held one file per paper table, a cell was one file per cell:
# experiment=table2/roberta_base_cola_lorma_plus. That form still works; it is read as the new one.
_OLD_EXPERIMENT = re.compile(r"^experiment=(?P<table>[a-z0-9]+)/(?P<cell>[A-Za-z0-9_]+)$")

MULTIRUN_FLAGS = ("-m", "--multirun")
# The settings a run's name spells (conf/config.yaml, run_name): the model, task and method, the method's
# settings, the seed, and the paper cell a SMOKE stand-in's settings name.
RUN_NAME_KEYS = frozenset(
    {"model", "task", "method", "r", "alpha", "mode", "method.targets", "seed", "settings"}
)
# Overrides that choose a sweep job's folder themselves.
_FOLDER_KEYS = ("hydra.sweep.subdir", "hydra.job.config.override_dirname.exclude_keys")
_EXCLUDE_KEYS = "hydra.job.config.override_dirname.exclude_keys"

QUIET_RANK_OVERRIDES = (
    "hydra.output_subdir=null",
    "hydra/job_logging=disabled",
    "hydra/hydra_logging=disabled",
)


def overrides_first(arguments: Sequence[str]) -> list[str]:
    """``arguments`` with every override before every flag, each flag followed by its own value.

    Which flags take a value is read from Hydra's own argument parser: ``--cfg job``, ``-p PACKAGE``,
    ``-cd DIR`` take one, ``--info`` takes one of its choices when one follows, ``-m`` none. A token that
    starts with ``-`` is a flag (overrides never do: ``key=value``, ``+key=value``, ``~key``); an unknown
    one is kept among the flags for Hydra to report.
    """
    flags_by_name = get_args_parser()._option_string_actions  # argparse exposes no public lookup
    overrides: list[str] = []
    flags: list[str] = []
    position = 0
    while position < len(arguments):
        token = arguments[position]
        position += 1
        if not token.startswith("-"):
            overrides.append(token)
            continue
        flags.append(token)
        action = flags_by_name.get(token)  # None for --flag=value (its value is attached) and unknown flags
        if action is None or action.nargs == 0 or position == len(arguments):
            continue
        following = arguments[position]
        if action.nargs is None or (
            action.nargs == "?" and (action.choices is None or following in action.choices)
        ):
            flags.append(following)
            position += 1
    return overrides + flags


def sweep_folder_override(arguments: Sequence[str]) -> list[str]:
    """For a multirun, the Hydra override that leaves in ``hydra.job.override_dirname`` (the last level of
    a job's folder, conf/config.yaml) only the swept settings the run name does not spell: none for
    ``-m seed=1,2,3``, ``trainer.lr=0.001`` for ``-m trainer.lr=1e-3,1e-4``.

    Nothing for a single run, when the command line chooses the job folder itself, or when the overrides
    do not parse (Hydra reports those).
    """
    if not any(flag in arguments for flag in MULTIRUN_FLAGS):
        return []
    given = [argument for argument in arguments if not argument.startswith("-")]
    if any(argument.lstrip("+~").startswith(_FOLDER_KEYS) for argument in given):
        return []
    try:
        overrides = OverridesParser.create().parse_overrides(given)
    except HydraException:
        return []
    left_out = sorted(
        {
            override.key_or_group
            for override in overrides
            if not override.is_hydra_override()
            and (not override.is_sweep_override() or override.key_or_group in RUN_NAME_KEYS)
        }
    )
    return [f"{_EXCLUDE_KEYS}=[{','.join(left_out)}]"]


def _options(group: str) -> list[str]:
    return sorted((path.stem for path in (CONF_DIR / group).glob("*.yaml")), key=len, reverse=True)


def new_experiment_form(arguments: Sequence[str]) -> list[str]:
    """``arguments`` with ``experiment=<table>/<model>_<task>_<method>`` written as the per-table experiment
    and its cell, ``experiment=<table> model=<model> task=<task> method=<method>``.

    A model, task or method the command line also names is kept (``experiment=table2/..._lorma_plus
    method=lorma_none`` runs lorma_none in that cell); a sweep over old-form experiments cannot be
    translated and fails naming the new form.
    """
    given = {argument.split("=", 1)[0].lstrip("+") for argument in arguments if "=" in argument}
    translated: list[str] = []
    for argument in arguments:
        old = _OLD_EXPERIMENT.match(argument)
        if old is None:
            if argument.startswith("experiment=") and "/" in argument:
                raise ConfigError(
                    f"experiment: {argument.split('=', 1)[1]} is the old one-file-per-cell form, which only "
                    "translates for one cell. Sweep the per-table experiment instead, e.g. "
                    "experiment=table2 model=roberta_base,roberta_large task=cola,rte method=lorma_plus."
                )
            translated.append(argument)
            continue
        cell = _old_cell(old["cell"])
        if cell is None:
            raise ConfigError(
                f"experiment: {argument.split('=', 1)[1]} names no cell <model>_<task>_<method> of conf/model, "
                f"conf/task and conf/method. Write it as experiment={old['table']} model=... task=... method=..."
            )
        choices = [f"{group}={value}" for group, value in cell.items() if group not in given]
        translated += [f"experiment={old['table']}", *choices]
        print(
            f"note: {argument} is now written experiment={old['table']} "
            + " ".join(f"{group}={value}" for group, value in cell.items()),
            file=sys.stderr,
        )
    return translated


def _old_cell(cell: str) -> dict[str, str] | None:
    for model in _options("model"):
        for method in _options("method"):
            task = cell.removeprefix(f"{model}_").removesuffix(f"_{method}")
            if cell == f"{model}_{task}_{method}" and (CONF_DIR / "task" / f"{task}.yaml").exists():
                return {"model": model, "task": task, "method": method}
    return None


def launch_arguments(arguments: Sequence[str]) -> list[str]:
    """The command line Hydra is handed for the one a user typed (ConfigError for an old experiment form
    that does not translate)."""
    arranged = new_experiment_form(overrides_first(arguments))
    return [*sweep_folder_override(arranged), *arranged]


def prepare_launch() -> None:
    """Call once, before the ``@hydra.main`` function runs."""
    register_configs()
    try:
        sys.argv[1:] = launch_arguments(sys.argv[1:])
        check_resume_arguments(sys.argv[1:])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if launched_world_size() <= 1:
        return
    env = init_distributed()
    os.environ[RUN_STAMP_ENV] = broadcast_object(run_stamp(), env)
    if not env.is_main:
        sys.argv.extend(QUIET_RANK_OVERRIDES)
