"""Training on maths end to end on a tiny Llama: global batches, gradient checkpointing, train → generate →
score, and re-evaluation of the run on GSM8K through eval.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lorma_exp import pipeline
from lorma_exp.config import EvalConfig, MethodConfig, ModelConfig, Problem
from lorma_exp.distributed import DistEnv
from lorma_exp.methods import method_for
from lorma_exp.metrics.suites import MATHS
from lorma_exp.models import load_backbone
from lorma_exp.trainer import Trainer

from ..untrained import hypotheses, untrained_hypotheses
from .maths_samples import GSM8K_ROWS, write_json_lines

REPO_ROOT = Path(__file__).resolve().parents[2]
JUDGED_FIELDS = {"reference", "answer_format", "extracted", "correct", "extracted_lenient", "correct_lenient"}


def _accumulation(trainer_settings, world_size: int) -> int:
    """The gradient accumulation a Trainer derives for this world size (no process group needed)."""
    trainer = object.__new__(Trainer)
    trainer.settings = trainer_settings
    trainer.env = DistEnv(rank=0, world_size=world_size, local_rank=0, device=torch.device("cpu"))
    return trainer._grad_accum()


# Table 17: global batch 64; the experiments use 4 rows per device, so 64 / (4 × world size).
@pytest.mark.parametrize(("world_size", "accumulation"), [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)])
def test_a_global_batch_of_64_accumulates_according_to_the_world_size(
    compose_settings, world_size, accumulation
):
    settings = compose_settings(
        "experiment=table4", "model=llama3_8b", "task=metamathqa", "method=lorma_plus"
    )
    assert _accumulation(settings.trainer, world_size) == accumulation


@pytest.mark.parametrize("world_size", [3, 32])
def test_a_global_batch_that_the_devices_cannot_split_evenly_is_refused(compose_settings, world_size):
    settings = compose_settings("experiment=table4", "model=gemma_2b", "task=metamathqa", "method=lora")
    with pytest.raises(ValueError, match=r"trainer.global_batch_size=64 is not a multiple of"):
        _accumulation(settings.trainer, world_size)


def _adapter_gradients(tiny_llama_dir: Path, checkpointing: bool) -> dict[str, torch.Tensor]:
    model_config = ModelConfig(
        name="tiny", name_or_path=str(tiny_llama_dir), gradient_checkpointing=checkpointing
    )
    model = load_backbone(model_config, Problem.causal_lm, num_labels=0)
    torch.manual_seed(0)
    method = MethodConfig(
        name="lorma_plus",
        kind="lorma",
        inflation="rri",
        r=4,
        alpha=8,
        targets=["q", "v", "up"],
    )
    model = method_for(method.kind).apply(model, method)
    with torch.no_grad():  # a trained-looking adapter, so that gradients reach both factors
        for parameter in (p for p in model.parameters() if p.requires_grad):
            parameter.add_(0.1 * torch.randn_like(parameter))
    model.train()
    assert model.is_gradient_checkpointing == checkpointing
    tokens = torch.arange(3, 43).reshape(2, 20)
    model(input_ids=tokens, labels=tokens).loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def test_gradient_checkpointing_trains_the_adapters_exactly_as_without_it(tiny_llama_dir):
    plain = _adapter_gradients(tiny_llama_dir, checkpointing=False)
    checkpointed = _adapter_gradients(tiny_llama_dir, checkpointing=True)
    assert plain.keys() == checkpointed.keys() and plain
    for name, gradient in plain.items():
        assert gradient.abs().sum() > 0, name
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-5, atol=1e-7)


# One step at a learning rate that moves the tiny model's greedy decoding away from the untrained model's.
TRAINED_ENOUGH = ("trainer.max_steps=1", "trainer.lr=5e-2")


def _tiny_run(compose_train, tiny_llama_dir: Path, run_dir: Path, *overrides: str):
    return compose_train(
        "task=gsm_symbolic",
        f"model.name_or_path={tiny_llama_dir}",
        "model.gradient_checkpointing=true",
        "data.num_examples=16",
        "data.eval_limit=4",
        "generation.max_new_tokens=8",
        "trainer.batch_size=4",
        "trainer.global_batch_size=8",
        "trainer.eval_batch_size=4",
        "trainer.progress_bar=false",
        f"run_dir={run_dir}",
        *overrides,
    )


def test_a_maths_run_trains_generates_scores_and_saves_judged_predictions(
    compose_train, tiny_llama_dir, tmp_path
):
    record = pipeline.train(_tiny_run(compose_train, tiny_llama_dir, tmp_path / "run"))

    assert record["train"]["steps"] == 2  # 16 rows in global batches of 8 (4 per step × 2 accumulated)
    for checkpoint in ("initial", "final"):
        metrics = record[checkpoint]["metrics"]
        assert set(metrics) == set(MATHS.metrics)
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions" / "validation.jsonl").open()]
    assert len(rows) == 4
    for row in rows:
        assert set(row) >= JUDGED_FIELDS
        assert row["prompt"].endswith("### Response: Let's think step by step.")
        assert row["references"] == [row["reference"]]
    for suffix in ("", "_lenient"):
        accuracy = sum(row[f"correct{suffix}"] for row in rows) / len(rows)
        assert record["final"]["metrics"][f"accuracy{suffix}"] == pytest.approx(accuracy)


def test_eval_scores_a_trained_run_on_gsm8k_through_the_command_line(compose_train, tiny_llama_dir, tmp_path):
    run_dir = tmp_path / "run"
    pipeline.train(_tiny_run(compose_train, tiny_llama_dir, run_dir, *TRAINED_ENOUGH))
    test_file = write_json_lines(tmp_path / "gsm8k_test.jsonl", GSM8K_ROWS)
    command = [sys.executable, "eval.py", f"run_dir={run_dir}", "task=gsm8k", f"+data.test_file={test_file}"]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-3000:]

    (metrics_file,) = run_dir.glob("evals/*/metrics.json")
    written = json.loads(metrics_file.read_text())
    assert written["task"] == "gsm8k"
    assert set(written["splits"]["test"]) == set(MATHS.metrics)
    rows = [json.loads(line) for line in (metrics_file.parent / "test.jsonl").open()]
    assert [row["reference"] for row in rows] == ["72", "10", "1500"]
    assert all(set(row) >= JUDGED_FIELDS for row in rows)
    options = EvalConfig(run_dir=str(run_dir), task="gsm8k", data={"test_file": str(test_file)})
    untrained = untrained_hypotheses(run_dir, options, "test", tmp_path / "untrained")
    assert hypotheses(metrics_file.parent, "test") != untrained  # the trained adapter was scored


def test_eval_in_process_matches_the_runs_own_final_score(compose_train, tiny_llama_dir, tmp_path):
    run_dir = tmp_path / "run"
    record = pipeline.train(_tiny_run(compose_train, tiny_llama_dir, run_dir, *TRAINED_ENOUGH))
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf" / "eval"), version_base="1.3"):
        options = compose("eval", overrides=[f"run_dir={run_dir}"])
    scores = pipeline.evaluate(options)
    assert scores["validation"] == pytest.approx(record["final"]["metrics"])
    (evaluation,) = (run_dir / "evals").iterdir()
    trained = hypotheses(run_dir / "predictions", "validation")
    assert hypotheses(evaluation, "validation") == trained
    untrained = untrained_hypotheses(
        run_dir, EvalConfig(run_dir=str(run_dir)), "validation", tmp_path / "base"
    )
    assert trained != untrained  # so an evaluation that dropped the adapter could not pass
