"""What a run writes: the JSON document (machine, command, records, target checks), its markdown tables,
and the device's section of benchmarks/README.md."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peft
import torch
import transformers

from .measure import CUDA_PEAK, RESIDENT, SAVED_TENSORS

MIB = 2**20


@dataclass(frozen=True)
class Check:
    """A target from shared/reference/performance.md, checked on every model-scope group with `variant` and
    `reference` (and `targets`, when set).

    `kind="time"`: met when the upper quartile of the per-round ratios `variant / reference` is ≤ `limit`
    (a ratio of medians can meet a target that a quarter of the rounds miss). `kind="memory"`: met when
    the variant's memory less its own extra adapter state (parameters, gradients, optimiser state beyond
    the reference's) is ≤ `limit` × the reference's: activation memory no more than LoRA's, wherever LoRMA
    has more trainable parameters by design (pre mode with d_out > d_in).
    """

    label: str
    variant: str
    reference: str
    limit: float
    kind: str = "time"
    targets: str | None = None


PLUS_VARIANTS = (("lorma_plus_pre", "LoRMA₊ pre"), ("lorma_plus_post", "LoRMA₊ post"))
PI_VARIANTS = (("lorma_pi_pre", "LoRMA_π pre"), ("lorma_pi_post", "LoRMA_π post"))
CHECKS: tuple[Check, ...] = tuple(
    check
    for variant, label in PLUS_VARIANTS
    for check in (
        Check(f"{label} time ≤ 1.03 × LoRA", variant, "lora", 1.03),
        Check(f"{label} time ≤ 1.00 × PEFT LoRA, same precision", variant, "peft_lora_same_dtype", 1.0),
        Check(f"{label} memory ≤ LoRA's + its extra adapter state", variant, "lora", 1.0, kind="memory"),
    )
) + tuple(
    Check(f"{label} time ≤ {limit} × LoRA", variant, "lora", limit, targets=targets)
    for targets, limit in (("qv", 1.15), ("mlp", 1.5))
    for variant, label in PI_VARIANTS
)
MERGED_CHECK = "merged inference = base within noise (median ≤ the identical copy's upper quartile)"

MEMORY_NOTES = {
    SAVED_TENSORS: "counted by torch.autograd.graph.saved_tensors_hooks, each storage once (the activation "
    "memory adapters differ in); the total adds the adapter state: trainable parameters, their gradients "
    "and AdamW's moments (model scope; the layer scope has no optimiser)",
    CUDA_PEAK: "torch.cuda.max_memory_allocated during the step above what was allocated before it, plus the "
    "variant's own weights, buffers and optimiser state: what it would hold alone at its peak",
    RESIDENT: "what the model holds",
}


def device_label(device: torch.device) -> str:
    """`cpu`, or the GPU's name as a file-name slug (`nvidia-h200`)."""
    if device.type != "cuda":
        return device.type
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    """The commit of the checkout this package runs from, with `+dirty` when tracked files differ from it;
    `None` for an installed copy."""
    here = ["git", "-C", str(Path(__file__).resolve().parent)]
    try:
        commit = subprocess.run(
            [*here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [*here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where and with what the run happened; the load average is taken again when it ends."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "commit": _git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _group_key(record: dict[str, Any]) -> tuple:
    return (record["scope"], record["shape"]["name"], record["targets"], record["dropout"])


def _groups(records: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, dict[str, Any]]]:
    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(_group_key(record), {})[record["variant"]] = record
    return groups


def _check_result(check: Check, record: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    if check.kind == "time":
        q25, median, q75 = record[f"ratio_vs_{check.reference}_per_round"]
        measured, spread, met = median, [q25, q75], q75 <= check.limit
    else:
        own_extra = record["adapter_state_bytes"] - reference["adapter_state_bytes"]
        measured = (record["peak_bytes"] - max(own_extra, 0)) / reference["peak_bytes"]
        spread, met = None, measured <= check.limit
    return {
        "check": check.label,
        "measured": measured,
        "per_round_iqr": spread,
        "limit": check.limit,
        "met": met,
    }


def check_targets(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every target the model-scope groups can decide (`CHECKS`), and merged inference against the base."""
    results = []
    for (scope, model, targets, dropout), group in _groups(records).items():
        where = {"model": model, "targets": targets, "dropout": dropout}
        if scope == "model":
            for check in CHECKS:
                if check.variant in group and check.reference in group and check.targets in (None, targets):
                    results.append(
                        {**where, **_check_result(check, group[check.variant], group[check.reference])}
                    )
        elif scope == "inference" and {"merged", "base_copy"} <= set(group):
            _, median, _ = group["merged"]["ratio_vs_base_per_round"]
            _, _, noise = group["base_copy"]["ratio_vs_base_per_round"]
            q25, _, q75 = group["merged"]["ratio_vs_base_per_round"]
            results.append(
                {
                    **where,
                    "check": MERGED_CHECK,
                    "measured": median,
                    "per_round_iqr": [q25, q75],
                    "limit": noise,
                    "met": median <= noise,
                }
            )
    return results


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio_with_spread(value: float | None, per_round: list[float] | None) -> str:
    if value is None:
        return "—"
    if per_round is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{per_round[0]:.3f}, {per_round[2]:.3f}]"


def _ms(record: dict[str, Any]) -> str:
    digits = 1 if record["ms"] >= 10 else 2
    return f"{record['ms']:.{digits}f} [{record['ms_q25']:.{digits}f}, {record['ms_q75']:.{digits}f}]"


def _group_title(record: dict[str, Any]) -> str:
    shape = record["shape"]
    if record["scope"] == "layer":
        return (
            f"Layer {shape['name']}: {shape['d_out']}×{shape['d_in']}, {shape['tokens']} tokens, "
            f"r = {shape['r']}, forward + backward, {record['precision']}"
        )
    heads = f"{shape['heads']} heads" + (
        f" / {shape['kv_heads']} kv" if shape["kv_heads"] != shape["heads"] else ""
    )
    model = (
        f"{shape['name']} (hidden {shape['hidden']}, intermediate {shape['intermediate']}, {shape['layers']} "
        f"layers, {heads}, vocab {shape['vocab']}), {shape['batch']} × {shape['seq']} tokens, r = {shape['r']}, "
        f"{record['precision']}"
    )
    if record["scope"] == "model":
        sliced = ", fused-layer slices" if shape["sliced"] else ""
        return (
            f"Model {model}: training step, {record['targets']} targets ({shape['adapted_layers']} layers"
            f"{sliced}), adapter dropout {record['dropout']:g}"
        )
    return f"Inference {model}: prefill, LoRMA₊ on {record['targets']} targets"


def _variant_cell(record: dict[str, Any]) -> str:
    computations = record.get("shift_computations")
    if not computations:
        return f"`{record['variant']}`"
    chosen = ", ".join(f"{name} ×{count}" for name, count in sorted(computations.items()))
    return f"`{record['variant']}` ({chosen})"


def _train_table(group: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| variant | ms [IQR] | × frozen | × our LoRA [per-round IQR] | × PEFT LoRA [per-round IQR] | "
        "× PEFT same dtype [per-round IQR] | activations MiB | adapter state MiB | memory × LoRA |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for record in group:
        ratios = " | ".join(
            _ratio_with_spread(record[f"ratio_vs_{reference}"], record[f"ratio_vs_{reference}_per_round"])
            for reference in ("lora", "peft_lora", "peft_lora_same_dtype")
        )
        saved = None if record["saved_bytes"] is None else record["saved_bytes"] / MIB
        lines.append(
            f"| {_variant_cell(record)} | {_ms(record)} | {_number(record['ratio_vs_frozen'], 3)} | {ratios} | "
            f"{_number(saved)} | {record['adapter_state_bytes'] / MIB:.2f} | "
            f"{_number(record['peak_ratio_vs_lora'], 3)} |"
        )
    return lines


def _inference_table(group: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| variant | ms [IQR] | tokens/s | × base [per-round IQR] | memory MiB |",
        "|---|---|---|---|---|",
    ]
    for record in group:
        lines.append(
            f"| `{record['variant']}` ({record['description']}) | {_ms(record)} | {record['tokens_per_s']:.0f} | "
            f"{_ratio_with_spread(record['ratio_vs_base'], record['ratio_vs_base_per_round'])} | "
            f"{record['peak_bytes'] / MIB:.2f} |"
        )
    return lines


def markdown(document: dict[str, Any]) -> str:
    """The run as markdown: a header (command, machine, how to read), the target checks, one table per group."""
    machine = document["machine"]
    load = " → ".join(
        "/".join(f"{value:.1f}" for value in machine[key])
        for key in ("load_average_start", "load_average_end")
    )
    where = machine.get("gpu") or f"{machine['cpu']} ({machine['cpus_usable']} CPUs usable)"
    measures = sorted({record["memory_measure"] for record in document["records"]})
    lines = [
        f"## {document['device']}, {document['date']}",
        "",
        f"Command: `{document['command']}`",
        "",
        f"Machine: {where}, torch threads {machine['torch_threads']}, load average (1/5/15 min) {load}; "
        f"torch {machine['torch']}, transformers {machine['transformers']}, peft {machine['peft']}; "
        f"commit {machine['commit']}.",
        "",
        f"Times ({document['clock']} clock): median of {document['repeats']} interleaved rounds "
        "[interquartile range]; a ratio is the ratio of medians, with the interquartile range of the "
        "per-round ratios (each round runs every variant once). A target is met when the upper quartile "
        "of its per-round ratios meets it.",
    ]
    lines += [f"Memory, {measure}: {MEMORY_NOTES[measure]}." for measure in measures]
    if document["checks"]:
        lines += [
            "",
            "### Targets (performance.md)",
            "",
            "| check | model | targets | dropout | measured | IQR | limit | met |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for check in document["checks"]:
            iqr = check["per_round_iqr"]
            lines.append(
                f"| {check['check']} | {check['model']} | {check['targets']} | {check['dropout']:g} | "
                f"{check['measured']:.3f} | {'—' if iqr is None else f'{iqr[0]:.3f} – {iqr[1]:.3f}'} | "
                f"{check['limit']:.3f} | {'yes' if check['met'] else '**no**'} |"
            )
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in document["records"]:
        groups.setdefault(_group_title(record), []).append(record)
    for title, group in groups.items():
        table = _inference_table(group) if group[0]["scope"] == "inference" else _train_table(group)
        lines += ["", f"### {title}", "", *table]
    return "\n".join(lines) + "\n"


def write_results(document: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """`<out_dir>/<date>-<device>.json` and `.md` beside it (a later run on the same day replaces them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{document['date']}-{document['device']}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    md_path.write_text(markdown(document))
    return json_path, md_path


def update_readme(readme: Path, document: dict[str, Any], md_path: Path) -> None:
    """Replace the device's section of `readme` (between `<!-- latest:<device> -->` markers) with this run's
    tables, headings one level down, or append the section if the device has none yet."""
    device = document["device"]
    start, end = f"<!-- latest:{device} -->", f"<!-- /latest:{device} -->"
    link = os.path.relpath(md_path, readme.parent)
    tables = re.sub(r"^(#+) ", r"#\1 ", markdown(document), flags=re.M)  # one level below the README's
    section = f"{start}\n{tables}\nFull results: [{link}]({link}) and its `.json`.\n{end}"
    text = readme.read_text() if readme.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    readme.write_text(text)
