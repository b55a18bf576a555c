"""Our LoRA layer against PEFT's LoRA: with identical factors, a tiny BERT and a tiny GPT-2 (Conv1D, fused
`c_attn`) in training mode, dropout included, compute the same logits and the same factor gradients in
float64. On GPT-2, PEFT can only adapt the fused `c_attn` as a whole; both of its readings are checked:
our three slices with one shared A are PEFT's rank-r LoRA on `c_attn`, and our q and v slices are PEFT's
rank-2r LoRA on `c_attn` with block factors — except that PEFT's blocks that should stay zero (the k rows
and the q/v cross terms) get gradients: PEFT's fused adapter would train k, ours leaves it untouched
(method.md §4.8)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import transformers
from torch import nn

from lorma_exp.adapters import AdapterConfig, LoraLinear, inject_adapters, iter_adapter_layers

from .helpers import factor_gradients, relative_error, set_factors

peft = pytest.importorskip("peft")

# PEFT calls a transformers method that warns about its own deprecation.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

TOLERANCE = 1e-10
RANK, ALPHA, DROPOUT = 4, 8, 0.1
HIDDEN, HEADS, VOCAB, LAYERS = 16, 2, 64, 2
FACTOR_STD = 0.3
INPUT_SEED, FACTOR_SEED, DROPOUT_SEED = 0, 1, 2


def _bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=40,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def _gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def _base(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build().double().train()  # training mode: the models' own dropout and the adapters' are on


def _ours(base: nn.Module, targets: list[str]) -> tuple[nn.Module, dict[str, LoraLinear]]:
    config = AdapterConfig(
        method="lora", r=RANK, alpha=ALPHA, dropout=DROPOUT, targets=targets, modules_to_save=[]
    )
    model = inject_adapters(base, config)
    return model, dict(iter_adapter_layers(model))


def _peft(base: nn.Module, names: list[str], rank: int, alpha: float, conv1d: bool = False) -> nn.Module:
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=DROPOUT, target_modules=names, fan_in_fan_out=conv1d
    )
    return peft.get_peft_model(base, config)


def _peft_factors(model: nn.Module, name: str) -> list[tuple[str, nn.Parameter, nn.Parameter]]:
    """`(layer name, lora_A, lora_B)` of every PEFT LoRA layer whose name ends with `name`."""
    return [
        (layer_name, layer.lora_A["default"].weight, layer.lora_B["default"].weight)
        for layer_name, layer in model.base_model.model.named_modules()
        if layer_name.endswith(name) and hasattr(layer, "lora_A")
    ]


def _logits_after_backward(model: nn.Module) -> torch.Tensor:
    """Logits of a seeded batch under a fixed dropout seed, after backward of `sum(logits · G)`, G seeded."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    ids = torch.randint(3, VOCAB, (2, 7), generator=generator)
    torch.manual_seed(DROPOUT_SEED)
    logits = model(input_ids=ids).logits
    upstream = torch.randn(logits.shape, generator=generator, dtype=logits.dtype)
    (logits * upstream).sum().backward()
    return logits.detach()


def _random(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64) * FACTOR_STD


def test_bert_query_value_lora_equals_peft() -> None:
    base = _base(_bert)
    our_model, ours = _ours(copy.deepcopy(base), ["q", "v"])
    theirs = _peft(base, list(ours), RANK, ALPHA)
    their_factors = {
        name: (a, b) for name, a, b in _peft_factors(theirs, "query") + _peft_factors(theirs, "value")
    }
    assert set(their_factors) == set(ours)
    generator = torch.Generator().manual_seed(FACTOR_SEED)
    for name, layer in ours.items():
        factors = (_random(generator, RANK, layer.in_features), _random(generator, layer.out_features, RANK))
        set_factors(layer, {"": factors})
        with torch.no_grad():
            for parameter, value in zip(their_factors[name], factors, strict=True):
                parameter.copy_(value)
    assert relative_error(_logits_after_backward(our_model), _logits_after_backward(theirs)) <= TOLERANCE
    for name, layer in ours.items():
        ((grad_a, grad_b),) = factor_gradients(layer).values()
        their_a, their_b = their_factors[name]
        assert relative_error(grad_a, their_a.grad) <= TOLERANCE, name
        assert relative_error(grad_b, their_b.grad) <= TOLERANCE, name


def test_gpt2_fused_qkv_slices_with_one_shared_a_equal_peft_lora_on_c_attn() -> None:
    """Naming `c_attn` gives our LoRA three slices; with A shared and B split by rows they are PEFT's
    rank-r LoRA on the whole Conv1D: same logits, dA = the sum of the slices' dA, dB split by rows."""
    base = _base(_gpt2)
    our_model, ours = _ours(copy.deepcopy(base), ["c_attn"])
    theirs = _peft(base, ["c_attn"], RANK, ALPHA, conv1d=True)
    their_factors = {name: (a, b) for name, a, b in _peft_factors(theirs, "c_attn")}
    assert set(their_factors) == set(ours)
    generator = torch.Generator().manual_seed(FACTOR_SEED)
    for name, layer in ours.items():
        assert layer.slice_names == ("q", "k", "v")
        factor_a = _random(generator, RANK, layer.in_features)
        factor_b = _random(generator, layer.out_features, RANK)
        set_factors(layer, dict(zip("qkv", ((factor_a, b) for b in factor_b.chunk(3)), strict=True)))
        with torch.no_grad():
            for parameter, value in zip(their_factors[name], (factor_a, factor_b), strict=True):
                parameter.copy_(value)
    assert relative_error(_logits_after_backward(our_model), _logits_after_backward(theirs)) <= TOLERANCE
    for name, layer in ours.items():
        gradients = factor_gradients(layer)
        their_a, their_b = their_factors[name]
        assert relative_error(sum(gradients[p][0] for p in "qkv"), their_a.grad) <= TOLERANCE, name
        assert relative_error(torch.cat([gradients[p][1] for p in "qkv"]), their_b.grad) <= TOLERANCE, name


def test_gpt2_query_value_slices_are_a_block_of_peft_lora_on_c_attn() -> None:
    """Our q and v slices (rank r each) are PEFT's rank-2r LoRA on `c_attn` with A = [A_q; A_v] and B
    block-diagonal on the q and v rows: same logits, same gradients on the blocks. PEFT's off-block entries
    (k rows, q/v cross terms) are zero but get gradients: its fused adapter would learn k too."""
    base = _base(_gpt2)
    our_model, ours = _ours(copy.deepcopy(base), ["q", "v"])
    theirs = _peft(base, ["c_attn"], 2 * RANK, 2 * ALPHA, conv1d=True)  # the same scaling s = alpha / r
    their_factors = {name: (a, b) for name, a, b in _peft_factors(theirs, "c_attn")}
    assert set(their_factors) == set(ours)
    # (rows of c_attn's output, columns of PEFT's lora_B) of each projection's block
    blocks = {"q": (slice(0, HIDDEN), slice(0, RANK)), "v": (slice(2 * HIDDEN, None), slice(RANK, None))}
    generator = torch.Generator().manual_seed(FACTOR_SEED)
    for name, layer in ours.items():
        assert layer.slice_names == ("q", "v")
        factors = {p: (_random(generator, RANK, HIDDEN), _random(generator, HIDDEN, RANK)) for p in "qv"}
        set_factors(layer, factors)
        their_a, their_b = their_factors[name]
        with torch.no_grad():
            their_a.copy_(torch.cat([factors[p][0] for p in "qv"]))
            their_b.zero_()
            for p, (row, column) in blocks.items():
                their_b[row, column] = factors[p][1]
    assert relative_error(_logits_after_backward(our_model), _logits_after_backward(theirs)) <= TOLERANCE
    for name, layer in ours.items():
        gradients = factor_gradients(layer)
        their_a, their_b = their_factors[name]
        off_block = torch.ones_like(their_b, dtype=torch.bool)
        for p, (row, column) in blocks.items():
            assert relative_error(gradients[p][0], their_a.grad[column]) <= TOLERANCE, name
            assert relative_error(gradients[p][1], their_b.grad[row, column]) <= TOLERANCE, name
            off_block[row, column] = False
        assert their_b.grad[off_block].abs().max() > 1e-3 * their_b.grad.abs().max()
