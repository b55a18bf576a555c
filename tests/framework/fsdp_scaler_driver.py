"""One fp16 loss-scaling step on a model sharded over 2 gloo ranks, with an inf in rank 1's gradient shard
only; then a finite step. Each rank writes what it saw to ``OUT/rank<r>.json``.

torchrun --nproc_per_node=2 fsdp_scaler_driver.py OUT   (run by tests/framework/test_fsdp.py)

The steps are the trainer's (``Trainer._train_step`` with fp16): scale the loss, backward, unscale, clip
the sharded gradients, step, update; with the scaler the trainer makes for ``trainer=fsdp``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from lorma_exp.distributed import DistEnv
from lorma_exp.sharding import ShardedModel, gradient_scaler

INITIAL_SCALE = 2.0**16


class Blocks(nn.Module):
    """Two blocks (sharded one by one, as a transformer's) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(8, 8) for _ in range(2)])
        self.head = nn.Linear(8, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            inputs = torch.tanh(layer(inputs))
        return self.head(inputs)


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = Blocks()
    sharded = ShardedModel(model, DistEnv(rank, world, rank, torch.device("cpu")), param_dtype=None)
    parameters = list(model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=0.1)
    scaler = gradient_scaler("cpu", enabled=True)
    seen: dict[str, object] = {"scaler": type(scaler).__name__}
    for step, overflow in enumerate((True, False)):
        before = [p.detach().to_local().clone() for p in parameters]
        inputs = torch.randn(4, 8, generator=torch.Generator().manual_seed(step * world + rank))
        scaler.scale(model(inputs).square().mean()).backward()
        if overflow and rank == 1:  # an overflow in this rank's shard only
            parameters[0].grad.to_local().view(-1)[0] = float("inf")
        scaler.unscale_(optimizer)
        sharded.grad_norm(parameters, float("inf"))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        after = [p.detach().to_local() for p in parameters]
        seen[f"step{step}"] = {
            "weights_changed": any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)),
            "scale": scaler.get_scale(),
        }
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
