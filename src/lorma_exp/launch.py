"""What the entry points do before Hydra starts: register the schema, read the old experiment form,
refuse a resume of nothing, and agree on one run folder.

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
from pathlib import Path

from lorma_exp.config import RUN_STAMP_ENV, ConfigError, register_configs, run_stamp
from lorma_exp.distributed import broadcast_object, init_distributed, launched_world_size
from lorma_exp.resume import check_resume_arguments

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Before the experiment configs held one file per paper table, a cell was one file per cell:
# experiment=table2/roberta_base_cola_lorma_plus. That form still works; it is read as the new one.
_OLD_EXPERIMENT = re.compile(r"^experiment=(?P<table>[a-z0-9]+)/(?P<cell>[A-Za-z0-9_]+)$")

QUIET_RANK_OVERRIDES = (
    "hydra.output_subdir=null",
    "hydra/job_logging=disabled",
    "hydra/hydra_logging=disabled",
)


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


def prepare_launch() -> None:
    """Call once, before the ``@hydra.main`` function runs."""
    register_configs()
    try:
        sys.argv[1:] = new_experiment_form(sys.argv[1:])
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
