"""Adapter files: clear errors for the wrong base model, a file from another method, a PEFT folder; the
base model's name recorded; PEFT export refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers

from lorma_exp.adapters import (
    AdapterConfig,
    export_peft_lora,
    inject_adapters,
    iter_adapter_layers,
    load_adapters,
    merge_adapters,
    save_adapters,
    unmerge_adapters,
)

from .cases import HEADS, INTERMEDIATE, LAYERS, MODELS, VOCAB, Case


def saved(tmp_path, case: Case, name: str = "adapter"):
    model = inject_adapters(case.spec.build(), case.config())
    return save_adapters(model, tmp_path / name)


def bert_with_hidden(hidden: int) -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def assert_untouched(model: torch.nn.Module) -> None:
    assert not list(iter_adapter_layers(model))
    assert all(p.requires_grad for p in model.parameters())


def test_loading_onto_a_base_with_other_shapes_fails_and_leaves_it_untouched(tmp_path):
    directory = saved(tmp_path, Case("bert", "lorma-rri-pre"))
    other = bert_with_hidden(24)
    with pytest.raises(ValueError, match=r"shapes differ.*lorma_A: file \(4, 16\), model \(4, 24\)"):
        load_adapters(other, directory)
    assert_untouched(other)


def test_loading_onto_a_base_with_other_layers_fails(tmp_path):
    directory = saved(tmp_path, Case("llama", "lorma-rri-pre"))
    config = MODELS["llama"].build().config
    config.num_hidden_layers = LAYERS + 1
    deeper = transformers.LlamaForCausalLM(config)
    with pytest.raises(ValueError, match=r"differing layers \['model\.layers\.2\..*not the base model"):
        load_adapters(deeper, directory)
    assert_untouched(deeper)


def test_a_weights_file_from_another_method_is_refused(tmp_path):
    lorma = saved(tmp_path, Case("gpt2", "lorma-rri-pre"), "lorma")
    lora = saved(tmp_path, Case("gpt2", "lora"), "lora")
    shutil.copy(lora / "adapter_model.safetensors", lorma / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=r"holds factors \['lora_A', 'lora_B'\] but .* says method='lorma'"):
        load_adapters(MODELS["gpt2"].build(), lorma)


def test_a_peft_folder_is_refused(tmp_path):
    model = inject_adapters(MODELS["mlp"].build(), Case("mlp", "lorma-rri-pre").config())
    export_peft_lora(model, tmp_path)
    with pytest.raises(ValueError, match="PEFT adapter"):
        load_adapters(MODELS["mlp"].build(), tmp_path)


def test_a_folder_without_adapter_files_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json"):
        load_adapters(MODELS["mlp"].build(), tmp_path)


def test_the_base_model_name_defaults_to_where_the_model_was_loaded_from(tmp_path):
    MODELS["bert"].build().save_pretrained(tmp_path / "base")
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base")
    inject_adapters(model, AdapterConfig(targets=["q"]))
    written = json.loads((save_adapters(model, tmp_path / "adapter") / "adapter_config.json").read_text())
    assert written["base_model_name_or_path"] == str(tmp_path / "base")


def test_saving_or_exporting_without_adapters_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no adapters"):
        save_adapters(MODELS["mlp"].build(), tmp_path)
    merged = merge_adapters(inject_adapters(MODELS["mlp"].build(), Case("mlp", "lora").config()))
    with pytest.raises(ValueError, match="no adapters to export"):
        export_peft_lora(merged, tmp_path)


@pytest.mark.parametrize("lossy_rank", [0, -1, 2.0, True])
def test_lossy_rank_must_be_a_positive_integer(tmp_path, lossy_rank):
    model = inject_adapters(MODELS["mlp"].build(), Case("mlp", "lorma-shift-pre").config())
    with pytest.raises(ValueError, match="lossy_rank"):
        export_peft_lora(model, tmp_path, lossy_rank=lossy_rank)


def test_lossy_rank_is_refused_where_the_export_is_exact(tmp_path):
    model = inject_adapters(MODELS["mlp"].build(), Case("mlp", "lorma-rri-post").config())
    with pytest.raises(ValueError, match="exports exactly"):
        export_peft_lora(model, tmp_path, lossy_rank=2)


def test_unmerge_needs_a_merged_model():
    with pytest.raises(ValueError, match="no merged adapters"):
        unmerge_adapters(MODELS["mlp"].build())
