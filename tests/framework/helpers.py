"""What the run tests share: entry points as subprocesses, interruptions, folder snapshots, event logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorma_exp.data.classification import PaddingCollator
from lorma_exp.run_folder import LOSS_KEY, TIMING_KEYS, RunFolder

REPO_ROOT = Path(__file__).resolve().parents[2]
KILL_DRIVER = Path(__file__).resolve().parent / "kill_driver.py"


def entry_environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_entry(*args: str, timeout: int = 300, module: str | None = None) -> subprocess.CompletedProcess:
    """``python <args>`` (or ``python -m module <args>``) from the repository root, as a user runs it.

    Past ``timeout`` seconds (or when the test is interrupted) the whole process group is killed, the
    ranks torchrun started included, and ``subprocess.TimeoutExpired`` fails the test: ranks stuck in a
    collective never outlive it.
    """
    command = [sys.executable, *(["-m", module] if module else []), *args]
    with subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=entry_environment(),
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def interrupting_collate(after_calls: int) -> Callable[..., Any]:
    """A collate that sends this process SIGINT on its n-th call, like a Ctrl-C during training."""
    original = PaddingCollator.__call__
    calls = {"n": 0}

    def collate(self, rows):
        calls["n"] += 1
        if calls["n"] == after_calls:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, rows)

    return collate


def folder_snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (folders as None) with its bytes: equal snapshots, an untouched folder."""
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
        for path in sorted(folder.rglob("*"))
    }


def eval_scores(run_dir: Path, record: dict, checkpoint: str = "final") -> dict:
    """What eval.py reports for the run's first split with the weights of ``checkpoint`` (``final`` or
    ``best``): results.json's metrics there and the evaluation loss logged at that step (results.json
    keeps only the task's metrics)."""
    evals = [event for event in RunFolder(run_dir).read_events() if event["event"] == "eval"]
    step, split = record[checkpoint]["step"], evals[0]["split"]
    logged = [event for event in evals if event["step"] == step and event["split"] == split][-1]
    return {**record[checkpoint]["metrics"], LOSS_KEY: logged[LOSS_KEY]}


def tokens_per_train_event(events: list[dict]) -> list[int]:
    """The input tokens each train event's steps processed, from its throughput fields: tokens/s × mean
    seconds per step × steps since the previous train event."""
    counts, previous = [], 0
    for event in events:
        if event["event"] == "train":
            steps = event["step"] - previous
            counts.append(round(event["tokens_per_s"] * event["step_time_s"] * steps))
            previous = event["step"]
    return counts


def comparable(events: list[dict]) -> list[dict]:
    """Events without wall-clock fields, floats rounded to 6 significant digits."""
    return [
        {
            k: float(f"{v:.6g}") if isinstance(v, float) else v
            for k, v in event.items()
            if k not in TIMING_KEYS
        }
        for event in events
    ]
