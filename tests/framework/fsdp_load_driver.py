"""Build a model as a sharded run's ranks build it, shard it, and record what each rank holds.

torchrun --nproc_per_node=2 fsdp_load_driver.py OUT_DIR OVERRIDE... [:: OVERRIDE...]...   (run by
tests/framework/test_fsdp.py)

Each case (its overrides separated from the next case's by ``::``) is train.py overrides (model, task,
method, ``trainer=fsdp``); the model is built by ``pipeline.build_model``, as train.py builds it, then
sharded by ``ShardedModel``. Each rank writes ``case<i>_rank<k>.pt``: whether every parameter and buffer
was on the meta device when ``ShardedModel`` received the model, how often it read pretrained weights,
its parameters (unsharded) and buffers afterwards, which parameters are tied before and after, and the
sharded model's logits on a fixed batch; rank 0 adds the values and logits of its model before sharding.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import nn

from lorma_exp import models, pipeline
from lorma_exp.config import CONF_DIR, register_configs, validate
from lorma_exp.distributed import DistEnv, init_distributed
from lorma_exp.methods import method_for
from lorma_exp.sharding import ShardedModel


def tied_groups(model: nn.Module) -> list[list[str]]:
    """The names of every parameter object held under more than one name."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return sorted(group for group in names.values() if len(group) > 1)


def logits(model: nn.Module, vocab_size: int) -> torch.Tensor:
    input_ids = (torch.arange(14).reshape(2, 7) * 37) % vocab_size
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits.detach()


def build_and_shard(overrides: list[str], env: DistEnv) -> dict:
    """What this rank holds before and after sharding the model of one case."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        settings = validate(compose("config", overrides=overrides))
    reads = {"n": 0}
    pretrained = models._pretrained

    def counted(*args, **kwargs):
        reads["n"] += 1
        return pretrained(*args, **kwargs)

    models._pretrained = counted
    try:
        model = pipeline.build_model(settings, method_for(settings.method.kind), env)
    finally:
        models._pretrained = pretrained
    vocab_size = model.config.vocab_size
    record: dict = {
        "pretrained_reads": reads["n"],
        "meta_before": [name for name, p in (*model.named_parameters(), *model.named_buffers()) if p.is_meta],
        "tensors_before": len([*model.parameters(), *model.buffers()]),
        "tied_before": tied_groups(model),
        "state_dict_keys": sorted(model.state_dict()),
    }
    if env.is_main:
        record["values_before"] = {name: p.detach().clone() for name, p in model.named_parameters()}
        record["buffers_before"] = {name: b.clone() for name, b in model.named_buffers()}
        record["logits_before"] = logits(model, vocab_size)
    sharded = ShardedModel(model, env, param_dtype=None)
    record["tied_after"] = tied_groups(model)
    record["values_after"] = {name: p.detach().full_tensor() for name, p in model.named_parameters()}
    record["buffers_after"] = {name: b.clone() for name, b in model.named_buffers()}
    record["logits_after"] = logits(sharded.module, vocab_size)
    return record


def main() -> None:
    out_dir, *arguments = sys.argv[1:]
    cases: list[list[str]] = [[]]
    for argument in arguments:
        if argument == "::":
            cases.append([])
        else:
            cases[-1].append(argument)
    register_configs()
    env = init_distributed("cpu")
    for index, overrides in enumerate(cases):
        record = build_and_shard(overrides, env)
        torch.save(record, Path(out_dir) / f"case{index}_rank{env.rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
