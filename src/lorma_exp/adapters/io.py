"""Adapter files: our own format (`save_adapters` / `load_adapters`) and a standard PEFT LoRA export.

Both write `adapter_config.json` and `adapter_model.safetensors` into a directory. Ours holds the factors,
the heads and the trained biases under their names in the adapted model; the PEFT export holds
`lora_A`/`lora_B` per layer under PEFT's `base_model.model.` prefix, loadable by
`peft.PeftModel.from_pretrained(base_model, directory)`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from importlib import metadata
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .base_layers import is_conv1d
from .config import AdapterConfig
from .layers import AdapterLayer
from .model import (
    build_layers,
    injection_of,
    install,
    iter_adapter_layers,
    plan_injection,
    saved_parameters,
    uninstall,
)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: Keys of our adapter_config.json that describe the checkpoint rather than the `AdapterConfig`.
_METADATA_KEYS = ("base_model_name_or_path", "lorma_exp_version", "adapted_layers", "heads")
_PEFT_PREFIX = "base_model.model."
#: The distribution whose version `save_adapters` records.
_DISTRIBUTION = "lorma-exp"
#: The key of adapter_config.json holding file name -> sha256 of the files saved beside it.
_CHECKSUMS_KEY = "sha256"
_HASH_CHUNK_BYTES = 1 << 20
_MISMATCHES_SHOWN = 5

logger = logging.getLogger(__name__)


def _base_model_name(model: nn.Module, given: str | None) -> str | None:
    """`given`, else the name or path the model was loaded from (transformers models), else `None`."""
    if given is not None:
        return given
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    return name or None


def _library_version() -> str | None:
    """The installed lorma-exp version, or `None` where the library runs uninstalled (copied into a tree)."""
    try:
        return metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def save_adapters(
    model: nn.Module, directory: str | Path, base_model_name_or_path: str | None = None
) -> Path:
    """Write the adapters, heads and trained biases of `model` to `directory` (created if needed):
    `adapter_model.safetensors`, then `adapter_config.json` (the `AdapterConfig` fields, the base model's
    name or path, the lorma_exp version, the adapted layers and heads, and the sha256 of the weights file,
    which `load_adapters` verifies). Returns the directory."""
    injection = injection_of(model)
    tensors = {name: p.detach().cpu().contiguous() for name, p in saved_parameters(model).items()}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    record = {
        **injection.config.to_dict(),
        "base_model_name_or_path": _base_model_name(model, base_model_name_or_path),
        "lorma_exp_version": _library_version(),
        "adapted_layers": injection.slice_names(),
        "heads": list(injection.heads),
        _CHECKSUMS_KEY: {WEIGHTS_FILE: _sha256(directory / WEIGHTS_FILE)},
    }
    (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return directory


def load_adapters(
    model: nn.Module, directory: str | Path, base_model_name_or_path: str | None = None
) -> nn.Module:
    """Inject the adapters saved in `directory` into `model` (a fresh base model) and load their weights,
    heads and biases. Returns `model`, which then computes what the saved model computed.

    Fails with `ValueError`, leaving `model` as it was, when the directory holds a PEFT adapter, when the
    weights file is not the one `save_adapters` wrote (its sha256 differs: flipped bytes, a truncated copy),
    when the model's layers or shapes differ from the saved ones, or when the weights file does not match
    the config (e.g. it comes from another method). Warns when the base model's name or path (given, or
    the model's `config._name_or_path`) differs from the one recorded at saving, naming both.
    """
    directory = Path(directory)
    data = _read_config(directory)
    base_name = data.get("base_model_name_or_path")
    _warn_if_other_base(directory, base_name, _base_model_name(model, base_model_name_or_path))
    fields = {key: value for key, value in data.items() if key not in (*_METADATA_KEYS, _CHECKSUMS_KEY)}
    config = AdapterConfig.from_dict(fields)
    injection = plan_injection(model, config)
    _check_layers(directory, data, injection.slice_names(), list(injection.heads))
    tensors = _read_weights(directory, data.get(_CHECKSUMS_KEY))
    requires_grad = {id(p): p.requires_grad for p in model.parameters()}
    layers = build_layers(model, injection)
    install(model, injection, layers)
    try:
        expected = saved_parameters(model)
        _check_weights(directory, config, base_name, layers, expected, tensors)
    except ValueError:
        uninstall(model, layers, requires_grad)
        raise
    with torch.no_grad():
        for name, parameter in expected.items():
            parameter.copy_(tensors[name])
    return model


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _warn_if_other_base(directory: Path, recorded: str | None, current: str | None) -> None:
    if recorded and current and recorded != current:
        logger.warning(
            "the adapter in %s was saved from base model %r but is being loaded onto %r; unless these are the "
            "same weights, it will compute something else than it did in training",
            directory,
            recorded,
            current,
        )


def _read_weights(directory: Path, checksums: dict[str, str] | None) -> dict[str, torch.Tensor]:
    """The tensors of the weights file, after checking its sha256 against the one recorded at saving."""
    path = directory / WEIGHTS_FILE
    recorded = (checksums or {}).get(WEIGHTS_FILE)
    if recorded is None:
        logger.warning(
            "%s records no sha256 of %s (saved before lorma-exp recorded checksums): the file's integrity "
            "cannot be checked; save the adapter again to record one",
            directory / CONFIG_FILE,
            WEIGHTS_FILE,
        )
    else:
        actual = _sha256(path)
        if actual != recorded:
            raise ValueError(
                f"{path} is not the file save_adapters wrote: its sha256 is {actual}, {CONFIG_FILE} recorded "
                f"{recorded} (flipped bytes, a truncated or interrupted copy, or a file from another run); "
                "copy the adapter folder again from a good source"
            )
    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error})") from None


def _check_layers(directory: Path, data: dict, layers: dict, heads: list[str]) -> None:
    """The saved adapted layers (with slices) and heads must be what the config selects on this model."""
    saved_layers, saved_heads = data["adapted_layers"], data["heads"]
    if saved_layers == layers and saved_heads == heads:
        return
    mismatched = set(saved_layers) ^ set(layers)
    mismatched |= {name for name in set(saved_layers) & set(layers) if saved_layers[name] != layers[name]}
    differing = sorted(mismatched)
    raise ValueError(
        f"{directory / CONFIG_FILE} was saved from other layers than this model's: differing layers "
        f"{differing[:_MISMATCHES_SHOWN]}, heads saved {saved_heads} here {heads}; this is not the base model "
        f"the adapter was trained on ({data['base_model_name_or_path']!r})"
    )


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{directory} must hold {CONFIG_FILE} and {WEIGHTS_FILE} (written by save_adapters)"
        )
    data = json.loads(path.read_text())
    if "peft_type" in data:
        raise ValueError(
            f"{path} describes a PEFT adapter; load it with peft.PeftModel.from_pretrained instead"
        )
    missing = [key for key in _METADATA_KEYS if key not in data]
    if missing:
        raise ValueError(f"{path} lacks {missing}; it was not written by lorma_exp's save_adapters")
    return data


def _check_weights(
    directory: Path,
    config: AdapterConfig,
    base_name: str | None,
    layers: dict[str, AdapterLayer],
    expected: dict[str, nn.Parameter],
    tensors: dict[str, torch.Tensor],
) -> None:
    weights = directory / WEIGHTS_FILE
    unexpected = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    # A tensor under an adapted layer that is not one of its factors: saved by another method or variant.
    foreign = sorted({key.rsplit(".", 1)[-1] for key in unexpected if key.rsplit(".", 1)[0] in layers})
    if foreign:
        factor_names = list(next(iter(layers.values())).factor_names)
        raise ValueError(
            f"{weights} holds factors {foreign} but {CONFIG_FILE} says {config.variant.describe()}, whose "
            f"factors are {factor_names}: the two files come from different runs"
        )
    if unexpected or missing:
        raise ValueError(
            f"{weights} does not match {CONFIG_FILE}: missing {missing[:_MISMATCHES_SHOWN]}, unexpected "
            f"{unexpected[:_MISMATCHES_SHOWN]}"
        )
    wrong = [
        f"{name}: file {tuple(tensors[name].shape)}, model {tuple(p.shape)}"
        for name, p in expected.items()
        if tensors[name].shape != p.shape
    ]
    if wrong:
        raise ValueError(
            f"{weights} shapes differ from this model's ({'; '.join(wrong[:_MISMATCHES_SHOWN])}): the base model "
            f"is not the one the adapter was trained on ({base_name!r})"
        )


def export_peft_lora(
    model: nn.Module,
    directory: str | Path,
    lossy_rank: int | None = None,
    base_model_name_or_path: str | None = None,
    task_type: str | None = None,
) -> dict[str, float]:
    """Write the adapted model as a standard PEFT LoRA adapter (heads and trained biases included), so
    that `peft.PeftModel.from_pretrained(base_model, directory)` computes what `model` computes.

    Where `AdapterConfig.exports_exactly_to_lora` holds (LoRA, and LoRMA₊ `rri`: pre `ΔW = s·B·(A·W)`,
    post `ΔW = s·(W·B)·A`) the update is exactly rank r and the export is exact (a fused GPT-2 layer
    exports at rank r per adapted slice). Other variants' updates are full rank: they export only with
    `lossy_rank=k`, as a truncated SVD of `W' − W`.

    `task_type` is PEFT's (`SEQ_CLS`, `CAUSAL_LM`, ...): it picks the class `AutoPeftModel` loads.

    Returns each layer's relative Frobenius error `‖ΔW − ΔW_k‖ / ‖ΔW‖` (0.0 for exact exports).
    """
    injection = injection_of(model)
    if injection is None:
        raise ValueError("the model holds no adapters to export (merged models cannot be exported)")
    config = injection.config
    layers = dict(iter_adapter_layers(model))
    exact = config.exports_exactly_to_lora
    if lossy_rank is not None:
        if isinstance(lossy_rank, bool) or not isinstance(lossy_rank, int) or lossy_rank <= 0:
            raise ValueError(f"lossy_rank={lossy_rank!r} must be a positive integer")
        if exact:
            raise ValueError(
                f"this adapter ({config.variant.describe()}) exports exactly at rank r; leave lossy_rank out"
            )
    elif not exact:
        raise ValueError(
            f"{config.variant.describe()} updates W' − W are full rank (the multiplier is not I plus a rank-r "
            "term), so no LoRA adapter represents them exactly; pass lossy_rank=k to export a truncated SVD (the "
            "relative error of each layer is returned)"
        )
    tensors: dict[str, torch.Tensor] = {}
    errors: dict[str, float] = {}
    ranks: dict[str, int] = {}
    for name, layer in layers.items():
        lora_b, lora_a, errors[name] = _lora_factors(layer, lossy_rank)
        dtype = next(layer.adapter_parameters()).dtype
        tensors[f"{_PEFT_PREFIX}{name}.lora_A.weight"] = lora_a.to(dtype).contiguous().cpu()
        tensors[f"{_PEFT_PREFIX}{name}.lora_B.weight"] = lora_b.to(dtype).contiguous().cpu()
        ranks[name] = lora_a.shape[0]
    factors = {f"{name}.{factor}" for name, layer in layers.items() for factor in layer.factor_names}
    for name, parameter in saved_parameters(model).items():
        if name not in factors:
            tensors[_PEFT_PREFIX + name] = parameter.detach().contiguous().cpu()
    rank = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {re.escape(name): layer_rank for name, layer_rank in ranks.items() if layer_rank != rank}
    peft_config = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": _base_model_name(model, base_model_name_or_path),
        "inference_mode": True,
        # Scaling is folded into lora_B, so alpha = rank everywhere (PEFT's scaling alpha / r = 1).
        "r": rank,
        "lora_alpha": rank,
        "rank_pattern": pattern,
        "alpha_pattern": pattern,
        "target_modules": list(layers),
        "fan_in_fan_out": any(is_conv1d(layer.base_layer) for layer in layers.values()),
        "bias": {"none": "none", "all": "all", "adapter": "lora_only"}[config.bias],
        "modules_to_save": list(injection.heads) or None,
        "lora_dropout": 0.0,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(peft_config, indent=2) + "\n")
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    if lossy_rank is not None:
        worst = max(errors, key=errors.get)
        logger.warning(
            "lossy LoRA export at rank %d: relative error up to %.3g (layer %s)",
            lossy_rank,
            errors[worst],
            worst,
        )
    return errors


def _lora_factors(layer: AdapterLayer, lossy_rank: int | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """`(lora_B, lora_A, relative error)` for the whole layer in float64: slices stacked along the rank
    (lora_A rows) and placed on their output rows (a block of lora_B), zero elsewhere."""
    if lossy_rank is None:
        pieces = layer.exact_lora_factors()
        error = 0.0
    else:
        pieces, error = _truncated_svd(layer, lossy_rank)
    total_rank = sum(a.shape[0] for _, _, a in pieces)
    lora_a = torch.cat([a for _, _, a in pieces], dim=0)
    lora_b = torch.zeros(layer.out_features, total_rank, dtype=lora_a.dtype, device=lora_a.device)
    column = 0
    for piece, b, a in pieces:
        lora_b[piece.start : piece.stop, column : column + a.shape[0]] = b
        column += a.shape[0]
    return lora_b, lora_a, error


def _truncated_svd(layer: AdapterLayer, rank: int):
    """Best rank-`rank` factors of each slice's update, and the layer's relative Frobenius error."""
    delta = layer.delta_weight(torch.float64)
    pieces, dropped, total = [], 0.0, 0.0
    for piece in layer.slices:
        left, singular, right = torch.linalg.svd(delta[piece.start : piece.stop], full_matrices=False)
        kept = min(rank, singular.numel())
        pieces.append((piece, left[:, :kept] * singular[:kept], right[:kept]))
        dropped += float((singular[kept:] ** 2).sum())
        total += float((singular**2).sum())
    return pieces, (dropped / total) ** 0.5 if total > 0 else 0.0
