"""One adapted layer in float64 against the literal weight-space formulas of method.md: outputs and the
gradients of every factor and the input, for every method of the case list (each inflation × mode, LoRA),
on nn.Linear and GPT-2 Conv1D.
Also: the initialisations, the fused GPT-2 slices, and what each layer keeps for backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from lorma_exp.adapters import AdapterConfig, LoraLinear, LormaLinear
from lorma_exp.adapters.layers import SHIFT_PATHS, OutputSlice

from .cases import METHODS, relative_error

EXACT = 1e-10  # float64: only rounding separates the activation forms from the weight-space formulas
R, ALPHA = 3, 5.0
SCALE = ALPHA / R

#: Every method of the generic case list, by name (`lorma-rri-pre`, …, `lora`).
KINDS = list(METHODS)


def make_config(kind: str) -> AdapterConfig:
    return AdapterConfig(targets=("layer",), r=R, alpha=ALPHA, **METHODS[kind].fields)


def make_adapter(kind: str, base: nn.Module, slices=None) -> nn.Module:
    layer_class = LoraLinear if kind == "lora" else LormaLinear
    return layer_class(base, make_config(kind), slices)


def literal_weight(kind: str, weight: torch.Tensor, factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """W' exactly as method.md §1 writes it (cases.py holds each method's formula)."""
    return METHODS[kind].literal_weight(weight, factors, SCALE, METHODS[kind].fields.get("mode"))


def reference_copies(layer: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of each factor that records its own gradient, by name."""
    return {name: getattr(layer, name).detach().clone().requires_grad_(True) for name in layer.factor_names}


def make_base(layer_type: str, d_in: int, d_out: int, bias: bool) -> nn.Module:
    if layer_type == "conv1d":
        base = Conv1D(d_out, d_in)
        nn.init.normal_(base.bias)
    else:
        base = nn.Linear(d_in, d_out, bias=bias)
    base.double().requires_grad_(False)
    with torch.no_grad():
        base.weight.normal_()
    return base


def base_weight(base: nn.Module) -> torch.Tensor:
    return base.weight.T if isinstance(base, Conv1D) else base.weight


def randomise(layer: nn.Module, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in layer.adapter_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.3)


LAYER_CASES = [
    pytest.param("linear", True, id="linear-bias"),
    pytest.param("linear", False, id="linear-nobias"),
    pytest.param("conv1d", True, id="conv1d"),  # GPT-2's Conv1D always has a bias
]
SHAPES = [pytest.param(6, 10, id="dout>din"), pytest.param(10, 6, id="dout<din")]


def _shift_paths(kind: str) -> list[str]:
    """Every way the shift layer can compute (docs/lorma_pi.md), the cost model's choice included."""
    return list(SHIFT_PATHS) if METHODS[kind].fields.get("inflation") == "shift" else ["auto"]


EXACT_CASES = [pytest.param(kind, path, id=f"{kind}-{path}") for kind in KINDS for path in _shift_paths(kind)]


@pytest.mark.parametrize(("layer_type", "bias"), LAYER_CASES)
@pytest.mark.parametrize(("d_in", "d_out"), SHAPES)
@pytest.mark.parametrize(("kind", "shift_path"), EXACT_CASES)
def test_output_and_gradients_equal_the_weight_space_formula(kind, shift_path, layer_type, bias, d_in, d_out):
    base = make_base(layer_type, d_in, d_out, bias)
    layer = make_adapter(kind, base)
    if shift_path != "auto":
        layer.shift_path = shift_path
    randomise(layer)
    assert set(layer.factor_names) == set(METHODS[kind].factor_names)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, d_in, dtype=torch.float64, generator=generator, requires_grad=True)
    grad_out = torch.randn(2, 5, d_out, dtype=torch.float64, generator=generator)

    out = layer(x)
    out.backward(grad_out)

    reference = reference_copies(layer)
    ref_x = x.detach().clone().requires_grad_(True)
    adapted = literal_weight(kind, base_weight(base), reference)
    ref_out = ref_x @ adapted.T + (base.bias if base.bias is not None else 0.0)
    ref_out.backward(grad_out)

    assert relative_error(out, ref_out) <= EXACT
    for name, factor in reference.items():
        assert relative_error(getattr(layer, name).grad, factor.grad) <= EXACT, name
    assert relative_error(x.grad, ref_x.grad) <= EXACT
    assert relative_error(layer.delta_weight(torch.float64), adapted - base_weight(base)) <= EXACT


@pytest.mark.parametrize(("layer_type", "bias"), [LAYER_CASES[0], LAYER_CASES[2]])
@pytest.mark.parametrize(("d_in", "d_out"), SHAPES)
@pytest.mark.parametrize("kind", ["lorma-rri-pre", "lorma-rri-post", "lorma-rri_magnitude-pre", "lora"])
def test_factor_and_bias_gradients_when_the_input_needs_none(kind, layer_type, bias, d_in, d_out):
    """The first adapted layer of a network gets an input without gradient, and `bias="adapter"` trains
    the frozen layer's bias: the backward that skips the input gradient must still give exact factor and
    bias gradients."""
    base = make_base(layer_type, d_in, d_out, bias)
    layer = make_adapter(kind, base)
    base.bias.requires_grad_(True)
    randomise(layer)
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(4, d_in, dtype=torch.float64, generator=generator)
    grad_out = torch.randn(4, d_out, dtype=torch.float64, generator=generator)

    layer(x).backward(grad_out)

    reference = reference_copies(layer)
    ref_bias = base.bias.detach().clone().requires_grad_(True)
    (x @ literal_weight(kind, base_weight(base), reference).T + ref_bias).backward(grad_out)

    for name, factor in reference.items():
        assert relative_error(getattr(layer, name).grad, factor.grad) <= EXACT, name
    assert relative_error(base.bias.grad, ref_bias.grad) <= EXACT


@pytest.mark.parametrize("kind", ["lorma-shift-pre", "lorma-shift-post"])
def test_every_shift_path_computes_the_same_function_and_gradients(kind):
    results = []
    for path in SHIFT_PATHS:
        torch.manual_seed(0)
        layer = make_adapter(kind, make_base("linear", 7, 9, True))
        layer.shift_path = path
        randomise(layer)
        x = torch.randn(
            3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(5), requires_grad=True
        )
        out = layer(x)
        out.square().sum().backward()
        results.append([out, x.grad, *(p.grad for p in layer.adapter_parameters())])
    for first, *others in zip(*results, strict=True):
        for other in others:
            assert relative_error(other, first) <= EXACT


def test_rri_and_lora_start_at_b_zero_with_kaiming_a():
    for kind in ("lorma-rri-pre", "lorma-rri-post", "lora"):
        layer = make_adapter(kind, make_base("linear", 6, 10, True))
        factor_a, factor_b = (getattr(layer, name) for name in layer.factor_names)
        assert torch.count_nonzero(factor_b) == 0
        # kaiming_uniform_(a=√5) draws from U(−1/√fan_in, 1/√fan_in), fan_in = A's second dimension.
        bound = 1 / factor_a.shape[1] ** 0.5
        assert factor_a.abs().max() <= bound and factor_a.std() > bound / 4
    layer = make_adapter("lorma-rri-pre", make_base("linear", 6, 10, True))
    assert torch.equal(layer.multiplier(), torch.eye(10, dtype=torch.float64))


@pytest.mark.parametrize("mode", ["pre", "post"])
def test_shift_starts_at_the_identity(mode):
    layer = make_adapter(f"lorma-shift-{mode}", make_base("linear", 6, 10, True))
    n = 10 if mode == "pre" else 6
    assert relative_error(layer.multiplier(), torch.eye(n, dtype=torch.float64)) <= 1e-15


def test_no_inflation_starts_at_the_rank_r_projector_b_pinv_b():
    layer = make_adapter("lorma-none-pre", make_base("linear", 6, 10, True))
    multiplier = layer.multiplier()
    assert torch.linalg.matrix_rank(multiplier) == R
    assert relative_error(multiplier @ multiplier, multiplier) <= 1e-12  # a projector
    assert relative_error(multiplier @ layer.lorma_B, layer.lorma_B) <= 1e-12  # onto the columns of B


@pytest.mark.parametrize(("kind", "shift_path"), EXACT_CASES)
def test_fused_gpt2_slices_equal_separate_q_and_v_linears(kind, shift_path):
    """c_attn adapted on its q and v slices computes what separate q, k, v linears compute when q and v
    carry the same adapters; k is untouched."""
    d = 4
    fused_base = make_base("conv1d", d, 3 * d, True)
    slices = [OutputSlice("q", 0, d), OutputSlice("v", 2 * d, 3 * d)]
    fused = make_adapter(kind, fused_base, slices)
    if shift_path != "auto":
        fused.shift_path = shift_path
    randomise(fused)
    separate = {}
    for index, name in enumerate("qkv"):
        linear = nn.Linear(d, d).double().requires_grad_(False)
        with torch.no_grad():
            linear.weight.copy_(fused_base.weight.T[index * d : (index + 1) * d])
            linear.bias.copy_(fused_base.bias[index * d : (index + 1) * d])
        separate[name] = linear
    for position, name in enumerate("qv"):
        adapter = make_adapter(kind, separate[name])
        with torch.no_grad():
            for own, stacked in zip(adapter.adapter_parameters(), fused.adapter_parameters(), strict=True):
                own.copy_(stacked[position])
        separate[name] = adapter

    x = torch.randn(
        2, 3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(6), requires_grad=True
    )
    fused_out = fused(x)
    fused_out.square().sum().backward()
    fused_grad_x = x.grad
    x.grad = None
    separate_out = torch.cat([separate[name](x) for name in "qkv"], dim=-1)
    separate_out.square().sum().backward()

    assert relative_error(fused_out, separate_out) <= EXACT
    assert relative_error(fused_grad_x, x.grad) <= EXACT
    for position, name in enumerate("qv"):
        for stacked, own in zip(fused.adapter_parameters(), separate[name].adapter_parameters(), strict=True):
            assert relative_error(stacked.grad[position], own.grad) <= EXACT
        rows = slice(2 * d * position, 2 * d * position + d)
        assert relative_error(fused.delta_weight()[rows], separate[name].delta_weight()) <= EXACT
        if kind != "lora":
            assert relative_error(fused.multiplier(name), separate[name].multiplier()) <= EXACT
    delta = fused.delta_weight()
    assert torch.count_nonzero(delta[d : 2 * d]) == 0  # k rows untouched


def saved_activation_bytes(run, parameters) -> int:
    """Bytes of the distinct storages autograd keeps for backward, parameters excluded."""
    parameter_storages = {p.untyped_storage().data_ptr() for p in parameters}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(kept.values())


def minimal_lora_bytes(base: nn.Linear, x: torch.Tensor, autocast: bool) -> int:
    """What a minimal LoRA layer (frozen base + x·Aᵀ·Bᵀ, plain autograd) keeps for backward."""
    lora_a = nn.Parameter(torch.randn(R, base.in_features))
    lora_b = nn.Parameter(torch.randn(base.out_features, R))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return saved_activation_bytes(
            lambda: base(x) + SCALE * (x @ lora_a.T) @ lora_b.T, [*base.parameters(), lora_a, lora_b]
        )


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize(
    ("d_in", "d_out"), [pytest.param(32, 128, id="dout>din"), pytest.param(128, 32, id="dout<din")]
)
@pytest.mark.parametrize(
    "kind", ["lorma-rri-pre", "lorma-rri-post", "lorma-none-pre", "lorma-none-post", "lora"]
)
def test_an_adapted_layer_keeps_no_more_for_backward_than_lora(kind, d_in, d_out, autocast):
    base = nn.Linear(d_in, d_out).requires_grad_(False)
    x = torch.randn(256, d_in, requires_grad=True)
    layer = make_adapter(kind, base)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        adapted = saved_activation_bytes(lambda: layer(x), list(layer.parameters()))
    lora = minimal_lora_bytes(base, x, autocast)
    assert adapted <= lora
    # and at least the input rows: the bound is not vacuous
    assert adapted >= x.numel() * (2 if autocast else 4)
