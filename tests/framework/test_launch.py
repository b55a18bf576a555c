"""What the entry points do to a command line before Hydra parses it: overrides on both sides of -m,
flags kept with their values, and sweep job folders that name what the sweep varies."""

from __future__ import annotations

import pytest
from hydra._internal.utils import get_args_parser

from lorma_exp.config import sweep_job_suffix
from lorma_exp.launch import RUN_NAME_KEYS, overrides_first, sweep_folder_override


def hydra_parses(arguments: list[str]):
    """Hydra 1.3's own argument parser (what @hydra.main runs), failing the test instead of exiting."""
    parser = get_args_parser()
    parser.exit_on_error = False
    return parser.parse_args(arguments)


def test_hydra_alone_refuses_overrides_after_the_multirun_flag():
    """The bug this module exists for: argparse takes one run of positionals."""
    with pytest.raises(SystemExit):
        hydra_parses(["task=cola", "method=lorma_plus", "r=8", "-m", "seed=1,2,3"])


@pytest.mark.parametrize(
    ("command", "overrides", "flags"),
    [
        (
            "task=cola method=lorma_plus r=8 -m seed=1,2,3",
            ["task=cola", "method=lorma_plus", "r=8", "seed=1,2,3"],
            {"multirun": True},
        ),
        ("-m task=mrpc,stsb r=1,2", ["task=mrpc,stsb", "r=1,2"], {"multirun": True}),
        (
            "experiment=table2 --cfg job model=roberta_base --resolve",
            ["experiment=table2", "model=roberta_base"],
            {"cfg": "job", "resolve": True},
        ),
        (
            "-cd /tmp/extra task=cola --config-name config seed=2 -p method",
            ["task=cola", "seed=2"],
            {"config_dir": "/tmp/extra", "config_name": "config", "package": "method"},
        ),
        ("--config-name=config task=cola", ["task=cola"], {"config_name": "config"}),
        ("--info task=cola", ["task=cola"], {"info": "all"}),  # --info's value is optional
        ("--info defaults task=cola", ["task=cola"], {"info": "defaults"}),
    ],
)
def test_overrides_go_before_the_flags_and_each_flag_keeps_its_value(command, overrides, flags):
    arguments = overrides_first(command.split())
    parsed = hydra_parses(arguments)
    assert parsed.overrides == overrides
    for name, value in flags.items():
        assert getattr(parsed, name) == value


def test_an_unknown_flag_is_left_for_hydra_to_report():
    arguments = overrides_first(["task=cola", "--no-such-flag", "seed=1"])
    assert arguments == ["task=cola", "seed=1", "--no-such-flag"]
    with pytest.raises(SystemExit):
        hydra_parses(arguments)


def test_a_sweep_folder_names_only_what_varies_beyond_the_run_name():
    (override,) = sweep_folder_override(
        [
            "data.num_examples=48",
            "-m",
            "seed=1,2",
            "method=lora,lorma_plus",
            "trainer.lr=1e-3,1e-4",
            "+extra.key=1",
        ]
    )
    key, value = override.split("=", 1)
    assert key == "hydra.job.config.override_dirname.exclude_keys"
    left_out = value.strip("[]").split(",")
    # Constant settings and the run name's own keys are left out; trainer.lr, swept, names the last level.
    assert set(left_out) == {"data.num_examples", "seed", "method", "extra.key"}


def test_no_sweep_folder_override_for_single_runs_or_chosen_subdirs():
    assert sweep_folder_override(["seed=1"]) == []
    assert sweep_folder_override(["-m", "seed=1,2", "hydra.sweep.subdir=${hydra.job.num}"]) == []


def test_the_last_folder_level_keeps_one_level():
    assert sweep_job_suffix("") == ""
    assert sweep_job_suffix("model.name_or_path=/data/models/x,trainer.lr=0.001") == (
        "/model.name_or_path=_data_models_x,trainer.lr=0.001"
    )


CHANGES_OF_RUN_NAME_KEYS = {
    "model": ((), "model=roberta_base"),
    "task": ((), "task=cola"),
    "method": ((), "method=lora"),
    "r": ((), "r=4"),
    "alpha": ((), "alpha=32"),
    "mode": ((), "mode=post"),
    "method.targets": ((), "method.targets=[query,key]"),
    "seed": ((), "seed=7"),
    "settings": (
        ("experiment=table2", "settings=roberta_base_cola", "debug=smoke"),
        "settings=roberta_base_rte",
    ),
}


@pytest.mark.parametrize("key", sorted(RUN_NAME_KEYS))
def test_every_key_left_out_of_sweep_folders_changes_the_run_name(compose_train, key):
    """RUN_NAME_KEYS may only hold settings that run_name (conf/config.yaml) spells, so that leaving them
    out of a job's folder never makes two jobs share one."""
    base, change = CHANGES_OF_RUN_NAME_KEYS[key]
    assert change.split("=")[0] == key
    assert compose_train(*base, change).run_name != compose_train(*base).run_name
