"""models.py: `model.config_overrides` reaches the backbone's own config at load, and a wrong key fails first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lorma_exp.config import ModelConfig, Problem
from lorma_exp.models import ModelLoadError, load_backbone, load_model_config


@pytest.fixture(scope="module")
def gpt2_with_dropout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 with Hugging Face's default dropout (0.1 on attention, residual and embeddings)."""
    folder = tmp_path_factory.mktemp("gpt2_dropout")
    GPT2LMHeadModel(
        GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    ).save_pretrained(folder)
    return folder


def _dropout_rates(model: torch.nn.Module) -> set[float]:
    return {module.p for module in model.modules() if isinstance(module, torch.nn.Dropout)}


def test_table16s_backbone_dropout_of_zero_reaches_every_dropout_of_a_gpt2(
    compose_settings, gpt2_with_dropout
):
    settings = compose_settings("experiment=table3", "model=gpt2_medium", "task=e2e", "method=lorma_plus")
    assert settings.model.config_overrides == {"attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0}
    as_is = ModelConfig(name="tiny", name_or_path=str(gpt2_with_dropout))
    overridden = ModelConfig(
        name="tiny", name_or_path=str(gpt2_with_dropout), config_overrides=settings.model.config_overrides
    )
    assert _dropout_rates(load_backbone(as_is, Problem.causal_lm, 0)) == {0.1}
    model = load_backbone(overridden, Problem.causal_lm, 0)
    assert _dropout_rates(model) == {0.0}
    assert (model.config.attn_pdrop, model.config.resid_pdrop, model.config.embd_pdrop) == (0.0, 0.0, 0.0)


def test_an_override_the_config_does_not_have_fails_naming_it_and_the_configs_dropouts(gpt2_with_dropout):
    model_cfg = ModelConfig(
        name="tiny", name_or_path=str(gpt2_with_dropout), config_overrides={"attention_dropout": 0.0}
    )
    with pytest.raises(
        ModelLoadError,
        match=r"^model.config_overrides.attention_dropout: GPT2Config .* settings are \['attn_pdrop'",
    ):
        load_model_config(model_cfg)
