"""Resume state on disk that survives a hard kill (SIGKILL, power loss) at any moment.

A checkpoint replaces the previous one in steps that each leave at least one complete copy:

1. the state is written to ``last.tmp/state.pt.tmp``, flushed to disk, and renamed ``state.pt`` (so a
   ``state.pt`` that exists is complete; a sharded run's shards are written into ``last.tmp`` before it);
2. the previous ``last`` is moved to ``last.old``;
3. ``last.tmp`` becomes ``last``;
4. ``last.old`` is removed.

:func:`newest_checkpoint` reads the folder as a kill may have left it: a complete ``last.tmp`` is the
newest copy (a kill came before step 3), else ``last``, else ``last.old`` (a kill between steps 2 and 3).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from lorma_exp.run_folder import CHECKPOINT_STAGING_SUFFIX, CHECKPOINT_STATE, RunFolder


def _sync_folder(folder: Path) -> None:
    """Make renames inside ``folder`` durable (a power loss after this keeps them)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _state_file(folder: Path) -> Path:
    return folder / CHECKPOINT_STATE


def write_checkpoint(run: RunFolder, state: dict[str, Any]) -> None:
    """Replace the run's checkpoint with ``state`` (the steps in the module docstring)."""
    stage_checkpoint(run)
    commit_checkpoint(run, state)


def stage_checkpoint(run: RunFolder) -> Path:
    """An empty ``last.tmp`` folder; a sharded run's ranks write their shards there before
    :func:`commit_checkpoint` (its ``state.pt``, written last, marks the copy complete)."""
    staging = run.checkpoint_staging
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def commit_checkpoint(run: RunFolder, state: dict[str, Any]) -> None:
    """Write ``state.pt`` into the staged folder, then make it ``last`` (steps 1 to 4)."""
    staging, target, previous = run.checkpoint_staging, run.last_checkpoint, run.checkpoint_previous
    final = _state_file(staging)
    partial = final.with_name(final.name + CHECKPOINT_STAGING_SUFFIX)
    with partial.open("wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    partial.rename(final)
    _sync_folder(staging)
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    _sync_folder(run.checkpoints)
    shutil.rmtree(previous, ignore_errors=True)


def newest_checkpoint(run: RunFolder) -> Path | None:
    """The ``state.pt`` to resume from: the newest complete copy a kill at any moment left; None if none."""
    for folder in (run.checkpoint_staging, run.last_checkpoint, run.checkpoint_previous):
        state = _state_file(folder)
        if state.is_file():
            return state
    return None


def read_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
