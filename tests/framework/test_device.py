"""trainer.device=auto: CUDA first, then Apple's mps, then the CPU (availability monkeypatched)."""

from __future__ import annotations

import pytest
import torch

from lorma_exp import distributed
from lorma_exp.config import ConfigError
from lorma_exp.distributed import pick_device


@pytest.fixture
def machine(monkeypatch):
    """Set which accelerators this process sees: ``machine(cuda=2, mps=True)``."""

    def _set(cuda: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(distributed, "mps_available", lambda: mps)

    return _set


@pytest.mark.parametrize(
    ("cuda", "mps", "local_rank", "expected"),
    [
        (2, True, 3, torch.device("cuda", 1)),  # CUDA wins over mps; the rank's own GPU
        (0, True, 0, torch.device("mps")),
        (0, False, 0, torch.device("cpu")),
    ],
)
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, local_rank, expected):
    machine(cuda=cuda, mps=mps)
    assert pick_device("auto", local_rank) == expected


def test_explicit_devices_are_taken_as_asked_or_refused_with_the_fix(machine):
    machine(cuda=0, mps=True)
    assert pick_device("mps", 0) == torch.device("mps")
    assert pick_device("cpu", 0) == torch.device("cpu")
    with pytest.raises(RuntimeError, match=r"trainer\.device=auto"):
        pick_device("cuda", 0)
    machine(cuda=1, mps=False)
    with pytest.raises(RuntimeError, match="mps backend is not available"):
        pick_device("mps", 0)


def test_mps_is_a_valid_device_setting_and_a_typo_is_not(compose_settings):
    assert compose_settings("trainer.device=mps").trainer.device == "mps"
    with pytest.raises(ConfigError, match="cuda:N or mps"):
        compose_settings("trainer.device=metal")
