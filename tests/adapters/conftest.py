"""Fixtures of the adapter tests (the cases themselves are in cases.py)."""

from __future__ import annotations

import pytest
import torch

from .cases import CASES, Case


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine waiting for them is most of
    the run time (about 10× here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
def case(request) -> Case:
    return request.param
