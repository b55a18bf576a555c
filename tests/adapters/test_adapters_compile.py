"""`torch.compile(model, fullgraph=True)` over every adapter method: no graph break (fullgraph makes any
break an error), and the compiled model computes what the eager one computes, outputs and the gradients of
the input and every trainable parameter, in training mode with dropout (the same masks: compiled and eager
draw from the same seed).

The fast tests use the `aot_eager` backend, which traces forward and backward into graphs as inductor
does, without generating kernels; the slow ones compile with inductor, on a small transformers model of
each family: whole `nn.Linear` layers (Llama) and slices of a fused `Conv1D` (GPT-2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from lorma_exp.adapters import AdapterConfig, LoraLinear, LormaLinear, OutputSlice, inject_adapters

from .cases import METHODS, Case, perturb_adapters, relative_error

D = 8


def options(method_name: str, dropout: float = 0.1) -> dict:
    """Adapter dropout on, as Table 16 trains, unless `dropout=0` (the default config); LoRMA_π has no
    branch and drops the layer input."""
    if METHODS[method_name].fields.get("inflation") == "shift":
        return {"dropout": dropout, "dropout_on": "input"}
    return {"dropout": dropout}


class WholeAndSliced(nn.Module):
    """A whole adapted `nn.Linear`, then GPT-2's fused `c_attn` (a `Conv1D`) adapted on its q and v slices."""

    def __init__(self, method_name: str, dropout: float) -> None:
        super().__init__()
        config = AdapterConfig(
            targets=["layer"], r=2, alpha=4.0, **METHODS[method_name].fields, **options(method_name, dropout)
        )
        layer_class = LoraLinear if config.method == "lora" else LormaLinear
        self.linear = layer_class(nn.Linear(D, D).double().requires_grad_(False), config)
        c_attn = Conv1D(3 * D, D).double().requires_grad_(False)
        nn.init.normal_(c_attn.weight, std=0.3)
        self.c_attn = layer_class(c_attn, config, [OutputSlice("q", 0, D), OutputSlice("v", 2 * D, 3 * D)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_attn(torch.tanh(self.linear(x)))


def assert_compiled_equals_eager(model: nn.Module, run, backend: str, tolerance: float) -> None:
    """`run(module)` returns an output (and the input, when it needs a gradient); compare it and every
    gradient, compiled against eager. A gradient's error is taken relative to the norm of all gradients
    together: a factor whose gradient nearly cancels (~1e-7 of the others in float32) may differ by more than
    `tolerance` of itself in a compiled order of summation, never of the update."""
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    results = []
    for module in (compiled, model):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        out, inputs = run(module)
        out.float().square().mean().backward()
        grads = [inputs.grad] if inputs is not None else []
        grads += [p.grad for p in model.parameters() if p.requires_grad]
        results.append((out, grads))
    (out, grads), (expected, expected_grads) = results
    assert relative_error(out, expected) <= tolerance
    assert len(grads) == len(expected_grads) > 1
    total = torch.cat([grad.detach().double().flatten() for grad in expected_grads]).norm()
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert float((grad.double() - expected_grad.double()).norm() / total) <= tolerance


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("method_name", list(METHODS))
def test_every_adapter_compiles_whole_and_sliced_layers_without_a_graph_break(method_name, dropout):
    model = WholeAndSliced(method_name, dropout).train()
    perturb_adapters(model)

    def run(module):
        x = torch.randn(2, 5, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        x.requires_grad_(True)
        return module(x), x

    assert_compiled_equals_eager(model, run, "aot_eager", 1e-12)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex operators")
@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("method_name", list(METHODS))
def test_every_adapter_compiles_a_transformers_model_with_inductor(method_name, family):
    case = Case(family, method_name, options(method_name))
    model = inject_adapters(case.spec.build(), case.config()).train()
    perturb_adapters(model)
    inputs = case.spec.inputs()
    with torch._inductor.config.patch(fallback_random=True):  # eager's dropout masks, not inductor's own
        assert_compiled_equals_eager(
            model, lambda module: (case.spec.logits(module, inputs), None), "inductor", 1e-4
        )
