"""The control of an evaluation test: what a run's backbone generates without the weights the run trained.

An evaluation that forgot to load the trained weights would produce exactly this, so a test that asserts
the evaluation reproduces the run's own outputs also asserts those outputs differ from this control.
"""

from __future__ import annotations

from pathlib import Path

from lorma_exp.config import EvalConfig, load_run_settings
from lorma_exp.data import build_task_data
from lorma_exp.distributed import init_distributed
from lorma_exp.models import load_backbone, load_tokenizer
from lorma_exp.run_folder import prediction_files


def untrained_hypotheses(run_dir: Path, options: EvalConfig, split: str, output_dir: Path) -> list[str]:
    """The hypotheses the run's untouched backbone decodes on ``split`` (the run's settings as ``options``
    adjust them, e.g. another task), through the run's own evaluator."""
    settings = load_run_settings(run_dir, options)
    settings.data.eval_splits = [split]
    settings.data.limit = 1
    tokenizer = load_tokenizer(settings.model, settings.task.problem)
    task = build_task_data(settings, tokenizer, init_distributed("cpu"))
    model = load_backbone(settings.model, settings.task.problem, settings.task.num_labels)
    output_dir.mkdir(parents=True, exist_ok=True)
    task.evaluator(model, split, batch_size=settings.trainer.eval_batch_size, output_dir=output_dir)
    return hypotheses(output_dir, split)


def hypotheses(folder: Path, split: str) -> list[str]:
    """The ``<split>.hyp.txt`` lines a generation evaluation wrote into ``folder``."""
    return prediction_files(folder, split)[0].read_text().splitlines()
