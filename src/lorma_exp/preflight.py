"""Every cheap check of a training config, before any data is read or weights are loaded.

Beyond the schema and :func:`config.validate`: the task's family and metrics exist, the launch matches
``trainer.strategy``, the backbone's config can be read, the precision suits the device, ``trainer.compile``
has its toolchain, and the method's targets exist in the backbone with a rank below both sides of every
target (checked on a weightless copy of the backbone, built on the ``meta`` device). Each failure is a ConfigError naming the field.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
from omegaconf import DictConfig
from torch import nn

from lorma_exp.adapters import resolve_target_names
from lorma_exp.config import ConfigError, Strategy, TrainConfig, check_precision, validate
from lorma_exp.data import check_task
from lorma_exp.distributed import DistEnv, init_distributed
from lorma_exp.methods import method_for
from lorma_exp.models import load_model_config, model_skeleton

log = logging.getLogger(__name__)


def check_targets(settings: TrainConfig, skeleton: nn.Module) -> None:
    """The method's targets match layers of the backbone, and ``r`` is below min(d_in, d_out) of each."""
    method = method_for(settings.method.kind)
    if "targets" not in method.settings:
        return
    targets = list(settings.method.targets)
    try:
        names = resolve_target_names(skeleton, targets)
    except ValueError as error:
        raise ConfigError(
            f"method.targets: {error}. Name layers of {settings.model.name_or_path} in model.targets "
            "(or method.targets)."
        ) from error
    if "r" not in method.settings:
        return
    rank = settings.method.r
    for name in names:
        shape = tuple(skeleton.get_submodule(name).weight.shape)
        if rank >= min(shape):
            raise ConfigError(
                f"r: r={rank} is not below min(d_in, d_out) = {min(shape)} of the target layer {name} "
                f"(weight {shape[0]}×{shape[1]}): the update is no longer low-rank. Use r < {min(shape)}, "
                "or method=full_ft to train every weight."
            )


def compile_toolchain_problem(device: torch.device) -> str | None:
    """Why `torch.compile` (inductor) cannot generate code for `device` here, or None when it can: on a
    CPU it needs a C++ compiler, on a GPU the triton package."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "on a GPU inductor needs the triton package, which is not installed (pip install triton)"
        return None
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as error:  # inductor's own search, whatever it raises
        return f"on a CPU inductor needs a C++ compiler (g++, or one named by $CXX): {error}"
    return None


def preflight(cfg: DictConfig) -> tuple[TrainConfig, DistEnv]:
    """The validated settings and this process's place in the job, or a ConfigError."""
    settings = validate(cfg)
    check_task(settings.task)
    env = init_distributed(settings.trainer.device)
    strategy = settings.trainer.strategy
    if strategy in (Strategy.ddp, Strategy.fsdp) and not env.distributed:
        raise ConfigError(
            f"trainer.strategy: trainer={strategy} needs several processes. Launch with "
            f"`torchrun --nproc_per_node=N train.py trainer={strategy} ...`, or drop trainer={strategy}."
        )
    if settings.trainer.strategy == Strategy.single and env.distributed:
        raise ConfigError("trainer.strategy: single, but launched with several processes. Use trainer=ddp.")
    check_precision(settings.trainer.precision, env.device.type)
    if settings.trainer.compile and (problem := compile_toolchain_problem(env.device)) is not None:
        raise ConfigError(f"trainer.compile: {problem}. Install it, or set trainer.compile=false.")
    load_model_config(settings.model)
    try:
        skeleton = model_skeleton(settings.model, settings.task.problem, settings.task.num_labels)
    except Exception as error:  # a model class that cannot be built without weights: checked when it loads
        log.warning(
            "Could not build %s without weights (%s); its targets are checked when it loads.",
            settings.model.name_or_path,
            error,
        )
        return settings, env
    check_targets(settings, skeleton)
    return settings, env
