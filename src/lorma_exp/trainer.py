"""The training loop: one code path for a single process and for torchrun DDP.

Design choices that make runs reproducible and resumable:
- The data order of epoch ``e`` is a permutation drawn from ``seed + e`` alone, and each global batch
  (``batch_size × grad_accum × world_size`` rows) is split into equal chunks across micro-steps and ranks,
  so a 2-process run sees the same global batches as a 1-process run with twice the accumulation.
- The loss of a chunk is its summed loss over the number of examples (or target tokens) in the whole
  global batch, so the gradient is the global mean whatever the split.
- The random state for dropout is re-seeded from ``(seed, step, rank)`` before every optimizer step, so a
  resumed run draws the same masks as an uninterrupted one without storing RNG states.
- SIGINT / SIGTERM (Ctrl-C, SLURM pre-emption) finish the current step, write a checkpoint and stop; a
  run restarted with ``resume=true`` continues from it and ends with the same metrics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from lorma_exp.config import EvalStrategy, Precision, Scheduler, TrainerConfig
from lorma_exp.data.base import IGNORE_INDEX, Batch, TaskData
from lorma_exp.distributed import DistEnv, all_reduce_sum, barrier
from lorma_exp.run_folder import CONFIG_FILE, TRAIN_SPLIT, RunFolder
from lorma_exp.tracking import RunLogger

log = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """Raised after a signal stopped training and the checkpoint to resume from was written."""


@dataclass
class EvalRecord:
    step: int
    epoch: float
    metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": round(self.epoch, 4), "metrics": self.metrics}


@dataclass
class TrainResult:
    """What a finished run reports (see results.json in docs/architecture.md)."""

    steps: int
    epochs: float
    final_loss: float | None
    wall_time_s: float
    best: EvalRecord | None
    final: EvalRecord | None
    initial: EvalRecord | None = None
    resumed_from_step: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)


def batch_plan(num_rows: int, global_batch: int, chunks: int, seed: int, epoch: int) -> list[list[list[int]]]:
    """Row indices of every global batch of an epoch, each split into ``chunks`` near-equal parts.

    A final global batch too small to give every chunk a row is dropped, identically for every world size.
    """
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    plan = []
    for start in range(0, num_rows, global_batch):
        rows = order[start : start + global_batch]
        if len(rows) < chunks:
            break
        size, extra = divmod(len(rows), chunks)
        bounds = [i * size + min(i, extra) for i in range(chunks + 1)]
        plan.append([rows[bounds[i] : bounds[i + 1]] for i in range(chunks)])
    return plan


def lr_lambda(scheduler: Scheduler, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then linear decay to 0, cosine decay to 0, or constant."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if scheduler == Scheduler.constant:
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if scheduler == Scheduler.cosine:
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return factor


def summed_loss(
    problem: str, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """The loss summed over examples (or target tokens), before division by the global count."""
    logits = logits.float()
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.float(), reduction="sum")
    if problem == "causal_lm":
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        label_smoothing=label_smoothing,
        reduction="sum",
    )


def loss_count(problem: str, labels: torch.Tensor) -> int:
    """How many terms :func:`summed_loss` adds up for these labels."""
    if problem == "causal_lm":
        return int((labels[:, 1:] != IGNORE_INDEX).sum())
    return labels.shape[0]


class _StopRequest:
    """Turns SIGINT / SIGTERM into a flag the loop checks between optimizer steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.requested = True
        log.warning(
            "Received %s: stopping after this step and writing a checkpoint.", signal.Signals(signum).name
        )

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous.clear()
        try:
            yield
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)


class Trainer:
    """Trains ``model`` on ``task`` with AdamW; rank 0 writes logs, checkpoints and trained weights.

    ``save_model`` writes the trained weights to a folder (the method's format); the best evaluation's go
    to the run's ``<weights_name>_best/``, epoch snapshots to ``snapshots/epoch_<k>/``.
    """

    def __init__(
        self,
        settings: TrainerConfig,
        model: torch.nn.Module,
        task: TaskData,
        env: DistEnv,
        run: RunFolder,
        seed: int,
        logger: RunLogger,
        save_model: Callable[[torch.nn.Module, Path], None],
        weights_name: str,
    ) -> None:
        self.settings = settings
        self.task = task
        self.env = env
        self.run = run
        self.seed = seed
        self.logger = logger
        self.save_model = save_model
        self.weights_name = weights_name
        self.model = model.to(env.device)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("the model has no trainable parameters: check method.targets and method.kind.")
        self.grad_accum = self._grad_accum()
        self.global_batch = settings.batch_size * self.grad_accum * env.world_size
        self.steps_per_epoch = len(batch_plan(len(task.train), self.global_batch, self.chunks, seed, 0))
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the training set has {len(task.train)} rows, fewer than one global batch needs "
                f"({self.chunks} chunks). Lower trainer.batch_size or add data."
            )
        self.total_steps = settings.max_steps or math.ceil(settings.epochs * self.steps_per_epoch)
        warmup = settings.warmup_steps or math.ceil(settings.warmup_ratio * self.total_steps)
        self.warmup_steps = min(warmup, self.total_steps)
        self.optimizer = torch.optim.AdamW(
            self._parameter_groups(),
            lr=settings.lr,
            betas=(settings.adam_beta1, settings.adam_beta2),
            eps=settings.adam_eps,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(settings.scheduler, self.warmup_steps, self.total_steps)
        )
        use_fp16 = settings.precision == Precision.fp16
        if use_fp16 and env.device.type != "cuda":
            raise ValueError("trainer.precision=fp16 needs a GPU. Use trainer.precision=bf16 or fp32 on CPU.")
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=use_fp16)
        self.autocast_dtype = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}.get(
            settings.precision
        )
        self.wrapped = (
            DistributedDataParallel(
                self.model, device_ids=[env.device.index] if env.device.type == "cuda" else None
            )
            if env.distributed
            else self.model
        )
        self.step = 0
        self.best: EvalRecord | None = None
        self.initial: EvalRecord | None = None
        self.last_eval: EvalRecord | None = None
        self.losses: list[tuple[int, float]] = []
        self._pending_loss = [0.0, 0]  # summed mean-losses and steps since the last log line
        self._stop = _StopRequest()

    @property
    def chunks(self) -> int:
        """How many equal parts a global batch is split into: one per micro-step per rank."""
        return self.grad_accum * self.env.world_size

    def _grad_accum(self) -> int:
        settings = self.settings
        if settings.global_batch_size is None:
            return settings.grad_accum
        per_step = settings.batch_size * self.env.world_size
        if settings.global_batch_size % per_step:
            raise ValueError(
                f"trainer.global_batch_size={settings.global_batch_size} is not a multiple of "
                f"trainer.batch_size × world size = {per_step}. Pick a global batch divisible by it."
            )
        return settings.global_batch_size // per_step

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """Weight decay on matrices only (not on biases and norm weights), as is usual for transformers."""
        decay = [p for p in self.parameters if p.ndim >= 2]
        no_decay = [p for p in self.parameters if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.settings.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.autocast_dtype)

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    # ---- checkpoints -------------------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu() for name, p in self.model.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> None:
        """Write the resume state atomically (a half-written checkpoint never replaces a good one)."""
        if self.env.is_main:
            target = self.run.last_checkpoint
            staging = target.with_name(f"{target.name}.tmp")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            state = {
                "step": self.step,
                "trainable": self._trainable_state(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "best": self.best,
                "initial": self.initial,
                "last_eval": self.last_eval,
                "losses": self.losses,
                "pending_loss": self._pending_loss,
                "total_steps": self.total_steps,
            }
            torch.save(state, staging / self.run.checkpoint_state.name)
            old = target.with_name(f"{target.name}.old")
            if target.exists():
                target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        barrier(self.env)

    def load_checkpoint(self) -> bool:
        """Restore the resume state if the run folder has one; True when it did."""
        path = self.run.checkpoint_state
        if not path.exists():
            return False
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["total_steps"] != self.total_steps:
            raise ValueError(
                f"resume: the checkpoint in {path.parent} was made for {state['total_steps']} steps, this "
                f"config gives {self.total_steps}. Resume with the run's own {CONFIG_FILE} settings."
            )
        named = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                named[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.best, self.initial, self.last_eval = state["best"], state["initial"], state["last_eval"]
        self.losses = state["losses"]
        self._pending_loss = state["pending_loss"]
        return True

    # ---- evaluation --------------------------------------------------------------------------------
    def evaluate(self) -> EvalRecord:
        """Score every evaluation split, and the training rows with ``eval_train``; the first evaluation
        split's main metric picks the best step."""
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        splits = [*self.task.eval_splits, *([TRAIN_SPLIT] if self.settings.eval_train else [])]
        for index, split in enumerate(splits):
            with self._autocast():
                scores = self.task.evaluator(
                    self.model,
                    split,
                    batch_size=self.settings.eval_batch_size,
                    output_dir=self.run.predictions if self.env.is_main else None,
                )
            self.logger.log(
                {
                    "event": "eval",
                    "step": self.step,
                    "epoch": self.epoch_of(self.step),
                    "split": split,
                    **scores,
                    "time_s": time.perf_counter() - started,
                }
            )
            for name, value in scores.items():
                metrics[name if index == 0 else f"{split}/{name}"] = value
        record = EvalRecord(self.step, self.epoch_of(self.step), metrics)
        evaluator = self.task.evaluator
        main = metrics.get(evaluator.main_metric)
        best_main = None if self.best is None else self.best.metrics.get(evaluator.main_metric)
        improved = (
            main is not None
            and not math.isnan(main)
            and (best_main is None or (main > best_main if evaluator.greater_is_better else main < best_main))
        )
        if self.step > 0 and improved:
            self.best = record
            if self.env.is_main:
                self.save_model(self.model, self.run.best_weights(self.weights_name))
        self.last_eval = record
        return record

    def _should_evaluate(self, step: int) -> bool:
        if step == self.total_steps:
            return True
        if self.settings.eval_strategy == EvalStrategy.epoch:
            return step % self.steps_per_epoch == 0
        if self.settings.eval_strategy == EvalStrategy.steps:
            return step % self.settings.eval_steps == 0
        return False

    # ---- training ----------------------------------------------------------------------------------
    def _global_batches(self, start_step: int) -> Iterator[list[list[int]]]:
        """Global batches from ``start_step`` on, epoch after epoch, in the seeded order."""
        epoch, offset = divmod(start_step, self.steps_per_epoch)
        while True:
            plan = batch_plan(len(self.task.train), self.global_batch, self.chunks, self.seed, epoch)
            yield from plan[offset:]
            epoch, offset = epoch + 1, 0

    def _train_step(self, chunks: list[list[int]]) -> tuple[float, float]:
        """One optimizer step over this rank's micro-batches; returns (global mean loss, grad norm)."""
        torch.manual_seed(self.seed + 1_000_003 * self.env.rank + self.step)
        rank, world = self.env.rank, self.env.world_size
        mine = [chunks[m * world + rank] for m in range(self.grad_accum)]
        batches: list[Batch] = [self.task.collate([self.task.train[i] for i in rows]) for rows in mine]
        count = torch.tensor(float(sum(loss_count(self.task.problem, b["labels"]) for b in batches)))
        total_count = all_reduce_sum(count, self.env).item()
        loss_sum = torch.zeros((), device=self.env.device)
        for micro, batch in enumerate(batches):
            labels = batch.pop("labels").to(self.env.device)
            inputs = {key: value.to(self.env.device) for key, value in batch.items()}
            last = micro == len(batches) - 1
            sync = contextlib.nullcontext() if last or not self.env.distributed else self.wrapped.no_sync()
            with sync:
                with self._autocast():
                    logits = self.wrapped(**inputs).logits
                loss = summed_loss(self.task.problem, logits, labels, self.settings.label_smoothing)
                self.scaler.scale(loss * world / max(total_count, 1.0)).backward()
            loss_sum += loss.detach()
        self.scaler.unscale_(self.optimizer)
        max_norm = self.settings.max_grad_norm or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, max_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        mean_loss = all_reduce_sum(loss_sum.float().cpu(), self.env).item() / max(total_count, 1.0)
        return mean_loss, grad_norm

    def _stop_requested(self) -> bool:
        flag = torch.tensor(float(self._stop.requested))
        return all_reduce_sum(flag, self.env).item() > 0

    def fit(self, resume: bool = False) -> TrainResult:
        """Train to ``total_steps``, evaluating and checkpointing on schedule."""
        started = time.perf_counter()
        resumed_from = 0
        if resume and self.load_checkpoint():
            resumed_from = self.step
            self.logger.truncate_after(self.step)
            log.info("Resumed from step %d of %d", self.step, self.total_steps)
        elif resume:
            log.info("resume=true but %s has no checkpoint: starting from step 0", self.run.path)
        log.info(
            "Training %d steps (%.2f epochs of %d steps; global batch %d = %d per device × %d accumulation × "
            "%d processes), %d warm-up steps",
            self.total_steps,
            self.total_steps / self.steps_per_epoch,
            self.steps_per_epoch,
            self.global_batch,
            self.settings.batch_size,
            self.grad_accum,
            self.env.world_size,
            self.warmup_steps,
        )
        if self.step == 0 and self.settings.eval_before_training:
            self.initial = self.evaluate()
        self.wrapped.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            # None: shown on a terminal, hidden when output goes to a file (the log has the evaluations)
            disable=None if self.env.is_main and self.settings.progress_bar else True,
            dynamic_ncols=True,
        )
        batches = self._global_batches(self.step)
        with self._stop.installed():
            while self.step < self.total_steps:
                loss, grad_norm = self._train_step(next(batches))
                self.step += 1
                bar.update(1)
                self._record_loss(loss, grad_norm)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if self._should_evaluate(self.step):
                    record = self.evaluate()
                    self.wrapped.train()
                    main_metric = self.task.evaluator.main_metric
                    log.info(
                        "step %d (epoch %.2f): %s = %s",
                        self.step,
                        record.epoch,
                        main_metric,
                        record.metrics.get(main_metric),
                    )
                    if (
                        self.settings.snapshot_every_epoch
                        and self.step % self.steps_per_epoch == 0
                        and self.env.is_main
                    ):
                        self.save_model(self.model, self.run.snapshot(self.step // self.steps_per_epoch))
                    if self.step < self.total_steps:
                        self.save_checkpoint()
                elif (
                    self.settings.checkpoint_every_steps
                    and self.step % self.settings.checkpoint_every_steps == 0
                ):
                    self.save_checkpoint()
                if self.step < self.total_steps and self._stop_requested():
                    self.save_checkpoint()
                    bar.close()
                    raise TrainingInterrupted(
                        f"stopped at step {self.step}; continue with: resume=true run_dir={self.run.path}"
                    )
        bar.close()
        return TrainResult(
            steps=self.step,
            epochs=self.epoch_of(self.step),
            final_loss=self.losses[-1][1] if self.losses else None,
            wall_time_s=time.perf_counter() - started,
            best=self.best,
            final=self.last_eval,
            initial=self.initial,
            resumed_from_step=resumed_from,
            losses=self.losses,
        )

    def _record_loss(self, loss: float, grad_norm: float) -> None:
        self._pending_loss[0] += loss
        self._pending_loss[1] += 1
        if self.step % self.settings.log_every == 0 or self.step == self.total_steps:
            mean = self._pending_loss[0] / self._pending_loss[1]
            self.losses.append((self.step, mean))
            self.logger.log(
                {
                    "event": "train",
                    "step": self.step,
                    "epoch": self.epoch_of(self.step),
                    "loss": mean,
                    "lr": self.scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm,
                }
            )
            self._pending_loss = [0.0, 0]

    def finish(self) -> None:
        """Remove the resume state of a finished run (results.json now marks it done)."""
        if self.env.is_main:
            shutil.rmtree(self.run.checkpoints, ignore_errors=True)
