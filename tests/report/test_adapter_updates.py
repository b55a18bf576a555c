"""Rank and similarity read from run folders: a tiny BERT built from a config, adapters injected, their
factors set to matrices with known answers, saved, loaded back through the adapter library and analysed."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import BertConfig, BertForSequenceClassification

from lorma_exp.adapters import AdapterConfig, inject_adapters, iter_adapter_layers, save_adapters
from lorma_exp.analysis import adapter_updates
from lorma_exp.analysis.runs import Run, RunDataError, collect_runs
from lorma_exp.config import CONF_DIR, EvalConfig, load_run_settings, register_configs
from lorma_exp.methods import method_for
from lorma_exp.models import load_backbone
from lorma_exp.report import main

from .run_folders import results_json, write_run_folder

HIDDEN = 16
ADAPTED_LAYERS = 4  # query and value in each of 2 layers
# Gives one layer's factors A and B values, knowing its base weight W (float64).
Setter = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def base_model(_: Run | None = None) -> BertForSequenceClassification:
    """The same tiny untrained BERT every call (fixed seed): the 'pretrained' weights W."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24
    )
    return BertForSequenceClassification(config)


def set_all_factors(model: torch.nn.Module, set_factors: Setter) -> None:
    with torch.no_grad():
        for _, layer in iter_adapter_layers(model):
            (_, lora_a, lora_b), = layer.factors()  # fmt: skip
            set_factors(lora_a, lora_b, layer.base_layer.weight.detach().to(torch.float64))


def save_adapter(folder: Path, config: AdapterConfig, set_factors: Setter) -> None:
    """Inject ``config`` into the base model, give every layer's factors values, save."""
    model = inject_adapters(base_model(), config)
    set_all_factors(model, set_factors)
    save_adapters(model, folder)


def random_factors(seed: int) -> Setter:
    generator = torch.Generator().manual_seed(seed)

    def set_factors(lora_a, lora_b, weight):
        lora_a.copy_(torch.randn(lora_a.shape, generator=generator))
        lora_b.copy_(torch.randn(lora_b.shape, generator=generator))

    return set_factors


def make_run(
    root: Path, name: str, method: str, config: AdapterConfig, set_factors: Setter, **snapshots
) -> Path:
    results = results_json(table="table15", task="cola", model="tiny_bert", method=method, seed=1,
                           metrics={"matthews": 0.5}, r=config.r, alpha=config.alpha)  # fmt: skip
    folder = write_run_folder(root / name, results)
    save_adapter(folder / "adapter", config, set_factors)
    for epoch, setter in snapshots.items():
        save_adapter(folder / "snapshots" / epoch, config, setter)
    return folder


LORA = AdapterConfig(method="lora", r=2, alpha=4.0, targets=["q", "v"])
LORMA_PLUS = AdapterConfig(method="lorma", inflation="rri", r=2, alpha=4.0, targets=["q", "v"])
LORMA_PI = AdapterConfig(method="lorma", inflation="shift", r=2, alpha=4.0, targets=["q", "v"])


def singular_multiplier(lora_a, lora_b, weight):
    """I + s·B·A = I − u uᵀ/‖u‖² (a projector of rank n − 1): B = [u, 0], A = [−uᵀ/(s‖u‖²); 0], s = 2."""
    u = torch.arange(1.0, HIDDEN + 1)
    lora_b.zero_()
    lora_a.zero_()
    lora_b[:, 0] = u
    lora_a[0, :] = -u / (2.0 * u.dot(u))


def test_rank_of_delta_w_and_of_the_multiplier_across_snapshots(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "lora", "lora", LORA, random_factors(1))
    make_run(root, "plus", "lorma_plus", LORMA_PLUS, random_factors(2),
             epoch_1=random_factors(3), epoch_2=singular_multiplier)  # fmt: skip
    make_run(root, "pi", "lorma_pi", LORMA_PI, random_factors(4))
    runs = collect_runs([root]).finished

    layers, summary = adapter_updates.delta_rank_tables(runs, base_model)
    ranks = {(record["method"], record["layer"]): record["rank"] for record in layers.records}
    assert len(ranks) == 3 * ADAPTED_LAYERS
    # LoRA: s·B·A and LoRMA₊: s·B·(A·W) have rank r = 2; LoRMA_π: (s·π(B·A) − I)·W is full rank (16)
    # for factors in general position.
    assert {rank for (method, _), rank in ranks.items() if method == "lora"} == {2}
    assert {rank for (method, _), rank in ranks.items() if method == "lorma_plus"} == {2}
    assert {rank for (method, _), rank in ranks.items() if method == "lorma_pi"} == {HIDDEN}
    assert any(row[0] == "LoRMA₊" and row[1].startswith("2 ± 0 (n=4) vs 8") for row in summary.rows)

    per_snapshot, lowest = adapter_updates.multiplier_rank_tables(runs, tmp_path / "out", base_model)
    by_epoch = {(record["epoch"], record["layer"]): record["rank"] for record in per_snapshot.records}
    # Epoch 1: I + s·B·A with random factors is invertible (16); epoch 2: the rank-15 projector.
    assert {rank for (epoch, _), rank in by_epoch.items() if epoch == 1} == {HIDDEN}
    assert {rank for (epoch, _), rank in by_epoch.items() if epoch == 2} == {HIDDEN - 1}
    assert lowest.records[0]["mean"] == HIDDEN - 1
    assert (tmp_path / "out" / "figure7.png").is_file()


def test_layer_filter_selects_layers_by_name(tmp_path):
    make_run(tmp_path / "runs", "lora", "lora", LORA, random_factors(1))
    runs = collect_runs([tmp_path / "runs"]).finished
    layers, _ = adapter_updates.delta_rank_tables(runs, base_model, layer_pattern=re.compile(r"1\..*value"))
    assert [record["layer"] for record in layers.records] == ["bert.encoder.layer.1.attention.self.value"]


def lorma_matching_lora(lora_seed: int) -> Setter:
    """LoRMA₊ factors whose update equals LoRA's: B_m = B_l, A_m = A_l·W⁻¹ (same s), so s·B_m·A_m·W = s·B_l·A_l."""
    generator = torch.Generator().manual_seed(lora_seed)

    def set_factors(lora_a, lora_b, weight):
        lora_a_of_lora = torch.randn(lora_a.shape, generator=generator)
        lora_b.copy_(torch.randn(lora_b.shape, generator=generator))
        lora_a.copy_((lora_a_of_lora.to(torch.float64) @ torch.linalg.inv(weight)).to(lora_a.dtype))

    return set_factors


def test_similarity_of_an_update_equal_to_loras_and_of_the_random_baseline(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "lora", "lora", LORA, random_factors(5))
    make_run(root, "plus", "lorma_plus", LORMA_PLUS, lorma_matching_lora(5))
    layers, summary = adapter_updates.similarity_report(collect_runs([root]).finished, base_model, seed=0)
    same = [record for record in layers.records if record["update"] == "LoRMA₊"]
    random = [record for record in layers.records if record["update"] == "random"]
    assert len(same) == len(random) == ADAPTED_LAYERS
    for record in same:  # equal up to the float32 rounding of the saved A_m
        assert record["cosine"] == pytest.approx(1.0, abs=1e-5)
        assert record["phi_left"] == pytest.approx(1.0, abs=1e-5)
        assert record["phi_right"] == pytest.approx(1.0, abs=1e-5)
        assert record["theta1_left"] == pytest.approx(0.0, abs=0.5)
        assert record["singular_values"] == pytest.approx(0.0, abs=1e-6)
        assert record["eigenvalues"] == pytest.approx(0.0, abs=1e-6)
    for record in random:  # a Gaussian matrix is nowhere near a rank-2 update
        assert abs(record["cosine"]) < 0.9
        assert record["phi_left"] < 0.9
    # One row per (task, layer, update), the measures as columns; no paper numbers to print beside them.
    assert summary.header[0] == "Task, layer, update X" and "φ left" in summary.header
    assert "cola · layer 0 query · LoRMA₊" in [row[0] for row in summary.rows]
    assert len(summary.rows) == 2 * ADAPTED_LAYERS
    assert any("not in our transcription" in note for note in summary.notes)


def test_a_run_folder_without_its_adapter_is_a_clear_error(tmp_path):
    results = results_json(table="table15", task="cola", model="tiny_bert", method="lora", seed=1, metrics={})
    write_run_folder(tmp_path / "runs" / "lora", results)
    with pytest.raises(RunDataError, match="no saved adapter"):
        adapter_updates.delta_rank_tables(collect_runs([tmp_path / "runs"]).finished, base_model)


def test_cli_rebuilds_the_backbone_from_the_run_config(tmp_path, capsys):
    """The trainer's path end to end: config.yaml composed from conf/, backbone from a local folder,
    LoRMA₊ applied and saved as the trainer does; `report rank` finds ΔW = s·B·A·W of rank r = 2 on every
    layer."""
    base_model().save_pretrained(tmp_path / "tiny_bert")
    register_configs()
    overrides = [
        "model=hub",
        f"model.name_or_path={tmp_path / 'tiny_bert'}",
        "method=lorma_plus",
        "r=2",
        "alpha=4",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    results = results_json(table="table15", task="reviews", model="hub", method="lorma_plus", seed=1,
                           metrics={"accuracy": 0.5}, r=2, alpha=4.0)  # fmt: skip
    folder = write_run_folder(tmp_path / "runs" / "plus", results)
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
    settings = load_run_settings(folder, EvalConfig(run_dir=str(folder)))
    method = method_for(settings.method.kind)
    model = method.apply(
        load_backbone(settings.model, settings.task.problem, settings.task.num_labels), settings.method
    )
    set_all_factors(model, random_factors(6))
    method.save(model, folder / "adapter", settings.model.name_or_path)

    out = tmp_path / "out"
    assert main(["rank", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert "## Table 15" in capsys.readouterr().out
    layers = (out / "table15_layers.csv").read_text().splitlines()
    assert len(layers) == 1 + ADAPTED_LAYERS
    assert all(line.split(",")[-1] == "2" for line in layers[1:])
