"""The fused adapted layer (`functional.adapted_linear`) on the paths that used to leave it: adapter dropout on
the branch (Table 16: 0.1) and GPT-2's fused `c_attn` adapted on its q and v slices, alone and together.

Each case is checked in float64 against the literal definition, written here from method.md: the frozen
rows see the clean input `x`, each adapted slice adds `x_d·(W'_s − W_s)ᵀ` with `x_d` the input after
`nn.Dropout` (the same masks, drawn from the same seed), `W'_s` the literal adapted weight of cases.py;
the magnitude variant scales the slice's frozen-plus-update rows by `g`. Outputs and the gradients of the
input, every factor and a trained bias. Then what the fused node avoids: no concatenation, one output-sized
tensor, and no more kept for backward than a plain LoRA with `nn.Dropout`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.pytorch_utils import Conv1D

from lorma_exp.adapters import AdapterConfig, LoraLinear, LormaLinear, OutputSlice

from .cases import METHODS, relative_error
from .test_adapters_exactness import saved_activation_bytes

EXACT = 1e-10
R, ALPHA, P = 2, 5.0, 0.25
SCALE = ALPHA / R
D = 8  # > 2·R: a slice's `U` columns are narrower than the input
#: The methods whose training forward is the fused low-rank node (LoRMA_π has no branch, `none` drops the
#: frozen output).
FUSED = ["lora", "lorma-rri-pre", "lorma-rri-post", "lorma-rri_magnitude-pre", "lorma-rri_magnitude-post"]
LAYOUTS = {
    "linear": (lambda: nn.Linear(D, 6), None),
    "conv1d": (lambda: Conv1D(6, D), None),
    "c_attn-q-v": (lambda: Conv1D(3 * D, D), (OutputSlice("q", 0, D), OutputSlice("v", 2 * D, 3 * D))),
}


def build(kind: str, layout: str, dropout: float, bias: str = "none") -> nn.Module:
    make_base, slices = LAYOUTS[layout]
    torch.manual_seed(0)
    base = make_base().double().requires_grad_(False)
    with torch.no_grad():
        for parameter in base.parameters():
            parameter.normal_()
    config = AdapterConfig(
        targets=["layer"], r=R, alpha=ALPHA, dropout=dropout, bias=bias, **METHODS[kind].fields
    )
    layer = (LoraLinear if kind == "lora" else LormaLinear)(base, config, slices)
    if bias == "adapter":
        base.bias.requires_grad_(True)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in layer.adapter_parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.3)
    return layer.train()


def literal(
    kind: str, layer: nn.Module, x: torch.Tensor, dropped: torch.Tensor, factors: dict
) -> torch.Tensor:
    """The output from the literal definitions; `factors[name]` are copies of the layer's parameters."""
    base = layer.base_layer
    weight = base.weight.T if isinstance(base, Conv1D) else base.weight
    bias = factors.get("bias", base.bias)
    method = METHODS[kind]
    plain = METHODS[kind.replace("rri_magnitude", "rri")].literal_weight
    rows = []
    for start, stop, index in layer.segments():
        frozen = x @ weight[start:stop].T
        if index is not None:
            names = {name: value[index] if layer.is_sliced else value for name, value in factors.items()}
            update = plain(weight[start:stop], names, SCALE, method.fields.get("mode")) - weight[start:stop]
            frozen = frozen + dropped @ update.T
            if "lorma_magnitude" in names:
                frozen = names["lorma_magnitude"] * frozen
        rows.append(frozen + bias[start:stop])
    return torch.cat(rows, dim=-1)


@pytest.mark.parametrize("dropout", [0.0, P], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", FUSED)
def test_the_fused_layer_is_the_literal_formula_with_its_gradients(kind, layout, dropout):
    layer = build(kind, layout, dropout, bias="adapter")
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, D, dtype=torch.float64, generator=generator, requires_grad=True)
    torch.manual_seed(7)
    out = layer(x)
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=generator)
    out.backward(grad_out)

    factors = {
        name: getattr(layer, name).detach().clone().requires_grad_(True) for name in layer.factor_names
    }
    factors["bias"] = layer.base_layer.bias.detach().clone().requires_grad_(True)
    reference_x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(7)
    dropped = F.dropout(reference_x, dropout, training=True)  # nn.Dropout's masks: the same draws
    expected = literal(kind, layer, reference_x, dropped, factors)
    expected.backward(grad_out)

    assert relative_error(out, expected) <= EXACT
    assert relative_error(x.grad, reference_x.grad) <= EXACT
    assert relative_error(layer.base_layer.bias.grad, factors.pop("bias").grad) <= EXACT
    for name, copy in factors.items():
        assert relative_error(getattr(layer, name).grad, copy.grad) <= EXACT, name


@pytest.mark.parametrize("kind", FUSED)
def test_dropout_bites_in_training_and_is_off_in_eval(kind):
    layer = build(kind, "c_attn-q-v", P)
    x = torch.randn(3, D, dtype=torch.float64)
    training = layer(x)
    evaluated = layer.eval()(x)
    factors = {name: getattr(layer, name).detach() for name in layer.factor_names}
    assert relative_error(evaluated, literal(kind, layer, x, x, factors)) <= EXACT
    assert relative_error(training, evaluated) > 1e-3
    assert torch.equal(training[:, D : 2 * D], evaluated[:, D : 2 * D])  # k: frozen, never dropped


class _Operations(TorchDispatchMode):
    """Every operation run, and the sizes of the tensors each one creates."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[int]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, tuple | list) else [out]
        self.calls.append((str(func), [t.numel() for t in outputs if isinstance(t, torch.Tensor)]))
        return out


@pytest.mark.parametrize("kind", FUSED)
def test_a_sliced_layer_with_dropout_writes_its_output_once_and_concatenates_nothing(kind):
    """Before, q and v each added their branch to the frozen output's slice (output-sized sums) and the three
    slices were concatenated; the fused node writes the output once (the frozen product, with the bias) and
    adds the branches into its q and v columns in place. (Backward joins the slices' tokens × r products,
    which are smaller than a slice of the input.)"""
    layer = build(kind, "c_attn-q-v", P)
    x = torch.randn(64, D, dtype=torch.float64, requires_grad=True)
    with _Operations() as forward:
        out = layer(x)
    with _Operations() as backward:
        out.sum().backward()
    output_size = out.numel()
    for calls in (forward.calls, backward.calls):
        assert not any("cat" in name and max(sizes) >= x.numel() for name, sizes in calls), calls
    output_sized = [name for name, sizes in forward.calls if output_size in sizes and "view" not in name]
    extra = 2 if "magnitude" in kind else 0  # the magnitude's own y − b and its addcmul
    assert len(output_sized) == 1 + extra, output_sized


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("kind", ["lora", "lorma-rri-pre", "lorma-rri-post"])
def test_with_dropout_a_layer_keeps_no_more_than_lora_with_nn_dropout(kind, autocast):
    """A plain LoRA with `nn.Dropout` on its branch keeps the dropout mask, the dropped input and `x·Aᵀ`;
    the fused node keeps the same, its mask as booleans."""
    base = nn.Linear(32, 128).requires_grad_(False)
    x = torch.randn(256, 32, requires_grad=True)
    config = AdapterConfig(targets=["layer"], r=R, alpha=ALPHA, dropout=0.1, **METHODS[kind].fields)
    layer = (LoraLinear if kind == "lora" else LormaLinear)(base, config).train()
    lora_a = nn.Parameter(torch.randn(R, 32))
    lora_b = nn.Parameter(torch.randn(128, R))
    dropout = nn.Dropout(0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        adapted = saved_activation_bytes(lambda: layer(x), list(layer.parameters()))
        plain = saved_activation_bytes(
            lambda: base(x) + SCALE * (dropout(x) @ lora_a.T) @ lora_b.T, [*base.parameters(), lora_a, lora_b]
        )
    assert adapted <= plain
    assert adapted >= x.numel() * (2 if autocast else 4) + x.numel()  # the dropped rows and the mask
