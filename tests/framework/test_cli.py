"""The entry points as users run them: bad input fails fast and clearly; default, sweep and torchrun work."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lorma_exp.run_folder import RunFolder

from .helpers import comparable, run_entry, tokens_per_train_event


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("r=0", "r: must be positive, got 0"),
        ("mode=sideways", "sideways"),
        ("trainer.lrr=1", "lrr"),
        ("task=no_such_task", "no_such_task"),
        (
            "model.name_or_path=no-such-org/no-such-model",
            "model.name_or_path='no-such-org/no-such-model' could not",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_a_message_naming_it(override, needle, tmp_path):
    result = run_entry("train.py", override, f"run_dir={tmp_path / 'run'}", timeout=120)
    assert result.returncode != 0
    assert needle in result.stderr + result.stdout
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # failed before any training


def test_the_embedded_default_trains_and_prints_a_summary(tmp_path):
    run_dir = tmp_path / "default"
    result = run_entry("train.py", "trainer.max_steps=4", "data.num_examples=240", f"run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lorma-exp: run finished" in result.stdout
    assert str(run_dir) in result.stdout
    assert "adapter_peft/" in result.stdout  # the default LoRMA₊ run's PEFT export is named with the rest
    record = json.loads((run_dir / "results.json").read_text())
    assert (record["model"], record["method"], record["inflation"]) == ("minilm", "lorma_plus", "rri")
    assert record["initial"] is not None and record["final"] is not None
    assert (run_dir / "train.log").exists()


@pytest.mark.parametrize(
    "launcher",
    [
        pytest.param([], id="basic"),
        # ~25 s; the basic launcher's sweep stays in the fast suite
        pytest.param(
            ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], id="joblib", marks=pytest.mark.slow
        ),
    ],
)
def test_a_two_job_multirun_writes_one_folder_per_job_named_by_the_run(tiny_bert_dir, tmp_path, launcher):
    """Overrides on both sides of -m, as users write them; each job's folder is its run_name."""
    sweep = tmp_path / "sweep"
    result = run_entry(
        "train.py",
        f"model.name_or_path={tiny_bert_dir}",
        "data.num_examples=48",
        "-m",
        *launcher,
        "seed=1,2",
        "trainer.max_steps=2",
        "trainer.progress_bar=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folders = sorted(path.parent.relative_to(sweep).as_posix() for path in sweep.rglob("results.json"))
    assert folders == [f"minilm/reviews/lorma_plus_r8_a16_pre_q-v/seed{seed}" for seed in (1, 2)]
    seeds = [json.loads((sweep / folder / "results.json").read_text())["seed"] for folder in folders]
    assert seeds == [1, 2]
    assert all((sweep / folder / "train.log").is_file() for folder in folders)


def test_torchrun_with_two_processes_trains_what_one_process_with_the_same_global_batch_trains(tmp_path):
    """The embedded MiniLM as users run it (dropout 0.1): the same losses, gradient norms, evaluations and
    adapter tensors whether a global batch of 16 is split over 2 ranks or 2 accumulation steps."""
    common = [
        "data.num_examples=96",
        "data.max_length=32",
        "trainer.max_steps=3",
        "trainer.batch_size=8",
        "trainer.log_every=1",
        "trainer.eval_before_training=false",
        "trainer.progress_bar=false",
    ]
    single = run_entry("train.py", *common, "trainer.grad_accum=2", f"run_dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_entry(
        "--standalone",
        "--nproc_per_node=2",
        "train.py",
        *common,
        "trainer=ddp",
        f"run_dir={tmp_path / 'ddp'}",
        module="torch.distributed.run",
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = (RunFolder(tmp_path / name).read_results() for name in ("single", "ddp"))
    assert two["train"]["world_size"] == 2 and one["train"]["world_size"] == 1
    raw_events = [RunFolder(tmp_path / name).read_events() for name in ("single", "ddp")]
    # tokens/s counts every process's tokens: each step's count is the same whatever the split
    assert tokens_per_train_event(raw_events[0]) == tokens_per_train_event(raw_events[1])
    events = [comparable(raw) for raw in raw_events]
    assert [e["event"] for e in events[0]] == [e["event"] for e in events[1]] == ["train"] * 3 + ["eval"]
    for mine, theirs in zip(*events, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            assert theirs[key] == (pytest.approx(value, rel=1e-4) if isinstance(value, float) else value), key
    adapters = [
        load_file(tmp_path / name / "adapter" / "adapter_model.safetensors") for name in ("single", "ddp")
    ]
    assert adapters[0].keys() == adapters[1].keys() and adapters[0]
    for name, tensor in adapters[0].items():
        torch.testing.assert_close(adapters[1][name], tensor, rtol=1e-4, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(
        p.name for p in (tmp_path / "single").iterdir()
    )


def test_trainer_ddp_without_torchrun_says_how_to_launch(tmp_path):
    result = run_entry("train.py", "trainer=ddp", f"run_dir={tmp_path / 'run'}", timeout=120)
    assert result.returncode == 2
    assert "torchrun --nproc_per_node" in result.stderr
