"""The three scopes of a benchmark run, each producing one record per variant.

- layer: forward + backward of one adapted linear (the input requires grad, as inside a network);
- model: a full training step (forward, loss, backward, AdamW step) of a Llama-shaped decoder, the
  embedded input requiring grad so that every variant, the frozen floor included, backpropagates through
  every layer;
- inference: a no-grad forward over a batch (prefill) of the base model, the same model with LoRMA₊
  adapters unmerged, and with them merged into the weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import transformers
from torch import nn

from lorma_exp.adapters import AdapterConfig, inject_adapters, iter_adapter_layers, merge_adapters
from lorma_exp.adapters.targets import resolve_target_names

from .measure import (
    CUDA_PEAK,
    RESIDENT,
    SAVED_TENSORS,
    Spread,
    Step,
    cuda_peak_bytes,
    per_round_ratios,
    resident_bytes,
    round_robin,
    saved_tensor_bytes,
    warm_up,
)
from .presets import TARGET_SETS, LayerShape, ModelShape, Preset
from .variants import TRAIN_VARIANTS, OneLinear, Variant, share_frozen_weights

SCOPES = ("layer", "model", "inference")
INFERENCE_VARIANTS = {
    "base": "base model, no adapter",
    "merged": "LoRMA₊ pre merged into the weights (merge_adapters)",
    "unmerged": "LoRMA₊ pre adapters, unmerged",
}
#: Targets of the inference scope: the paper's LLaMA setting, the heavier of the two target sets.
INFERENCE_TARGETS = "mlp"
SEED = 0


@dataclass
class Measured:
    """One variant's timings and memory, before ratios are taken."""

    description: str
    samples: list[float]
    peak_bytes: int
    saved_bytes: int | None
    trainable_params: int


@dataclass(frozen=True)
class Setting:
    """What every scope needs to know about the run."""

    preset: Preset
    device: torch.device
    device_label: str
    repeats: int
    clock: str

    @property
    def alpha(self) -> float:
        return self.preset.alpha_over_r

    @property
    def dtype_name(self) -> str:
        return str(self.preset.dtype).removeprefix("torch.")

    def memory_measure(self, training: bool) -> str:
        if self.device.type == "cuda":
            return CUDA_PEAK
        return SAVED_TENSORS if training else RESIDENT


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def _measure(
    setting: Setting,
    steps: dict[str, Step],
    descriptions: dict[str, str],
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer | None],
    training: bool,
) -> dict[str, Measured]:
    """Warm every step up, measure its memory once, then time all of them round-robin."""
    warm_up(steps, setting.preset.warmup)
    memory: dict[str, tuple[int, int | None]] = {}
    for name, step in steps.items():
        model = models[name]
        saved = saved_tensor_bytes(step, model.parameters()) if training else None
        resident = resident_bytes(model, optimizers[name])
        if setting.device.type == "cuda":
            peak = cuda_peak_bytes(step, setting.device, resident)
        else:
            peak = saved if saved is not None else resident
        memory[name] = (peak, saved)
    samples = round_robin(steps, setting.repeats, setting.device, setting.clock)
    return {
        name: Measured(
            description=descriptions[name],
            samples=samples[name],
            peak_bytes=memory[name][0],
            saved_bytes=memory[name][1],
            trainable_params=sum(parameter.numel() for parameter in _trainable(models[name])),
        )
        for name in steps
    }


def _records(
    setting: Setting,
    scope: str,
    targets: str | None,
    shape: dict[str, Any],
    tokens: int,
    measured: dict[str, Measured],
) -> list[dict[str, Any]]:
    """One JSON record per variant: median time and spread, memory, and ratios to the references present
    (`frozen`, `lora`, `peft_lora` for training; `base` for inference) of medians and per round."""
    medians = {name: Spread.of(entry.samples) for name, entry in measured.items()}
    samples = {name: entry.samples for name, entry in measured.items()}

    def ratio(name: str, reference: str) -> float | None:
        return medians[name].median / medians[reference].median if reference in measured else None

    def round_spread(name: str, reference: str) -> list[float] | None:
        if reference not in measured:
            return None
        spread = per_round_ratios(samples, name, reference)
        return [spread.q25, spread.median, spread.q75]

    records = []
    for name, entry in measured.items():
        spread = medians[name]
        lora_peak = measured["lora"].peak_bytes if "lora" in measured else None
        records.append(
            {
                "scope": scope,
                "variant": name,
                "description": entry.description,
                "targets": targets,
                "shape": shape,
                "dtype": setting.dtype_name,
                "device": setting.device_label,
                "ms": spread.median,
                "ms_q25": spread.q25,
                "ms_q75": spread.q75,
                "repeats": len(entry.samples),
                "tokens_per_s": tokens / (spread.median / 1e3),
                "peak_bytes": entry.peak_bytes,
                "memory_measure": setting.memory_measure(entry.saved_bytes is not None),
                "saved_bytes": entry.saved_bytes,
                "trainable_params": entry.trainable_params,
                "ratio_vs_frozen": ratio(name, "frozen"),
                "ratio_vs_lora": ratio(name, "lora"),
                "ratio_vs_peft_lora": ratio(name, "peft_lora"),
                "ratio_vs_base": ratio(name, "base"),
                "ratio_vs_lora_per_round": round_spread(name, "lora"),
                "ratio_vs_peft_lora_per_round": round_spread(name, "peft_lora"),
                "ratio_vs_base_per_round": round_spread(name, "base"),
                "peak_ratio_vs_lora": entry.peak_bytes / lora_peak if lora_peak else None,
            }
        )
    return records


# --- layer scope -------------------------------------------------------------------------------------------


def _layer_step(model: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> None:
    model(x).backward(grad_out)
    model.zero_grad(set_to_none=True)
    x.grad = None


def layer_scope(setting: Setting, shape: LayerShape, variants: Sequence[Variant]) -> list[dict[str, Any]]:
    """Forward + backward of one `d_out × d_in` linear (no bias, as in Llama) per variant, sharing the weight."""
    torch.manual_seed(SEED)
    dtype, device = setting.preset.dtype, setting.device
    base = nn.Linear(shape.d_in, shape.d_out, bias=False, device=device, dtype=dtype).requires_grad_(False)
    x = torch.randn(shape.tokens, shape.d_in, device=device, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(shape.tokens, shape.d_out, device=device, dtype=dtype)
    alpha = setting.alpha * shape.r
    models = {
        variant.name: variant.build(OneLinear(base), ["linear"], shape.r, alpha) for variant in variants
    }
    steps: dict[str, Step] = {
        name: partial(_layer_step, model, x, grad_out) for name, model in models.items()
    }
    measured = _measure(
        setting,
        steps,
        {variant.name: variant.description for variant in variants},
        models,
        dict.fromkeys(models),
        training=True,
    )
    return _records(setting, "layer", None, shape.describe(), shape.tokens, measured)


# --- model scope -------------------------------------------------------------------------------------------


def build_llama(shape: ModelShape, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """A Llama-shaped causal LM with random weights, built from a `LlamaConfig` directly on `device`."""
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
    torch.manual_seed(SEED)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.requires_grad_(False)


def _token_batch(shape: ModelShape, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(0, shape.vocab, (shape.batch, shape.seq), generator=generator).to(device)


def _train_step(
    model: nn.Module, embeds: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer | None
) -> None:
    model(inputs_embeds=embeds, labels=labels).loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    embeds.grad = None


def model_scope(
    setting: Setting, shape: ModelShape, base: nn.Module, targets: str, variants: Sequence[Variant]
) -> list[dict[str, Any]]:
    """A training step (AdamW, lr 1e-4) of every variant of `base` adapted on the `targets` set."""
    names = resolve_target_names(base, list(TARGET_SETS[targets]))
    ids = _token_batch(shape, setting.device)
    embeds = base.get_input_embeddings()(ids).detach().requires_grad_(True)
    alpha = setting.alpha * shape.r
    models = {
        variant.name: variant.build(share_frozen_weights(base), names, shape.r, alpha).train()
        for variant in variants
    }
    optimizers = {
        name: torch.optim.AdamW(params, lr=1e-4) if (params := _trainable(model)) else None
        for name, model in models.items()
    }
    steps: dict[str, Step] = {
        name: partial(_train_step, model, embeds, ids, optimizers[name]) for name, model in models.items()
    }
    measured = _measure(
        setting, steps, {variant.name: variant.description for variant in variants}, models, optimizers, True
    )
    described = {**shape.describe(), "adapted_layers": len(names)}
    return _records(setting, "model", targets, described, shape.tokens, measured)


# --- inference scope ---------------------------------------------------------------------------------------


def _move_off_identity(model: nn.Module, seed: int) -> nn.Module:
    """Give every LoRMA₊ factor `B` small random values (it starts at zero), so that merging changes weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in iter_adapter_layers(model):
            noise = torch.randn(layer.lorma_B.shape, generator=generator) * 0.01
            layer.lorma_B.copy_(noise.to(layer.lorma_B.dtype))
    return model


def _forward(model: nn.Module, ids: torch.Tensor) -> None:
    with torch.inference_mode():
        model(input_ids=ids)


def inference_scope(setting: Setting, shape: ModelShape, base: nn.Module) -> list[dict[str, Any]]:
    """Prefill throughput of the base model, LoRMA₊ pre (`INFERENCE_TARGETS`) unmerged, and merged."""
    names = resolve_target_names(base, list(TARGET_SETS[INFERENCE_TARGETS]))
    config = AdapterConfig(
        inflation="rri",
        mode="pre",
        r=shape.r,
        alpha=setting.alpha * shape.r,
        targets=names,
        modules_to_save=[],
    )
    unmerged = _move_off_identity(inject_adapters(share_frozen_weights(base), config), SEED)
    merged = merge_adapters(_move_off_identity(inject_adapters(copy.deepcopy(base), config), SEED))
    models = {"base": base, "merged": merged, "unmerged": unmerged}
    for model in models.values():
        model.eval()
    ids = _token_batch(shape, setting.device)
    steps: dict[str, Step] = {name: partial(_forward, model, ids) for name, model in models.items()}
    measured = _measure(setting, steps, INFERENCE_VARIANTS, models, dict.fromkeys(models), training=False)
    described = {**shape.describe(), "adapted_layers": len(names)}
    return _records(setting, "inference", INFERENCE_TARGETS, described, shape.tokens, measured)


# --- a whole run -------------------------------------------------------------------------------------------


def run_scopes(
    setting: Setting, scopes: Sequence[str], variants: Sequence[Variant] = TRAIN_VARIANTS
) -> Iterator[list[dict[str, Any]]]:
    """Every record of the requested scopes, layer shapes first, then each model's target sets, then
    inference on the preset's first model. Yields records group by group (a group shares its rounds)."""
    if "layer" in scopes:
        for layer in setting.preset.layers:
            yield layer_scope(setting, layer, variants)
    for index, shape in enumerate(setting.preset.models):
        wanted_inference = "inference" in scopes and index == 0
        if "model" not in scopes and not wanted_inference:
            continue
        base = build_llama(shape, setting.preset.dtype, setting.device)
        if "model" in scopes:
            for targets in shape.targets:
                yield model_scope(setting, shape, base, targets, variants)
        if wanted_inference:
            yield inference_scope(setting, shape, base)
        del base
