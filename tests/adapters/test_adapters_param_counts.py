"""Trainable parameter counts equal the paper's, on models built from their published configs on the
`meta` device (no weights, no network).

Expected numbers: the paper (Bihany, Patel, Modi 2025), as quoted in shared/reference/method.md §1 —
Table 2 (RoBERTa, q,v r=8) and Table 4 (Gemma-2B, LLaMA-3-8B). Configs: the `config.json` files of
FacebookAI/roberta-base, FacebookAI/roberta-large, meta-llama/Meta-Llama-3-8B and google/gemma-2b on the
Hugging Face hub (only the fields that shape the linear layers).
"""

from __future__ import annotations

import pytest
import torch
import transformers

from lorma_exp.adapters import AdapterConfig, count_trainable, inject_adapters

# FacebookAI/roberta-base config.json
ROBERTA_BASE = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
}
# FacebookAI/roberta-large config.json
ROBERTA_LARGE = {**ROBERTA_BASE, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                 "intermediate_size": 4096}  # fmt: skip
# meta-llama/Meta-Llama-3-8B config.json
LLAMA_3_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
}
# google/gemma-2b config.json
GEMMA_2B = {
    "vocab_size": 256000,
    "hidden_size": 2048,
    "intermediate_size": 16384,
    "num_hidden_layers": 18,
    "num_attention_heads": 8,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "max_position_embeddings": 8192,
}


def on_meta(model_class, config):
    with torch.device("meta"):
        return model_class(config)


def roberta(fields):
    return on_meta(transformers.RobertaForSequenceClassification, transformers.RobertaConfig(**fields))


@pytest.mark.parametrize(
    ("fields", "paper_count"),
    [(ROBERTA_BASE, 294_912), (ROBERTA_LARGE, 786_432)],
    ids=["roberta-base", "roberta-large"],
)
@pytest.mark.parametrize("method", ["lorma", "lora"])
def test_roberta_q_v_rank_8(fields, paper_count, method):
    # Square q and v: LoRMA (2·r·d_out) and LoRA (r·(d_in + d_out)) have the same count, Table 2's 0.3M / 0.8M.
    model = inject_adapters(roberta(fields), AdapterConfig(method=method, r=8, alpha=16, targets=["q", "v"]))
    counts = count_trainable(model)
    hidden = fields["hidden_size"]
    head = hidden * hidden + hidden + hidden * 2 + 2  # classifier.dense and out_proj (2 labels)
    assert counts == {"adapter": paper_count, "head": head, "other": 0, "total": paper_count + head}


def test_llama_3_8b_up_down_o_gate_rank_8():
    model = on_meta(transformers.LlamaForCausalLM, transformers.LlamaConfig(**LLAMA_3_8B))
    targets = ["up", "down", "o", "gate"]
    inject_adapters(model, AdapterConfig(method="lorma", inflation="rri", r=8, alpha=16, targets=targets))
    assert count_trainable(model) == {"adapter": 18_874_368, "head": 0, "other": 0, "total": 18_874_368}
    model = on_meta(transformers.LlamaForCausalLM, transformers.LlamaConfig(**LLAMA_3_8B))
    inject_adapters(model, AdapterConfig(method="lora", r=8, alpha=16, targets=targets))
    assert count_trainable(model)["adapter"] == 16_252_928


def test_gemma_2b_seven_projections_rank_4():
    targets = ["q", "k", "v", "up", "down", "o", "gate"]
    model = on_meta(transformers.GemmaForCausalLM, transformers.GemmaConfig(**GEMMA_2B))
    inject_adapters(model, AdapterConfig(method="lorma", inflation="rri", r=4, alpha=8, targets=targets))
    assert count_trainable(model)["adapter"] == 5_677_056
    model = on_meta(transformers.GemmaForCausalLM, transformers.GemmaConfig(**GEMMA_2B))
    inject_adapters(model, AdapterConfig(method="lora", r=4, alpha=8, targets=targets))
    assert round(count_trainable(model)["adapter"] / 1e6, 1) == 4.9  # Table 4 gives LoRA "4.9M"


@pytest.mark.parametrize("mode", ["pre", "post"])
def test_the_row_magnitude_adds_d_out_per_adapted_matrix(mode):
    """The experimental `rri_magnitude` trains LoRMA₊'s factors plus one magnitude per output row."""
    config = AdapterConfig(inflation="rri_magnitude", mode=mode, r=8, alpha=16, targets=["q", "v"])
    model = inject_adapters(roberta(ROBERTA_BASE), config)
    layers, hidden = ROBERTA_BASE["num_hidden_layers"], ROBERTA_BASE["hidden_size"]
    assert count_trainable(model)["adapter"] == 294_912 + layers * 2 * hidden
