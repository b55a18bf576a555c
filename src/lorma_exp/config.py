"""The schema of every config the entry points compose, and its validation.

The dataclasses below are registered as the root schema of ``conf/config.yaml``, so Hydra rejects an
unknown key (a typo) or a value outside an enum (``mode=sideways``) while composing. Range checks that a
type cannot express (``r=0``, ``dropout=1.5``) run in :func:`validate`, which the entry points call before
any model or data is touched; so do the checks against registries that grow without schema edits:
``method.kind`` against the registered methods (:mod:`lorma_exp.methods`), ``inflation`` against the
adapter library's inflations. Every error names the field and says how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from lorma_exp.adapters import INFLATIONS
from lorma_exp.conf_dir import CONF_DIR
from lorma_exp.methods import find_method, method_kinds
from lorma_exp.run_folder import CONFIG_FILE, RunFolder
from lorma_exp.settings_resolvers import SETTINGS_RESOLVERS


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


class _Choice(str, Enum):
    """An enum whose members print as their plain value (``pre``, not ``Mode.pre``) in paths and logs."""

    def __str__(self) -> str:
        return self.value


class Problem(_Choice):
    classification = "classification"
    regression = "regression"
    causal_lm = "causal_lm"


class Mode(_Choice):
    pre = "pre"
    post = "post"


class Bias(_Choice):
    none = "none"
    all = "all"
    adapter = "adapter"


class DropoutOn(_Choice):
    adapter = "adapter"
    input = "input"


class Scheduler(_Choice):
    linear = "linear"
    cosine = "cosine"
    constant = "constant"


class Precision(_Choice):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class EvalStrategy(_Choice):
    epoch = "epoch"
    steps = "steps"
    no = "no"


class NonFinite(_Choice):
    """What a non-finite loss or gradient norm does: stop the run as diverged, or drop that step."""

    stop = "stop"
    skip_step = "skip_step"


class Strategy(_Choice):
    auto = "auto"
    single = "single"
    ddp = "ddp"
    fsdp = "fsdp"


class GenerationBackend(_Choice):
    hf = "hf"
    vllm = "vllm"


@dataclass
class TaskConfig:
    """What is learned and how it is scored."""

    name: str = MISSING
    family: str = MISSING
    problem: Problem = MISSING
    num_labels: int = 0
    metrics: list[str] = field(default_factory=list)
    main_metric: str = MISSING
    greater_is_better: bool = True


@dataclass
class DataConfig:
    """Where the rows come from and how they become model inputs."""

    dataset: str | None = None
    subset: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_fields: list[str] = field(default_factory=list)
    label_field: str | None = "label"
    labels: list[str] | None = None
    """Class names in id order (user files); by default integer labels are ids, other labels sorted."""
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["validation"])
    max_length: int = 128
    limit: int | None = None
    eval_limit: int | None = None
    sample_seed: int = 0
    num_examples: int = 0


@dataclass
class GenerationConfig:
    """Decoding settings for generation tasks (ignored by classification tasks)."""

    num_beams: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 64
    backend: GenerationBackend = GenerationBackend.hf


@dataclass
class ModelConfig:
    """The backbone: a hub name, a local folder, or an embedded (pip-installed) model."""

    name: str = MISSING
    name_or_path: str = MISSING
    tokenizer: str | None = None
    revision: str | None = None
    dtype: str = "float32"
    targets: list[str] = field(default_factory=lambda: ["q", "v"])
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    # Settings of the backbone's own (Hugging Face) config, applied at load, e.g. {attn_pdrop: 0.0}.
    config_overrides: dict[str, Any] | None = field(default_factory=dict)


@dataclass
class MethodConfig:
    """How the backbone is adapted. ``r``, ``alpha``, ``mode`` and ``inflation`` come from the top level.

    ``kind`` names a registered :class:`lorma_exp.methods.Method` and ``inflation`` one of the adapter
    library's inflations (``lorma_exp.adapters``); :func:`validate` checks both against those registries.
    ``run_name_suffix`` is what the run's folder name says about the method's settings (``_r8_a16_pre_q-v``
    for LoRMA; empty for full fine-tuning, which has none).
    """

    name: str = MISSING
    kind: str = MISSING
    inflation: str | None = None
    mode: Mode = Mode.pre
    r: int = 8
    alpha: float = 16.0
    targets: list[str] = field(default_factory=list)
    dropout: float = 0.0
    dropout_on: DropoutOn = DropoutOn.adapter
    bias: Bias = Bias.none
    modules_to_save: list[str] | None = None
    run_name_suffix: str = ""


@dataclass
class TrainerConfig:
    """The optimisation loop; ``batch_size`` is per device."""

    strategy: Strategy = Strategy.auto
    device: str = "auto"
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    global_batch_size: int | None = None
    grad_accum: int = 1
    eval_batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    scheduler: Scheduler = Scheduler.linear
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    label_smoothing: float = 0.0
    precision: Precision = Precision.fp32
    eval_strategy: EvalStrategy = EvalStrategy.epoch
    eval_steps: int = 0
    eval_before_training: bool = False
    log_every: int = 10
    # Checkpoints: at every evaluation, and every N steps / minutes (0: not by steps / by time).
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 30.0
    # A non-finite loss or gradient norm: stop the run as diverged, or drop that step (at most N of them).
    on_nonfinite: NonFinite = NonFinite.stop
    max_skipped_steps: int = 10
    snapshot_every_epoch: bool = False
    # Also score the training rows at every evaluation, in eval mode with the evaluation metrics (Figure 8:
    # training against evaluation accuracy); classification and regression tasks only.
    eval_train: bool = False
    num_workers: int = 0
    progress_bar: bool = True
    # torch.compile the model for its training steps (inductor; evaluation and decoding stay eager; with
    # trainer=fsdp each transformer block is compiled before sharding)
    compile: bool = False


@dataclass
class WandbConfig:
    project: str = "lorma-exp"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str = "auto"


@dataclass
class LoggerConfig:
    """CSV/JSONL logs are always written; ``wandb`` adds a wandb run, and ``log_artifacts`` the final
    weights to it as a model artifact (opt-in: adapters are small, fully fine-tuned models are not)."""

    wandb: bool = False
    wandb_settings: WandbConfig = field(default_factory=WandbConfig)
    log_artifacts: bool = False


@dataclass
class PaperCell:
    """The cell of a paper table that a reproduction run stands for."""

    table: str = MISSING
    model: str = MISSING
    task: str = MISSING
    method: str = MISSING


@dataclass
class TrainConfig:
    """The root of ``conf/config.yaml``."""

    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 42
    r: int = 8
    alpha: float = 16.0
    mode: Mode = Mode.pre
    inflation: str | None = None
    experiment_name: str = "default"
    run_name: str = ""
    run_dir: str | None = None
    resume: bool = False
    skip_finished: bool = False
    smoke: bool = False
    paper_cell: PaperCell | None = None


@dataclass
class EvalConfig:
    """The root of ``conf/eval/eval.yaml``: re-evaluate a finished run's saved weights."""

    run_dir: str = MISSING
    weights: str | None = None
    task: str | None = None
    paper_task: str | None = None
    splits: list[str] | None = None
    batch_size: int | None = None
    device: str = "auto"
    data: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)


RUN_STAMP_ENV = "LORMA_RUN_STAMP"


def run_stamp() -> str:
    """The time stamp naming a new run folder, shared by every rank of a distributed launch.

    Seconds plus the process id keep two runs started in the same second apart; the launcher exports
    ``LORMA_RUN_STAMP`` from rank 0 so that all ranks of one torchrun job agree on one folder.
    """
    shared = os.environ.get(RUN_STAMP_ENV)
    if shared:
        return shared
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{os.getpid() % 100000:05d}"


def sweep_job_suffix(overrides: str) -> str:
    """``/<overrides>`` for a sweep job's folder (``/`` in a value kept inside the one level), or nothing."""
    return "/" + overrides.replace("/", "_") if overrides else ""


def register_configs() -> None:
    """Make the schema available to ``defaults: [train_schema, ...]`` and install our resolvers."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
    resolvers = {
        # ``${first_set:${inflation},rri}``: a method's own default unless the top level sets one.
        "first_set": lambda *values: next((v for v in values if v is not None), None),
        "join": lambda values, sep="-": sep.join(str(v) for v in values) if values else "none",
        "num": lambda value: f"{value:g}",
        "run_stamp": run_stamp,
        # ``${evaluation_dir:${run_dir},${run_stamp:}}``: where one eval.py run of a run folder writes.
        "evaluation_dir": lambda run_dir, stamp: str(RunFolder(run_dir).evaluation(stamp)),
        # ``${sweep_job_suffix:${hydra.job.override_dirname}}``: a sweep job's overrides beyond its run name.
        "sweep_job_suffix": sweep_job_suffix,
        **SETTINGS_RESOLVERS,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=name == "run_stamp")


def _check(condition: bool, field_name: str, problem: str, fix: str) -> None:
    if not condition:
        raise ConfigError(f"{field_name}: {problem}. {fix}")


def _positive(value: float) -> bool:
    return value > 0


def _non_negative(value: float) -> bool:
    return value >= 0


def _fraction(value: float) -> bool:
    return 0.0 <= value < 1.0


_WORDING = {_positive: "must be positive", _non_negative: "must be >= 0", _fraction: "must be in [0, 1)"}

# (field, rule, an example of a good value); optional fields are checked only when set.
_RANGE_RULES = (
    ("trainer.lr", _positive, "trainer.lr=5e-4"),
    ("trainer.weight_decay", _non_negative, "trainer.weight_decay=0.1"),
    ("trainer.batch_size", _positive, "trainer.batch_size=32"),
    ("trainer.eval_batch_size", _positive, "trainer.eval_batch_size=64"),
    ("trainer.grad_accum", _positive, "trainer.grad_accum=1"),
    ("trainer.global_batch_size", _positive, "trainer.global_batch_size=64"),
    ("trainer.max_steps", _positive, "trainer.max_steps=null (train by epochs)"),
    ("trainer.epochs", _non_negative, "trainer.epochs=3"),
    ("trainer.warmup_ratio", _fraction, "trainer.warmup_ratio=0.06"),
    ("trainer.warmup_steps", _non_negative, "trainer.warmup_steps=0 (use warmup_ratio)"),
    ("trainer.label_smoothing", _fraction, "trainer.label_smoothing=0.1"),
    ("trainer.max_grad_norm", _positive, "trainer.max_grad_norm=null (no clipping)"),
    ("trainer.log_every", _positive, "trainer.log_every=10"),
    (
        "trainer.checkpoint_every_steps",
        _non_negative,
        "trainer.checkpoint_every_steps=0 (only at evaluations)",
    ),
    (
        "trainer.checkpoint_every_minutes",
        _non_negative,
        "trainer.checkpoint_every_minutes=30 (0: not by time)",
    ),
    ("trainer.max_skipped_steps", _non_negative, "trainer.max_skipped_steps=10"),
    ("data.max_length", _positive, "data.max_length=128"),
    ("data.limit", _positive, "data.limit=null (the whole training set)"),
    ("data.eval_limit", _positive, "data.eval_limit=null (whole evaluation splits)"),
    ("generation.num_beams", _positive, "generation.num_beams=1 (greedy)"),
    ("generation.max_new_tokens", _positive, "generation.max_new_tokens=64"),
    ("generation.no_repeat_ngram_size", _non_negative, "generation.no_repeat_ngram_size=0 (allow repeats)"),
)
# Rules for the method settings a method declares it uses (``Method.settings``), by setting.
_METHOD_RULES = {
    "r": ("r", _positive, "r=8"),
    "alpha": ("alpha", _positive, "alpha=16"),
    "dropout": ("method.dropout", _fraction, "method.dropout=0.1"),
}


def _check_ranges(settings: TrainConfig, rules: tuple) -> None:
    for path, rule, example in rules:
        owner: Any = settings
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        value = getattr(owner, name) if parents else getattr(settings.method, name, None)
        if value is not None and not rule(value):
            raise ConfigError(f"{path}: {_WORDING[rule]}, got {value}. Use e.g. {example}.")


def _check_paper_cell_named(cfg: DictConfig) -> None:
    """A paper cell comes whole: its table and method from experiment=, its model and task from settings."""
    cell = cfg.get("paper_cell")
    if cell is None:
        return
    _check(
        not (OmegaConf.is_missing(cell, "model") or OmegaConf.is_missing(cell, "task")),
        "settings",
        f"the paper has no settings for model={cfg.model.name} task={cfg.task.name} "
        "(conf/settings/<model>_<task>.yaml), and experiment= trains the paper's cells",
        "Name a cell of the table, e.g. experiment=table2 model=roberta_base task=cola, "
        "or leave out experiment= to train this model and task with their own settings.",
    )
    _check(
        not (OmegaConf.is_missing(cell, "table") or OmegaConf.is_missing(cell, "method")),
        "experiment",
        f"settings={cell.model}_{cell.task} holds a paper cell's settings, but no table is chosen",
        "Add the table, e.g. experiment=table2.",
    )


def _check_paper_cell_trained(settings: TrainConfig) -> None:
    """A run trains the model of its paper cell, unless it is a SMOKE stand-in for it. (Only the model: an
    evaluation may score a run on another task, as Table 4 scores MetaMathQA runs on GSM8K.)"""
    cell = settings.paper_cell
    if cell is None:
        return
    model = settings.model.name
    if settings.smoke:
        _check(
            model != cell.model,
            "debug",
            f"a SMOKE stand-in trains an embedded model, but model={model} is the cell's own",
            f"Name the cell by its settings instead: settings={cell.model}_{cell.task}, without model= and task=.",
        )
    else:
        _check(
            model == cell.model,
            "paper_cell",
            f"settings={cell.model}_{cell.task} holds the settings of {cell.model} on {cell.task}, "
            f"but the run trains model={model}",
            f"Use model={cell.model} task={cell.task}, or add debug=smoke for an embedded stand-in.",
        )


def _check_method(settings: TrainConfig) -> None:
    """The method's kind is registered, and the settings it declares (``Method.settings``) are valid."""
    method = settings.method
    implementation = find_method(method.kind)
    if implementation is None:
        raise ConfigError(
            f"method.kind: {method.kind!r} (method={method.name}) is not a registered method kind. "
            f"Use one of: {', '.join(method_kinds())}."
        )
    used = implementation.settings
    _check_ranges(settings, tuple(rule for name, rule in _METHOD_RULES.items() if name in used))
    if "targets" in used:
        _check(
            bool(method.targets),
            "method.targets",
            "is empty",
            "Name the layers to adapt, e.g. method.targets=[q,v] or model.targets=[q,v].",
        )
    if "inflation" in used:
        _check(
            method.inflation is not None,
            "inflation",
            f"is not set for method={method.name}",
            f"Use one of: {', '.join(INFLATIONS)} (inflation=rri is LoRMA+, shift LoRMA_pi).",
        )
        _check(
            method.inflation in INFLATIONS,
            "inflation",
            f"{method.inflation!r} is not an inflation of the adapter library",
            f"Use one of: {', '.join(INFLATIONS)}.",
        )
    else:
        _check(
            settings.inflation is None,
            "inflation",
            f"only applies to LoRMA methods, but method={method.name}",
            "Drop the inflation override or pick method=lorma_plus / lorma_pi / lorma_none.",
        )
    try:
        implementation.check(method)
    except ValueError as error:
        raise ConfigError(f"method: {error}. Fix the method.* setting it names.") from error


def validate(cfg: DictConfig) -> TrainConfig:
    """Check ranges and cross-field rules that the schema's types cannot express; return typed settings."""
    _check_paper_cell_named(cfg)
    try:
        settings: TrainConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except InterpolationResolutionError as error:
        # The first line of OmegaConf's message; the rest repeats the key and the node types.
        raise ConfigError(f"{error.full_key}: {error.msg.splitlines()[0]}") from None
    _check_paper_cell_trained(settings)
    trainer, data, task = settings.trainer, settings.data, settings.task
    _check_ranges(settings, _RANGE_RULES)
    _check_method(settings)
    _check(
        trainer.epochs > 0 or trainer.max_steps is not None,
        "trainer.epochs",
        f"must be positive unless trainer.max_steps is set, got {trainer.epochs}",
        "Use e.g. trainer.epochs=3.",
    )
    _check(
        trainer.eval_strategy != EvalStrategy.steps or trainer.eval_steps > 0,
        "trainer.eval_steps",
        "must be positive with trainer.eval_strategy=steps",
        "Use e.g. trainer.eval_steps=200.",
    )
    _check(
        trainer.device in ("auto", "cpu", "cuda", "mps") or trainer.device.startswith("cuda:"),
        "trainer.device",
        f"must be auto, cpu, cuda, cuda:N or mps, got {trainer.device!r}",
        "Use trainer.device=auto.",
    )
    _check(
        settings.model.dtype in ("float32", "bfloat16", "float16"),
        "model.dtype",
        f"must be float32, bfloat16 or float16, got {settings.model.dtype!r}",
        "Use model.dtype=float32.",
    )
    _check(
        bool(data.eval_splits), "data.eval_splits", "is empty", "Name at least one split, e.g. [validation]."
    )
    _check(
        task.main_metric in task.metrics,
        "task.main_metric",
        f"{task.main_metric!r} is not one of task.metrics {task.metrics}",
        "Add it to task.metrics.",
    )
    _check(
        not trainer.eval_train or task.problem != Problem.causal_lm,
        "trainer.eval_train",
        f"scores the training rows of classification and regression tasks; {task.name} is {task.problem}",
        "Set trainer.eval_train=false.",
    )
    _check(
        settings.logger.wandb or not settings.logger.log_artifacts,
        "logger.log_artifacts",
        "logs the final weights to the wandb run, and this run has none (logger.wandb=false)",
        "Add logger=wandb, or leave logger.log_artifacts=false.",
    )
    if trainer.strategy == Strategy.fsdp:
        _check_sharding(task, settings.generation)
    if task.problem == Problem.classification:
        _check(
            task.num_labels >= 2,
            "task.num_labels",
            f"must be >= 2 for classification, got {task.num_labels}",
            "Set task.num_labels to the number of classes.",
        )
    return settings


def _check_sharding(task: TaskConfig, generation: GenerationConfig) -> None:
    """What ``trainer.strategy=fsdp`` refuses, naming the setting to change."""
    _check(
        task.problem != Problem.causal_lm or generation.backend != GenerationBackend.vllm,
        "generation.backend",
        "vllm decodes in one process from the whole model, and trainer.strategy=fsdp shards it over the ranks",
        "Evaluate with generation.backend=hf while training, then score the saved weights with vLLM in one "
        "process: python eval.py run_dir=<run> +generation.backend=vllm.",
    )


def check_precision(precision: Precision, device_type: str) -> None:
    """fp16 training needs a GPU (its loss scaling is a CUDA feature); bf16 and fp32 train anywhere."""
    _check(
        precision != Precision.fp16 or device_type == "cuda",
        "trainer.precision",
        f"fp16 needs a GPU, and this run trains on {device_type}",
        "Use trainer.precision=bf16 or fp32 here, or run on a CUDA machine.",
    )


def compose_train(overrides: Sequence[str], field: str = "overrides") -> DictConfig:
    """The training config composed from conf/ with ``overrides`` (inside or outside a Hydra app); a
    composition error names ``field``, the setting the overrides came from.

    Inside a Hydra app (train.py, eval.py on conf/eval/), the app's Hydra is set aside for this
    composition and put back afterwards.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    register_configs()
    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except HydraException as error:
        raise ConfigError(f"{field}: {error}") from error
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)


def compose_task(task: str) -> DictConfig:
    """The training config with ``task=<task>`` (see :func:`compose_train`)."""
    return compose_train([f"task={task}"], "task")


def load_run_settings(run_dir: Path, options: EvalConfig) -> TrainConfig:
    """A finished run's own config (its recorded config.yaml), with the task and data settings an
    evaluation asks for.

    ``task=<name>`` swaps in another task's ``task``, ``data`` and ``generation`` sections (a model trained
    on MetaMathQA scored on GSM8K); ``data.*`` and ``generation.*`` overrides apply last.
    """
    run = RunFolder(run_dir)
    if not run.config.is_file():
        raise ConfigError(
            f"run_dir: {run_dir} has no {CONFIG_FILE}. Point run_dir at a run folder made by train.py."
        )
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), run.read_config())
    if options.task:
        other = compose_task(options.task)
        if (other.task.problem, other.task.num_labels) != (cfg.task.problem, cfg.task.num_labels):
            raise ConfigError(
                f"task: {options.task} is a {other.task.problem} task with {other.task.num_labels} labels; the "
                f"run trained a {cfg.task.problem} head with {cfg.task.num_labels}. Pick a task of the same kind."
            )
        for section in ("task", "data", "generation"):
            cfg[section] = other[section]
    for section in ("data", "generation"):
        overrides = getattr(options, section)
        try:
            cfg[section] = OmegaConf.merge(cfg[section], overrides)
        except Exception as error:  # omegaconf reports unknown keys with their full path
            raise ConfigError(f"{section}: cannot apply {overrides}: {error}") from error
    return validate(cfg)
