"""What training needs beyond float32 exactness: autocast, bf16 base weights, gradient checkpointing, DDP,
and dropout on the adapter branch or on the whole input."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from lorma_exp.adapters import (
    AdapterConfig,
    LoraLinear,
    LormaLinear,
    OutputSlice,
    inject_adapters,
    iter_adapter_layers,
    merge_adapters,
)

from .cases import METHODS, MODELS, Case, perturb_adapters, relative_error

BF16_TOLERANCE = 5e-2  # bf16 keeps 8 bits of mantissa: a few 1e-3 per operation, accumulated over layers
TRAINING_METHODS = list(METHODS)


def adapted_llama(method_name: str) -> nn.Module:
    case = Case("llama", method_name)
    model = inject_adapters(case.spec.build(), case.config())
    perturb_adapters(model)
    return model


def adapter_grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad for _, layer in iter_adapter_layers(model) for p in layer.adapter_parameters()]


@pytest.mark.parametrize("method_name", TRAINING_METHODS)
def test_autocast_bf16_trains_float32_adapters(method_name):
    model = adapted_llama(method_name)
    inputs = MODELS["llama"].inputs()
    full_precision = model(**inputs).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**inputs).logits
    logits.float().square().mean().backward()
    assert relative_error(logits, full_precision) <= BF16_TOLERANCE
    grads = adapter_grads(model)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("method_name", TRAINING_METHODS)
def test_bf16_base_weights_get_float32_adapters_and_merge_back_to_bf16(method_name):
    case = Case("llama", method_name)
    model = case.spec.build().to(torch.bfloat16)
    inject_adapters(model, case.config())
    perturb_adapters(model)
    assert all(
        p.dtype == torch.float32
        for _, layer in iter_adapter_layers(model)
        for p in layer.adapter_parameters()
    )
    inputs = case.spec.inputs()
    logits = model(**inputs).logits
    assert logits.dtype == torch.bfloat16
    logits.float().square().mean().backward()
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in adapter_grads(model))
    merged = merge_adapters(model)
    assert all(p.dtype == torch.bfloat16 for p in merged.parameters())
    assert relative_error(merged(**inputs).logits, logits) <= BF16_TOLERANCE


@pytest.mark.parametrize("model_name", ["llama", "gpt2"])
@pytest.mark.parametrize("method_name", ["lorma-rri-pre", "lorma-shift-post", "lora"])
def test_gradient_checkpointing_gives_the_same_gradients(model_name, method_name):
    case = Case(model_name, method_name)
    grads = []
    for checkpointing in (False, True):
        model = inject_adapters(case.spec.build(), case.config())
        perturb_adapters(model)
        model.train()
        for module in model.modules():  # dropout off, so both runs see the same function
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        calls: list[int] = []
        first_adapter = next(layer for _, layer in iter_adapter_layers(model))
        first_adapter.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        if checkpointing:
            model.activation_checkpointing_enable()  # gradient_checkpointing_enable's new name
            model.enable_input_require_grads()
        case.spec.logits(model, case.spec.inputs()).square().mean().backward()
        assert len(calls) == (2 if checkpointing else 1)  # checkpointing did recompute the block
        grads.append(adapter_grads(model))
    for plain, checkpointed in zip(*grads, strict=True):
        assert relative_error(checkpointed, plain) <= 1e-6


@pytest.mark.parametrize("method_name", ["lorma-rri-pre", "lorma-shift-pre", "lora"])
def test_trains_wrapped_in_ddp(method_name, tmp_path, monkeypatch):
    """DDP (gloo, one process) wraps the adapted model and its gradient hooks fire for the custom autograd
    functions. What DDP requires of each step, every trainable parameter getting a gradient, is pinned for
    every case by test_an_optimizer_step_changes_only_adapters_and_heads."""
    monkeypatch.setenv(
        "GLOO_SOCKET_IFNAME", "lo"
    )  # talk to itself over loopback, whatever the host's network
    distributed = torch.distributed
    distributed.init_process_group(
        "gloo",
        init_method=f"file://{tmp_path / 'store'}",
        rank=0,
        world_size=1,
        timeout=timedelta(seconds=60),
    )
    try:
        case = Case("gpt2", method_name)
        model = nn.parallel.DistributedDataParallel(inject_adapters(case.spec.build(), case.config()))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        for _ in range(2):
            model(**case.spec.inputs()).logits.square().mean().backward()
            assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
            optimizer.step()
            optimizer.zero_grad()
    finally:
        distributed.destroy_process_group()


def single_layer(layer_class, dropout_on: str, **options) -> tuple[nn.Module, nn.Linear]:
    torch.manual_seed(0)
    base = nn.Linear(6, 8).requires_grad_(False)
    config = AdapterConfig(targets="layer", r=2, alpha=4, dropout=0.5, dropout_on=dropout_on, **options)
    return layer_class(base, config).train(), base


def test_adapter_dropout_leaves_the_frozen_path_alone():
    layer, base = single_layer(LormaLinear, "adapter")
    x = torch.randn(5, 6)
    assert torch.equal(layer(x), base(x))  # B = 0 at init: only the (dropped) branch could differ


@pytest.mark.parametrize(
    ("layer_class", "options"),
    [(LormaLinear, {"mode": "pre"}), (LormaLinear, {"mode": "post"}), (LoraLinear, {"method": "lora"})],
    ids=["rri-pre", "rri-post", "lora"],
)
def test_adapter_dropout_drops_only_the_branch_input(layer_class, options):
    layer, base = single_layer(layer_class, "adapter", **options)
    perturb_adapters(nn.ModuleDict({"layer": layer}))
    x = torch.randn(5, 6)
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)
    dropped = F.dropout(x, 0.5, training=True)
    update = layer.delta_weight()  # W' − W: the branch is exactly x·ΔWᵀ
    assert relative_error(out, base(x) + dropped @ update.T) <= 1e-6


def test_input_dropout_drops_the_whole_layer_input():
    layer, base = single_layer(LormaLinear, "input")
    x = torch.randn(5, 6)
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)
    assert torch.equal(out, base(F.dropout(x, 0.5, training=True)))
    layer.eval()
    assert torch.equal(layer(x), base(x))


@pytest.mark.parametrize("method_name", list(METHODS))
def test_input_dropout_on_a_fused_layer_drops_only_what_feeds_the_adapted_slices(method_name):
    """GPT-2's c_attn adapted on q and v with the authors' whole-input dropout: q and v are the literal
    formula on the dropped input, k is the frozen layer's output on the clean input (issue 12, item 4)."""
    d = 4
    torch.manual_seed(0)
    base = Conv1D(3 * d, d).double().requires_grad_(False)
    nn.init.normal_(base.weight)
    nn.init.normal_(base.bias)
    slices = [OutputSlice("q", 0, d), OutputSlice("v", 2 * d, 3 * d)]
    config = AdapterConfig(
        targets="c_attn", r=2, alpha=3, dropout=0.5, dropout_on="input", **METHODS[method_name].fields
    )
    layer = (LoraLinear if config.method == "lora" else LormaLinear)(base, config, slices).train()
    perturb_adapters(nn.ModuleDict({"c_attn": layer}))
    x = torch.randn(3, 5, d, dtype=torch.float64)

    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)
    dropped = F.dropout(x, 0.5, training=True)

    weight, bias = base.weight.T, base.bias
    frozen_k = x @ weight[d : 2 * d].T + bias[d : 2 * d]
    assert relative_error(out[..., d : 2 * d], frozen_k) <= 1e-12
    assert relative_error(frozen_k, dropped @ weight[d : 2 * d].T + bias[d : 2 * d]) > 0.1  # dropout bites
    method = METHODS[method_name]
    for position, piece in enumerate(slices):
        factors = {name: getattr(layer, name)[position].detach() for name in layer.factor_names}
        rows = weight[piece.start : piece.stop]
        adapted = method.literal_weight(rows, factors, config.scale, config.mode)
        expected = dropped @ adapted.T + bias[piece.start : piece.stop]
        assert relative_error(out[..., piece.start : piece.stop], expected) <= 1e-12
    layer.eval()
    assert torch.equal(layer(x)[..., d : 2 * d], base(x)[..., d : 2 * d])
