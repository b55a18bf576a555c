"""Train -> decode -> score through pipeline.train and eval.py, on a tiny GPT-2 with the real GPT-2 tokenizer.

The scores are the real E2E / WebNLG suites (Java), on the hand-written release-format fixtures.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lorma_exp import pipeline
from lorma_exp.config import EvalConfig
from lorma_exp.run_folder import RunFolder

from ..untrained import hypotheses, untrained_hypotheses

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
E2E_METRICS = {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}


# A scale and rate at which 2 epochs change what the tiny model decodes (at the defaults it decodes "" before
# and after training, and an evaluation that forgot the adapter would reproduce it).
TRAINED_ENOUGH = ("alpha=64", "trainer.lr=2e-1")


def _tiny_run(tiny_gpt2_dir: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        "model=gpt2",
        f"model.name_or_path={tiny_gpt2_dir}",
        "method=lorma_plus",
        "r=2",
        "alpha=4",
        "trainer.batch_size=2",
        "trainer.eval_batch_size=2",
        "trainer.log_every=1",
        "trainer.progress_bar=false",
        "generation.num_beams=2",
        "generation.max_new_tokens=8",
        f"run_dir={run_dir}",
        *overrides,
    ]


def _eval_py(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT / "src")}
    command = [sys.executable, "eval.py", *overrides]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_e2e_from_the_release_files_trains_decodes_scores_and_rescores(
    compose_train, tiny_gpt2_dir, tmp_path
):
    run_dir = tmp_path / "run"
    cfg = compose_train(
        "task=e2e",
        f"data.dataset={FIXTURES / 'e2e'}",
        *_tiny_run(
            tiny_gpt2_dir,
            run_dir,
            "trainer.epochs=2",
            "trainer.eval_strategy=no",
            "trainer.label_smoothing=0.1",
            *TRAINED_ENOUGH,
        ),
    )
    record = pipeline.train(cfg)
    final = record["final"]["metrics"]
    assert set(final) == E2E_METRICS | {f"test/{name}" for name in E2E_METRICS}
    assert all(math.isfinite(value) for value in final.values())
    assert all(0.0 <= final[name] <= 1.0 for name in ("BLEU", "METEOR", "ROUGE_L"))
    assert record["train"]["steps"] == 6  # 6 pairs, batch 2, 2 epochs
    losses = [event["loss"] for event in RunFolder(run_dir).read_events() if event["event"] == "train"]
    assert len(losses) == 6 and all(math.isfinite(loss) for loss in losses)
    for split in ("validation", "test"):  # 2 distinct MRs in devset.csv and in testset_w_refs.csv
        assert len((run_dir / "predictions" / f"{split}.hyp.txt").read_text().splitlines()) == 2

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf" / "eval"), version_base="1.3"):
        scores = pipeline.evaluate(compose("eval", overrides=[f"run_dir={run_dir}"]))  # what eval.py runs
    assert scores["validation"] == pytest.approx({name: final[name] for name in E2E_METRICS})
    assert scores["test"] == pytest.approx({name: final[f"test/{name}"] for name in E2E_METRICS})
    (evaluation,) = (run_dir / "evals").iterdir()
    assert json.loads((evaluation / "metrics.json").read_text())["splits"] == scores
    for split in ("validation", "test"):  # the same weights and beams give the same hypotheses
        saved = (evaluation / f"{split}.hyp.txt").read_text()
        assert saved == (run_dir / "predictions" / f"{split}.hyp.txt").read_text()
        rows = [json.loads(line) for line in (evaluation / f"{split}.jsonl").read_text().splitlines()]
        assert [row["hypothesis"] for row in rows] == saved.splitlines()
    untrained = untrained_hypotheses(run_dir, EvalConfig(run_dir=str(run_dir)), "test", tmp_path / "base")
    assert hypotheses(run_dir / "predictions", "test") != untrained  # only the trained adapter gives them


@pytest.mark.slow
def test_eval_py_on_the_command_line_writes_hypotheses_next_to_the_metrics(
    compose_train, tiny_gpt2_dir, tmp_path
):
    run_dir = tmp_path / "run"
    overrides = _tiny_run(
        tiny_gpt2_dir, run_dir, "trainer.epochs=2", "trainer.eval_strategy=no", *TRAINED_ENOUGH
    )
    pipeline.train(compose_train("task=e2e", f"data.dataset={FIXTURES / 'e2e'}", *overrides))
    result = _eval_py(f"run_dir={run_dir}", "splits=[test]")
    assert result.returncode == 0, result.stderr[-3000:]
    (evaluation,) = (run_dir / "evals").iterdir()
    assert {"metrics.json", "test.hyp.txt", "test.jsonl"} <= {path.name for path in evaluation.iterdir()}
    assert (evaluation / "test.hyp.txt").read_text() == (run_dir / "predictions" / "test.hyp.txt").read_text()
    untrained = untrained_hypotheses(run_dir, EvalConfig(run_dir=str(run_dir)), "test", tmp_path / "base")
    assert hypotheses(evaluation, "test") != untrained


@pytest.mark.parametrize("task", ["webnlg", "dart"])
def test_webnlg_and_dart_runs_report_the_webnlg_suite(compose_train, tiny_gpt2_dir, tmp_path, task):
    cfg = compose_train(
        f"task={task}",
        f"data.dataset={FIXTURES / task}",
        *_tiny_run(tiny_gpt2_dir, tmp_path / "run", "trainer.epochs=1"),
    )
    final = pipeline.train(cfg)["final"]["metrics"]
    assert set(final) == {"BLEU", "METEOR", "TER", "test/BLEU", "test/METEOR", "test/TER"}
    assert all(math.isfinite(value) for value in final.values())
    assert 0.0 <= final["BLEU"] <= 100.0


def test_the_embedded_task_ends_with_a_metric_table_and_sample_generations(
    compose_train, tiny_gpt2_dir, tmp_path, capsys
):
    cfg = compose_train(
        "task=restaurants",
        "data.num_examples=24",
        "data.eval_limit=4",
        *_tiny_run(tiny_gpt2_dir, tmp_path / "run", "trainer.max_steps=2"),
    )
    record = pipeline.train(cfg)
    assert set(record["initial"]["metrics"]) == set(record["final"]["metrics"]) == E2E_METRICS
    shown = capsys.readouterr().out
    table = [line.split() for line in shown.splitlines() if line.split()[:1] in (["metric"], ["BLEU"])]
    assert table[0] == ["metric", "before", "final"]
    assert table[1] == [
        "BLEU",
        f"{record['initial']['metrics']['BLEU']:.4f}",
        f"{record['final']['metrics']['BLEU']:.4f}",
    ]
    assert "samples    final model, validation:" in shown
    first = json.loads((tmp_path / "run" / "predictions" / "validation.jsonl").read_text().splitlines()[0])
    assert first["input"] in " ".join(shown.split())  # wrapped to the summary's width


@pytest.mark.slow
def test_the_embedded_default_clearly_beats_the_untrained_model(tmp_path):
    """`python train.py task=restaurants` as a user runs it (minutes on 2 CPU cores): real SmolLM2-135M."""
    run_dir = tmp_path / "default"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "train.py", "task=restaurants", "trainer.progress_bar=false", f"run_dir={run_dir}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "results.json").read_text())
    assert (record["model"], record["method"]) == ("smollm2_135m", "lorma_plus")
    before, after = record["initial"]["metrics"], record["final"]["metrics"]
    assert all(after[name] > before[name] for name in E2E_METRICS)
    assert after["BLEU"] >= before["BLEU"] + 0.2  # "clearly": a fifth of the BLEU scale
    assert "samples    final model, validation:" in result.stdout
