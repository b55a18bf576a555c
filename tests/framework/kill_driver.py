"""Train in a child process that dies by SIGKILL (or stops to wait for one) at a chosen moment.

python kill_driver.py POINT N OVERRIDE...   (run by tests/framework/test_crash_recovery.py)

POINT is where the N-th occurrence hits: ``collate`` (the N-th training batch is being built; a kill in the
middle of training), ``pause`` (the N-th batch waits forever, for the test to kill the process from outside),
``checkpoint-write`` (the N-th checkpoint state is half written), ``checkpoint-rename`` (the N-th move of a
folder into ``last``, after the previous ``last`` was moved away: between the renames of a checkpoint).
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from lorma_exp import pipeline
from lorma_exp.config import CONF_DIR, register_configs
from lorma_exp.data.classification import PaddingCollator


def _after(count: int, action):
    """A hook that runs ``action`` on its ``count``-th call."""
    calls = {"n": 0}

    def hook() -> None:
        calls["n"] += 1
        if calls["n"] == count:
            action()

    return hook


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_forever() -> None:
    print("paused", flush=True)
    while True:
        time.sleep(1)


def main() -> None:
    point, count, *overrides = sys.argv[1:]
    count = int(count)
    if point in ("collate", "pause"):
        hook = _after(count, _die if point == "collate" else _wait_forever)
        original_collate = PaddingCollator.__call__

        def collate(self, rows):
            hook()
            return original_collate(self, rows)

        PaddingCollator.__call__ = collate
    elif point == "checkpoint-write":
        original_save = torch.save
        calls = {"n": 0}

        def save(state, target, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] != count:
                return original_save(state, target, *args, **kwargs)
            buffer = io.BytesIO()
            original_save(state, buffer)
            data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
            if isinstance(target, str | os.PathLike):
                Path(target).write_bytes(data)
            else:
                target.write(data)
                target.flush()
            _die()

        torch.save = save
    elif point == "checkpoint-rename":
        hook = _after(count, _die)
        for name in ("rename", "replace"):
            original = getattr(os, name)

            def moved(source, destination, *args, _original=original, **kwargs):
                if Path(destination).name == "last":
                    hook()
                return _original(source, destination, *args, **kwargs)

            setattr(os, name, moved)
    else:
        raise SystemExit(f"unknown kill point {point!r}")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    pipeline.train(cfg)


if __name__ == "__main__":
    main()
