"""Fixtures for the maths tests: the SmolLM2 tokenizer, and a tiny Llama built from a config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lorma_exp.config import ModelConfig, Problem
from lorma_exp.data.maths import format_prompt
from lorma_exp.models import load_tokenizer, resolve_name_or_path

from .maths_samples import GSM8K_ROWS, MATH_ROWS, metamathqa_rows


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run on one thread: on a shared CPU, two OpenMP threads spin-wait against the other
    processes (measured here: 3× slower training, 30× slower decoding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct folder (converted from its GGUF once per machine)."""
    return Path(resolve_name_or_path("embedded:SmolLM2-135M-Instruct"))


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir: Path) -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer, set up as the pipeline sets it up for a causal LM."""
    return load_tokenizer(ModelConfig(name="smollm2", name_or_path=str(smollm2_dir)), Problem.causal_lm)


def _train_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with 1000 tokens, trained on the sample problems: every text encodes, and
    a tiny model's output layer stays small (SmolLM2's 49152-token vocabulary would dominate its cost)."""
    corpus = [json.dumps(row) for row in GSM8K_ROWS + MATH_ROWS + metamathqa_rows(20)]
    corpus.append(format_prompt("What is 6 times 7? Give the result as your final answer."))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=1000,
            special_tokens=["<s>", "</s>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bpe.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (hidden 32) with a 1000-token BPE tokenizer, saved like a hub checkpoint."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = _train_tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama_dir: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(ModelConfig(name="tiny", name_or_path=str(tiny_llama_dir)), Problem.causal_lm)
