"""``trainer.strategy=fsdp``: the model sharded over the ranks with torch's FSDP2 (``fully_shard``).

Every transformer block is sharded on its own (its parameters are gathered just before it runs and freed
after), then the root takes what is left (embeddings, heads). The frozen base is sharded like the trained
adapters and heads; FSDP2 keeps ``requires_grad`` per parameter, so the optimizer sees the same trainable
parameters, as DTensor shards, as in a single process.

What differs from one process, and how the trainer keeps it equal:
- gradient norm: the norm of sharded gradients is assembled over the ranks (:meth:`ShardedModel.grad_norm`);
- finiteness of the weights: each rank checks its shards and the ranks agree (:meth:`weights_are_finite`);
- loading: only rank 0 reads the pretrained weights and applies the method (seeded as one process does);
  the other ranks build the same model on the meta device (:func:`loads_weights`), and once it is sharded
  every parameter and buffer arrives from rank 0 (:class:`ShardedModel`), so a job holds one copy of the
  backbone, not one per rank;
- saved weights: rank 0 keeps a template of the model whose parameters are on the meta device (no storage);
  a save gathers into it only the parameters the method's files hold (:meth:`gathered`) and frees them
  afterwards, so saved adapters and models are a single-process run's files and rank 0 never holds the
  frozen base (full fine-tuning's whole model exists on rank 0 only while it is written);
- resume state: the trained parameters and the optimizer state are written shard by shard with
  ``torch.distributed.checkpoint`` into the checkpoint's staging folder (:meth:`save_shards`);
- ``trainer.compile``: each block is compiled (``fullgraph=True``) before it is sharded;
- ``trainer.precision=fp16``: the gradient scaler agrees over the ranks on skipping a step
  (:func:`gradient_scaler`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
from torch.distributed.tensor import DTensor

from lorma_exp.config import Strategy
from lorma_exp.distributed import DistEnv

# The folder, inside a checkpoint folder, that holds the sharded model and optimizer state.
SHARDS_DIR = "shards"


def loads_weights(strategy: Strategy, env: DistEnv) -> bool:
    """Whether this rank reads the backbone's pretrained weights: always, but under ``trainer=fsdp`` only rank
    0 does; the others build the model on the meta device and receive rank 0's values when it is sharded."""
    return strategy != Strategy.fsdp or env.is_main


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of ``model``: the modules of its longest ``ModuleList`` of one class (BERT's
    ``encoder.layer``, GPT-2's ``h``, LLaMA's ``layers``)."""
    best: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > len(best):
            children = list(module)
            if len({type(child) for child in children}) == 1:
                best = children
    return best


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def gradient_scaler(device_type: str, enabled: bool) -> torch.amp.GradScaler:
    """fp16's loss scaler for sharded gradients (``ShardedGradScaler``): each rank checks its own gradient
    shards for overflow, and the ranks all-reduce what they found before deciding, so every rank skips the
    same steps and lowers its scale alike."""
    return ShardedGradScaler(device_type, enabled=enabled)


def meta_template(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters live on the meta device: names, shapes, dtypes, ties and
    ``requires_grad`` as in ``model``, no storage. Buffers (position ids, rotary frequencies: small, never
    trained) are copied as they are."""
    memo = {
        id(parameter): nn.Parameter(torch.empty_like(parameter, device="meta"), parameter.requires_grad)
        for parameter in model.parameters()
    }
    return copy.deepcopy(model, memo)


@contextlib.contextmanager
def materialised(template: nn.Module, tensors: dict[str, torch.Tensor]) -> Iterator[nn.Module]:
    """``template`` with the parameters named in ``tensors`` holding those values while the block runs,
    back on the meta device afterwards. The parameter objects stay the same (``swap_tensors``), so tied
    parameters (shared by several modules) take the value everywhere."""
    named = dict(template.named_parameters())
    swapped: list[tuple[nn.Parameter, nn.Parameter]] = []
    try:
        for name, value in tensors.items():
            parameter = named[name]
            holder = nn.Parameter(value, parameter.requires_grad)
            torch.utils.swap_tensors(parameter, holder)
            swapped.append((parameter, holder))
        yield template
    finally:
        for parameter, holder in reversed(swapped):
            torch.utils.swap_tensors(parameter, holder)


def _receive_from_rank_0(model: nn.Module, full_state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Give the sharded ``model`` rank 0's values: each rank keeps its shards of rank 0's full state dict
    (sent one tensor at a time), and every buffer, persistent or not (rotary frequencies, position ids: no
    state dict holds the latter), is rank 0's. A model built on the meta device is given storage first;
    ``to_empty`` swaps the values into the same parameter objects, so tied parameters stay tied."""
    if any(tensor.is_meta for tensor in (*model.parameters(), *model.buffers())):
        model.to_empty(device=device)
    set_model_state_dict(
        model, full_state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    )
    with torch.no_grad():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


class ShardedModel:
    """A model sharded in place with FSDP2 over every rank of the job (see the module docstring).

    Rank 0's ``model`` holds the values to train (the loaded backbone with the method applied); another
    rank's is the same model, usually on the meta device (:func:`loads_weights`), and takes rank 0's values.
    """

    def __init__(
        self, model: nn.Module, env: DistEnv, param_dtype: torch.dtype | None, compile_blocks: bool = False
    ) -> None:
        # Rank 0's storage-free copy: saved files are written from it, as from a single process's model.
        self.template = meta_template(model) if env.is_main else None
        # References to rank 0's unsharded tensors, kept until every rank has its shards of them (then this
        # constructor returns and rank 0 too holds only its shards).
        full_state = get_model_state_dict(model) if env.is_main else {}
        mesh = init_device_mesh(env.device.type, (env.world_size,))
        policy = (
            MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
            if param_dtype is not None
            else MixedPrecisionPolicy()
        )
        # fully_shard moves each shard to the mesh's device: the whole model never sits on one device.
        for block in transformer_blocks(model):
            if compile_blocks:
                # Compiled in place before sharding (FSDP2's recipe): the block's forward and backward trace
                # whole, while the parameter gathers stay in FSDP's hooks around it. The root (embeddings,
                # heads) runs eager.
                block.compile(fullgraph=True)
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        _receive_from_rank_0(model, full_state, env.device)
        self.module: FSDPModule = model  # type: ignore[assignment]

    def trainable_names(self) -> list[str]:
        return [name for name, p in self.module.named_parameters() if p.requires_grad]

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Reduce-scatter the gradients in this backward pass only when ``enabled`` (the last micro-step
        of an accumulation); earlier micro-steps accumulate unsharded gradients locally."""
        self.module.set_requires_gradient_sync(enabled)
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)

    def grad_norm(self, parameters: list[nn.Parameter], max_norm: float) -> float:
        """Clip the sharded gradients to ``max_norm`` in total; the unsharded gradients' total norm."""
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return float(_full(norm))

    def weights_are_finite(self, parameters: list[nn.Parameter]) -> bool:
        """Whether every shard of every rank is finite (the same answer on every rank)."""
        finite = torch.stack([torch.isfinite(_local(p.detach())).all() for p in parameters]).all()
        flag = torch.tensor([float(finite)])
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0)

    @contextlib.contextmanager
    def gathered(self, names: Sequence[str] | None = None) -> Iterator[nn.Module | None]:
        """Rank 0's template holding the parameters ``names`` (default: all), unsharded on the CPU, while the
        block runs (None on other ranks); the rest of the template stays on the meta device.

        Collective: every rank calls it with the same names, each parameter is gathered in turn, and only
        rank 0 keeps the gathered copy, until the block ends.
        """
        live = dict(self.module.named_parameters())
        gathered: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name in live if names is None else names:
                full = _full(live[name].detach())
                if self.template is not None:
                    gathered[name] = full.cpu()
                del full
        if self.template is None:
            yield None
            return
        with materialised(self.template, gathered) as model:
            yield model

    def _resume_state(self, optimizer: torch.optim.Optimizer) -> dict[str, dict]:
        trainable = set(self.trainable_names())
        model_state = get_model_state_dict(self.module)
        return {
            "model": {name: value for name, value in model_state.items() if name in trainable},
            "optimizer": get_optimizer_state_dict(self.module, optimizer),
        }

    def save_shards(self, folder: Path, optimizer: torch.optim.Optimizer) -> None:
        """Write this rank's shards of the trained parameters and the optimizer state under ``folder``
        (every rank calls it; ``torch.distributed.checkpoint`` writes and syncs one file per rank)."""
        dcp.save(self._resume_state(optimizer), checkpoint_id=folder / SHARDS_DIR)

    def load_shards(self, folder: Path, optimizer: torch.optim.Optimizer) -> None:
        """Read what :meth:`save_shards` wrote into the sharded model and the optimizer."""
        state = self._resume_state(optimizer)
        dcp.load(state, checkpoint_id=folder / SHARDS_DIR)
        set_model_state_dict(self.module, state["model"], options=StateDictOptions(strict=False))
        set_optimizer_state_dict(self.module, optimizer, state["optimizer"])
