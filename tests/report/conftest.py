"""Fixtures of the report tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from .run_folders import results_json, write_run_folder


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    """``make_run(name, loss_curve=..., **results_fields)`` writes a finished run folder under tmp_path/runs."""

    def make(name: str, loss_curve: Sequence[tuple[float, float]] = (), **fields: Any) -> Path:
        return write_run_folder(tmp_path / "runs" / name, results_json(**fields), loss_curve)

    return make
