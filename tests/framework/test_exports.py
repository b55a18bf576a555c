"""Run outputs other tools load: ``adapter_peft/`` and the tokenizer of every finished LoRA / LoRMA₊ run,
and ``python -m lorma_exp.export``'s PEFT, merged and LoRMA formats. The oracles are PEFT's and
transformers' own loaders: their logits must be ours (≤ 1e-5 relative)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForSequenceClassification, PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lorma_exp import pipeline
from lorma_exp.data.vllm import _vllm_lora_rank
from lorma_exp.export import export_run, load_trained, main
from lorma_exp.models import hub_name, resolve_name_or_path
from lorma_exp.run_folder import PEFT_ADAPTER_DIR, RunFolder

REPO_ROOT = Path(__file__).resolve().parents[2]


def logits_of(model: torch.nn.Module, tokenizer_dir: Path) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    batch = tokenizer(["a fine film", "dull and far too long, sadly"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(**batch).logits.float()


def assert_same_logits(theirs: torch.Tensor, ours: torch.Tensor) -> None:
    relative = (theirs - ours).norm() / ours.norm()
    assert relative <= 1e-5, float(relative)


def trained_run(compose_train, overrides: list[str], method: str, run_dir: Path) -> RunFolder:
    cfg = compose_train(*overrides, f"method={method}", "trainer.epochs=1", f"run_dir={run_dir}")
    pipeline.train(cfg)
    return RunFolder(run_dir)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny_bert_dir, compose_train):
    """LoRMA₊ pre, LoRA and LoRMA_π runs on the tiny local BERT (its folder is the adapter's base)."""
    root = tmp_path_factory.mktemp("runs")
    overrides = [
        f"model.name_or_path={tiny_bert_dir}",
        "data.num_examples=64",
        "data.max_length=32",
        "trainer.batch_size=16",
        "trainer.progress_bar=false",
    ]
    return {
        method: trained_run(compose_train, overrides, method, root / method)
        for method in ("lorma_plus", "lora", "lorma_pi")
    }


@pytest.mark.parametrize("method", ["lorma_plus", "lora"])
def test_a_finished_lora_or_lorma_plus_run_holds_a_peft_adapter_that_peft_loads_exactly(
    tiny_runs, tiny_bert_dir, method
):
    run = tiny_runs[method]
    config = json.loads((run.peft_adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS"
    assert config["modules_to_save"] == ["classifier"]
    assert config["base_model_name_or_path"] == str(tiny_bert_dir)
    _, _, ours = load_trained(run, None)
    expected = logits_of(ours, run.tokenizer)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    assert_same_logits(logits_of(PeftModel.from_pretrained(base, run.peft_adapter), run.tokenizer), expected)
    auto = AutoPeftModelForSequenceClassification.from_pretrained(run.peft_adapter)
    assert_same_logits(logits_of(auto, run.tokenizer), expected)


def test_lorma_pi_writes_no_peft_adapter_but_exports_merged_or_lossy(
    tiny_runs, tiny_bert_dir, tmp_path, capsys
):
    run = tiny_runs["lorma_pi"]
    assert not run.peft_adapter.exists() and run.tokenizer.is_dir()
    _, _, ours = load_trained(run, None)
    expected = logits_of(ours, run.tokenizer)
    assert main([f"run_dir={run.path}", "format=merged", f"out={tmp_path / 'merged'}"]) == 0
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert_same_logits(logits_of(merged, tmp_path / "merged"), expected)
    assert main([f"run_dir={run.path}", "format=peft", f"out={tmp_path / 'exact'}"]) == 2
    assert "lossy_rank=k" in capsys.readouterr().err
    assert main([f"run_dir={run.path}", "format=peft", "lossy_rank=4", f"out={tmp_path / 'lossy'}"]) == 0
    printed = capsys.readouterr().out
    errors = json.loads((tmp_path / "lossy" / "export_errors.json").read_text())
    assert errors and all(0 < error < 1 for error in errors.values())
    assert f"worst {max(errors.values()):.4g}" in printed
    lossy = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), tmp_path / "lossy"
    )
    assert logits_of(lossy, tmp_path / "lossy").shape == expected.shape


def test_the_export_formats_of_a_lorma_plus_run(tiny_runs, tmp_path):
    run = tiny_runs["lorma_plus"]
    _, _, ours = load_trained(run, None)
    expected = logits_of(ours, run.tokenizer)
    export_run(run.path, "peft", tmp_path / "peft")
    auto = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "peft")
    assert_same_logits(logits_of(auto, tmp_path / "peft"), expected)
    export_run(run.path, "merged", tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert_same_logits(logits_of(merged, tmp_path / "merged"), expected)
    export_run(run.path, "lorma", tmp_path / "lorma")
    assert (tmp_path / "lorma" / "adapter_config.json").is_file()
    assert (tmp_path / "lorma" / "tokenizer_config.json").is_file()


@pytest.mark.slow  # trains the embedded MiniLM
def test_the_embedded_model_is_named_by_its_hub_id_and_autopeft_resolves_it_from_the_hub_cache(
    compose_train, tmp_path
):
    """AutoPeftModel reads the base name and asks transformers for it: a hub cache holding the embedded
    weights under their hub id (what `huggingface-cli download` leaves) resolves it offline."""
    assert hub_name("embedded:all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    overrides = [
        "data.num_examples=32",
        "data.max_length=24",
        "trainer.batch_size=16",
        "trainer.progress_bar=false",
    ]
    run = trained_run(compose_train, overrides, "lorma_plus", tmp_path / "run")
    config = json.loads((run.peft_adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    snapshot = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / "local"
    shutil.copytree(resolve_name_or_path("embedded:all-MiniLM-L6-v2"), snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("local")
    _, _, ours = load_trained(run, None)
    expected = logits_of(ours, run.tokenizer)
    auto = AutoPeftModelForSequenceClassification.from_pretrained(
        run.peft_adapter, cache_dir=tmp_path / "hub"
    )
    assert_same_logits(logits_of(auto, run.tokenizer), expected)


def test_lorma_export_is_installed_and_reports_bad_settings():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lorma-export"), "run_dir=x", "format=onnx", "out=y"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "format: 'onnx' is not one of peft, merged, lorma" in result.stderr


def test_the_documented_vllm_line_serves_the_adapter_a_table4_lorma_plus_run_writes(compose_settings):
    """The README's `vllm serve` line: the base is the cell's model, the adapter its adapter_peft/, and
    --max-lora-rank the one vLLM needs for the cell's rank (what eval.py's vLLM backend passes)."""
    readme = re.sub(r"\\\n\s*", " ", (REPO_ROOT / "README.md").read_text())
    (line,) = [line for line in readme.splitlines() if line.startswith("vllm serve")]
    tokens = shlex.split(line, comments=True)
    settings = compose_settings(
        "experiment=table4", "model=llama3_8b", "task=metamathqa", "method=lorma_plus"
    )
    assert tokens[2] == settings.model.name_or_path
    assert "--enable-lora" in tokens
    assert int(tokens[tokens.index("--max-lora-rank") + 1]) == _vllm_lora_rank(settings.method.r)
    name, path = tokens[tokens.index("--lora-modules") + 1].split("=")
    assert name and Path(path).name == PEFT_ADAPTER_DIR and Path(path).parent.parent.name == "table4"
