"""Process-group set-up for torchrun (and SLURM via submitit), and the few collectives the loop needs.

A plain ``python train.py`` is a world of one and never touches ``torch.distributed``; under torchrun the
same code runs data-parallel with gloo on CPU and nccl on GPU. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int:
    """The number of processes the launcher started (1 for a plain ``python`` run)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _export_slurm_env() -> None:
    """Give a SLURM task (e.g. one of a submitit job's tasks) the variables torchrun would have set."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        return
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def mps_available() -> bool:
    """Whether this machine has Apple's Metal GPU (torch.backends.mps exists only on some builds)."""
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def pick_device(requested: str, local_rank: int) -> torch.device:
    """``auto`` takes this process's CUDA GPU when there is one, else Apple's ``mps``, else the CPU."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "auto" and not torch.cuda.is_available():
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if requested == "mps":
        if not mps_available():
            raise RuntimeError(
                "trainer.device=mps but Apple's mps backend is not available here. Use trainer.device=auto."
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"trainer.device={requested} but CUDA is not available here. Use trainer.device=auto."
        )
    if requested.startswith("cuda:"):
        return torch.device(requested)
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device_request: str = "auto") -> DistEnv:
    """Join the process group the launcher prepared (idempotent); a single process gets a world of one."""
    _export_slurm_env()
    world_size = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_request, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        # gloo for CPU tensors and Python objects, nccl for GPU tensors: one group serves both.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def broadcast_object(value: Any, env: DistEnv) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not env.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_gather_objects(value: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not env.distributed:
        return [value]
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """In-place sum over ranks (a no-op for a single process)."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
