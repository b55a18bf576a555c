"""Our LoRMA layers against the authors' released layers (tests/golden/authors_oracle.safetensors, written by
scripts/record_authors_oracle.py from github:Exploration-Lab/LoRMA): the same float64 inputs and factors
give the same outputs and gradients, their documented bugs (method.md §4.6) show exactly as documented, and
under the same seed we start where they start."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors import safe_open
from torch import nn

from lorma_exp.adapters import AdapterConfig, LormaLinear, inject_adapters, iter_adapter_layers

from .helpers import factor_gradients, get_factors, relative_error, set_factors

REPO_ROOT = Path(__file__).resolve().parents[2]
ORACLE = REPO_ROOT / "tests" / "golden" / "authors_oracle.safetensors"
RECORDER = REPO_ROOT / "scripts" / "record_authors_oracle.py"
TOLERANCE = 1e-10  # float64: the weight-building and activation forms differ only by rounding
INIT_TOLERANCE = 1e-12  # the same draws and the same operations


def _read_oracle() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with safe_open(str(ORACLE), "pt") as file:
        metadata = json.loads(file.metadata()["oracle"])
        return {key: file.get_tensor(key) for key in file.keys()}, metadata  # noqa: SIM118


TENSORS, METADATA = _read_oracle()
CASES = {case["name"]: case for case in METADATA["cases"]}
GPT2_CASES = [name for name, case in CASES.items() if case["authors_class"] == "Attention"]
NLU_CASES = [name for name in CASES if name not in GPT2_CASES]


def _recorded(case: str) -> dict[str, torch.Tensor]:
    prefix = f"{case}/"
    return {key[len(prefix) :]: tensor for key, tensor in TENSORS.items() if key.startswith(prefix)}


def _config(case: dict[str, Any], targets: list[str], alpha: float | None = None) -> AdapterConfig:
    return AdapterConfig(
        method="lorma",
        inflation=case["inflation"],
        mode=case["mode"],
        r=case["r"],
        alpha=case["alpha"] if alpha is None else alpha,
        dropout=case["dropout"],
        dropout_on="input",  # the authors drop out the whole layer input
        targets=targets,
        modules_to_save=[],
    )


def _our_nlu_layer(name: str, alpha: float | None = None) -> LormaLinear:
    """Our layer on the recorded base weights, injected as a user injects it, factors as initialised."""
    data = _recorded(name)
    d_out, d_in = data["weight"].shape
    model = nn.ModuleDict({"dense": nn.Linear(d_in, d_out, dtype=torch.float64)})
    with torch.no_grad():
        model["dense"].weight.copy_(data["weight"])
        model["dense"].bias.copy_(data["bias"])
    torch.manual_seed(METADATA["seeds"]["init"])
    inject_adapters(model, _config(CASES[name], ["dense"], alpha))
    return model["dense"].eval()


def _our_gpt2_layer(name: str) -> LormaLinear:
    """The fused `c_attn` of a one-block transformers GPT-2 with adapters on q and v, on the recorded weights."""
    data = _recorded(name)
    d_in = data["weight"].shape[0]
    config = transformers.GPT2Config(vocab_size=16, n_embd=d_in, n_layer=1, n_head=2, n_positions=8)
    model = transformers.GPT2Model(config).double()
    inject_adapters(model, _config(CASES[name], ["q", "v"]))
    layer = dict(iter_adapter_layers(model))["h.0.attn.c_attn"]
    assert layer.slice_names == ("q", "v")
    with torch.no_grad():
        layer.base_layer.weight.copy_(data["weight"])
        layer.base_layer.bias.copy_(data["bias"])
    return layer.eval()


def _recorded_factors(name: str, prefix: str = "") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    data = _recorded(name)
    if name in GPT2_CASES:
        return {p: (data[f"{prefix}A_{p}"], data[f"{prefix}B_{p}"]) for p in "qv"}
    return {"": (data[f"{prefix}A"], data[f"{prefix}B"])}


def _run(layer: LormaLinear, name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Our output and the gradients of the authors' seeded loss, for the recorded input and trained factors,
    named as the recording names them."""
    data = _recorded(name)
    set_factors(layer, _recorded_factors(name))
    if CASES[name]["dropout"]:
        layer.train()
        torch.manual_seed(METADATA["seeds"]["dropout"])
    x = data["x"].clone().requires_grad_(True)
    out = layer(x)
    (out * data["grad_output"]).sum().backward()
    gradients = {"grad_x": x.grad}
    for slice_name, (grad_a, grad_b) in factor_gradients(layer).items():
        suffix = f"_{slice_name}" if slice_name else ""
        gradients |= {f"grad_A{suffix}": grad_a, f"grad_B{suffix}": grad_b}
    return out.detach(), gradients


def _our_layer(name: str, alpha: float | None = None) -> LormaLinear:
    return _our_gpt2_layer(name) if name in GPT2_CASES else _our_nlu_layer(name, alpha)


AGREEING = [
    pytest.param(name, path, id=f"{name}-{path}" if path else name)
    for name, case in CASES.items()
    if case["documented_difference"] != "post_none_drops_scaling"
    for path in (("activations", "weight") if case["inflation"] == "shift" else (None,))
]


@pytest.mark.parametrize(("name", "shift_path"), AGREEING)
def test_outputs_and_gradients_equal_the_authors(name: str, shift_path: str | None) -> None:
    layer = _our_layer(name)
    if shift_path:
        layer.shift_path = shift_path
    out, gradients = _run(layer, name)
    data = _recorded(name)
    assert relative_error(out, data["output"]) <= TOLERANCE
    recorded_gradients = {key for key in data if key.startswith("grad_") and key != "grad_output"}
    assert set(gradients) == recorded_gradients
    for key, gradient in gradients.items():
        assert relative_error(gradient, data[key]) <= TOLERANCE, key


def test_their_lorma_plus_post_without_inflation_drops_the_scaling() -> None:
    """method.md §4.6: `LormaLinear_plus` post with `do_rri=False` builds `W·B·A`, not `W·s·B·A`. Their
    outputs and gradients are ours at s = 1; ours follow the corrected formula."""
    (name,) = [n for n, c in CASES.items() if c["documented_difference"] == "post_none_drops_scaling"]
    case, data = CASES[name], _recorded(name)
    scale = case["alpha"] / case["r"]
    assert scale != 1
    unscaled_out, unscaled_gradients = _run(_our_layer(name, alpha=case["r"]), name)
    assert relative_error(unscaled_out, data["output"]) <= TOLERANCE
    for key, gradient in unscaled_gradients.items():
        assert relative_error(gradient, data[key]) <= TOLERANCE, key

    out, _ = _run(_our_layer(name), name)
    weight, bias, factor_a, factor_b = data["weight"], data["bias"], data["A"], data["B"]
    corrected = data["x"] @ (weight @ (scale * factor_b @ factor_a)).T + bias
    assert relative_error(out, corrected) <= TOLERANCE
    assert relative_error(out - bias, scale * (data["output"] - bias)) <= TOLERANCE
    assert relative_error(out, data["output"]) > 0.1


@pytest.mark.parametrize("name", NLU_CASES)
def test_same_seed_same_initial_factors_as_the_authors(name: str) -> None:
    """Under one seed their NLU layers and ours draw the same initial factors, bit for bit (LoRMA₊: B = 0,
    A Kaiming; π: B Kaiming with a column of ones, A = e₀e₀ᵀ; none: A = pinv(B); π and none then ÷ √s)."""
    layer = _our_nlu_layer(name)
    data = _recorded(name)
    ((factor_a, factor_b),) = get_factors(layer).values()
    assert torch.equal(factor_a, data["init_A"])
    assert torch.equal(factor_b, data["init_B"])
    with torch.no_grad():
        ours = layer(data["x"])
    theirs, bias = data["init_output"], data["bias"]
    if CASES[name]["documented_difference"] == "post_none_drops_scaling":
        scale = CASES[name]["alpha"] / CASES[name]["r"]
        assert relative_error(ours - bias, scale * (theirs - bias)) <= INIT_TOLERANCE
    else:
        assert relative_error(ours, theirs) <= INIT_TOLERANCE


@pytest.mark.parametrize("name", list(CASES))
def test_rank_inflation_starts_at_the_identity_in_their_code_and_ours(name: str) -> None:
    data, inflation = _recorded(name), CASES[name]["inflation"]
    layer = _our_layer(name)
    with torch.no_grad():
        base, ours = layer.base_layer(data["x"]), layer(data["x"])
    theirs = data["init_output"]
    if inflation == "none":  # a rank-r projector B·pinv(B), as documented: not the identity
        assert relative_error(theirs, base) > 0.1
        assert relative_error(ours, base) > 0.1
        return
    # Their weight-building form differs from the frozen layer's own product by rounding at most.
    assert relative_error(theirs, base) <= INIT_TOLERANCE
    if inflation == "rri":  # B = 0: our update is an exact zero
        assert torch.equal(ours, base)
    else:  # s·π(B·A) = I up to the rounding of the √s divisions
        assert relative_error(ours, base) <= INIT_TOLERANCE


def test_their_gpt2_lorma_plus_swaps_the_initialisation() -> None:
    """method.md §4.6: the authors' GPT-2 LoRMA₊ starts with A = 0 and B random; we (and their NLU code)
    start with B = 0 and A random. Both are the identity at init (previous test)."""
    (name,) = [n for n, c in CASES.items() if c["documented_difference"] == "gpt2_plus_swapped_init"]
    theirs = _recorded_factors(name, prefix="init_")
    ours = get_factors(_our_layer(name))
    for projection in "qv":
        their_a, their_b = theirs[projection]
        our_a, our_b = ours[projection]
        assert not their_a.any() and their_b.abs().min() > 0
        assert not our_b.any() and our_a.abs().min() > 0


def test_gpt2_lorma_pi_starts_as_the_authors_do() -> None:
    """GPT-2 LoRMA_π: A = e₀e₀ᵀ/√s and column 0 of B = 1/√s, in their code and ours, so M = I per slice."""
    (name,) = [n for n, c in CASES.items() if c["authors_class"] == "Attention" and c["inflation"] == "shift"]
    case = CASES[name]
    root_scale = math.sqrt(case["alpha"] / case["r"])
    layer = _our_layer(name)
    for projection in "qv":
        their_a, their_b = _recorded_factors(name, prefix="init_")[projection]
        our_a, our_b = get_factors(layer)[projection]
        for factor_a, factor_b in ((their_a, their_b), (our_a, our_b)):
            expected_a = torch.zeros_like(factor_a)
            expected_a[0, 0] = 1 / root_scale
            assert torch.equal(factor_a, expected_a)
            assert torch.equal(factor_b[:, 0], torch.full_like(factor_b[:, 0], 1 / root_scale))
        identity = torch.eye(their_b.shape[0], dtype=torch.float64)
        assert relative_error(layer.multiplier(projection), identity) <= INIT_TOLERANCE


def test_the_oracle_covers_every_inflation_and_mode_of_their_code() -> None:
    covered = {(c["authors_class"], c["inflation"], c["mode"], c["dropout"] > 0) for c in CASES.values()}
    expected = {
        *(("LormaLinear_plus", i, m, False) for i in ("rri", "none") for m in ("pre", "post")),
        *(("LormaLinear_pi", i, m, False) for i in ("shift", "none") for m in ("pre", "post")),
        ("LormaLinear_plus", "rri", "pre", True),
        ("LormaLinear_pi", "shift", "pre", True),
        ("Attention", "rri", "pre", False),
        ("Attention", "shift", "pre", False),
    }
    assert covered == expected


def _load_recorder():
    spec = importlib.util.spec_from_file_location("record_authors_oracle", RECORDER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_committed_oracle_is_what_their_code_computes_today() -> None:
    recorder = _load_recorder()
    repo = recorder.authors_repo()
    if not repo.exists():
        pytest.skip(f"no snapshot of the authors' code at {repo} (set ${recorder.AUTHORS_REPO_ENV})")
    tensors, metadata = recorder.record(repo, METADATA["commit"])
    assert {k: v for k, v in metadata.items() if k != "torch"} == {
        k: v for k, v in METADATA.items() if k != "torch"
    }
    assert set(tensors) == set(TENSORS)
    for key, tensor in tensors.items():
        assert tensor.dtype == TENSORS[key].dtype == torch.float64, key
        assert torch.allclose(tensor, TENSORS[key], rtol=1e-12, atol=1e-14), key
