"""Adapter files: clear errors for the wrong base model, a file from another method, a PEFT folder, a
corrupted or truncated weights file; the base model's name recorded, and a warning when it differs at
loading; PEFT export refusals."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file

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

from .cases import HEADS, INTERMEDIATE, LAYERS, MODELS, VOCAB, Case, perturb_adapters


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
    with pytest.raises(ValueError, match="sha256"):
        load_adapters(MODELS["gpt2"].build(), lorma)
    remove_checksums(lorma)  # a folder saved before checksums: the factor names still tell
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


def flip_bytes(path, count: int) -> None:
    """Invert the last `count` bytes of `path` (the tensor data; safetensors keeps its header in front)."""
    data = bytearray(path.read_bytes())
    assert len(data) > 2 * count  # the header stays intact: only tensor values change
    data[-count:] = bytes(byte ^ 0xFF for byte in data[-count:])
    path.write_bytes(bytes(data))


def test_the_weights_files_sha256_is_recorded(tmp_path):
    directory = saved(tmp_path, Case("llama", "lorma-rri-pre"))
    written = json.loads((directory / "adapter_config.json").read_text())
    expected = hashlib.sha256((directory / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert written["sha256"] == {"adapter_model.safetensors": expected}


def test_flipped_bytes_in_the_weights_file_are_refused_naming_the_file(tmp_path):
    directory = saved(tmp_path, Case("llama", "lorma-rri-pre"))
    weights = directory / "adapter_model.safetensors"
    flip_bytes(weights, 4096)
    load_file(weights)  # still a well-formed file: only the checksum can tell
    model = MODELS["llama"].build()
    with pytest.raises(ValueError, match=rf"{weights}.*sha256"):
        load_adapters(model, directory)
    assert_untouched(model)


@pytest.mark.parametrize("checksum", [True, False], ids=["recorded", "old-folder-without"])
def test_a_truncated_weights_file_is_refused_naming_the_file(tmp_path, checksum):
    directory = saved(tmp_path, Case("llama", "lorma-rri-pre"))
    weights = directory / "adapter_model.safetensors"
    if not checksum:
        remove_checksums(directory)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{weights}"):
        load_adapters(MODELS["llama"].build(), directory)


def remove_checksums(directory) -> None:
    """Make `directory` look like a folder saved before checksums were recorded."""
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    del config["sha256"]
    config_path.write_text(json.dumps(config))


def test_an_old_folder_without_checksums_loads_with_a_warning(tmp_path, caplog):
    case = Case("gpt2", "lorma-rri-pre")
    model = inject_adapters(case.spec.build(), case.config())
    perturb_adapters(model)
    directory = save_adapters(model, tmp_path / "adapter")
    remove_checksums(directory)
    with caplog.at_level(logging.WARNING, logger="lorma_exp.adapters"):
        loaded = load_adapters(case.spec.build(), directory)
    assert "records no sha256 of adapter_model.safetensors" in caplog.text
    inputs = case.spec.inputs()
    assert torch.equal(case.spec.logits(loaded, inputs), case.spec.logits(model, inputs))


@pytest.mark.parametrize("how", ["given", "recognised"])
def test_loading_onto_a_base_with_another_name_warns_naming_both(tmp_path, caplog, how):
    case = Case("bert", "lorma-rri-pre")
    model = inject_adapters(case.spec.build(), case.config())
    directory = save_adapters(model, tmp_path / "adapter", base_model_name_or_path="org/base-a")
    other = case.spec.build()
    given = None
    if how == "given":
        given = "org/base-b"
    else:
        other.config._name_or_path = "org/base-b"  # what from_pretrained("org/base-b") records
    with caplog.at_level(logging.WARNING, logger="lorma_exp.adapters"):
        load_adapters(other, directory, base_model_name_or_path=given)
    assert "'org/base-a'" in caplog.text and "'org/base-b'" in caplog.text


def test_loading_onto_the_recorded_base_does_not_warn(tmp_path, caplog):
    case = Case("bert", "lorma-rri-pre")
    directory = save_adapters(inject_adapters(case.spec.build(), case.config()), tmp_path, "org/base-a")
    with caplog.at_level(logging.WARNING, logger="lorma_exp.adapters"):
        load_adapters(case.spec.build(), directory, base_model_name_or_path="org/base-a")
    assert caplog.text == ""
