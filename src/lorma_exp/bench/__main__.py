"""`python -m lorma_exp.bench`: measure, write `<out>/<date>-<device>.json` and `.md`, print the tables."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from . import PRESETS, SCOPES, benchmark
from .measure import CPU_CLOCKS
from .presets import PRECISIONS
from .report import markdown, update_readme, write_results


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lorma_exp.bench",
        description="Time and memory of LoRMA next to LoRA, PEFT's LoRA and the authors' weight-building "
        "form: per layer, per training step of a Llama-shaped model, and at inference.",
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="cpu", help="sizes and device (default cpu)"
    )
    parser.add_argument(
        "--scope", choices=[*SCOPES, "all"], default="all", help="what to measure (default all)"
    )
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        help="as trainer.precision: bf16/fp16 weights under autocast, or fp32 (default: the preset's, bf16); "
        "models whose table trains otherwise (GPT-2: fp32) keep theirs",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also measure the main variants compiled (torch.compile(model, fullgraph=True))",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results folder")
    parser.add_argument("--repeats", type=int, help="timed rounds per group (default: the preset's)")
    parser.add_argument(
        "--clock",
        choices=sorted(CPU_CLOCKS),
        default="wall",
        help="CPU timing: wall (perf_counter, default) or process (CPU time, for a shared machine; with --threads 1)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice); 1 steadies a shared machine"
    )
    parser.add_argument(
        "--readme",
        type=Path,
        help="also replace this device's latest tables in this file (benchmarks/README.md)",
    )
    args = parser.parse_args(argv)
    for name in ("repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name}={value} must be a positive integer")
    return args


def _report_progress(group: list[dict[str, Any]]) -> None:
    first = group[0]
    where = first["shape"]["name"] + (f", {first['targets']}" if first["targets"] else "")
    where += f", dropout {first['dropout']:g}" if first["dropout"] else ""
    print(f"[bench] {first['scope']} {where}: {len(group)} variants done", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    scopes = SCOPES if args.scope == "all" else (args.scope,)
    command = shlex.join(["python", "-m", "lorma_exp.bench", *argv])
    preset = PRESETS[args.preset]
    if args.precision is not None:
        preset = dataclasses.replace(preset, precision=PRECISIONS[args.precision])
    document = benchmark(
        preset,
        scopes,
        args.repeats,
        args.clock,
        command=command,
        progress=_report_progress,
        compile_variants=args.compile,
    )
    json_path, md_path = write_results(document, args.out)
    if args.readme is not None:
        update_readme(args.readme, document, md_path)
    print(markdown(document))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
