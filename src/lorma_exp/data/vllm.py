"""Decoding with vLLM (``generation.backend=vllm``): the trained model handed over as files vLLM can load.

vLLM serves models from a folder, not from a torch module, so the model is exported into a temporary
folder first by the method that trained it (``Method.export_for_serving``, the method recognised from the
model by ``lorma_exp.methods.method_of``):

- **LoRA adapter** when the trained update is exactly a LoRA update (LoRA, LoRMA₊, PEFT LoRA) and vLLM can
  serve it (no trained heads, rank at most 512). vLLM loads the base model by name and applies the adapter
  per request; nothing large is written and the model is not modified.
- **Merged model** otherwise (LoRMA_π, LoRMA without inflation, DoRA, full fine-tuning): a copy of the model
  with the adapters folded into its weights, saved with ``save_pretrained``. The copy is made on the CPU;
  the model itself is left as it was.

While vLLM runs, the torch model waits on the CPU so that vLLM can take the GPU memory it profiles for; it
goes back to its device afterwards. Decoding is greedy (``temperature=0``) with the prompts tokenised and
left-truncated exactly as for the transformers backend. vLLM runs in this one process, on one GPU: launch
evaluation without torchrun.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, GenerationConfig
from lorma_exp.methods import method_of

log = logging.getLogger(__name__)

VLLM_INSTALL_HINT = "`pip install vllm` (Linux with a CUDA GPU)"

# vLLM accepts these values for ``max_lora_rank``; an adapter of rank r needs the smallest one >= r.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)
ADAPTER_CONFIG_FILE = "adapter_config.json"


def require_vllm() -> ModuleType:
    """The ``vllm`` module, or a ConfigError saying how to install it or how to do without it."""
    try:
        return importlib.import_module("vllm")
    except ImportError as error:
        raise ConfigError(
            f"generation.backend=vllm: vLLM is not installed ({error}). Install it with {VLLM_INSTALL_HINT}, "
            "or decode with transformers: generation.backend=hf."
        ) from error


@dataclass(frozen=True)
class VllmSource:
    """What to hand vLLM: a model folder or name, a tokenizer folder, and a LoRA adapter folder if any."""

    model: str
    tokenizer: str
    dtype: str
    lora_path: str | None = None
    lora_rank: int | None = None

    def engine_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``vllm.LLM``."""
        arguments: dict[str, Any] = {"model": self.model, "tokenizer": self.tokenizer, "dtype": self.dtype}
        if self.lora_path is not None:
            arguments.update(enable_lora=True, max_lora_rank=self.lora_rank, max_loras=1)
        return arguments


def _dtype_name(model: torch.nn.Module) -> str:
    """The base weights' dtype as vLLM spells it (adapter factors are float32 whatever the base)."""
    frozen = [p.dtype for p in model.parameters() if not p.requires_grad] or [
        p.dtype for p in model.parameters()
    ]
    return str(max(set(frozen), key=frozen.count)).removeprefix("torch.")


def _vllm_lora_rank(rank: int) -> int | None:
    return next((allowed for allowed in VLLM_LORA_RANKS if allowed >= rank), None)


def _lora_settings(folder: Path) -> tuple[str, int | None]:
    """The base model of a PEFT LoRA adapter folder, and the ``max_lora_rank`` vLLM serves it with (None
    when vLLM cannot serve it: trained heads, or a rank above 512)."""
    config = json.loads((folder / ADAPTER_CONFIG_FILE).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{folder / ADAPTER_CONFIG_FILE} does not name the base model the adapter is for")
    if config.get("modules_to_save"):
        return base, None
    ranks = [config["r"], *(config.get("rank_pattern") or {}).values()]
    return base, _vllm_lora_rank(max(ranks))


def _servable(lora: Path) -> bool:
    if _lora_settings(lora)[1] is None:
        log.info("vLLM cannot serve this adapter as LoRA (trained heads or rank > 512): merging instead")
        return False
    return True


def export_for_vllm(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path) -> VllmSource:
    """Write what vLLM needs under ``folder`` (see the module docstring for which form is chosen)."""
    tokenizer_dir = folder / "tokenizer"
    tokenizer.save_pretrained(tokenizer_dir)
    dtype = _dtype_name(model)
    export = method_of(model).export_for_serving(model, folder, accept_lora=_servable)
    if export.is_lora:
        base, rank = _lora_settings(export.path)
        log.info("vLLM: base model %s with the trained LoRA adapter (max_lora_rank %d)", base, rank)
        return VllmSource(base, str(tokenizer_dir), dtype, str(export.path), rank)
    log.info("vLLM: the merged model, written to %s", export.path)
    return VllmSource(str(export.path), str(tokenizer_dir), dtype)


@contextlib.contextmanager
def parked_on_cpu(model: torch.nn.Module) -> Iterator[None]:
    """Move the model to the CPU for the duration (freeing its GPU memory for vLLM), then back."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        yield
        return
    model.to("cpu")
    torch.cuda.empty_cache()
    try:
        yield
    finally:
        model.to(device)


def _check_supported(generation: GenerationConfig) -> None:
    if generation.num_beams != 1:
        raise ConfigError(
            f"generation.num_beams: the vLLM backend decodes greedily, got num_beams={generation.num_beams}. "
            "Use generation.backend=hf for beam search."
        )
    if generation.no_repeat_ngram_size:
        raise ConfigError(
            "generation.no_repeat_ngram_size: vLLM has no n-gram blocking. Set it to 0 or use generation.backend=hf."
        )
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_world_size() > 1:
        raise ConfigError(
            "generation.backend=vllm runs in one process, on one GPU. "
            "Launch eval.py without torchrun, or use generation.backend=hf."
        )


def generate_with_vllm(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    generation: GenerationConfig,
    max_prompt_length: int,
) -> list[str]:
    """Greedy continuations of ``prompts`` by vLLM, in order, stripped like the transformers backend's."""
    vllm = require_vllm()
    _check_supported(generation)
    prompt_ids = [tokenizer(p, truncation=True, max_length=max_prompt_length)["input_ids"] for p in prompts]
    sampling = vllm.SamplingParams(temperature=0.0, max_tokens=generation.max_new_tokens)
    with tempfile.TemporaryDirectory(prefix="lorma_vllm_") as scratch, parked_on_cpu(model):
        source = export_for_vllm(model, tokenizer, Path(scratch))
        engine = vllm.LLM(**source.engine_arguments())
        requests: dict[str, Any] = {}
        if source.lora_path is not None:
            lora_request = importlib.import_module("vllm.lora.request").LoRARequest
            requests["lora_request"] = lora_request("trained", 1, source.lora_path)
        outputs = engine.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sampling, **requests)
        del engine
        gc.collect()
    return [output.outputs[0].text.strip() for output in outputs]
