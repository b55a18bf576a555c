"""The composed cells of every reproduction grid, composed once per test session (it takes a while)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.golden.cells import compose_cells


@pytest.fixture(scope="session")
def composed_cells() -> dict[str, dict[str, Any]]:
    return compose_cells()
