"""Every case (tiny BERT, RoBERTa, GPT-2, Llama, a plain MLP × every method) through every behaviour, in the
style of PEFT's test_custom_models: identity at init, training touches only adapters and heads, merge,
unmerge, save/load, PEFT export."""

from __future__ import annotations

import copy
import json
from importlib import metadata

import pytest
import torch
from safetensors.torch import load_file

from lorma_exp.adapters import (
    count_trainable,
    export_peft_lora,
    inject_adapters,
    iter_adapter_layers,
    load_adapters,
    merge_adapters,
    save_adapters,
    unmerge_adapters,
)

from .cases import Case, perturb_adapters, relative_error

# PEFT calls a transformers method that warns about its own deprecation.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

MERGE_TOLERANCE = 1e-5  # float32 merge and export tolerance the issue sets
SHIFT_INIT_TOLERANCE = 1e-6  # s·π(BA) equals I only up to rounding of the √s divisions


def adapted(case: Case, perturb: bool = True) -> torch.nn.Module:
    model = inject_adapters(case.spec.build(), case.config())
    if perturb:
        perturb_adapters(model)
    return model


def test_starts_as_the_base_model(case: Case) -> None:
    inputs = case.spec.inputs()
    base_logits = case.spec.logits(case.spec.build(), inputs)
    logits = case.spec.logits(adapted(case, perturb=False), inputs)
    if case.method.at_init == "base":
        assert torch.equal(logits, base_logits)  # B = 0 (and g = 1): the adapter adds an exact zero
    elif case.method.at_init == "rounding":
        assert relative_error(logits, base_logits) <= SHIFT_INIT_TOLERANCE
    else:  # LoRMA without inflation starts from the projector B·pinv(B), which is not I
        assert relative_error(logits, base_logits) > 1e-3


def test_an_optimizer_step_changes_only_adapters_and_heads(case: Case) -> None:
    model = adapted(case)
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    # Adam moves every parameter with a non-zero gradient by about lr, however small the gradient.
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    case.spec.logits(model, case.spec.inputs()).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # what DDP needs
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == trainable
    config = case.config()
    factor_names = case.method.factor_names
    for name in trainable:
        is_factor = name.rsplit(".", 1)[-1] in factor_names
        is_head = any(name.startswith(head + ".") for head in (case.spec.modules_to_save or ("classifier",)))
        is_bias = config.bias != "none" and name.endswith("bias")
        assert is_factor or is_head or is_bias, name
    counts = count_trainable(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["adapter"] == sum(
        p.numel() for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] in factor_names
    )


def test_merged_model_computes_the_adapted_function(case: Case, tmp_path) -> None:
    model = adapted(case)
    inputs = case.spec.inputs()
    expected = case.spec.logits(model, inputs)
    merged = merge_adapters(model)
    assert not list(iter_adapter_layers(merged))
    assert relative_error(case.spec.logits(merged, inputs), expected) <= MERGE_TOLERANCE
    if not case.spec.is_transformers:
        assert not any("lor" in name or "base_layer" in name for name in merged.state_dict())
        return
    merged.save_pretrained(tmp_path)
    written = (tmp_path / "config.json").read_text() + " ".join(load_file(tmp_path / "model.safetensors"))
    for trace in ("lorma", "lora_", "base_layer", "adapter"):
        assert trace not in written
    reloaded = type(merged).from_pretrained(tmp_path).eval()
    assert relative_error(case.spec.logits(reloaded, inputs), expected) <= MERGE_TOLERANCE


def test_unmerge_restores_weights_and_adapters(case: Case) -> None:
    model = adapted(case)
    inputs = case.spec.inputs()
    expected = case.spec.logits(model, inputs)
    originals = {name: layer.base_layer.weight.detach().clone() for name, layer in iter_adapter_layers(model)}
    merged = merge_adapters(model)
    if not case.method.invertible:
        with pytest.raises(ValueError, match="no inverse"):
            unmerge_adapters(merged)
        return
    restored = unmerge_adapters(merged)
    layers = dict(iter_adapter_layers(restored))
    assert set(layers) == set(originals)
    for name, layer in layers.items():
        assert relative_error(layer.base_layer.weight, originals[name]) <= MERGE_TOLERANCE
    assert relative_error(case.spec.logits(restored, inputs), expected) <= MERGE_TOLERANCE
    case.spec.logits(restored, inputs).sum().backward()  # training can go on
    assert all(p.grad is not None for layer in layers.values() for p in layer.adapter_parameters())


def test_save_load_round_trip(case: Case, tmp_path) -> None:
    model = adapted(case)
    with torch.no_grad():  # trained heads and biases must travel too
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01)
    inputs = case.spec.inputs()
    expected = case.spec.logits(model, inputs)
    save_adapters(model, tmp_path, base_model_name_or_path="tiny/base")
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    config = case.config()
    assert {key: written[key] for key in ("method", "inflation", "mode", "r", "alpha")} == {
        "method": config.method,
        "inflation": config.inflation,
        "mode": config.mode,
        "r": config.r,
        "alpha": config.alpha,
    }
    assert written["base_model_name_or_path"] == "tiny/base"
    assert written["lorma_exp_version"] == metadata.version("lorma-exp")
    stored = load_file(tmp_path / "adapter_model.safetensors")
    assert set(stored) == {n for n, p in model.named_parameters() if p.requires_grad}
    loaded = load_adapters(case.spec.build(), tmp_path)
    assert torch.equal(case.spec.logits(loaded, inputs), expected)
    assert count_trainable(loaded) == count_trainable(model)


def test_peft_export_round_trip(case: Case, tmp_path) -> None:
    peft = pytest.importorskip("peft")
    model = adapted(case)
    inputs = case.spec.inputs()
    expected = case.spec.logits(model, inputs)
    if case.method.exact_lora_export:
        errors = export_peft_lora(model, tmp_path)
        assert set(errors.values()) == {0.0}
    else:
        with pytest.raises(ValueError, match="full rank"):
            export_peft_lora(model, tmp_path)
        # At the full rank of every layer the truncated SVD keeps everything: exact again.
        full_rank = max(max(layer.in_features, layer.out_features) for _, layer in iter_adapter_layers(model))
        errors = export_peft_lora(model, tmp_path, lossy_rank=full_rank)
        assert max(errors.values()) < 1e-12
    served = peft.PeftModel.from_pretrained(case.spec.build(), tmp_path).eval()
    assert relative_error(case.spec.logits(served, inputs), expected) <= MERGE_TOLERANCE


def test_lossy_export_reports_the_truncation_error(tmp_path) -> None:
    case = Case("llama", "lorma-shift-pre")
    model = adapted(case)
    originals = {
        name: layer.base_layer.weight.detach().double().clone() for name, layer in iter_adapter_layers(model)
    }
    errors = export_peft_lora(model, tmp_path, lossy_rank=2)
    merged = merge_adapters(copy.deepcopy(model))
    for name, original in originals.items():
        delta = merged.get_submodule(name).weight.detach().double() - original
        singular = torch.linalg.svdvals(delta)
        expected = float(singular[2:].norm() / singular.norm())
        assert errors[name] == pytest.approx(expected, rel=1e-4)


def test_merge_refuses_non_finite_weights_and_changes_nothing(case: Case) -> None:
    model = adapted(case)
    last_name, last_layer = list(iter_adapter_layers(model))[-1]
    with torch.no_grad():
        next(last_layer.adapter_parameters()).fill_(float("nan"))
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match=f"'{last_name}' gives NaN or Inf"):
        merge_adapters(model)
    assert len(list(iter_adapter_layers(model))) > 0
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters() if "lor" not in name)
