"""Config composition: every task × method × mode composes and validates; bad values fail naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import OmegaConfBaseException

from lorma_exp.adapters import INFLATIONS
from lorma_exp.config import ConfigError, Mode, register_configs, validate
from lorma_exp.data import check_task

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
USER_FILE_TASKS = {"text_classification"}  # need data.train_file / data.validation_file

# paper-results.md: "Metrics: CoLA Matthews corr.; STS-B Pearson; MRPC F1; accuracy elsewhere".
PAPER_MAIN_METRICS = {
    "cola": "matthews",
    "stsb": "pearson",
    "mrpc": "f1",
    "sst2": "accuracy",
    "qqp": "accuracy",
    "mnli": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
}
EXPECTED_INFLATION = {"lorma_plus": "rri", "lorma_pi": "shift", "lorma_none": "none"}


def test_the_config_groups_hold_what_the_framework_promises() -> None:
    assert set(PAPER_MAIN_METRICS) <= set(TASKS)
    assert {"lora", "lorma_plus", "lorma_pi", "lorma_none", "full_ft", "peft_lora", "peft_dora"} <= set(
        METHODS
    )


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["pre", "post"])
def test_every_task_method_and_mode_composes_and_validates(compose_train, task, method, mode) -> None:
    overrides = [f"task={task}", f"method={method}", f"mode={mode}"]
    if task in USER_FILE_TASKS:
        overrides += ["data.train_file=train.csv", "data.validation_file=dev.csv"]
    settings = validate(compose_train(*overrides))
    assert settings.task.name == task
    assert settings.method.name == method
    if settings.method.kind == "lorma":
        assert settings.method.mode == Mode(mode)
        assert settings.method.inflation == EXPECTED_INFLATION.get(method, settings.method.inflation)
        assert settings.method.inflation in INFLATIONS
    check_task(settings.task)  # the family, problem and metric names fit together


@pytest.mark.parametrize("task", sorted(PAPER_MAIN_METRICS))
def test_glue_tasks_select_the_papers_metric(compose_train, task) -> None:
    settings = validate(compose_train(f"task={task}"))
    assert settings.task.main_metric == PAPER_MAIN_METRICS[task]
    assert settings.data.dataset == "nyu-mll/glue"
    assert settings.data.subset == task
    if task in ("mrpc", "qqp"):
        assert set(settings.task.metrics) == {"f1", "accuracy"}
    if task == "stsb":
        assert settings.task.problem.value == "regression"
        assert set(settings.task.metrics) == {"pearson", "spearman"}
    if task == "mnli":
        assert settings.data.eval_splits[0] == "validation_matched"


def test_top_level_r_alpha_mode_and_inflation_reach_the_method(compose_train) -> None:
    settings = validate(compose_train("method=lorma_plus", "r=4", "alpha=32", "mode=post", "inflation=shift"))
    assert (settings.method.r, settings.method.alpha) == (4, 32.0)
    assert settings.method.mode == Mode.post
    assert settings.method.inflation == "shift"


def test_the_default_is_lorma_plus_on_the_embedded_model_and_task(compose_train) -> None:
    settings = validate(compose_train())
    assert (settings.task.name, settings.model.name, settings.method.name) == (
        "reviews",
        "minilm",
        "lorma_plus",
    )
    assert settings.model.name_or_path.startswith("embedded:")


def test_run_name_is_readable_and_distinguishes_sweep_axes(compose_train) -> None:
    cfg = compose_train("task=cola", "method=lorma_pi", "r=4", "alpha=8", "mode=post", "seed=3")
    assert cfg.run_name == "minilm/cola/lorma_pi_r4_a8_post_q-v/seed3"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("r=0", "r"),
        ("alpha=-1", "alpha"),
        ("method.dropout=1.0", "method.dropout"),
        ("trainer.lr=0", "trainer.lr"),
        ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("data.max_length=0", "data.max_length"),
        ("task.main_metric=bleu", "task.main_metric"),
        ("trainer.device=tpu", "trainer.device"),
    ],
)
def test_bad_values_fail_validation_naming_the_field(compose_train, override, field) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        validate(compose_train(override))


def test_inflation_with_lora_is_rejected(compose_train) -> None:
    with pytest.raises(ConfigError, match=r"^inflation: only applies to LoRMA methods"):
        validate(compose_train("method=lora", "inflation=rri"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mode=sideways", "sideways"),
        ("trainer.lrr=1e-3", "lrr"),
        ("task=glue_cola", "glue_cola"),
        ("method=lorma_times", "lorma_times"),
    ],
)
def test_typos_and_unknown_choices_fail_at_composition(compose_train, override, message) -> None:
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException), match=message):
        compose_train(override)


def test_the_slurm_launcher_runs_one_ddp_task_per_gpu():
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 1)


def test_a_paper_experiment_names_its_cell_from_the_settings_and_the_method(compose_settings) -> None:
    settings = compose_settings("experiment=table6", "model=roberta_large", "task=rte", "method=lorma_none")
    cell = settings.paper_cell
    assert (cell.table, cell.model, cell.task, cell.method) == (
        "table6",
        "roberta_large",
        "rte",
        "lorma_none",
    )
    assert settings.method.alpha == 4.0  # Table 6 trains without inflation at LoRMA₊'s α of Table 14


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("experiment=table2", "task=cola"),
            r"^settings: the paper has no settings for model=minilm task=cola",
        ),
        (("settings=roberta_base_cola",), r"^experiment: settings=roberta_base_cola holds a paper cell"),
        (
            ("experiment=table2", "settings=roberta_base_cola"),
            r"^paper_cell: settings=roberta_base_cola .* but the run trains model=minilm",
        ),
        (
            ("experiment=table2", "model=roberta_base", "task=cola", "debug=smoke"),
            r"^debug: a SMOKE stand-in trains an embedded model, but model=roberta_base",
        ),
        (
            ("experiment=table3", "model=gpt2_medium", "task=e2e", "method=full_ft"),
            r"^(alpha|trainer.lr): this setting is given for the methods lora, lorma_plus, lorma_pi, not for 'full_ft'",
        ),
    ],
)
def test_a_paper_cell_that_cannot_be_the_papers_fails_naming_the_field(compose_train, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(*overrides))


def test_a_smoke_stand_in_keeps_the_cells_settings_r_and_alpha(compose_settings) -> None:
    smoke = compose_settings(
        "experiment=table2", "settings=roberta_base_cola", "method=lorma_plus", "debug=smoke"
    )
    full = compose_settings("experiment=table2", "model=roberta_base", "task=cola", "method=lorma_plus")
    assert (smoke.model.name, smoke.task.name, smoke.smoke) == ("minilm", "reviews", True)
    assert smoke.paper_cell == full.paper_cell
    assert (smoke.method.r, smoke.method.alpha, smoke.trainer.lr) == (full.method.r, full.method.alpha, 4e-4)
    assert (smoke.trainer.max_steps, smoke.data.max_length) == (2, 32)


def test_figure7s_runs_save_the_adapter_every_epoch_and_table2s_do_not(compose_settings) -> None:
    cell = ("model=roberta_large", "task=cola", "method=lorma_pi")
    assert compose_settings("experiment=figure7", *cell).trainer.snapshot_every_epoch
    assert not compose_settings("experiment=table2", *cell).trainer.snapshot_every_epoch
