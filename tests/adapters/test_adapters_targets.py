"""Target matching (exact names, dotted suffixes, full-match regex, all-linear, per-family aliases), task
head defaults, and the errors that name the target."""

from __future__ import annotations

import pytest
import torch
import transformers

from lorma_exp.adapters import (
    AdapterConfig,
    LormaLinear,
    count_trainable,
    default_modules_to_save,
    inject_adapters,
    iter_adapter_layers,
    resolve_target_names,
)

from .cases import HEADS, HIDDEN, INTERMEDIATE, LAYERS, MODELS, VOCAB, TinyMLP


def adapted_names(model, targets, **options) -> dict[str, tuple[str, ...]]:
    inject_adapters(model, AdapterConfig(targets=targets, **options))
    return {name: layer.slice_names for name, layer in iter_adapter_layers(model)}


def llama_style(config_class) -> torch.nn.Module:
    config = config_class(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=HEADS,
        num_key_value_heads=1,
        head_dim=HIDDEN // HEADS,
        intermediate_size=INTERMEDIATE,
    )
    return transformers.AutoModelForCausalLM.from_config(config)


def test_exact_names_and_dotted_suffixes():
    model = MODELS["bert"].build()
    exact = "bert.encoder.layer.1.attention.self.query"
    assert set(adapted_names(model, [exact])) == {exact}
    model = MODELS["bert"].build()
    assert set(adapted_names(model, ["self.value"])) == {
        f"bert.encoder.layer.{i}.attention.self.value" for i in range(LAYERS)
    }


def test_a_string_is_a_full_match_regex():
    model = MODELS["bert"].build()
    names = adapted_names(model, r".*layer\.0\..*(query|key)")
    assert set(names) == {
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.0.attention.self.key",
    }


BERT_ALIASES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "up": "intermediate.dense",
    "down": "output.dense",
}


@pytest.mark.parametrize("model_name", ["bert", "roberta"])
@pytest.mark.parametrize("alias", list(BERT_ALIASES))
def test_bert_family_aliases(model_name, alias):
    model = MODELS[model_name].build()
    prefix = model.base_model_prefix
    expected = {f"{prefix}.encoder.layer.{i}.{BERT_ALIASES[alias]}" for i in range(LAYERS)}
    assert set(adapted_names(model, [alias])) == expected


@pytest.mark.parametrize(
    "config_class",
    [
        transformers.LlamaConfig,
        transformers.GemmaConfig,
        transformers.MistralConfig,
        transformers.Qwen2Config,
    ],
    ids=["llama", "gemma", "mistral", "qwen2"],
)
def test_llama_style_aliases(config_class):
    aliases = {
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "o": "self_attn.o_proj",
    }
    aliases |= {"up": "mlp.up_proj", "down": "mlp.down_proj", "gate": "mlp.gate_proj"}
    names = adapted_names(llama_style(config_class), list(aliases))
    assert set(names) == {f"model.layers.0.{suffix}" for suffix in aliases.values()}


def test_gpt2_aliases_pick_slices_of_the_fused_attention():
    names = adapted_names(MODELS["gpt2"].build(), ["q", "v", "o", "up", "down"])
    for i in range(LAYERS):
        block = f"transformer.h.{i}"
        assert names[f"{block}.attn.c_attn"] == ("q", "v")
        assert (
            names[f"{block}.attn.c_proj"] == names[f"{block}.mlp.c_fc"] == names[f"{block}.mlp.c_proj"] == ()
        )


def test_naming_the_fused_layer_adapts_each_projection_separately():
    model = MODELS["gpt2"].build()
    names = adapted_names(model, ["c_attn"])
    assert all(slices == ("q", "k", "v") for slices in names.values())
    layer = model.transformer.h[0].attn.c_attn
    assert layer.lorma_A.shape == (3, 8, HIDDEN)  # one multiplier per projection, none mixing q, k and v


def test_all_linear_skips_the_output_embedding_and_heads():
    gpt2 = adapted_names(MODELS["gpt2"].build(), "all-linear")
    assert "lm_head" not in gpt2 and len(gpt2) == 4 * LAYERS
    bert = adapted_names(MODELS["bert"].build(), "all-linear")
    assert "classifier" not in bert and "bert.pooler.dense" in bert and len(bert) == 6 * LAYERS + 1


def test_heads_default_per_family_and_train_in_full():
    assert default_modules_to_save(MODELS["bert"].build()) == ("classifier",)
    assert default_modules_to_save(MODELS["roberta"].build()) == ("classifier",)
    assert default_modules_to_save(MODELS["llama"].build()) == ()  # causal LM: the LM head is pretrained
    gpt2_classifier = transformers.GPT2ForSequenceClassification(MODELS["gpt2"].build().config)
    assert default_modules_to_save(gpt2_classifier) == ("score",)
    llama_classifier = transformers.LlamaForSequenceClassification(MODELS["llama"].build().config)
    assert default_modules_to_save(llama_classifier) == ("score",)
    assert default_modules_to_save(TinyMLP()) == ()
    model = inject_adapters(MODELS["roberta"].build(), AdapterConfig(targets=["q"]))
    head = model.classifier
    assert all(p.requires_grad for p in head.parameters())
    assert count_trainable(model)["head"] == sum(p.numel() for p in head.parameters())


def test_an_empty_modules_to_save_trains_no_head():
    model = inject_adapters(MODELS["bert"].build(), AdapterConfig(targets=["q"], modules_to_save=[]))
    assert count_trainable(model)["head"] == 0 and not model.classifier.weight.requires_grad


def test_resolve_target_names_lists_layers_for_tools_without_slices():
    names = resolve_target_names(MODELS["gpt2"].build(), ["q", "v"])
    assert names == [f"transformer.h.{i}.attn.c_attn" for i in range(LAYERS)]


def test_a_target_matching_nothing_names_it_and_lists_existing_layers():
    with pytest.raises(ValueError, match=r"target 'quer' matches no layer.*bert\.encoder\.layer\.0"):
        inject_adapters(MODELS["bert"].build(), AdapterConfig(targets=["quer"]))
    with pytest.raises(ValueError, match=r"target '\.\*nothing' matches no layer"):
        inject_adapters(MODELS["bert"].build(), AdapterConfig(targets=".*nothing"))


def test_an_alias_outside_the_family_lists_the_familys_aliases():
    with pytest.raises(ValueError, match=r"'gate' matches no layer.*bert family's aliases"):
        inject_adapters(MODELS["bert"].build(), AdapterConfig(targets=["gate"]))


def test_an_alias_on_a_model_without_family_says_so():
    with pytest.raises(ValueError, match=r"'q' is an alias only for known model families.*lin0"):
        inject_adapters(TinyMLP(), AdapterConfig(targets=["q"]))


def test_a_target_that_is_not_a_linear_layer_is_refused():
    with pytest.raises(ValueError, match=r"target 'attention' matches .*BertAttention"):
        inject_adapters(MODELS["bert"].build(), AdapterConfig(targets=["attention"]))


def test_tied_weights_are_refused():
    with pytest.raises(ValueError, match=r"'lm_head' shares its weight with \['transformer\.wte'\]"):
        inject_adapters(MODELS["gpt2"].build(), AdapterConfig(targets=["lm_head"]))


def test_targets_never_reach_into_heads():
    with pytest.raises(ValueError, match=r"outside the trained heads \['classifier'\]"):
        inject_adapters(MODELS["roberta"].build(), AdapterConfig(targets=["out_proj"]))


def test_unmatched_modules_to_save_entry_is_refused():
    with pytest.raises(ValueError, match=r"modules_to_save entry 'scorer' matches no module"):
        inject_adapters(MODELS["llama"].build(), AdapterConfig(targets=["q"], modules_to_save=["scorer"]))


def test_injecting_twice_is_refused():
    model = inject_adapters(TinyMLP(), AdapterConfig(targets=["lin0"]))
    with pytest.raises(ValueError, match="already holds adapters"):
        inject_adapters(model, AdapterConfig(targets=["lin1"]))


def test_adapter_layers_keep_the_original_layer_as_base_layer():
    model = TinyMLP()
    original = model.lin0
    inject_adapters(model, AdapterConfig(targets=["lin0"]))
    assert isinstance(model.lin0, LormaLinear) and model.lin0.base_layer is original
    assert not original.weight.requires_grad
