"""Weight updates of finished runs, read through the adapter library: Table 15, Figure 7 and Table 9.

The thin layer over ``analysis.rank`` and ``analysis.similarity``: it loads a run's saved adapter into a
fresh base model (``lorma_exp.adapters.load_adapters``), casts the model to float64, and reads every
adapter layer's ΔW = W' − W (``delta_weight``, base weight orientation) and, for LoRMA layers, the
multiplier I(BA) (``multiplier``; one per adapted slice of a fused layer). The float64 cast computes ΔW and
I(BA) from the saved parameters without further rounding; ranks then use the tolerance of the
parameters' own precision (see ``analysis.rank``). Snapshots are the adapters saved at the end of each
epoch (``RunFolder.snapshots``). Only runs whose method saves adapter-library folders
(``Method.adapter_library``: LoRMA and LoRA) are analysed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lorma_exp.adapters import LormaLinear, iter_adapter_layers, load_adapters
from lorma_exp.adapters.io import CONFIG_FILE
from lorma_exp.analysis.convergence import pair_with_reference
from lorma_exp.analysis.rank import numerical_rank
from lorma_exp.analysis.render import METHOD_COLOURS, RenderedTable, agg_figure, records_table
from lorma_exp.analysis.runs import Run, RunDataError, cell_fields
from lorma_exp.analysis.similarity import compare_updates, random_baseline
from lorma_exp.analysis.tables import Observation, build_table, render
from lorma_exp.config import EvalConfig, load_run_settings
from lorma_exp.methods import find_method
from lorma_exp.models import load_backbone
from lorma_exp.paper import FIGURE7, METHOD_LABEL, TABLE9, TABLE9_MEASURES, TABLE15, PaperRow
from lorma_exp.run_folder import RunFolder

# A fresh base model for a run, as it was before training (same class, heads and dtype as in training).
BaseModelLoader = Callable[[Run], torch.nn.Module]


def untrained_backbone(run: Run) -> torch.nn.Module:
    """The run's base model before training, rebuilt from its config.yaml the way the trainer built it."""
    folder = _local(run)
    settings = load_run_settings(folder, EvalConfig(run_dir=str(folder)))
    return load_backbone(settings.model, settings.task.problem, settings.task.num_labels)


def _adapter_library_method(run: Run) -> bool:
    method = find_method(run.results.get("kind"))
    return method is not None and method.adapter_library


def adapter_runs(runs: Sequence[Run]) -> list[Run]:
    """The runs whose method saves adapter-library folders (LoRMA, LoRA; not PEFT or full fine-tuning)."""
    return [run for run in runs if _adapter_library_method(run)]


def final_adapter(run: Run) -> Path:
    """The run's end-of-training adapter folder (in the folder its method names)."""
    method = find_method(run.results.get("kind"))
    if method is None:
        raise RunDataError(f"{run.source}: its method kind {run.results.get('kind')!r} is not registered")
    return RunFolder(_local(run)).weights(method.weights_name)


@dataclass(frozen=True)
class LayerUpdate:
    """One adapted layer: ΔW (float64, base weight orientation), its LoRMA multipliers by slice name
    (``""`` for a whole layer; empty for LoRA), and ``precision``, the least precise dtype among the
    layer's base weight and factors as they were saved."""

    name: str
    delta_weight: torch.Tensor
    multipliers: dict[str, torch.Tensor]
    precision: torch.dtype


def _least_precise(tensors: Iterable[torch.Tensor]) -> torch.dtype:
    return max((tensor.dtype for tensor in tensors), key=lambda dtype: torch.finfo(dtype).eps)


def layer_updates(model: torch.nn.Module) -> list[LayerUpdate]:
    """ΔW and I(BA) of every adapter layer of ``model`` (whose adapter layers this casts to float64)."""
    updates = []
    with torch.no_grad():
        for name, layer in iter_adapter_layers(model):
            precision = _least_precise([layer.base_layer.weight, *layer.adapter_parameters()])
            layer.to(torch.float64)
            multipliers: dict[str, torch.Tensor] = {}
            if isinstance(layer, LormaLinear):
                for slice_name in layer.slice_names or (None,):
                    multipliers[slice_name or ""] = layer.multiplier(slice_name)
            updates.append(LayerUpdate(name, layer.delta_weight(torch.float64), multipliers, precision))
    return updates


def load_updates(run: Run, adapter_dir: Path, load_base_model: BaseModelLoader) -> list[LayerUpdate]:
    if not (adapter_dir / CONFIG_FILE).is_file():
        raise RunDataError(f"{adapter_dir}: no saved adapter ({CONFIG_FILE})")
    base_name = run.results.get("model_name_or_path")
    return layer_updates(load_adapters(load_base_model(run), adapter_dir, base_model_name_or_path=base_name))


def _selected(updates: Sequence[LayerUpdate], pattern: re.Pattern[str] | None) -> Iterator[LayerUpdate]:
    return (update for update in updates if pattern is None or pattern.search(update.name))


def _local(run: Run) -> Path:
    if run.folder is None:
        raise RunDataError(f"{run.source}: rank and similarity need the run folder (its saved adapter)")
    return run.folder


def _method_row(key: str) -> PaperRow:
    return PaperRow(key, METHOD_LABEL.get(key, key), ())


def delta_rank_tables(
    runs: Sequence[Run], load_base_model: BaseModelLoader, layer_pattern: re.Pattern[str] | None = None
) -> list[RenderedTable]:
    """Table 15: the numerical rank of ΔW of every selected adapted layer, and per method over them all."""
    records, observations = [], []
    for run in runs:
        method = cell_fields(run)["method"]
        for update in _selected(load_updates(run, final_adapter(run), load_base_model), layer_pattern):
            rank = numerical_rank(update.delta_weight, precision=update.precision)
            rows, columns = update.delta_weight.shape
            records.append(
                {
                    "run": run.source,
                    "method": method,
                    "seed": run.seed,
                    "layer": update.name,
                    "r": run.results.get("r"),
                    "rows": rows,
                    "columns": columns,
                    "rank": rank,
                }
            )
            observations.append(Observation(method, "rank", rank, None, f"{run.source}:{update.name}"))
    title = "Rank of ΔW = W' − W per adapted layer (float64 SVD; tolerance σ_max·max(m, n)·eps(saved dtype))"
    columns = ["method", "seed", "layer", "r", "rows", "columns", "rank", "run"]
    notes = ["n counts adapted matrices over all runs."]
    comparison = build_table(TABLE15, observations, new_row=_method_row, notes=notes)
    return [records_table("table15_layers", title, records, columns), render(comparison)]


def multiplier_rank_tables(
    runs: Sequence[Run],
    out_dir: Path,
    load_base_model: BaseModelLoader,
    layer_pattern: re.Pattern[str] | None = None,
) -> list[RenderedTable]:
    """Figure 7: the numerical rank of every LoRMA multiplier I(BA) in each epoch snapshot, per method the
    lowest over snapshots and layers, and figure7.png. Empty when no run saved snapshots."""
    records, observations = [], []
    curves: dict[str, list[tuple[list[int], list[int]]]] = defaultdict(list)
    for run in runs:
        method = cell_fields(run)["method"]
        by_layer: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for epoch, snapshot in RunFolder(_local(run)).snapshots():
            for update in _selected(load_updates(run, snapshot, load_base_model), layer_pattern):
                for slice_name, multiplier in update.multipliers.items():
                    layer = f"{update.name}[{slice_name}]" if slice_name else update.name
                    rank = numerical_rank(multiplier, precision=update.precision)
                    by_layer[layer].append((epoch, rank))
                    records.append(
                        {
                            "run": run.source,
                            "method": method,
                            "seed": run.seed,
                            "layer": layer,
                            "epoch": epoch,
                            "size": multiplier.shape[0],
                            "rank": rank,
                        }
                    )
        if by_layer:
            lowest = min(rank for points in by_layer.values() for _, rank in points)
            observations.append(Observation(method, "min_rank", lowest, run.seed, run.source))
            curves[method].extend(
                ([e for e, _ in points], [k for _, k in points]) for points in by_layer.values()
            )
    if not records:
        return []
    plot_multiplier_ranks(curves, out_dir / "figure7.png")
    title = "Rank of the LoRMA multiplier I(BA) per layer and epoch snapshot"
    columns = ["method", "seed", "layer", "epoch", "size", "rank", "run"]
    comparison = build_table(FIGURE7, observations, new_row=_method_row)
    return [records_table("figure7_snapshots", title, records, columns), render(comparison)]


def plot_multiplier_ranks(curves: dict[str, list[tuple[list[int], list[int]]]], path: Path) -> Path:
    """Rank of I(BA) against epoch: one thin line per (run, layer), coloured by method."""
    figure = agg_figure(6, 4)
    axes = figure.subplots()
    for method, lines in sorted(curves.items()):
        for index, (epochs, ranks) in enumerate(lines):
            label = METHOD_LABEL.get(method, method) if index == 0 else None
            axes.plot(epochs, ranks, marker=".", linewidth=0.8, color=METHOD_COLOURS.get(method), label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("numerical rank of I(BA)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def layer_label(name: str) -> str:
    """A short name for an adapted layer: ``layer 3 query`` for ``roberta.encoder.layer.3.attention.self.query``
    (the first numeric part of the name, and its last part); the whole name when it has no number."""
    parts = name.split(".")
    number = next((part for part in parts if part.isdigit()), None)
    return name if number is None else f"layer {number} {parts[-1]}"


def _similarity_measures(update: torch.Tensor, reference: torch.Tensor, rank: int) -> dict[str, float | None]:
    """The Table 9 measures (``paper.TABLE9_MEASURES`` keys) of ``update`` against ``reference``."""
    measures = compare_updates(update, reference, rank)
    return {
        "frobenius_distance": measures.frobenius_distance,
        "cosine": measures.cosine,
        "phi_left": measures.subspace_similarity["left"],
        "phi_right": measures.subspace_similarity["right"],
        "singular_values": measures.singular_value_squared_difference,
        "eigenvalues": measures.eigenvalue_squared_difference,
        "theta1_left": measures.first_principal_angle["left"],
        "theta1_right": measures.first_principal_angle["right"],
    }


# The order of Table 9's rows within a layer: the paper's updates, then the random baseline.
_UPDATE_ORDER = {"lorma_plus": 0, "lorma_pi": 1, "random": 2}


def similarity_report(
    runs: Sequence[Run],
    load_base_model: BaseModelLoader,
    layer_pattern: re.Pattern[str] | None = None,
    seed: int = 0,
) -> list[RenderedTable]:
    """Table 9: each LoRMA run's ΔW against the ΔW of the LoRA run of the same task, model, r, targets and
    seed, layer by layer, with the paper's random baseline (an unscaled N(0, 1) matrix) against each LoRA
    layer. Returns the per-layer records and the table (mean ± std over seeds per task, layer and update)."""
    pairs, notes = pair_with_reference(runs)
    cache: dict[str, dict[str, LayerUpdate]] = {}

    def updates_of(run: Run) -> dict[str, LayerUpdate]:
        if run.source not in cache:
            updates = load_updates(run, final_adapter(run), load_base_model)
            cache[run.source] = {update.name: update for update in _selected(updates, layer_pattern)}
        return cache[run.source]

    generator = torch.Generator().manual_seed(seed)
    with_baseline: set[str] = set()
    records, observations, labels, order = [], [], {}, {}
    measure_keys = [key for key, _, _ in TABLE9_MEASURES]
    for run, reference in sorted(pairs, key=lambda pair: (pair[1].source, pair[0].source)):
        fields = cell_fields(run)
        r = int(reference.results["r"])
        run_updates = updates_of(run)
        for layer, reference_update in sorted(updates_of(reference).items()):
            if layer not in run_updates:
                notes.append(f"{run.source} has no adapter on {layer}, which {reference.source} adapts")
                continue
            target = reference_update.delta_weight
            compared = [(fields["method"], run_updates[layer].delta_weight, run.source)]
            if reference.source not in with_baseline:
                compared.append(("random", random_baseline(tuple(target.shape), generator), None))
            for method, update, source in compared:
                try:
                    measures = _similarity_measures(update, target, r)
                except ValueError as error:
                    raise RunDataError(
                        f"{source or method} against {reference.source}, {layer}: {error}"
                    ) from None
                update_label = METHOD_LABEL.get(method, method)
                row = f"{fields['task']}/{layer}/{method}"
                labels[row] = f"{fields['task']} · {layer_label(layer)} · {update_label}"
                order[row] = (fields["task"], layer, _UPDATE_ORDER.get(method, len(_UPDATE_ORDER)), method)
                observations.extend(
                    Observation(row, key, value, run.seed, source or f"random vs {reference.source}")
                    for key, value in measures.items()
                    if value is not None
                )
                records.append(
                    {
                        "task": fields["task"],
                        "model": fields["model"],
                        "seed": run.seed,
                        "layer": layer,
                        "update": update_label,
                        "r": r,
                        **measures,
                        "run": source,
                        "lora_run": reference.source,
                    }
                )
        with_baseline.add(reference.source)
    notes.append(
        "X against ΔW_LoRA of the same layer at subspace dimension r (the LoRA run's rank): φ = ‖U_X^r⊤ U_Y^r‖_F² / r "
        "(Hu et al. 2021) and Θ₁ = the smallest principal angle, on the left (output) and right (input) singular "
        "subspaces; σ and λ (by modulus) in decreasing order; definitions in lorma_exp.analysis.similarity."
    )
    notes.append(f"random: an unscaled N(0, 1) matrix of ΔW_LoRA's shape, as in the paper (seed {seed}).")
    observations.sort(key=lambda observation: order[observation.row])
    records.sort(
        key=lambda record: (record["task"], record["layer"], record["seed"], record["update"] == "random")
    )
    title = "Table 9 per layer: each update X against the LoRA run's ΔW"
    columns = ["task", "model", "seed", "layer", "update", "r", *measure_keys]
    layers = records_table("table9_layers", title, records, columns, notes)
    summary = build_table(
        TABLE9,
        observations,
        smoke=any(run.smoke for pair in pairs for run in pair),
        notes=notes,
        new_row=lambda key: PaperRow(key, labels[key], ()),
    )
    return [layers, render(summary)]
