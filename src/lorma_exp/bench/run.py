"""The three scopes of a benchmark run, each producing one record per variant.

- layer: forward + backward of one adapted linear (the input requires grad, as inside a network);
- model: a full training step (forward, loss, backward, AdamW step) of a decoder per training case (target
  set, adapter dropout), the embedded input requiring grad so that every variant, the frozen floor
  included, backpropagates through every layer;
- inference: a no-grad forward over a batch (prefill) of the base model, of an identical copy of it (the
  noise control), of the same model with LoRMA₊ adapters unmerged, and with them merged into the weights.

Every call runs under the precision the trainer would use (`presets.Precision`): weights in its dtype,
inside `torch.autocast` when it is on.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import transformers
from torch import nn

from lorma_exp.adapters import AdapterConfig, inject_adapters, iter_adapter_layers, merge_adapters
from lorma_exp.adapters.config import normalise_targets
from lorma_exp.adapters.targets import default_modules_to_save, resolve_targets

from .measure import (
    CUDA_PEAK,
    RESIDENT,
    SAVED_TENSORS,
    Spread,
    Step,
    adapter_state_bytes,
    cuda_peak_bytes,
    per_round_ratios,
    resident_bytes,
    round_robin,
    saved_tensor_bytes,
    warm_up,
)
from .presets import TARGET_SETS, LayerShape, ModelCase, ModelShape, Precision, Preset
from .variants import TRAIN_VARIANTS, Adaptation, OneLinear, Variant, share_frozen_weights, shift_computations

SCOPES = ("layer", "model", "inference")
INFERENCE_VARIANTS = {
    "base": "base model, no adapter",
    "base_copy": "a second, identical base model (the noise control)",
    "merged": "LoRMA₊ pre merged into the weights (merge_adapters)",
    "unmerged": "LoRMA₊ pre adapters, unmerged",
}
#: Targets of the inference scope: the paper's LLaMA setting, the heavier of the two target sets.
INFERENCE_TARGETS = "mlp"
#: Variants every ratio is also taken against, when the group has them.
REFERENCES = ("frozen", "lora", "peft_lora", "peft_lora_same_dtype", "base")
SEED = 0


@dataclass
class Measured:
    """One variant's timings and memory, before ratios are taken."""

    description: str
    samples: list[float]
    peak_bytes: int
    saved_bytes: int | None
    adapter_state_bytes: int
    trainable_params: int
    shift_computations: dict[str, int] | None


@dataclass(frozen=True)
class Setting:
    """What every scope needs to know about the run."""

    preset: Preset
    device: torch.device
    device_label: str
    repeats: int
    clock: str

    @property
    def alpha_over_r(self) -> float:
        return self.preset.alpha_over_r

    def memory_measure(self, training: bool) -> str:
        if self.device.type == "cuda":
            return CUDA_PEAK
        return SAVED_TENSORS if training else RESIDENT


def precision_context(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast as the trainer opens it around every forward and loss (`trainer.precision`), or nothing."""
    if precision.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast)


def _compute_dtype(precision: Precision) -> torch.dtype:
    return precision.autocast or precision.weights


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def _measure(
    setting: Setting,
    steps: dict[str, Step],
    descriptions: dict[str, str],
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer | None],
    training: bool,
    computations: dict[str, dict[str, int] | None],
) -> dict[str, Measured]:
    """Warm every step up, measure its memory once, then time all of them round-robin."""
    warm_up(steps, setting.preset.warmup)
    memory: dict[str, tuple[int, int | None, int]] = {}
    for name, step in steps.items():
        model = models[name]
        saved = saved_tensor_bytes(step, model.parameters()) if training else None
        state = adapter_state_bytes(model, optimizers[name])
        resident = resident_bytes(model, optimizers[name])
        if setting.device.type == "cuda":
            peak = cuda_peak_bytes(step, setting.device, resident)
        else:
            peak = saved + state if saved is not None else resident
        memory[name] = (peak, saved, state)
    samples = round_robin(steps, setting.repeats, setting.device, setting.clock)
    return {
        name: Measured(
            description=descriptions[name],
            samples=samples[name],
            peak_bytes=memory[name][0],
            saved_bytes=memory[name][1],
            adapter_state_bytes=memory[name][2],
            trainable_params=sum(parameter.numel() for parameter in _trainable(models[name])),
            shift_computations=computations.get(name),
        )
        for name in steps
    }


def _records(
    setting: Setting,
    scope: str,
    group: dict[str, Any],
    shape: dict[str, Any],
    tokens: int,
    measured: dict[str, Measured],
) -> list[dict[str, Any]]:
    """One JSON record per variant: median time and spread, memory, and ratios to the references present
    (`REFERENCES`), of medians and per round. `group` holds what the group's variants share (targets,
    dropout, precision)."""
    medians = {name: Spread.of(entry.samples) for name, entry in measured.items()}
    samples = {name: entry.samples for name, entry in measured.items()}
    lora = measured.get("lora")
    records = []
    for name, entry in measured.items():
        spread = medians[name]
        record = {
            "scope": scope,
            "variant": name,
            "description": entry.description,
            **group,
            "shape": shape,
            "device": setting.device_label,
            "ms": spread.median,
            "ms_q25": spread.q25,
            "ms_q75": spread.q75,
            "repeats": len(entry.samples),
            "tokens_per_s": tokens / (spread.median / 1e3),
            "peak_bytes": entry.peak_bytes,
            "memory_measure": setting.memory_measure(entry.saved_bytes is not None),
            "saved_bytes": entry.saved_bytes,
            "adapter_state_bytes": entry.adapter_state_bytes,
            "trainable_params": entry.trainable_params,
            "shift_computations": entry.shift_computations,
            "peak_ratio_vs_lora": entry.peak_bytes / lora.peak_bytes if lora and lora.peak_bytes else None,
            "saved_ratio_vs_lora": (
                entry.saved_bytes / lora.saved_bytes
                if lora and lora.saved_bytes and entry.saved_bytes is not None
                else None
            ),
        }
        for reference in REFERENCES:
            present = reference in measured
            record[f"ratio_vs_{reference}"] = spread.median / medians[reference].median if present else None
            per_round = per_round_ratios(samples, name, reference) if present else None
            record[f"ratio_vs_{reference}_per_round"] = (
                [per_round.q25, per_round.median, per_round.q75] if per_round else None
            )
        records.append(record)
    return records


def _group_variants(variants: Sequence[Variant], scope: str, adaptation: Adaptation) -> list[Variant]:
    return [variant for variant in variants if variant.runs_in(scope, adaptation)]


# --- layer scope -------------------------------------------------------------------------------------------


def _layer_step(model: nn.Module, x: torch.Tensor, grad_out: torch.Tensor, precision: Precision) -> None:
    with precision_context(precision, x.device):
        out = model(x)
    out.backward(grad_out)
    model.zero_grad(set_to_none=True)
    x.grad = None


def layer_scope(setting: Setting, shape: LayerShape, variants: Sequence[Variant]) -> list[dict[str, Any]]:
    """Forward + backward of one `d_out × d_in` linear (no bias, as in Llama) per variant, sharing the weight."""
    torch.manual_seed(SEED)
    precision, device = setting.preset.precision, setting.device
    dtype = precision.weights
    base = nn.Linear(shape.d_in, shape.d_out, bias=False, device=device, dtype=dtype).requires_grad_(False)
    x = torch.randn(shape.tokens, shape.d_in, device=device, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(shape.tokens, shape.d_out, device=device, dtype=_compute_dtype(precision))
    adaptation = Adaptation(("linear",), ("linear",), False, shape.r, setting.alpha_over_r * shape.r, 0.0)
    chosen = _group_variants(variants, "layer", adaptation)
    models = {variant.name: variant.build(OneLinear(base), adaptation) for variant in chosen}
    steps: dict[str, Step] = {
        name: partial(_layer_step, model, x, grad_out, precision) for name, model in models.items()
    }
    computations = {
        name: shift_computations(model, shape.tokens, _compute_dtype(precision), device.type) or None
        for name, model in models.items()
    }
    measured = _measure(
        setting,
        steps,
        {variant.name: variant.description for variant in chosen},
        models,
        dict.fromkeys(models),
        True,
        computations,
    )
    group = {"targets": None, "dropout": 0.0, "precision": precision.label, "dtype": _dtype_name(dtype)}
    return _records(setting, "layer", group, shape.describe(), shape.tokens, measured)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --- model scope -------------------------------------------------------------------------------------------


def build_model(shape: ModelShape, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """A causal LM of `shape.family` with random weights, built from its config directly on `device`, frozen."""
    if shape.family == "llama":
        config = transformers.LlamaConfig(
            vocab_size=shape.vocab,
            hidden_size=shape.hidden,
            intermediate_size=shape.intermediate,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.kv_heads,
            max_position_embeddings=shape.seq,
            tie_word_embeddings=False,
        )
    elif shape.family == "gpt2":
        if shape.kv_heads != shape.heads:
            raise ValueError(
                f"{shape.name}: GPT-2 has no grouped-query attention (kv_heads must equal heads)"
            )
        config = transformers.GPT2Config(
            vocab_size=shape.vocab,
            n_embd=shape.hidden,
            n_inner=shape.intermediate,
            n_layer=shape.layers,
            n_head=shape.heads,
            n_positions=shape.seq,
            bos_token_id=0,
            eos_token_id=0,
        )
    else:
        raise ValueError(f"{shape.name}: family={shape.family!r} must be 'llama' or 'gpt2'")
    torch.manual_seed(SEED)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    # GPT-2's class name maps to no loss; naming it spares a log call that breaks a compiled graph
    model.loss_type = "ForCausalLM"
    return model.requires_grad_(False)


def _token_batch(shape: ModelShape, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(0, shape.vocab, (shape.batch, shape.seq), generator=generator).to(device)


def _train_step(
    model: nn.Module,
    embeds: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer | None,
    precision: Precision,
) -> None:
    with precision_context(precision, embeds.device):
        loss = model(inputs_embeds=embeds, labels=labels).loss
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    embeds.grad = None


def adaptation_for(base: nn.Module, targets: str, r: int, alpha: float, dropout: float) -> Adaptation:
    """The group's targets as our aliases, as the layer names they resolve to, and whether those are slices."""
    aliases = TARGET_SETS[targets]
    plan = resolve_targets(base, normalise_targets(aliases), default_modules_to_save(base))
    return Adaptation(
        aliases, tuple(plan), any(slices is not None for slices in plan.values()), r, alpha, dropout
    )


def model_scope(
    setting: Setting, shape: ModelShape, base: nn.Module, case: ModelCase, variants: Sequence[Variant]
) -> list[dict[str, Any]]:
    """A training step (AdamW, lr 1e-4) of every variant of `base` adapted for `case`."""
    precision = setting.preset.precision_of(shape)
    adaptation = adaptation_for(base, case.targets, shape.r, setting.alpha_over_r * shape.r, case.dropout)
    ids = _token_batch(shape, setting.device)
    embeds = base.get_input_embeddings()(ids).detach().requires_grad_(True)
    chosen = _group_variants(variants, "model", adaptation)
    models = {
        variant.name: variant.build(share_frozen_weights(base), adaptation).train() for variant in chosen
    }
    optimizers = {
        name: torch.optim.AdamW(params, lr=1e-4) if (params := _trainable(model)) else None
        for name, model in models.items()
    }
    steps: dict[str, Step] = {
        name: partial(_train_step, model, embeds, ids, optimizers[name], precision)
        for name, model in models.items()
    }
    computations = {
        name: shift_computations(model, shape.tokens, _compute_dtype(precision), setting.device.type) or None
        for name, model in models.items()
    }
    measured = _measure(
        setting,
        steps,
        {variant.name: variant.description for variant in chosen},
        models,
        optimizers,
        True,
        computations,
    )
    described = {
        **shape.describe(),
        "adapted_layers": len(adaptation.layer_names),
        "sliced": adaptation.sliced,
    }
    group = {
        "targets": case.targets,
        "dropout": case.dropout,
        "precision": precision.label,
        "dtype": _dtype_name(precision.weights),
    }
    return _records(setting, "model", group, described, shape.tokens, measured)


# --- inference scope ---------------------------------------------------------------------------------------


def _move_off_identity(model: nn.Module, seed: int) -> nn.Module:
    """Give every LoRMA₊ factor `B` small random values (it starts at zero), so that merging changes weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in iter_adapter_layers(model):
            noise = torch.randn(layer.lorma_B.shape, generator=generator) * 0.01
            layer.lorma_B.copy_(noise.to(layer.lorma_B.dtype))
    return model


def _forward(model: nn.Module, ids: torch.Tensor, precision: Precision) -> None:
    with torch.inference_mode(), precision_context(precision, ids.device):
        model(input_ids=ids)


def inference_scope(setting: Setting, shape: ModelShape, base: nn.Module) -> list[dict[str, Any]]:
    """Prefill throughput of the base model, an identical copy, LoRMA₊ pre (`INFERENCE_TARGETS`) unmerged,
    and merged."""
    precision = setting.preset.precision_of(shape)
    targets = TARGET_SETS[INFERENCE_TARGETS]
    config = AdapterConfig(
        inflation="rri",
        mode="pre",
        r=shape.r,
        alpha=setting.alpha_over_r * shape.r,
        targets=list(targets),
        modules_to_save=[],
    )
    unmerged = _move_off_identity(inject_adapters(share_frozen_weights(base), config), SEED)
    merged = merge_adapters(_move_off_identity(inject_adapters(copy.deepcopy(base), config), SEED))
    models = {"base": base, "base_copy": copy.deepcopy(base), "merged": merged, "unmerged": unmerged}
    for model in models.values():
        model.eval()
    ids = _token_batch(shape, setting.device)
    steps: dict[str, Step] = {
        name: partial(_forward, model, ids, precision) for name, model in models.items()
    }
    measured = _measure(setting, steps, INFERENCE_VARIANTS, models, dict.fromkeys(models), False, {})
    described = {**shape.describe(), "adapted_layers": sum(1 for _ in iter_adapter_layers(unmerged))}
    group = {
        "targets": INFERENCE_TARGETS,
        "dropout": 0.0,
        "precision": precision.label,
        "dtype": _dtype_name(precision.weights),
    }
    return _records(setting, "inference", group, described, shape.tokens, measured)


# --- a whole run -------------------------------------------------------------------------------------------


def run_scopes(
    setting: Setting, scopes: Sequence[str], variants: Sequence[Variant] = TRAIN_VARIANTS
) -> Iterator[list[dict[str, Any]]]:
    """Every record of the requested scopes, layer shapes first, then each model's cases, then inference on
    the preset's first model. Yields records group by group (a group shares its rounds)."""
    if "layer" in scopes:
        for layer in setting.preset.layers:
            yield layer_scope(setting, layer, variants)
    for index, shape in enumerate(setting.preset.models):
        wanted_inference = "inference" in scopes and index == 0
        if "model" not in scopes and not wanted_inference:
            continue
        base = build_model(shape, setting.preset.precision_of(shape).weights, setting.device)
        if "model" in scopes:
            for case in shape.cases:
                yield model_scope(setting, shape, base, case, variants)
        if wanted_inference:
            yield inference_scope(setting, shape, base)
        del base
