"""LoRMA_π's maths in `adapters.functional` (docs/lorma_pi.md): the π rotation, the dense multiplier `P`, the
structured (FFT) form and every way `shift_linear` computes a layer, each in float64 against the literal
definition `P = s·π(B·A)` with π by an index table (outputs and the gradients of A, B and the input, pre and
post); the cost model's choices; and `torch.compile(fullgraph=True)` over all of it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lorma_exp.adapters import AdapterConfig, LormaLinear
from lorma_exp.adapters.functional import (
    SHIFT_COMPUTATIONS,
    ShiftCosts,
    choose_shift_computation,
    cyclic_row_shift,
    pi,
    shift_computation_costs,
    shift_costs,
    shift_linear,
    shift_multiplier,
    structured_shift,
)

from .cases import relative_error

EXACT = 1e-12
SCALE = 1.7
SIZES = [pytest.param(1, 1, id="n1"), pytest.param(2, 1, id="n2"), pytest.param(7, 3, id="n7-odd"),
         pytest.param(8, 3, id="n8-even")]  # fmt: skip


def literal_pi(matrix: torch.Tensor) -> torch.Tensor:
    """π(M)[i, j] = M[i, (j − i) mod n], by an explicit index table."""
    n = matrix.shape[0]
    columns = (torch.arange(n)[None, :] - torch.arange(n)[:, None]) % n
    return torch.gather(matrix, 1, columns)


def literal_multiplier(factor_a: torch.Tensor, factor_b: torch.Tensor) -> torch.Tensor:
    return SCALE * literal_pi(factor_b @ factor_a)


def random(*shape: int, seed: int, grad: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(grad)


def gradients(output: torch.Tensor, inputs: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """The gradients of `Σ output ⊙ G` for a fixed random `G` (a random cotangent, not the all-ones one)."""
    cotangent = random(*output.shape, seed=seed, grad=False)
    return list(torch.autograd.grad(output, inputs, cotangent))


def assert_same_function(ours, literal, inputs: list[torch.Tensor], tolerance: float = EXACT) -> None:
    """`ours(*inputs)` equals `literal(*inputs)`, and so do the gradients of every input."""
    out, expected = ours(*inputs), literal(*inputs)
    assert out.dtype == expected.dtype and out.shape == expected.shape
    assert relative_error(out, expected) <= tolerance
    for own, reference in zip(gradients(out, inputs, 9), gradients(expected, inputs, 9), strict=True):
        assert relative_error(own, reference) <= tolerance


@pytest.mark.parametrize("n", [1, 2, 5, 8])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_cyclic_row_shift_is_the_literal_rotation_and_its_inverse(n, dtype):
    matrix = random(n, n, seed=n, grad=False).to(dtype)
    shifted = cyclic_row_shift(matrix)
    assert torch.equal(shifted, literal_pi(matrix)) and shifted.is_contiguous()
    assert torch.equal(cyclic_row_shift(shifted, -1), matrix)
    transposed = matrix.T  # a non-contiguous input reads the same
    assert torch.equal(cyclic_row_shift(transposed), literal_pi(transposed.contiguous()))


@pytest.mark.parametrize(("n", "r"), SIZES)
def test_the_dense_multiplier_is_s_pi_of_b_a_with_its_gradients(n, r):
    factor_a, factor_b = random(r, n, seed=1), random(n, r, seed=2)
    assert_same_function(lambda a, b: shift_multiplier(a, b, SCALE), literal_multiplier, [factor_a, factor_b])
    assert shift_multiplier(factor_a, factor_b, SCALE).is_contiguous()


def test_the_dense_multiplier_is_built_in_the_requested_dtype_from_float32_factors():
    factor_a = random(3, 16, seed=1).float().detach().requires_grad_(True)
    factor_b = random(16, 3, seed=2).float().detach().requires_grad_(True)
    multiplier = shift_multiplier(factor_a, factor_b, SCALE, torch.bfloat16)
    assert multiplier.dtype == torch.bfloat16
    expected = literal_multiplier(factor_a.double(), factor_b.double())
    assert relative_error(multiplier, expected) <= 2**-7  # bfloat16 rounding of the factors and of P
    multiplier.sum().backward()
    assert factor_a.grad.dtype == factor_b.grad.dtype == torch.float32


class _LargeWrites(TorchDispatchMode):
    """Elements written by every operation whose output has at least `floor` elements and new storage
    (views of an input write nothing)."""

    def __init__(self, floor: int):
        super().__init__()
        self.floor, self.written = floor, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {arg.untyped_storage().data_ptr() for arg in args if isinstance(arg, torch.Tensor)}
        for tensor in out if isinstance(out, tuple | list) else [out]:
            if not isinstance(tensor, torch.Tensor) or tensor.numel() < self.floor:
                continue
            if tensor.untyped_storage().data_ptr() not in inputs:
                self.written.append((str(func), tensor.numel()))
        return out


def test_building_p_writes_one_n_by_2n_product_and_one_n_by_n_copy():
    """The previous build wrote B·A, [M, M], the rotated copy, the scaled copy and the cast copy (six n²);
    now one n × 2n product and its contiguous window copy: three n²."""
    n = 64
    factor_a, factor_b = random(4, n, seed=1).float(), random(n, 4, seed=2).float()
    with _LargeWrites(floor=n * n) as writes:
        shift_multiplier(factor_a, factor_b, SCALE, torch.bfloat16)
    assert sum(numel for _, numel in writes.written) == 3 * n * n, writes.written


@pytest.mark.parametrize("transposed", [False, True], ids=["rows-times-P-transposed", "rows-times-P"])
@pytest.mark.parametrize(("n", "r"), SIZES)
def test_the_structured_form_equals_the_dense_product_with_its_gradients(n, r, transposed):
    rows, factor_a, factor_b = random(5, n, seed=3), random(r, n, seed=1), random(n, r, seed=2)

    def dense(rows, factor_a, factor_b):
        multiplier = literal_multiplier(factor_a, factor_b)
        return rows @ multiplier if transposed else rows @ multiplier.T

    def structured(rows, factor_a, factor_b):
        return structured_shift(rows, factor_a, factor_b, SCALE, transposed)

    assert_same_function(structured, dense, [rows, factor_a, factor_b])


def test_the_structured_form_needs_no_input_gradient_and_returns_the_input_dtype():
    factor_a = random(2, 6, seed=1).float().detach().requires_grad_(True)
    factor_b = random(6, 2, seed=2).float().detach().requires_grad_(True)
    rows = random(4, 6, seed=3, grad=False).to(torch.bfloat16)
    out = structured_shift(rows, factor_a, factor_b, SCALE)
    assert out.dtype == torch.bfloat16
    expected = rows.double() @ literal_multiplier(factor_a.double(), factor_b.double()).T
    assert relative_error(out, expected) <= 2**-7
    out.float().sum().backward()
    assert factor_a.grad is not None and factor_b.grad is not None and rows.grad is None


def literal_layer(mode: str, bias: torch.Tensor | None):
    def layer(x, weight, factor_a, factor_b):
        multiplier = literal_multiplier(factor_a, factor_b)
        adapted = multiplier @ weight if mode == "pre" else weight @ multiplier
        out = x @ adapted.T
        return out if bias is None else out + bias

    return layer


@pytest.mark.parametrize("computation", SHIFT_COMPUTATIONS)
@pytest.mark.parametrize("mode", ["pre", "post"])
@pytest.mark.parametrize(("d_in", "d_out"), [(6, 9), (9, 6)], ids=["dout>din", "dout<din"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_every_computation_of_a_layer_is_the_literal_formula(computation, mode, d_in, d_out, with_bias):
    n = d_out if mode == "pre" else d_in
    weight = random(d_out, d_in, seed=4, grad=False)
    bias = random(d_out, seed=5, grad=False) if with_bias else None
    x = random(2, 3, d_in, seed=6)  # leading dimensions as a model has them
    factor_a, factor_b = random(3, n, seed=1), random(n, 3, seed=2)

    def ours(x, factor_a, factor_b):
        return shift_linear(x, weight, bias, factor_a, factor_b, SCALE, mode, computation)

    literal = literal_layer(mode, bias)
    assert_same_function(ours, lambda x, a, b: literal(x, weight, a, b), [x, factor_a, factor_b])


@pytest.mark.parametrize("computation", SHIFT_COMPUTATIONS)
def test_a_layer_under_bfloat16_autocast_computes_in_bfloat16_near_the_exact_value(computation):
    weight = random(12, 8, seed=4, grad=False).float()
    factor_a = random(2, 12, seed=1).float().detach().requires_grad_(True)
    factor_b = random(12, 2, seed=2).float().detach().requires_grad_(True)
    x = random(5, 8, seed=6, grad=False).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = shift_linear(x.bfloat16(), weight, None, factor_a, factor_b, SCALE, "pre", computation)
    assert out.dtype == torch.bfloat16
    expected = x.double() @ (literal_multiplier(factor_a.double(), factor_b.double()) @ weight.double()).T
    assert relative_error(out, expected) <= 2**-6


def test_bad_arguments_are_refused_with_the_fix():
    weight = torch.zeros(4, 3)
    factor_a, factor_b = torch.zeros(2, 4), torch.zeros(4, 2)
    with pytest.raises(ValueError, match="frozen"):
        shift_linear(
            torch.zeros(1, 3), weight.requires_grad_(True), None, factor_a, factor_b, 1.0, "pre", "weight"
        )
    weight.requires_grad_(False)
    with pytest.raises(ValueError, match="computation='fft'"):
        shift_linear(torch.zeros(1, 3), weight, None, factor_a, factor_b, 1.0, "pre", "fft")
    with pytest.raises(ValueError, match="mode='middle'"):
        shift_linear(torch.zeros(1, 3), weight, None, factor_a, factor_b, 1.0, "middle", "weight")
    with pytest.raises(ValueError, match="n = 4"):
        structured_shift(torch.zeros(2, 3), factor_a, factor_b, 1.0)
    with pytest.raises(ValueError, match=r"A \(r × n\) and B \(n × r\)"):
        shift_multiplier(factor_a, torch.zeros(3, 2), 1.0)


# --- choosing a computation ---------------------------------------------------------------------------------

NO_OVERHEAD = ShiftCosts(memory_pass=0.0, fft=1e9)  # dense multiply-adds only; FFTs priced out


def test_dense_choice_by_multiply_adds_is_the_flop_rule():
    """With memory free and FFTs priced out, the choice is the dense flop rule of docs/lorma_pi.md §1
    (training: 3·T·n² on activations against 2·n²·m + T·n·m for the weight; inference: T·n² against n²·m),
    so the weight path wins with many tokens and activations with few."""
    n = m = 1024
    for tokens, training in [(2048, True), (512, True), (2048, False), (512, False)]:
        chosen = choose_shift_computation(tokens, [(n, m)], 8, training, NO_OVERHEAD)
        if training:
            weight_wins = 2 * n * n * m + tokens * n * m < 3 * tokens * n * n
        else:
            weight_wins = n * n * m < tokens * n * n
        assert chosen == ("weight" if weight_wins else "activations")
    assert choose_shift_computation(2048, [(n, m)], 8, True, NO_OVERHEAD) == "weight"
    assert choose_shift_computation(512, [(n, m)], 8, True, NO_OVERHEAD) == "activations"
    assert choose_shift_computation(2048, [(n, m)], 8, False, NO_OVERHEAD) == "weight"
    assert choose_shift_computation(512, [(n, m)], 8, False, NO_OVERHEAD) == "activations"


def test_structured_wins_where_ffts_are_cheap_and_n_is_large_and_only_there():
    cheap_fft = ShiftCosts(memory_pass=1.0, fft=1.0)
    assert choose_shift_computation(8192, [(4096, 4096)], 8, True, cheap_fft) == "structured_activations"
    # few columns, many tokens: transforming W's m columns beats transforming the tokens
    assert choose_shift_computation(65536, [(4096, 64)], 8, True, cheap_fft) == "structured_weight"
    assert choose_shift_computation(8192, [(16, 16)], 8, True, cheap_fft) in ("activations", "weight")
    for device_type in ("cpu", "cuda"):
        costs = shift_costs(device_type, torch.bfloat16)
        assert choose_shift_computation(8192, [(4096, 4096)], 8, True, costs) == "weight"


def test_costs_add_up_over_slices_and_grow_with_tokens():
    costs = shift_costs("cpu", torch.bfloat16)
    one = shift_computation_costs(1024, [(256, 768)], 8, True, costs)
    two = shift_computation_costs(1024, [(256, 768), (256, 768)], 8, True, costs)
    more_tokens = shift_computation_costs(4096, [(256, 768)], 8, True, costs)
    for name in SHIFT_COMPUTATIONS:
        assert two[name] == pytest.approx(2 * one[name])
        assert more_tokens[name] > one[name]
    assert shift_costs("cpu", torch.float16) == costs  # unlisted dtypes use the device's bfloat16 entry
    assert shift_costs("mps", torch.bfloat16) == shift_costs("cuda", torch.bfloat16)


# --- torch.compile ------------------------------------------------------------------------------------------


def _compiled_matches_eager(function, inputs: list[torch.Tensor], backend: str, tolerance: float) -> None:
    compiled = torch.compile(function, fullgraph=True, backend=backend)
    out, expected = compiled(*inputs), function(*inputs)
    assert relative_error(out, expected) <= tolerance
    for own, reference in zip(gradients(out, inputs, 9), gradients(expected, inputs, 9), strict=True):
        assert relative_error(own, reference) <= tolerance


def _pi_functions() -> list[tuple[str, object, list[torch.Tensor]]]:
    weight = random(7, 5, seed=4, grad=False)
    cases = [
        ("pi", lambda m: pi(m), [random(6, 6, seed=1)]),
        ("inverse-shift", lambda m: cyclic_row_shift(m, -1), [random(6, 6, seed=1)]),
        (
            "multiplier",
            lambda a, b: shift_multiplier(a, b, SCALE),
            [random(2, 6, seed=1), random(6, 2, seed=2)],
        ),
    ]
    for mode in ("pre", "post"):
        n = 7 if mode == "pre" else 5
        for computation in SHIFT_COMPUTATIONS:
            cases.append(
                (
                    f"{mode}-{computation}",
                    lambda x, a, b, mode=mode, computation=computation: shift_linear(
                        x, weight, None, a, b, SCALE, mode, computation
                    ),
                    [random(3, 5, seed=6), random(2, n, seed=1), random(n, 2, seed=2)],
                )
            )
    return cases


PI_FUNCTIONS = _pi_functions()


@pytest.mark.parametrize(("name", "function", "inputs"), PI_FUNCTIONS, ids=[case[0] for case in PI_FUNCTIONS])
def test_every_pi_function_traces_into_one_graph_and_matches_eager(name, function, inputs):
    """fullgraph=True fails on any graph break (the `as_strided` rotation broke 22 times in a model);
    `aot_eager` traces forward and backward as inductor does, without compiling kernels."""
    torch._dynamo.reset()
    _compiled_matches_eager(function, inputs, "aot_eager", EXACT)


@pytest.mark.parametrize("mode", ["pre", "post"])
@pytest.mark.parametrize("path", ["activations", "weight"])
def test_a_shift_layer_has_no_graph_break(mode, path):
    torch._dynamo.reset()
    base = nn.Linear(6, 9).double().requires_grad_(False)
    layer = LormaLinear(base, AdapterConfig(inflation="shift", mode=mode, r=2, alpha=4.0, targets=["layer"]))
    layer.shift_path = path
    explanation = torch._dynamo.explain(layer)(random(4, 6, seed=6, grad=False))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex operators")
@pytest.mark.parametrize(("name", "function", "inputs"), PI_FUNCTIONS, ids=[case[0] for case in PI_FUNCTIONS])
def test_every_pi_function_compiles_with_inductor_and_matches_eager(name, function, inputs):
    torch._dynamo.reset()
    _compiled_matches_eager(function, [tensor.float().detach().requires_grad_(True) for tensor in inputs],
                            "inductor", 1e-5)  # fmt: skip
