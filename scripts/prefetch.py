"""Download what a reproduction needs into the Hugging Face cache, for clusters with offline compute nodes.

    python scripts/prefetch.py table2 table3          # on a login node with network
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 make reproduce-table2 LAUNCHER=slurm   # then, anywhere
    python scripts/prefetch.py task=cola model=roberta_base   # what one train.py run needs (its overrides)

It composes every cell of the named reproductions (the same grids `make reproduce-*` runs) and the tasks
they are scored on, or the one run that train.py overrides describe, to find their models and datasets,
then fetches each once. `--list` prints them without downloading.
"""

from __future__ import annotations

import argparse
import sys

from hydra import compose, initialize_config_dir

from lorma_exp.conf_dir import CONF_DIR
from lorma_exp.config import register_configs
from lorma_exp.data.hub import DataLoadError, load_dataset_dict
from lorma_exp.models import EMBEDDED_PREFIX
from lorma_exp.paper import REPRODUCTIONS

WEIGHT_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]


def reproduction_runs(names: list[str]) -> list[list[str]]:
    """The overrides of every cell, and of every evaluation task, of the reproductions ``names``."""
    runs = []
    for name in names:
        grid = REPRODUCTIONS[name].grid
        runs += [
            [f"experiment={grid.name}", f"model={model}", f"task={task}", f"method={method}"]
            for model in grid.models
            for task in grid.tasks
            for method in grid.methods
        ]
        runs += [[f"task={evaluation.task}"] for evaluation in grid.evaluations]
    return runs


def needs(runs: list[list[str]]) -> tuple[set[str], set[tuple[str, str | None]]]:
    """(model names, (dataset, subset) pairs) behind the runs that these train.py overrides describe."""
    register_configs()
    models: set[str] = set()
    datasets: set[tuple[str, str | None]] = set()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for overrides in runs:
            cfg = compose("config", overrides=overrides)
            if not cfg.model.name_or_path.startswith(EMBEDDED_PREFIX):  # pip brought those
                models.add(cfg.model.name_or_path)
            if cfg.data.dataset:
                datasets.add((cfg.data.dataset, cfg.data.subset))
    return models, datasets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names",
        nargs="+",
        metavar="NAME|OVERRIDE",
        help=f"reproductions ({', '.join(REPRODUCTIONS)}), or the overrides of one train.py run (task=cola ...)",
    )
    parser.add_argument("--list", action="store_true", help="print what would be fetched, fetch nothing")
    arguments = parser.parse_args(argv)
    overrides = [name for name in arguments.names if "=" in name]
    unknown = [name for name in arguments.names if "=" not in name and name not in REPRODUCTIONS]
    if unknown or (overrides and len(overrides) != len(arguments.names)):
        parser.error(
            f"give reproduction names ({', '.join(REPRODUCTIONS)}) or the key=value overrides of one run, "
            f"not both; unknown: {unknown}"
        )
    models, datasets = needs([overrides] if overrides else reproduction_runs(arguments.names))
    for name in sorted(models):
        print(f"model   {name}")
    for name, subset in sorted(datasets, key=str):
        print(f"dataset {name}" + (f" ({subset})" if subset else ""))
    if arguments.list:
        return
    from huggingface_hub import snapshot_download

    failures = []
    for name in sorted(models):
        try:
            snapshot_download(name, allow_patterns=WEIGHT_FILES)
        except Exception as error:  # report every failure, then exit non-zero
            failures.append(f"model {name}: {error}")
    for name, subset in sorted(datasets, key=str):
        try:
            load_dataset_dict(name, subset)
        except DataLoadError as error:
            failures.append(str(error))
    if failures:
        sys.exit("could not fetch:\n  " + "\n  ".join(failures))
    print("all fetched into the Hugging Face cache")


if __name__ == "__main__":
    main()
