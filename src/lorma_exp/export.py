"""A finished run's weights in the formats other tools load: PEFT, plain transformers, or ours.

    python -m lorma_exp.export run_dir=outputs/default/<run> format=peft out=exported/peft
    python -m lorma_exp.export run_dir=<run> format=merged out=exported/merged     # AutoModelFor*.from_pretrained
    python -m lorma_exp.export run_dir=<run> format=peft lossy_rank=16 out=...     # LoRMA_π: a truncated SVD
    lorma-export run_dir=<run> format=lorma out=...                                # our adapter folder

``peft``: a PEFT LoRA adapter (``PeftModel.from_pretrained(base, out)``, ``AutoPeftModelFor...``), exact for
LoRA and LoRMA₊; LoRMA_π's update is full rank, so it exports only with ``lossy_rank=k`` and the error of
each layer is printed and written to ``out/export_errors.json``. ``merged``: the adapters folded into the
weights, a plain transformers folder. ``lorma``: our own adapter folder (``load_adapters``). Every format
carries the run's tokenizer. The adapter names its base by a name other tools resolve (an embedded
model's hub id). Every finished LoRA / LoRMA₊ run already holds the ``peft`` export in ``adapter_peft/``
(:func:`write_run_exports`); the vLLM backend of ``eval.py`` serves through the same Method exports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, EvalConfig, Problem, TrainConfig, load_run_settings
from lorma_exp.data import restore_label_names
from lorma_exp.methods import Method, method_for
from lorma_exp.models import hub_name, load_backbone, load_tokenizer
from lorma_exp.run_folder import RunFolder

log = logging.getLogger(__name__)

# PEFT's task type for each of our problems: it picks the PeftModel class AutoPeftModel builds.
PEFT_TASK_TYPES = {
    Problem.classification: "SEQ_CLS",
    Problem.regression: "SEQ_CLS",
    Problem.causal_lm: "CAUSAL_LM",
}
FORMATS = ("peft", "merged", "lorma")
ERRORS_FILE = "export_errors.json"


def write_run_exports(
    method: Method,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    run: RunFolder,
    settings: TrainConfig,
) -> None:
    """What a finished run adds for other tools: its tokenizer, and ``adapter_peft/`` when the trained
    update is exactly a LoRA update."""
    tokenizer.save_pretrained(run.tokenizer)
    if method.exports_exactly_to_lora(model):
        method.write_lora(
            model,
            run.peft_adapter,
            hub_name(settings.model.name_or_path),
            PEFT_TASK_TYPES[settings.task.problem],
        )


def load_trained(run: RunFolder, weights: str | None) -> tuple[TrainConfig, Method, torch.nn.Module]:
    """A run's settings, method and trained model (from ``weights``, default its final weights)."""
    settings = load_run_settings(run.path, EvalConfig(run_dir=str(run.path)))
    method = method_for(settings.method.kind)
    folder = run.path / (weights or method.weights_name)
    if not folder.is_dir():
        saved = run.saved_weights(method.weights_name)
        raise ConfigError(f"weights: {folder} does not exist. Saved weights in this run: {saved or 'none'}.")
    restore_label_names(settings, run)

    def backbone(name_or_path: str | None) -> torch.nn.Module:
        model_settings = dataclasses.replace(
            settings.model, name_or_path=name_or_path or settings.model.name_or_path
        )
        return load_backbone(model_settings, settings.task.problem, settings.task.num_labels)

    return settings, method, method.load(folder, backbone, settings.model.name_or_path)


def export_run(
    run_dir: Path, format: str, out: Path, weights: str | None = None, lossy_rank: int | None = None
) -> dict[str, float]:
    """Write the run's weights to ``out`` in ``format`` (see the module docstring); returns the per-layer
    relative error of a lossy PEFT export (empty otherwise)."""
    if format not in FORMATS:
        raise ConfigError(f"format: {format!r} is not one of {', '.join(FORMATS)}")
    if lossy_rank is not None and format != "peft":
        raise ConfigError(f"lossy_rank: only format=peft takes it (format={format} is exact)")
    run = RunFolder(run_dir)
    settings, method, model = load_trained(run, weights)
    base = hub_name(settings.model.name_or_path)
    task_type = PEFT_TASK_TYPES[settings.task.problem]
    errors: dict[str, float] = {}
    if format == "peft":
        if method.exports_exactly_to_lora(model):
            if lossy_rank is not None:
                raise ConfigError(f"lossy_rank: method {settings.method.name} exports exactly; leave it out")
            method.write_lora(model, out, base, task_type)
        elif lossy_rank is None:
            raise ConfigError(
                f"format=peft: method {settings.method.name}'s update is not a LoRA update. Export it with "
                "format=merged, or as a truncated SVD with lossy_rank=k (the error is reported)."
            )
        else:
            try:
                errors = method.write_lossy_lora(model, out, lossy_rank, base, task_type)
            except ValueError as error:
                raise ConfigError(f"lossy_rank: {error}") from error
            (out / ERRORS_FILE).write_text(json.dumps(errors, indent=2) + "\n")
    elif format == "merged":
        method.write_merged(model, out)
    else:
        method.save(model, out, base)
    load_tokenizer(settings.model, settings.task.problem).save_pretrained(out)
    return errors


def parse_settings(pairs: Sequence[str]) -> dict[str, str]:
    """``key=value`` arguments as a dict (ConfigError naming an unknown key or a missing ``=``)."""
    known = ("run_dir", "format", "out", "weights", "lossy_rank")
    settings = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or key not in known:
            raise ConfigError(f"{pair!r}: expected key=value with key one of {', '.join(known)}")
        settings[key] = value
    missing = [key for key in ("run_dir", "format", "out") if key not in settings]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: required (e.g. run_dir=outputs/default/<run> format=peft out=x)"
        )
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lorma_exp.export",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:7]),
    )
    parser.add_argument(
        "settings",
        nargs="+",
        metavar="KEY=VALUE",
        help="run_dir=DIR format=peft|merged|lorma out=DIR [weights=adapter_best] [lossy_rank=K]",
    )
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = parse_settings(arguments.settings)
        rank = settings.get("lossy_rank")
        if rank is not None and not rank.isdigit():
            raise ConfigError(f"lossy_rank: {rank!r} is not a positive integer")
        out = Path(settings["out"])
        errors = export_run(
            Path(settings["run_dir"]),
            settings["format"],
            out,
            settings.get("weights"),
            int(rank) if rank is not None else None,
        )
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if errors:
        worst = max(errors, key=errors.__getitem__)
        mean = sum(errors.values()) / len(errors)
        print(
            f"lossy rank-{rank} export: relative error ‖ΔW − ΔW_k‖/‖ΔW‖ mean {mean:.4g}, worst {errors[worst]:.4g} "
            f"({worst}); per layer in {out / ERRORS_FILE}"
        )
    print(f"exported ({settings['format']}): {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
