"""Peak resident memory of each rank of a short 2-rank ``trainer=fsdp`` run of the default model.

    python scripts/fsdp_peak_rss.py                  # 3 runs; rank 0's and rank 1's peak RSS
    python scripts/fsdp_peak_rss.py --runs 5 model=smollm2 task=e2e ...   # extra train.py overrides

Under ``trainer=fsdp`` only rank 0 loads the pretrained weights; the other ranks build the model on the
meta device and receive their shards (lorma_exp.sharding). Rank 1's peak is what that saves: compare it
with rank 0's, or with the same script run on a commit from before. Each rank reports its own peak
(``getrusage(RUSAGE_SELF).ru_maxrss``) twice: when training starts (start-up: loading and sharding the
model, tokenising the data) and when the run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from lorma_exp import pipeline, trainer
from lorma_exp.conf_dir import CONF_DIR
from lorma_exp.config import register_configs

# A short run: what is measured is start-up (loading and sharding), not training.
SHORT_RUN = [
    "trainer=fsdp",
    "data.num_examples=64",
    "data.max_length=32",
    "data.eval_limit=8",
    "trainer.max_steps=2",
    "trainer.batch_size=8",
    "trainer.eval_before_training=false",
    "trainer.progress_bar=false",
]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(out_dir: Path, overrides: list[str]) -> None:
    """One rank: train, then write this process's peak RSS (MiB) at start-up and at the end to
    ``rank<k>.json``."""
    peaks: dict[str, float] = {}
    fit = trainer.Trainer.fit

    def fit_after_start_up(self: trainer.Trainer) -> trainer.TrainResult:
        peaks["start_up"] = _peak_mib()
        return fit(self)

    trainer.Trainer.fit = fit_after_start_up  # type: ignore[method-assign]
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    pipeline.train(cfg)
    peaks["run"] = _peak_mib()
    (out_dir / f"rank{os.environ['RANK']}.json").write_text(json.dumps(peaks))


def measure(runs: int, overrides: list[str]) -> None:
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
    }
    peaks: dict[tuple[int, str], list[float]] = {}
    for index in range(runs):
        with tempfile.TemporaryDirectory() as scratch:
            out_dir = Path(scratch)
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                __file__,
                "--worker",
                str(out_dir),
                *SHORT_RUN,
                *overrides,
                f"run_dir={out_dir / 'run'}",
            ]
            subprocess.run(command, check=True, capture_output=True, env=environment)
            for rank in (0, 1):
                for phase, peak in json.loads((out_dir / f"rank{rank}.json").read_text()).items():
                    peaks.setdefault((rank, phase), []).append(peak)
        print(f"run {index + 1} done", flush=True)
    for (rank, phase), values in sorted(peaks.items()):
        listed = ", ".join(f"{value:.0f}" for value in values)
        print(f"rank {rank} peak RSS at {phase:<8}: median {statistics.median(values):.0f} MiB ({listed})")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="train.py overrides")
    arguments = parser.parse_args()
    measure(arguments.runs, arguments.overrides)


if __name__ == "__main__":
    main()
