"""The training loop: one code path for one process and for torchrun DDP or FSDP (lorma_exp.sharding).

Design choices that make runs reproducible and resumable:
- The data order of epoch ``e`` is a permutation drawn from ``seed + e`` alone, and each global batch
  (``batch_size × grad_accum × world_size`` rows) is split into equal chunks across micro-steps and ranks,
  so a 2-process run sees the same global batches as a 1-process run with twice the accumulation.
- The loss of a chunk is its summed loss over the number of examples (or target tokens) in the whole
  global batch, so the gradient is the global mean whatever the split.
- The random state (dropout) is re-seeded before every chunk's forward pass from ``(seed, step, chunk)``,
  the chunk being the chunk's place in the global batch: an example draws the same masks whichever rank
  and micro-step it falls on, so any world size × accumulation split of a global batch trains the same
  model, and a resumed run draws the same masks as an uninterrupted one without storing RNG states.
- SIGINT / SIGTERM (Ctrl-C, SLURM pre-emption) finish the current step, write a checkpoint and stop; a
  run restarted with ``resume=true`` continues from it and ends with the same metrics. Checkpoints are
  also written every ``trainer.checkpoint_every_steps`` steps and ``trainer.checkpoint_every_minutes``
  minutes, in files that survive a hard kill (:mod:`lorma_exp.checkpoints`).
- A non-finite loss or gradient norm never reaches the weights: the run stops there as diverged
  (``trainer.on_nonfinite=stop``) or drops that optimizer step (``skip_step``, up to
  ``trainer.max_skipped_steps``); weights that are not finite are never saved.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from lorma_exp.checkpoints import (
    commit_checkpoint,
    newest_checkpoint,
    read_checkpoint,
    stage_checkpoint,
    write_checkpoint,
)
from lorma_exp.config import (
    ConfigError,
    EvalStrategy,
    NonFinite,
    Precision,
    Problem,
    Scheduler,
    Strategy,
    TrainerConfig,
    check_precision,
)
from lorma_exp.data.base import Batch, TaskData, input_tokens
from lorma_exp.distributed import DistEnv, all_reduce_sum, barrier
from lorma_exp.losses import loss_count, summed_loss
from lorma_exp.run_folder import LOSS_KEY, TRAIN_SPLIT, RunFolder
from lorma_exp.sharding import ShardedModel, gradient_scaler
from lorma_exp.tracking import RunLogger, Throughput

log = logging.getLogger(__name__)

# Spreads the per-chunk seeds of one step apart: seed + step + CHUNK_SEED_STRIDE · chunk.
CHUNK_SEED_STRIDE = 1_000_003


class TrainingInterrupted(RuntimeError):
    """Raised after a signal stopped training and the checkpoint to resume from was written."""


@dataclass
class Divergence:
    """Where and why a run stopped for a non-finite value (results.json's ``divergence``)."""

    step: int
    reason: str
    loss: float | None = None
    grad_norm: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "reason": self.reason, "loss": self.loss, "grad_norm": self.grad_norm}


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
    skipped_steps: list[int] = field(default_factory=list)
    divergence: Divergence | None = None

    @property
    def status(self) -> str:
        return "finished" if self.divergence is None else "diverged"


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


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    """The random seed of chunk ``chunk`` (its place in the global batch) at optimizer step ``step`` (from 0)."""
    return seed + step + CHUNK_SEED_STRIDE * chunk


def schedule_change_error(
    scheduler: Scheduler, warmup_ratio: float, warmup_steps: int, recorded_total: int, total: int, step: int
) -> str | None:
    """Why resuming at ``step`` with ``total`` steps instead of ``recorded_total`` would not equal a run
    started with ``total`` steps; None when it would.

    Everything but the learning rate is independent of the run's length (data order, dropout, evaluations
    on the way), so the resumed run is exact when every rate already used, and the one logged at ``step``,
    is the rate the new length gives at that step.
    """
    if total <= step:
        return f"the checkpoint is at step {step}, past the {total} steps asked for"

    def factors(length: int) -> list[float]:
        warmup = min(warmup_steps or math.ceil(warmup_ratio * length), length)
        factor = lr_lambda(scheduler, warmup, length)
        return [factor(index) for index in range(step + 1)]

    if factors(recorded_total) != factors(total):
        return (
            f"the learning-rate schedule ({scheduler}, warm-up {warmup_steps or warmup_ratio}) of a "
            f"{recorded_total}-step run set rates for its first {step} steps that a {total}-step schedule "
            "sets differently (only trainer.scheduler=constant with a fixed warm-up can change length)"
        )
    return None


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

    ``save_model`` writes the trained weights to a folder (the method's format), reading only the parameters
    ``saved_parameters`` names (default: all; a sharded run gathers just these); the best evaluation's go
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
        saved_parameters: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.task = task
        self.env = env
        self.run = run
        self.seed = seed
        self.logger = logger
        self.save_model = save_model
        self.weights_name = weights_name
        self.saved_parameters = saved_parameters
        self.autocast_dtype = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}.get(
            settings.precision
        )
        # A training forward pass builds no KV cache: it would only cost memory, and under trainer.compile
        # with trainer=fsdp each layer's cache state would recompile its compiled block past torch's limit.
        self.forward_options = {"use_cache": False} if task.problem == Problem.causal_lm else {}
        # trainer.strategy=fsdp: the model is sharded in place (lorma_exp.sharding); None otherwise
        self.sharded = (
            ShardedModel(model, env, self.autocast_dtype, compile_blocks=settings.compile)
            if settings.strategy == Strategy.fsdp
            else None
        )
        self.model = model.to(env.device) if self.sharded is None else model
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
        check_precision(settings.precision, env.device.type)
        fp16 = settings.precision == Precision.fp16
        self.scaler = (
            torch.amp.GradScaler(env.device.type, enabled=fp16)
            if self.sharded is None
            else gradient_scaler(env.device.type, enabled=fp16)
        )
        self.wrapped = (
            DistributedDataParallel(
                self.model, device_ids=[env.device.index] if env.device.type == "cuda" else None
            )
            if env.distributed and self.sharded is None
            else self.model
        )
        if settings.compile and self.sharded is None:  # a sharded model's blocks are compiled already
            self.wrapped = torch.compile(self.wrapped)
        self.step = 0
        self.resumed_from: int | None = None
        self.best: EvalRecord | None = None
        self.initial: EvalRecord | None = None
        self.last_eval: EvalRecord | None = None
        self.losses: list[tuple[int, float]] = []
        self.skipped_steps: list[int] = []
        # since the last log line: summed mean losses and steps (applied ones), the last gradient norm
        self._pending_loss: list[Any] = [0.0, 0, None]
        self._throughput = Throughput()
        self._stop = _StopRequest()
        self._last_checkpoint_time = time.monotonic()

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

    def _eager(self) -> contextlib.AbstractContextManager:
        """Evaluation and decoding run eagerly under ``trainer.compile``: a sharded model's blocks are compiled
        in place, and decoding's per-layer KV caches would recompile each block past torch's limit."""
        return torch.compiler.set_stance("force_eager") if self.settings.compile else contextlib.nullcontext()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.autocast_dtype)

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    # ---- checkpoints -------------------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu() for name, p in self.model.named_parameters() if p.requires_grad}

    def _weights_are_finite(self) -> bool:
        """Whether every trained weight is finite (checked before any weights or checkpoint are written)."""
        if self.sharded is not None:
            return self.sharded.weights_are_finite(self.parameters)
        checks = [torch.isfinite(p.detach()).all() for p in self.parameters]
        return bool(torch.stack(checks).all())

    def _save_weights(self, folder: Path) -> None:
        """Write the trained weights (a sharded model's gathered first: every rank calls this)."""
        with self.trained_model(self.saved_parameters) as model:
            if model is not None:
                self.save_model(model, folder)

    @contextlib.contextmanager
    def trained_model(self, names: Sequence[str] | None = None) -> Iterator[torch.nn.Module | None]:
        """The trained model as one process holds it, on rank 0 (None on other ranks), while the block runs.

        A sharded model is gathered onto rank 0 for the block, and only the parameters ``names`` (default:
        all) are: the others are on the meta device there. Every rank enters it (the gathers are collective).
        """
        if self.sharded is not None:
            with self.sharded.gathered(names) as model:
                yield model
        else:
            yield self.model if self.env.is_main else None

    def save_checkpoint(self) -> None:
        """Write the resume state (:mod:`lorma_exp.checkpoints`: a kill at any moment leaves a good copy)."""
        if self.sharded is not None:
            self._save_sharded_checkpoint()
        elif self.env.is_main:
            write_checkpoint(
                self.run,
                {
                    **self._progress_state(),
                    "trainable": self._trainable_state(),
                    "optimizer": self.optimizer.state_dict(),
                },
            )
        self._last_checkpoint_time = time.monotonic()
        barrier(self.env)

    def _save_sharded_checkpoint(self) -> None:
        """Every rank writes its shards of the trained weights and optimizer state into the staging folder;
        then rank 0 commits it with the rest of the state (``sharded``: restore reads the shards)."""
        assert self.sharded is not None
        if self.env.is_main:
            stage_checkpoint(self.run)
        barrier(self.env)
        self.sharded.save_shards(self.run.checkpoint_staging, self.optimizer)
        barrier(self.env)
        if self.env.is_main:
            commit_checkpoint(self.run, {**self._progress_state(), "sharded": True})

    def _progress_state(self) -> dict[str, Any]:
        """The resume state other than the trained weights and the optimizer's state."""
        return {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": self.best,
            "initial": self.initial,
            "last_eval": self.last_eval,
            "losses": self.losses,
            "pending_loss": self._pending_loss,
            "skipped_steps": self.skipped_steps,
            "total_steps": self.total_steps,
            "global_batch": self.global_batch,
            "chunks": self.chunks,
        }

    def restore(self) -> int | None:
        """Load the newest complete checkpoint of the run folder; returns its step (None: there is none).

        A checkpoint of another global batch is refused, and one of another length unless the resumed run
        equals a run started with the new length (:func:`schedule_change_error`): ConfigError.
        """
        path = newest_checkpoint(self.run)
        if path is None:
            return None
        state = read_checkpoint(path)
        recorded_batch = (state.get("global_batch", self.global_batch), state.get("chunks", self.chunks))
        if recorded_batch != (self.global_batch, self.chunks):
            raise ConfigError(
                f"trainer.batch_size: the checkpoint in {path.parent} was made with global batches of "
                f"{recorded_batch[0]} rows in {recorded_batch[1]} chunks; this launch gives {self.global_batch} "
                f"in {self.chunks}. Resume with the same number of processes, or set trainer.global_batch_size."
            )
        if state["total_steps"] != self.total_steps:
            settings = self.settings
            problem = schedule_change_error(
                settings.scheduler,
                settings.warmup_ratio,
                settings.warmup_steps,
                state["total_steps"],
                self.total_steps,
                state["step"],
            )
            if problem is not None:
                raise ConfigError(
                    f"trainer.epochs: the run was made for {state['total_steps']} steps and this config gives "
                    f"{self.total_steps}, but {problem}. Resume with the run's own length, or start a new run."
                )
            log.info("Resuming with %d steps instead of %d", self.total_steps, state["total_steps"])
        if state.get("sharded", False) != (self.sharded is not None):
            raise ConfigError(
                f"trainer.strategy: the checkpoint in {path.parent} was "
                f"{'' if state.get('sharded') else 'not '}written by a sharded (fsdp) run. Resume with the "
                "strategy the run was started with."
            )
        if self.sharded is not None:
            self.sharded.load_shards(path.parent, self.optimizer)
        else:
            named = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, value in state["trainable"].items():
                    named[name].copy_(value)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = self.resumed_from = state["step"]
        self.best, self.initial, self.last_eval = state["best"], state["initial"], state["last_eval"]
        self.losses = state["losses"]
        pending = list(state["pending_loss"])
        self._pending_loss = pending + [None] * (3 - len(pending))  # checkpoints before 0.2 kept two fields
        self.skipped_steps = state.get("skipped_steps", [])
        return self.step

    # ---- evaluation --------------------------------------------------------------------------------
    def evaluate(self) -> EvalRecord:
        """Score every evaluation split, and the training rows with ``eval_train``; the first evaluation
        split's main metric picks the best step."""
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        splits = [*self.task.eval_splits, *([TRAIN_SPLIT] if self.settings.eval_train else [])]
        for index, split in enumerate(splits):
            with self._eager(), self._autocast():
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
                if name != LOSS_KEY:  # the eval loss is in the events; results.json keeps the task's metrics
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
        if self.step > 0 and improved and self._weights_are_finite():
            self.best = record
            self._save_weights(self.run.best_weights(self.weights_name))
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

    def _train_step(self, chunks: list[list[int]]) -> tuple[float, float, bool]:
        """One optimizer step over this rank's micro-batches: (global mean loss, grad norm, applied).

        The update is applied only when the loss and the gradient norm are finite (with fp16, the grad
        scaler skips steps whose scaled gradients overflowed, as usual; only the loss decides there).
        """
        started = time.perf_counter()
        rank, world = self.env.rank, self.env.world_size
        mine = [m * world + rank for m in range(self.grad_accum)]
        batches: list[Batch] = [self.task.collate([self.task.train[i] for i in chunks[c]]) for c in mine]
        count = sum(loss_count(self.task.problem, b["labels"]) for b in batches)
        tokens = sum(input_tokens(b) for b in batches)
        total_count, total_tokens = all_reduce_sum(
            torch.tensor([count, tokens], dtype=torch.float64), self.env
        ).tolist()
        loss_sum = torch.zeros((), device=self.env.device)
        for micro, (chunk, batch) in enumerate(zip(mine, batches, strict=True)):
            torch.manual_seed(chunk_seed(self.seed, self.step, chunk))
            labels = batch.pop("labels").to(self.env.device)
            inputs = {key: value.to(self.env.device) for key, value in batch.items()}
            last = micro == len(batches) - 1
            sync = self._gradient_sync(last)
            with sync:
                with self._autocast():
                    logits = self.wrapped(**inputs, **self.forward_options).logits
                loss = summed_loss(self.task.problem, logits, labels, self.settings.label_smoothing)
                # DDP and FSDP average gradients over ranks: `* world` makes the sum the global mean's gradient
                self.scaler.scale(loss * world / max(total_count, 1.0)).backward()
            loss_sum += loss.detach()
        mean_loss = all_reduce_sum(loss_sum.float().cpu(), self.env).item() / max(total_count, 1.0)
        self.scaler.unscale_(self.optimizer)
        max_norm = self.settings.max_grad_norm or float("inf")
        grad_norm = (
            float(torch.nn.utils.clip_grad_norm_(self.parameters, max_norm))
            if self.sharded is None
            else self.sharded.grad_norm(self.parameters, max_norm)
        )
        applied = math.isfinite(mean_loss) and (self.scaler.is_enabled() or math.isfinite(grad_norm))
        if applied:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self._throughput.add(time.perf_counter() - started, total_tokens)
        return mean_loss, grad_norm, applied

    def _gradient_sync(self, last_micro_step: bool) -> contextlib.AbstractContextManager:
        """Gradients are reduced over the ranks in the last micro-step's backward pass only."""
        if self.sharded is not None:
            return self.sharded.gradient_sync(last_micro_step)
        if last_micro_step or not self.env.distributed:
            return contextlib.nullcontext()
        return self.wrapped.no_sync()

    def _control_flags(self) -> tuple[bool, bool]:
        """(stop requested, time-based checkpoint due), agreed by every rank (rank 0's clock decides)."""
        minutes = self.settings.checkpoint_every_minutes
        due = (
            self.env.is_main and minutes > 0 and time.monotonic() - self._last_checkpoint_time >= 60 * minutes
        )
        flags = all_reduce_sum(torch.tensor([float(self._stop.requested), float(due)]), self.env)
        return bool(flags[0] > 0), bool(flags[1] > 0)

    def _nonfinite_step(self, loss: float, grad_norm: float) -> Divergence | None:
        """Record a step whose update was dropped; the divergence that stops the run, if it does."""
        step = self.step + 1
        skip = self.settings.on_nonfinite == NonFinite.skip_step
        stops = not skip or len(self.skipped_steps) >= self.settings.max_skipped_steps
        self.logger.log(
            {
                "event": "nonfinite",
                "step": step,
                "epoch": self.epoch_of(step),
                "loss": loss,
                "grad_norm": grad_norm,
                "action": "stop" if stops else "skip_step",
            }
        )
        if stops:
            reason = "non-finite loss" if not math.isfinite(loss) else "non-finite gradient norm"
            if skip:
                reason += f" after {len(self.skipped_steps)} skipped steps (trainer.max_skipped_steps)"
            return Divergence(step, reason, loss, grad_norm)
        self.skipped_steps.append(step)
        log.warning("step %d: loss %s, gradient norm %s: skipped this optimizer step", step, loss, grad_norm)
        return None

    def divergence_message(self, divergence: Divergence) -> str:
        """One line: where, what, and what to change."""
        settings = self.settings
        remedy = (
            f"Lower trainer.lr (now {settings.lr:g}) or trainer.max_grad_norm (now {settings.max_grad_norm:g})"
            if settings.max_grad_norm
            else f"Lower trainer.lr (now {settings.lr:g}) or enable gradient clipping (trainer.max_grad_norm=1.0)"
        )
        return (
            f"diverged at step {divergence.step}: {divergence.reason} (loss {divergence.loss}, gradient norm "
            f"{divergence.grad_norm}). {remedy}; trainer.on_nonfinite=skip_step drops such steps instead."
        )

    def fit(self) -> TrainResult:
        """Train to ``total_steps`` from step 0 or from :meth:`restore`'s step, evaluating and checkpointing
        on schedule; stops early, as diverged, at a non-finite loss or gradient norm."""
        started = time.perf_counter()
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
        divergence: Divergence | None = None
        with self._stop.installed():
            while self.step < self.total_steps:
                loss, grad_norm, applied = self._train_step(next(batches))
                if not applied:
                    divergence = self._nonfinite_step(loss, grad_norm)
                    if divergence is not None:
                        break
                self.step += 1
                bar.update(1)
                self._record_loss(loss, grad_norm, applied)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                evaluated = self._should_evaluate(self.step)
                if evaluated:
                    self._evaluate_on_schedule()
                stop, time_due = self._control_flags()
                if self.step == self.total_steps:
                    break
                every = self.settings.checkpoint_every_steps
                if evaluated or stop or time_due or (every and self.step % every == 0):
                    if not self._weights_are_finite():
                        divergence = Divergence(self.step, "non-finite weights after the update")
                        break
                    self.save_checkpoint()
                if stop:
                    bar.close()
                    raise TrainingInterrupted(
                        f"stopped at step {self.step}; continue with: resume=true run_dir={self.run.path}"
                    )
        bar.close()
        if divergence is None and not self._weights_are_finite():
            divergence = Divergence(self.step, "non-finite weights after the update")
        return TrainResult(
            steps=self.step,
            epochs=self.epoch_of(self.step),
            final_loss=self.losses[-1][1] if self.losses else None,
            wall_time_s=time.perf_counter() - started,
            best=self.best,
            final=self.last_eval,
            initial=self.initial,
            resumed_from_step=self.resumed_from or 0,
            losses=self.losses,
            skipped_steps=self.skipped_steps,
            divergence=divergence,
        )

    def _evaluate_on_schedule(self) -> None:
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
        at_epoch_end = self.step % self.steps_per_epoch == 0
        if self.settings.snapshot_every_epoch and at_epoch_end and self._weights_are_finite():
            self._save_weights(self.run.snapshot(self.step // self.steps_per_epoch))

    def _record_loss(self, loss: float, grad_norm: float, applied: bool) -> None:
        """Log the mean loss of the applied steps every ``log_every`` steps (a skipped step adds nothing;
        the gradient norm logged is the last applied step's)."""
        if applied:
            self._pending_loss = [self._pending_loss[0] + loss, self._pending_loss[1] + 1, grad_norm]
        logged_steps = self._pending_loss[1]
        if logged_steps and (self.step % self.settings.log_every == 0 or self.step == self.total_steps):
            mean = self._pending_loss[0] / logged_steps
            self.losses.append((self.step, mean))
            self.logger.log(
                {
                    "event": "train",
                    "step": self.step,
                    "epoch": self.epoch_of(self.step),
                    "loss": mean,
                    "lr": self.scheduler.get_last_lr()[0],
                    "grad_norm": self._pending_loss[2],
                    **self._throughput.take(),
                }
            )
            self._pending_loss = [0.0, 0, None]

    def finish(self) -> None:
        """Remove the resume state of a finished run (results.json now marks it done)."""
        if self.env.is_main:
            shutil.rmtree(self.run.checkpoints, ignore_errors=True)
