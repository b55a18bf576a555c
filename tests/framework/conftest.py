"""Fixtures for framework tests: tiny backbones saved as local folders, and in-process config composition."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from lorma_exp.models import resolve_name_or_path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32) with the embedded MiniLM tokenizer, saved like a hub checkpoint."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_name_or_path("embedded:all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_run_overrides(tiny_bert_dir: Path, tmp_path: Path) -> list[str]:
    """Overrides that make any classification run take seconds: tiny backbone, few rows, few steps."""
    return [
        f"model.name_or_path={tiny_bert_dir}",
        "data.num_examples=96",
        "data.max_length=32",
        "trainer.batch_size=8",
        "trainer.eval_batch_size=32",
        "trainer.epochs=2",
        "trainer.log_every=2",
        "trainer.progress_bar=false",
        f"run_dir={tmp_path / 'run'}",
    ]


@pytest.fixture(scope="session")
def tiny_bert_with_dropout_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    """The tiny BERT with BERT's usual dropout (0.1 on hidden states and attention probabilities)."""
    folder = tmp_path_factory.mktemp("tiny_bert_dropout")
    model = BertForSequenceClassification.from_pretrained(
        tiny_bert_dir, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder


@pytest.fixture
def dropout_run_overrides(tiny_bert_with_dropout_dir: Path) -> list[str]:
    """A run of a few seconds on the tiny BERT with dropout: 12 steps of 8 rows, a checkpoint every 4."""
    return [
        f"model.name_or_path={tiny_bert_with_dropout_dir}",
        "data.num_examples=72",
        "data.max_length=32",
        "trainer.batch_size=4",
        "trainer.grad_accum=2",
        "trainer.eval_batch_size=32",
        "trainer.epochs=2",
        "trainer.log_every=1",
        "trainer.checkpoint_every_steps=4",
        "trainer.lr=2e-3",
        "trainer.progress_bar=false",
    ]
