"""What ``train.py`` and ``eval.py`` do, from a composed config to a finished run folder.

Order matters for the user: everything that can be checked cheaply (config values, a resumed run's config
of record, the task family, the model's targets, the run folder and its lock) is checked before data is
tokenised or weights are loaded, and nothing in a run folder changes before every check has passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lorma_exp import __version__
from lorma_exp.config import (
    ConfigError,
    EvalConfig,
    TrainConfig,
    load_run_settings,
    run_stamp,
)
from lorma_exp.data import build_task_data, restore_label_names, save_label_names
from lorma_exp.data.hub import DataLoadError
from lorma_exp.distributed import DistEnv, broadcast_object, init_distributed
from lorma_exp.export import write_run_exports
from lorma_exp.methods import Method, method_for
from lorma_exp.models import ModelLoadError, load_backbone, load_tokenizer
from lorma_exp.plots import curve_title, plot_loss_curve
from lorma_exp.preflight import preflight
from lorma_exp.resume import Resumption, check_resumable, config_of_record
from lorma_exp.run_folder import RESULTS_FILE, RunFolder, write_evaluation_record
from lorma_exp.run_lock import RunLock
from lorma_exp.sharding import loads_weights
from lorma_exp.summary import format_summary
from lorma_exp.tracking import RunLog, RunLogger, run_log, wandb_group_and_tags
from lorma_exp.trainer import Trainer, TrainingInterrupted, TrainResult

log = logging.getLogger(__name__)

USER_ERRORS = (ConfigError, ModelLoadError, DataLoadError)
#: Exit statuses besides 0: a bad config, model or dataset; a diverged run; an interrupted run.
EXIT_USER_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


class TrainingDiverged(RuntimeError):
    """Raised once a diverged run's folder is complete (results.json says ``"diverged"``)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def exit_on_user_error(function: Callable[..., Any]) -> Callable[..., Any]:
    """Report a bad config, model or dataset, a divergence or an interruption as one clear line and exit
    with its status (no traceback)."""

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except USER_ERRORS as error:
            log.error("%s", error)
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except TrainingDiverged as divergence:
            log.error("%s", divergence)
            print(f"error: {divergence}", file=sys.stderr)
            raise SystemExit(EXIT_DIVERGED) from None
        except TrainingInterrupted as interruption:
            log.warning("%s", interruption)
            print(f"interrupted: {interruption}", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None

    return wrapped


def hydra_output_dir(fallback: Path | None) -> Path:
    """Hydra's job folder (the same on every rank: launch.py shares the time stamp), else ``fallback``
    outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    if fallback is None:
        raise ConfigError("run_dir: not set and no Hydra job folder exists. Set run_dir=<folder>.")
    return fallback


def command_line_overrides() -> list[str] | None:
    """The overrides of this Hydra job's command line (None outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def in_a_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def settle_config(cfg: DictConfig, run: RunFolder) -> Resumption | None:
    """For ``resume=true``: the run's config of record (None when there is no run to resume yet: a sweep's
    job folder that holds none starts it; a finished run is left to :func:`check_run_dir`)."""
    if not cfg.resume:
        return None
    if cfg.run_dir is not None:
        check_resumable(run)
    elif not in_a_sweep():
        raise ConfigError("resume=true: name the run to continue with run_dir=<its folder>.")
    if not run.config.is_file() or run.is_finished():
        return None
    return config_of_record(cfg, run, command_line_overrides())


def check_run_dir(run: RunFolder, settings: TrainConfig) -> bool:
    """False when a finished run should be skipped; raises when the folder holds work a run would overwrite."""
    if run.is_finished():
        if settings.skip_finished:
            log.info("%s already holds a finished run: skipping it (skip_finished=true).", run.path)
            return False
        raise ConfigError(
            f"run_dir: {run.path} already holds a finished run ({RESULTS_FILE}). Outputs never overwrite an "
            "earlier run: choose another run_dir, or pass skip_finished=true to skip finished runs."
        )
    if run.has_started() and not settings.resume:
        raise ConfigError(
            f"run_dir: {run.path} holds an unfinished run. Continue it with resume=true, or choose another run_dir."
        )
    return True


@dataclasses.dataclass(frozen=True)
class OpenedRun:
    """A run folder this process may train in: rank 0 holds its lock and its (held back) train.log."""

    train_log: RunLog | None

    def start_writing(self) -> None:
        """Every check has passed: train.log gets the records held so far, and everything after."""
        if self.train_log is not None:
            self.train_log.open()


@contextlib.contextmanager
def opened_run_folder(run: RunFolder, settings: TrainConfig, env: DistEnv) -> Iterator[OpenedRun | None]:
    """Rank 0 locks the run folder and checks what it holds; every rank learns the verdict: an OpenedRun
    to train, None to skip a finished run, a ConfigError otherwise (the folder left as it was). The lock is
    held, and log records kept for train.log, while the block runs."""
    lock = RunLock(run.lock)
    verdict: bool | str | None = None
    if env.is_main:
        try:
            lock.acquire()
            verdict = check_run_dir(run, settings)
        except ConfigError as error:
            lock.release()
            verdict = str(error)
        if verdict is False:
            lock.release()
    verdict = broadcast_object(verdict, env)
    if isinstance(verdict, str):
        raise ConfigError(verdict)
    if not verdict:
        yield None
        return
    try:
        with run_log(run.train_log, enabled=env.is_main) as train_log:
            yield OpenedRun(train_log)
    finally:
        if env.is_main:
            lock.release()


def record_new_run(run: RunFolder, cfg: DictConfig) -> None:
    """A new run's config.yaml, and Hydra's record of the job (``.hydra/``) when Hydra launched it."""
    from hydra.core.hydra_config import HydraConfig

    run.save_config(cfg)
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        run.save_hydra_record(cfg, hydra, list(hydra.overrides.task))


def run_identity(settings: TrainConfig, method: Method) -> dict[str, Any]:
    """What a run is, known before it trains: the first half of results.json, and its wandb tags."""
    paper_cell = settings.paper_cell
    return {
        "task": settings.task.name,
        "model": settings.model.name,
        "model_name_or_path": settings.model.name_or_path,
        "method": settings.method.name,
        **method.run_identity(settings.method),
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
        "status": result.status,
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
            "skipped_steps": result.skipped_steps,
        },
        "divergence": result.divergence.as_dict() if result.divergence else None,
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
    run = RunFolder(hydra_output_dir(Path(cfg.run_dir) if cfg.run_dir else None))
    resumption = settle_config(cfg, run)
    if resumption is not None:
        cfg = resumption.config
    settings, env = preflight(cfg)
    with opened_run_folder(run, settings, env) as opened:
        if opened is None:
            return None
        return _train_in(run, opened, cfg, settings, env, resumption)


def build_model(settings: TrainConfig, method: Method, env: DistEnv) -> torch.nn.Module:
    """The model to train: the backbone with the method applied, its adapters initialised from the seed
    alone. Under ``trainer=fsdp`` only rank 0 reads the weights; the other ranks build the same model on
    the meta device, and receive rank 0's values once it is sharded (``lorma_exp.sharding``)."""
    weights = loads_weights(settings.trainer.strategy, env)
    model = load_backbone(settings.model, settings.task.problem, settings.task.num_labels, weights=weights)
    seed_everything(settings.seed)  # adapter initialisation depends on the seed alone
    return method.apply(model, settings.method)


def _train_in(
    run: RunFolder,
    opened: OpenedRun,
    cfg: DictConfig,
    settings: TrainConfig,
    env: DistEnv,
    resumption: Resumption | None,
) -> dict[str, Any]:
    """Train in an opened run folder (:func:`train`); the folder changes only once the data, the model and
    a resumed run's checkpoint have passed their checks."""
    method = method_for(settings.method.kind)
    seed_everything(settings.seed)
    tokenizer = load_tokenizer(settings.model, settings.task.problem)
    task = build_task_data(settings, tokenizer, env)
    model = build_model(settings, method, env)
    counts = method.parameter_counts(model)
    identity = run_identity(settings, method)
    logger = RunLogger(run.path, enabled=env.is_main)

    def save(trained: torch.nn.Module, folder: Path) -> None:
        method.save(trained, folder, settings.model.name_or_path)

    exported = method.exported_parameter_names(model)
    trainer = Trainer(
        settings.trainer,
        model,
        task,
        env,
        run,
        settings.seed,
        logger,
        save,
        method.weights_name,
        method.saved_parameter_names(model),
    )
    resumed_from = trainer.restore() if settings.resume else None
    if env.is_main:
        if resumption is None:
            record_new_run(run, cfg)
        elif resumption.new_record is not None:
            run.save_config(resumption.new_record)
        save_label_names(task, run)
    opened.start_writing()
    if settings.resume:
        logger.truncate_after(resumed_from)
        if resumed_from is None:
            log.info("resume=true but %s has no checkpoint: starting from step 0", run.path)
        else:
            log.info("Resumed from step %d of %d", resumed_from, trainer.total_steps)
    if settings.logger.wandb:
        group, tags = wandb_group(identity, run.path)
        logger.start_wandb(
            settings.logger.wandb_settings,
            OmegaConf.to_container(cfg, resolve=True),
            name=settings.run_name,
            group=group,
            tags=tags,
            params=counts,
            best_metric=(
                f"eval/{next(iter(task.eval_splits))}/{settings.task.main_metric}",
                settings.task.greater_is_better,
            ),
        )
    log.info("Run folder: %s", run.path)
    result = trainer.fit()
    record = results_record(identity, result, counts, env)
    if result.divergence is None:
        with trainer.trained_model(exported) as trained:
            if trained is not None:
                save(trained, run.weights(method.weights_name))
                write_run_exports(method, trained, tokenizer, run, settings)
    if env.is_main:
        logger.write_csv()
        plot_loss_curve(run.read_events(), settings.task.main_metric, curve_title(identity), run.loss_curve)
        run.write_results(record)
        artifact = settings.logger.log_artifacts and result.divergence is None
        weights = (run.weights(method.weights_name), run.peft_adapter) if artifact else ()
        logger.finish(record, [folder for folder in weights if folder.is_dir()])
    if result.divergence is not None:
        raise TrainingDiverged(trainer.divergence_message(result.divergence))
    if env.is_main:
        trainer.finish()
        print(format_summary(record, run.path, task.info, method.weights_name))
    return record


@exit_on_user_error
def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Score a run's saved weights on the chosen splits; writes metrics.json into Hydra's eval folder."""
    options: EvalConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    run = RunFolder(Path(options.run_dir))
    settings = load_run_settings(run.path, options)
    method = method_for(settings.method.kind)
    weights_name = options.weights or method.weights_name
    weights = run.path / weights_name
    if not weights.is_dir():
        saved = run.saved_weights(method.weights_name)
        raise ConfigError(f"weights: {weights} does not exist. Saved weights in this run: {saved or 'none'}.")
    restore_label_names(settings, run)
    if options.splits:
        settings.data.eval_splits = list(options.splits)
    settings.data.limit = 1  # evaluation never reads the training rows: tokenise just one
    env = init_distributed(options.device)
    tokenizer = load_tokenizer(settings.model, settings.task.problem)
    task = build_task_data(settings, tokenizer, env)

    def backbone(name_or_path: str | None) -> torch.nn.Module:
        model_settings = dataclasses.replace(
            settings.model, name_or_path=name_or_path or settings.model.name_or_path
        )
        return load_backbone(model_settings, settings.task.problem, settings.task.num_labels)

    model = method.load(weights, backbone, settings.model.name_or_path)
    model.to(env.device)
    out_dir = hydra_output_dir(run.evaluation(run_stamp()))
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
            "run_dir": str(run.path),
            "weights": weights_name,
            "task": settings.task.name,
            "paper_task": options.paper_task,
            "splits": scores,
        }
        written = write_evaluation_record(out_dir, record)
        for split, metrics in scores.items():
            print(f"{split:<24} " + "  ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
        print(f"metrics: {written}")
    return scores
