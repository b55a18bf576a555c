"""Hard kills (SIGKILL) of real training processes, at any moment: the run resumes to the result of an
uninterrupted run, its event log never repeats a step, and one folder never has two processes."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from lorma_exp import pipeline, trainer
from lorma_exp.run_folder import RunFolder

from .helpers import KILL_DRIVER, REPO_ROOT, comparable, entry_environment, run_entry


@pytest.fixture
def straight_run(compose_train, dropout_run_overrides, tmp_path) -> tuple[dict, list[dict]]:
    """(results.json, events) of the same run, never interrupted."""
    record = pipeline.train(compose_train(*dropout_run_overrides, f"run_dir={tmp_path / 'straight'}"))
    return record, RunFolder(tmp_path / "straight").read_events()


def _kill_at(point: str, count: int, overrides: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(KILL_DRIVER), point, str(count), *overrides],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=entry_environment(),
    )


def _assert_resumes_to_the_straight_result(compose_train, overrides, run_dir, straight) -> None:
    expected, expected_events = straight
    resumed = pipeline.train(compose_train(*overrides, f"run_dir={run_dir}", "resume=true"))
    for key in ("best", "final", "initial"):
        assert resumed[key] == expected[key]
    events = RunFolder(run_dir).read_events()
    assert comparable(events) == comparable(expected_events)
    keys = [(event["event"], event["step"], event.get("split")) for event in events]
    assert len(keys) == len(set(keys))  # no step logged twice
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [(row["event"], int(row["step"])) for row in rows] == [(e["event"], e["step"]) for e in events]
    assert not RunFolder(run_dir).lock.exists()


@pytest.mark.parametrize(
    ("point", "count", "checkpoints"),
    [
        # 1 evaluation batch, then 2 batches a step: killed in step 2, before the first checkpoint (step 4)
        ("collate", 4, set()),
        ("checkpoint-write", 2, {"last", "last.tmp"}),  # the second checkpoint half written
        pytest.param(  # between its renames: no `last` at all (~9 s: make test-slow)
            "checkpoint-rename", 2, {"last.old", "last.tmp"}, marks=pytest.mark.slow
        ),
    ],
)
def test_a_run_killed_at_any_moment_resumes_to_the_uninterrupted_result(
    compose_train, dropout_run_overrides, tmp_path, straight_run, point, count, checkpoints
):
    run_dir = tmp_path / "killed"
    killed = _kill_at(point, count, [*dropout_run_overrides, f"run_dir={run_dir}"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    left = {path.name for path in (run_dir / "checkpoints").iterdir()} if checkpoints else set()
    assert left == checkpoints
    _assert_resumes_to_the_straight_result(compose_train, dropout_run_overrides, run_dir, straight_run)


def _wait_for_line(process: subprocess.Popen, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            raise AssertionError(f"the training process ended ({process.returncode}) before: {text}")
    raise AssertionError(f"no {text!r} within {timeout} s")


def test_a_folder_in_use_refuses_a_second_process_and_a_killed_run_resumes_exactly(
    compose_train, dropout_run_overrides, tmp_path, straight_run, caplog
):
    """kill -9 from outside, in the middle of training, after an event line was cut short."""
    run_dir = tmp_path / "killed"
    overrides = [*dropout_run_overrides, f"run_dir={run_dir}"]
    first = subprocess.Popen(  # waits in step 6: steps 1-5 logged, the checkpoint of step 4 written
        [sys.executable, str(KILL_DRIVER), "pause", "12", *overrides],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=entry_environment(),
    )
    try:
        _wait_for_line(first, "paused", timeout=600)
        holder = json.loads(RunFolder(run_dir).lock.read_text())
        assert holder["pid"] == first.pid

        second = run_entry("train.py", "resume=true", f"run_dir={run_dir}")
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"is in use by pid {first.pid}" in second.stderr
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    run = RunFolder(run_dir)
    assert run.lock.exists() and max(event["step"] for event in run.read_events()) == 5
    with run.metrics.open("a") as handle:  # a kill in the middle of writing an event
        handle.write('{"event": "train", "step": 6, "epo')

    with caplog.at_level(logging.WARNING):
        _assert_resumes_to_the_straight_result(compose_train, dropout_run_overrides, run_dir, straight_run)
    warnings = " ".join(record.getMessage() for record in caplog.records)
    assert "dropped a half-written last line" in warnings
    assert f"taking over the lock of pid {first.pid}" in warnings


def test_checkpoints_are_also_written_every_n_minutes(compose_train, tiny_run_overrides, monkeypatch):
    """A long epoch is not lost: with a clock that moves a minute per look, every step is checkpointed."""
    ticks = itertools.count(0, 61)
    monkeypatch.setattr(trainer.time, "monotonic", lambda: float(next(ticks)))
    saved: list[int] = []
    original = trainer.write_checkpoint
    monkeypatch.setattr(
        trainer, "write_checkpoint", lambda run, state: saved.append(state["step"]) or original(run, state)
    )
    overrides = ["trainer.max_steps=5", "trainer.eval_strategy=no", "trainer.checkpoint_every_minutes=1"]
    pipeline.train(compose_train(*tiny_run_overrides, *overrides))
    assert saved == [1, 2, 3, 4]  # not after the last step: the run is finished there
