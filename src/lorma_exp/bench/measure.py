"""How a step is timed and its memory measured.

Timing: CUDA events on a GPU. On a CPU, `time.perf_counter` (wall clock, `"wall"`) or `time.process_time`
(`"process"`: CPU seconds of this process, all threads): on a machine shared with other work the process
clock leaves out the time the benchmark waits for a core, which the wall clock counts; with one torch
thread it is the step's compute time. Variants are interleaved round-robin (each
round runs every variant once, in a freshly shuffled order), so background load and clock drift hit all of
them alike; Python's garbage collector runs once before the rounds and is off during them, never inside a
timed call. On a CPU, freed memory stays in the process (`keep_freed_memory`), so that page faults land on
no variant by the accident of running after another.

Memory: on a GPU, what the variant would hold alone at its peak: the allocator's peak during the step
above what was allocated before it, plus the variant's own weights, buffers and optimiser state (all
variants live in one process and share the frozen weights). On a CPU there is no allocator to ask, so the
measure is what differs between adapters: the bytes autograd keeps for backward (distinct storages of
saved tensors, parameters excluded, via `torch.autograd.graph.saved_tensors_hooks`), plus the trainable
parameters with their gradients and optimiser state (`adapter_state_bytes`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

Step = Callable[[], object]

SAVED_TENSORS = "autograd saved tensors (parameters excluded)"
CUDA_PEAK = "CUDA peak allocated (own weights, buffers, optimiser state + step peak)"
RESIDENT = "weights and buffers"


CPU_CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}
CUDA_EVENTS = "cuda-events"


def time_ms(step: Step, device: torch.device, clock: str) -> float:
    """Milliseconds one call takes: between two CUDA events after the queue has drained on a GPU, else by
    `CPU_CLOCKS[clock]`."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    now = CPU_CLOCKS[clock]
    began = now()
    step()
    return (now() - began) * 1e3


def warm_up(steps: Mapping[str, Step], calls: int) -> None:
    """`calls` untimed calls of every step (kernel selection, allocator pools, lazily created optimiser
    state), interleaved like the timed rounds."""
    for _ in range(calls):
        for step in steps.values():
            step()


def round_robin(
    steps: Mapping[str, Step], repeats: int, device: torch.device, clock: str, seed: int = 0
) -> dict[str, list[float]]:
    """`repeats` timed calls of every step, interleaved: every round runs each step once, in an order
    shuffled afresh each round (seeded), so no variant always runs first or right after the same other one."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1")
    order = list(steps)
    shuffle = random.Random(seed).shuffle
    samples: dict[str, list[float]] = {name: [] for name in order}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            shuffle(order)
            for name in order:
                samples[name].append(time_ms(steps[name], device, clock))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (no trimming, no `mmap` per large block), as the CUDA
    caching allocator does; `False` where that is not possible (no glibc).

    Otherwise a variant that frees large blocks hands memory back to the system and whichever variant
    allocates next pays the page faults: measured on a 2-core CPU, that added 70% to the time of the variant
    run after LoRMA_π, and 30–75% to PEFT's and LoRMA_π's own. This changes the whole process's allocator.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    trim_threshold, mmap_threshold = -1, -3  # glibc's M_TRIM_THRESHOLD and M_MMAP_THRESHOLD
    kept = mallopt(trim_threshold, 2**31 - 1)
    return bool(kept and (mallopt(mmap_threshold, 2**30) or mallopt(mmap_threshold, 32 * 2**20)))


@dataclass(frozen=True)
class Spread:
    """Median and interquartile range of a sample."""

    median: float
    q25: float
    q75: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        q25, median, q75 = np.percentile(np.asarray(list(values), dtype=float), [25, 50, 75])
        return cls(float(median), float(q25), float(q75))


def per_round_ratios(samples: Mapping[str, list[float]], name: str, reference: str) -> Spread:
    """Spread of `samples[name][k] / samples[reference][k]` over rounds `k`: the two ran in the same round,
    so slow drifts of the machine cancel."""
    return Spread.of(a / b for a, b in zip(samples[name], samples[reference], strict=True))


def _storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def saved_tensor_bytes(step: Step, parameters: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward while `step` runs, `parameters` excluded."""
    excluded = {_storage_key(parameter) for parameter in parameters}
    kept: dict[tuple[str, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in excluded:
            kept[key] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(kept.values())


def resident_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes of the model's parameters and buffers and of the optimiser's state, each storage counted once."""
    tensors: list[torch.Tensor] = [*model.parameters(), *model.buffers()]
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors.extend(value for value in state.values() if isinstance(value, torch.Tensor))
    storages = {_storage_key(tensor): tensor.untyped_storage().nbytes() for tensor in tensors}
    return sum(storages.values())


def adapter_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes the trainable parameters hold between steps and at the step's end: the parameters, one gradient
    each (in the parameter's dtype) and the optimiser's state for them (AdamW: two moments and a step)."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    total = 2 * sum(parameter.numel() * parameter.element_size() for parameter in trainable)
    if optimizer is not None:
        for parameter in trainable:
            state = optimizer.state.get(parameter, {})
            total += sum(
                value.numel() * value.element_size()
                for value in state.values()
                if isinstance(value, torch.Tensor)
            )
    return total


def cuda_peak_bytes(step: Step, device: torch.device, resident: int) -> int:
    """`resident` plus the allocator's peak during `step` above what was allocated when it began."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before + resident
