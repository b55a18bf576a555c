"""`python -m lorma_exp.bench.calibrate`: measure the constants of LoRMA_π's cost model on this machine.

`adapters.functional.choose_shift_computation` prices a dense product at its multiply-add count and two
other kinds of work in multiply-adds of the same device and dtype (`ShiftCosts`): a memory pass over one
element, and one element of one row FFT per log2(n) of the structured form. This measures the three and
prints the `ShiftCosts` entry for `adapters.functional.SHIFT_COSTS`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import torch

from lorma_exp.adapters.functional import ShiftCosts, structured_shift

from .measure import CPU_CLOCKS, CUDA_EVENTS, Step, keep_freed_memory, time_ms

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _median_ms(step: Step, device: torch.device, clock: str, repeats: int) -> float:
    step()
    return statistics.median(time_ms(step, device, clock) for _ in range(repeats))


def measure_shift_costs(
    device: torch.device,
    dtype: torch.dtype,
    size: int = 1024,
    rank: int = 8,
    repeats: int = 7,
    clock: str = "process",
) -> ShiftCosts:
    """`ShiftCosts` from a `size`³ product, a copy of `size`² elements and a structured `P` applied to
    `size` rows of length `size` (forward and backward, `rank` terms), all in `dtype` on `device`."""
    clock = CUDA_EVENTS if device.type == "cuda" else clock
    generator = torch.Generator().manual_seed(0)
    left, right = (torch.randn(size, size, generator=generator).to(device, dtype) for _ in range(2))
    per_multiply_add = _median_ms(lambda: left @ right, device, clock, repeats) / size**3
    target = torch.empty_like(left)
    per_element = _median_ms(lambda: target.copy_(left), device, clock, repeats) / size**2
    rows = left.clone().requires_grad_(True)
    factor_a = torch.randn(rank, size, generator=generator).to(device).requires_grad_(True)
    factor_b = torch.randn(size, rank, generator=generator).to(device).requires_grad_(True)

    def structured_step() -> None:
        structured_shift(rows, factor_a, factor_b, 1.0).backward(right)

    transforms = (3 * rank + 3) * size * size * math.log2(size)
    per_transform = _median_ms(structured_step, device, clock, repeats) / transforms
    return ShiftCosts(memory_pass=per_element / per_multiply_add, fft=per_transform / per_multiply_add)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorma_exp.bench.calibrate", description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--size", type=int, default=1024, help="n of the measured operations (default 1024)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (the benchmark's --threads)")
    parser.add_argument("--clock", choices=sorted(CPU_CLOCKS), default="process", help="CPU timing")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    device = torch.device(args.device)
    costs = measure_shift_costs(device, DTYPES[args.dtype], size=args.size, clock=args.clock)
    print(
        f'("{device.type}", torch.{args.dtype}): '
        f"ShiftCosts(memory_pass={costs.memory_pass:.3g}, fft={costs.fft:.3g}),"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
