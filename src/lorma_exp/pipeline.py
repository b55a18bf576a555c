"""What ``train.py`` and ``eval.py`` do, from a composed config to a finished run folder.

Order matters for the user: everything that can be checked cheaply (config values, the task family, the
run folder, the model name) is checked before data is tokenised or weights are loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lorma_exp import __version__
from lorma_exp.config import (
    ConfigError,
    EvalConfig,
    MethodKind,
    Strategy,
    TrainConfig,
    run_stamp,
    validate,
)
from lorma_exp.data import build_task_data, check_task, restore_label_names, save_label_names
from lorma_exp.data.hub import DataLoadError
from lorma_exp.distributed import DistEnv, broadcast_object, init_distributed
from lorma_exp.methods import (
    ADAPTER_KINDS,
    PEFT_KINDS,
    apply_method,
    load_trained,
    parameter_counts,
    save_trained,
)
from lorma_exp.models import ModelLoadError, load_backbone, load_model_config, load_tokenizer
from lorma_exp.plots import plot_loss_curve
from lorma_exp.summary import format_summary
from lorma_exp.tracking import RunLogger, read_events, wandb_group_and_tags
from lorma_exp.trainer import Trainer, TrainingInterrupted, TrainResult

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
USER_ERRORS = (ConfigError, ModelLoadError, DataLoadError)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def exit_on_user_error(function: Callable[..., Any]) -> Callable[..., Any]:
    """Report a bad config, model or dataset as one clear line and exit with status 2 (no traceback)."""

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except USER_ERRORS as error:
            log.error("%s", error)
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        except TrainingInterrupted as interruption:
            log.warning("%s", interruption)
            print(f"interrupted: {interruption}", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapped


def hydra_output_dir(fallback: Path | None) -> Path:
    """Hydra's job folder (decided once, shared by every rank), else ``fallback`` outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    if fallback is None:
        raise ConfigError("run_dir: not set and no Hydra job folder exists. Set run_dir=<folder>.")
    return fallback


def check_run_dir(run_dir: Path, settings: TrainConfig) -> bool:
    """False when a finished run should be skipped; raises when the folder holds work a run would overwrite."""
    if (run_dir / RESULTS_FILE).exists():
        if settings.skip_finished:
            log.info("%s already holds a finished run: skipping it (skip_finished=true).", run_dir)
            return False
        raise ConfigError(
            f"run_dir: {run_dir} already holds a finished run ({RESULTS_FILE}). Outputs never overwrite an "
            "earlier run: choose another run_dir, or pass skip_finished=true to skip finished runs."
        )
    started = (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()
    if started and not settings.resume:
        raise ConfigError(
            f"run_dir: {run_dir} holds an unfinished run. Continue it with resume=true, or choose another run_dir."
        )
    return True


def preflight(cfg: DictConfig) -> tuple[TrainConfig, DistEnv]:
    """Every cheap check, before any data or weights are touched."""
    settings = validate(cfg)
    check_task(settings.task)
    env = init_distributed(settings.trainer.device)
    if settings.trainer.strategy == Strategy.ddp and not env.distributed:
        raise ConfigError(
            "trainer: trainer=ddp needs several processes. Launch with "
            "`torchrun --nproc_per_node=N train.py trainer=ddp ...`, or drop trainer=ddp."
        )
    if settings.trainer.strategy == Strategy.single and env.distributed:
        raise ConfigError("trainer.strategy: single, but launched with several processes. Use trainer=ddp.")
    load_model_config(settings.model)
    return settings, env


def run_identity(settings: TrainConfig) -> dict[str, Any]:
    """What a run is, known before it trains: the first half of results.json, and its wandb tags."""
    method = settings.method
    adapted = method.kind in (*ADAPTER_KINDS, *PEFT_KINDS)
    is_lorma = method.kind == MethodKind.lorma
    paper_cell = settings.paper_cell
    return {
        "task": settings.task.name,
        "model": settings.model.name,
        "model_name_or_path": settings.model.name_or_path,
        "method": method.name,
        "kind": method.kind.value,
        "inflation": method.inflation.value if is_lorma and method.inflation else None,
        "mode": method.mode.value if is_lorma else None,
        "r": method.r if adapted else None,
        "alpha": method.alpha if adapted else None,
        "targets": list(method.targets) if adapted else None,
        "seed": settings.seed,
        "experiment": settings.experiment_name,
        "main_metric": settings.task.main_metric,
        "greater_is_better": settings.task.greater_is_better,
        "paper_cell": dataclasses.asdict(paper_cell) if paper_cell is not None else None,
        "smoke": settings.smoke,
    }


def results_record(
    identity: dict[str, Any], result: TrainResult, counts: dict[str, int], env: DistEnv
) -> dict[str, Any]:
    """results.json (docs/architecture.md)."""
    return {
        "status": "finished",
        **identity,
        "trainable_params": counts,
        "initial": result.initial.as_dict() if result.initial else None,
        "best": result.best.as_dict() if result.best else None,
        "final": result.final.as_dict() if result.final else None,
        "train": {
            "steps": result.steps,
            "epochs": round(result.epochs, 4),
            "final_loss": result.final_loss,
            "wall_time_s": round(result.wall_time_s, 2),
            "world_size": env.world_size,
            "resumed_from_step": result.resumed_from_step,
        },
        "lorma_exp_version": __version__,
    }


def wandb_group(identity: dict[str, Any], run_dir: Path) -> tuple[str, list[str]]:
    """A reproduction's group (its table), else the experiment, or the experiment's sweep for multiruns."""
    group, tags = wandb_group_and_tags(identity)
    if group is None:
        sweep = run_dir.parent.name
        group = (
            f"{identity['experiment']}/{sweep}" if sweep.startswith("multirun_") else identity["experiment"]
        )
    return group, tags


@exit_on_user_error
def train(cfg: DictConfig) -> dict[str, Any] | None:
    """Train one run; returns its results.json record (None when a finished run was skipped)."""
    settings, env = preflight(cfg)
    fallback = Path(settings.run_dir) if settings.run_dir else None
    run_dir = Path(broadcast_object(str(hydra_output_dir(fallback)), env))
    if not check_run_dir(run_dir, settings):
        return None
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    seed_everything(settings.seed)
    tokenizer = load_tokenizer(settings.model, settings.task.problem)
    task = build_task_data(settings, tokenizer, env)
    if env.is_main:
        save_label_names(task, run_dir)
    model = load_backbone(settings.model, settings.task.problem, settings.task.num_labels)
    seed_everything(settings.seed)  # adapter initialisation depends on the seed alone
    model = apply_method(model, settings.method)
    counts = parameter_counts(model, settings.method)
    identity = run_identity(settings)
    logger = RunLogger(run_dir, enabled=env.is_main)
    if settings.logger.wandb:
        group, tags = wandb_group(identity, run_dir)
        logger.start_wandb(
            settings.logger.wandb_settings,
            OmegaConf.to_container(cfg, resolve=True),
            name=settings.run_name,
            group=group,
            tags=tags,
        )

    def save(trained: torch.nn.Module, path: Path) -> None:
        save_trained(trained, path, settings.method, settings.model.name_or_path)

    trainer = Trainer(settings.trainer, model, task, env, run_dir, settings.seed, logger, save)
    log.info("Run folder: %s", run_dir)
    result = trainer.fit(resume=settings.resume)
    record = results_record(identity, result, counts, env)
    if env.is_main:
        save(trainer.model, run_dir / "adapter")
        logger.write_csv()
        title = f"{settings.task.name} · {settings.model.name} · {settings.method.name}"
        plot_loss_curve(read_events(run_dir), settings.task.main_metric, title, run_dir / "loss_curve.png")
        (run_dir / RESULTS_FILE).write_text(json.dumps(record, indent=2) + "\n")
        trainer.finish()
        logger.finish(record)
        print(format_summary(record, run_dir, task.info))
    return record


def load_run_settings(run_dir: Path, options: EvalConfig) -> TrainConfig:
    """A finished run's own config (config.yaml), with the task and data settings an evaluation asks for.

    ``task=<name>`` swaps in another task's ``task``, ``data`` and ``generation`` sections (a model trained
    on MetaMathQA scored on GSM8K); ``data.*`` and ``generation.*`` overrides apply last.
    """
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise ConfigError(
            f"run_dir: {run_dir} has no config.yaml. Point run_dir at a run folder made by train.py."
        )
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(config_path))
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


def compose_task(task: str) -> DictConfig:
    """The training config with ``task=<task>``, composed from conf/ (inside or outside a Hydra app).

    Inside eval.py, Hydra is set up on conf/eval/; it is set aside for this composition and put back
    afterwards.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[f"task={task}"])
    except HydraException as error:
        raise ConfigError(f"task: {error}") from error
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)


@exit_on_user_error
def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Score a run's saved weights on the chosen splits; writes metrics.json into Hydra's eval folder."""
    options: EvalConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    run_dir = Path(options.run_dir)
    weights = run_dir / options.weights
    if not weights.is_dir():
        saved = sorted(p.name for p in run_dir.glob("adapter*") if p.is_dir())
        raise ConfigError(f"weights: {weights} does not exist. Saved weights in this run: {saved or 'none'}.")
    settings = load_run_settings(run_dir, options)
    restore_label_names(settings, run_dir)
    if options.splits:
        settings.data.eval_splits = list(options.splits)
    settings.data.limit = 1  # evaluation never reads the training rows: tokenise just one
    env = init_distributed(options.device)
    tokenizer = load_tokenizer(settings.model, settings.task.problem)
    task = build_task_data(settings, tokenizer, env)
    if settings.method.kind == MethodKind.full_ft:
        settings.model.name_or_path = str(weights)
        model = load_backbone(settings.model, settings.task.problem, settings.task.num_labels)
    else:
        base = load_backbone(settings.model, settings.task.problem, settings.task.num_labels)
        model = load_trained(base, weights, settings.method)
    model.to(env.device)
    out_dir = hydra_output_dir(run_dir / "evals" / run_stamp())
    out_dir.mkdir(parents=True, exist_ok=True)
    batch_size = options.batch_size or settings.trainer.eval_batch_size
    scores = {
        split: task.evaluator(
            model, split, batch_size=batch_size, output_dir=out_dir if env.is_main else None
        )
        for split in task.eval_splits
    }
    if env.is_main:
        record = {
            "run_dir": str(run_dir),
            "weights": options.weights,
            "task": settings.task.name,
            "paper_task": options.paper_task,
            "splits": scores,
        }
        (out_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        for split, metrics in scores.items():
            print(f"{split:<24} " + "  ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
        print(f"metrics: {out_dir / 'metrics.json'}")
    return scores
