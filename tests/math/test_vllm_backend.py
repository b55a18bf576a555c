"""The vLLM decoding path, against a stand-in ``vllm`` module (vLLM itself needs Linux with a CUDA GPU).

The stand-in records what the backend asks of vLLM's documented API (``LLM(...)``, ``SamplingParams(...)``,
``LLM.generate(prompts, params, lora_request=...)``, ``LoRARequest(name, id, path)``) and, while the
exported folders still exist, loads them with transformers / PEFT to check that they compute what the
trained model computes.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from lorma_exp.adapters import AdapterConfig, inject_adapters, iter_adapter_layers
from lorma_exp.config import ConfigError, GenerationBackend, GenerationConfig
from lorma_exp.data import build_task_data
from lorma_exp.data.generation import generate_texts
from lorma_exp.data.vllm import require_vllm

from .maths_samples import CPU

PROBE = torch.tensor([[0, 17, 230, 451, 99, 12, 7, 300]])
VLLM = GenerationConfig(backend=GenerationBackend.vllm, max_new_tokens=7)


@dataclass
class FakeVllm:
    """What the backend asked of vLLM, and what the exported files compute on ``PROBE``."""

    engine_arguments: dict = field(default_factory=dict)
    sampling: dict = field(default_factory=dict)
    prompts: list = field(default_factory=list)
    lora: tuple | None = None
    exported_logits: torch.Tensor | None = None

    def module(self) -> types.ModuleType:
        recorder = self

        class LLM:
            def __init__(self, **arguments):
                recorder.engine_arguments = arguments

            def generate(self, prompts, sampling_params, lora_request=None):
                recorder.prompts = list(prompts)
                served = AutoModelForCausalLM.from_pretrained(recorder.engine_arguments["model"])
                if lora_request is not None:
                    recorder.lora = lora_request
                    served = PeftModel.from_pretrained(served, lora_request[2])
                with torch.no_grad():
                    recorder.exported_logits = served(PROBE).logits
                return [
                    types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"  answer {index} \n")])
                    for index in range(len(prompts))
                ]

        def sampling_params(**arguments):
            recorder.sampling = arguments
            return arguments

        vllm = types.ModuleType("vllm")
        vllm.LLM = LLM
        vllm.SamplingParams = sampling_params
        return vllm


@pytest.fixture
def fake_vllm(monkeypatch) -> FakeVllm:
    recorder = FakeVllm()
    lora_module = types.ModuleType("vllm.lora.request")
    lora_module.LoRARequest = lambda name, identifier, path: (name, identifier, path)
    monkeypatch.setitem(sys.modules, "vllm", recorder.module())
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora_module)
    return recorder


def _trained(model: torch.nn.Module) -> torch.nn.Module:
    """Give every adapter factor random values, as training would (a fresh LoRMA₊ adapter is the identity)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and ("lora" in name or "magnitude" in name):
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(PROBE).logits


def test_a_missing_vllm_is_reported_with_the_fix(monkeypatch, compose_settings, tokenizer) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(
        ConfigError, match=r"^generation.backend=vllm: vLLM is not installed.*pip install vllm"
    ):
        require_vllm()
    settings = compose_settings(
        "task=gsm_symbolic", "data.num_examples=4", "data.eval_limit=2", "generation.backend=vllm"
    )
    with pytest.raises(ConfigError, match="vLLM is not installed"):  # before any training starts
        build_task_data(settings, tokenizer, CPU)


def test_lorma_plus_is_served_as_a_lora_adapter_on_the_base_model(
    fake_vllm, tiny_llama_dir, tiny_tokenizer
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = AdapterConfig(
        method="lorma", inflation="rri", mode="pre", r=4, alpha=8, targets=["q", "v", "up"]
    )
    model = _trained(inject_adapters(model, config))
    expected = _logits(model)
    prompts = ["What is 1 + 1?", "A much longer question " * 20]

    texts = generate_texts(
        model, tiny_tokenizer, prompts, VLLM, batch_size=1, max_prompt_length=16, progress=False
    )

    assert texts == ["answer 0", "answer 1"]
    arguments = fake_vllm.engine_arguments
    assert arguments["model"] == str(tiny_llama_dir)
    assert (arguments["enable_lora"], arguments["max_lora_rank"], arguments["dtype"]) == (True, 8, "float32")
    assert fake_vllm.sampling == {"temperature": 0.0, "max_tokens": 7}
    expected_ids = [tiny_tokenizer(p, truncation=True, max_length=16)["input_ids"] for p in prompts]
    assert fake_vllm.prompts == [{"prompt_token_ids": ids} for ids in expected_ids]
    assert len(fake_vllm.prompts[1]["prompt_token_ids"]) == 16
    torch.testing.assert_close(fake_vllm.exported_logits, expected, rtol=1e-4, atol=1e-5)
    assert not Path(fake_vllm.lora[2]).exists()  # the temporary export is gone


def test_lorma_pi_is_served_merged_and_the_trained_model_keeps_its_adapters(
    fake_vllm, tiny_llama_dir, tiny_tokenizer
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = AdapterConfig(
        method="lorma", inflation="shift", mode="pre", r=4, alpha=8, targets=["q", "v", "down"]
    )
    model = _trained(inject_adapters(model, config))
    expected = _logits(model)
    layers = len(list(iter_adapter_layers(model)))

    generate_texts(
        model, tiny_tokenizer, ["What is 2 + 2?"], VLLM, batch_size=1, max_prompt_length=64, progress=False
    )

    assert "enable_lora" not in fake_vllm.engine_arguments
    assert fake_vllm.lora is None
    torch.testing.assert_close(fake_vllm.exported_logits, expected, rtol=1e-4, atol=1e-5)
    assert len(list(iter_adapter_layers(model))) == layers
    torch.testing.assert_close(_logits(model), expected)


def test_peft_dora_is_served_merged(fake_vllm, tiny_llama_dir, tiny_tokenizer) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model = _trained(
        get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True))
    )
    expected = _logits(model)

    generate_texts(
        model, tiny_tokenizer, ["What is 3 + 3?"], VLLM, batch_size=1, max_prompt_length=64, progress=False
    )

    assert "enable_lora" not in fake_vllm.engine_arguments
    torch.testing.assert_close(fake_vllm.exported_logits, expected, rtol=1e-4, atol=1e-5)


def test_vllm_decodes_greedily_only(fake_vllm, tiny_llama_dir, tiny_tokenizer) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    beams = GenerationConfig(backend=GenerationBackend.vllm, num_beams=4)
    with pytest.raises(ConfigError, match=r"^generation.num_beams"):
        generate_texts(
            model, tiny_tokenizer, ["1 + 1?"], beams, batch_size=1, max_prompt_length=8, progress=False
        )
