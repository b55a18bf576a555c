"""Adapter layers: `LoraLinear` and `LormaLinear` wrap a frozen `nn.Linear` or transformers' GPT-2 `Conv1D`
(kept intact as `base_layer`) and add trainable factors. The maths of each method lives in its variant
(`variants.py`); a layer holds the parameters, slices and dropout, and hands the variant what it needs.

A layer adapts either its whole output or named row slices of it (GPT-2's fused `c_attn`: q, k, v). A
sliced layer stacks its factors along a leading slice dimension: `lorma_A` is `(slices, r, n)` instead of
`(r, n)`; `slice_factors()` and `factors()` hand them out per slice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base_layers import EXACT_DTYPE, compute_dtype, is_adaptable, weight_matrix
from .config import AdapterConfig
from .functional import SHIFT_COMPUTATIONS, Fold, ShiftComputation, adapted_linear, low_rank_branch
from .variants import Factors, Lorma

#: `LormaLinear.shift_path`: `"auto"` (the cost model's choice) or one of `functional.SHIFT_COMPUTATIONS`.
ShiftPath = Literal["auto", ShiftComputation]
SHIFT_PATHS: tuple[str, ...] = ("auto", *SHIFT_COMPUTATIONS)


@dataclass(frozen=True)
class OutputSlice:
    """Output rows `[start, stop)` of the base layer that one adapter acts on; `name` is `""` for a whole
    layer and `"q"`, `"k"` or `"v"` for a slice of a fused projection."""

    name: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


class AdapterLayer(nn.Module):
    """What `LoraLinear` and `LormaLinear` share: the wrapped layer, slicing, dropout, the parameters the
    variant (`adapter_config.variant`) declares, and the weight-space view used by merge, unmerge and
    export."""

    #: The `AdapterConfig.method` this layer class implements.
    method: str

    def __init__(
        self, base_layer: nn.Module, config: AdapterConfig, slices: Sequence[OutputSlice] | None = None
    ):
        super().__init__()
        if not is_adaptable(base_layer):
            raise TypeError(
                f"{type(self).__name__} wraps nn.Linear or GPT-2 Conv1D, not {type(base_layer).__name__}"
            )
        if config.method != self.method:
            raise ValueError(
                f"{type(self).__name__} implements method={self.method!r}, the config says "
                f"method={config.method!r}; inject_adapters picks the layer class for you"
            )
        weight = weight_matrix(base_layer)
        base_layer.weight.requires_grad_(False)
        self.base_layer = base_layer
        self.adapter_config = config
        self.variant = config.variant
        self.out_features, self.in_features = weight.shape
        self.is_sliced = slices is not None
        self.slices = self._ordered_slices(slices) if slices else (OutputSlice("", 0, self.out_features),)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.train(base_layer.training)  # an eval-mode model stays in eval mode
        # Half-precision bases get float32 factors, so optimiser updates are not lost to rounding.
        factor_dtype = torch.promote_types(weight.dtype, torch.float32)
        shapes = self.variant.factor_shapes(self.slices[0].size, self.in_features)
        leading = (len(self.slices),) if self.is_sliced else ()
        for name, shape in shapes.items():
            tensor = torch.empty(leading + shape, dtype=factor_dtype, device=weight.device)
            self.register_parameter(name, nn.Parameter(tensor))
        #: The factor parameters' names, in the order they are registered (and saved).
        self.factor_names: tuple[str, ...] = tuple(shapes)
        self.reset_parameters()

    def _ordered_slices(self, slices: Sequence[OutputSlice]) -> tuple[OutputSlice, ...]:
        """The slices by position; they must be equal-sized (their factors are stacked) and disjoint."""
        ordered = tuple(sorted(slices, key=lambda piece: piece.start))
        sizes = {piece.size for piece in ordered}
        overlapping = any(a.stop > b.start for a, b in itertools.pairwise(ordered))
        if len(sizes) != 1 or overlapping or ordered[0].start < 0 or ordered[-1].stop > self.out_features:
            raise ValueError(
                f"output slices {slices} must be equal-sized, disjoint and within 0..{self.out_features}"
            )
        return ordered

    # --- parameters -------------------------------------------------------------------------------------

    def reset_parameters(self) -> None:
        """Initialise every slice's factors as the variant prescribes (see docs/adapters.md)."""
        with torch.no_grad():
            for _, factors in self.slice_factors():
                self.variant.initialise(factors)

    def slice_factors(self) -> list[tuple[OutputSlice, Factors]]:
        """`(slice, {name: factor})` per adapted slice; the factors are the parameters or views of them."""
        parameters = {name: getattr(self, name) for name in self.factor_names}
        if not self.is_sliced:
            return [(self.slices[0], parameters)]
        return [
            (piece, {name: parameter[index] for name, parameter in parameters.items()})
            for index, piece in enumerate(self.slices)
        ]

    def factors(self) -> list[tuple[OutputSlice, torch.Tensor, torch.Tensor]]:
        """`(slice, A, B)` per adapted slice: the low-rank pair (a variant may have more factors, such as a
        magnitude; `slice_factors` has them all)."""
        variant = self.variant
        return [
            (piece, factors[variant.factor_a], factors[variant.factor_b])
            for piece, factors in self.slice_factors()
        ]

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable factor parameters of this layer."""
        for name in self.factor_names:
            yield getattr(self, name)

    @property
    def slice_names(self) -> tuple[str, ...]:
        """Names of the adapted slices of a fused layer (`("q", "v")`); `()` for a whole layer."""
        return tuple(piece.name for piece in self.slices) if self.is_sliced else ()

    def _slice(self, name: str | None) -> tuple[OutputSlice, Factors]:
        if not self.is_sliced:
            if name is not None:
                raise ValueError(f"this layer is not sliced; call without a slice name (got {name!r})")
            return self.slice_factors()[0]
        for piece, factors in self.slice_factors():
            if piece.name == name:
                return piece, factors
        raise ValueError(
            f"slice={name!r}: this fused layer adapts slices {self.slice_names}; name one of them"
        )

    # --- forward ----------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter_config.dropout_on != "input":
            return self.variant.forward(self, x)
        out = self.variant.forward(self, self.dropout(x))
        if self.is_sliced and self.training and self.adapter_config.dropout > 0:
            out = self._frozen_rows_from(x, out)
        return out

    def _frozen_rows_from(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`out` with the rows no slice adapts (GPT-2's k) recomputed from the clean input `x`.

        Input dropout is the authors' whole-input dropout, which touched only adapted layers: on a fused
        layer only what feeds the adapted slices is dropped. The frozen rows are computed again rather than
        threaded through every variant's forward: one extra frozen-slice product in training."""
        weight = weight_matrix(self.base_layer)
        bias = self.base_layer.bias
        parts = [
            out[..., start:stop]
            if index is not None
            else F.linear(x, weight[start:stop], None if bias is None else bias[start:stop]).to(out.dtype)
            for start, stop, index in self.segments()
        ]
        return torch.cat(parts, dim=-1)

    def segments(self) -> list[tuple[int, int, int | None]]:
        """`(start, stop, slice index or None)` covering all output rows in order."""
        segments, position = [], 0
        for index, piece in enumerate(self.slices):
            if piece.start > position:
                segments.append((position, piece.start, None))
            segments.append((piece.start, piece.stop, index))
            position = piece.stop
        if position < self.out_features:
            segments.append((position, self.out_features, None))
        return segments

    def _branch_input(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The adapter branch's input as rows (tokens × d_in) in `dtype`; dropped out here when dropout is on
        the adapter branch (with `dropout_on="input"` the caller already dropped `x`)."""
        if self.adapter_config.dropout_on == "adapter":
            x = self.dropout(x)
        return x.to(dtype).reshape(-1, self.in_features)

    def branch_forward(self, x: torch.Tensor, fold: Fold, keep_base_output: bool) -> torch.Tensor:
        """`base(x) + s·(x_d·A_effᵀ)·B_effᵀ` on every adapted slice (`keep_base_output`), or the branch plus
        the bias alone (LoRMA without inflation); `fold` says where W enters the branch (`functional.Fold`),
        `x_d` is `x` with the adapter dropout when it is on the branch and training.

        With the frozen output kept, the layer is one fused node (`functional.adapted_linear`), whole or
        sliced, with or without branch dropout. Without it, each slice's branch
        (`functional.low_rank_branch`) replaces the frozen rows it adapts."""
        weight = weight_matrix(self.base_layer)
        dtype = compute_dtype(x, weight)
        scale = self.adapter_config.scale
        if keep_base_output:
            branch_dropout = self.adapter_config.dropout if self.training else 0.0
            if self.adapter_config.dropout_on != "adapter":
                branch_dropout = 0.0  # the caller dropped the whole input
            slices = tuple((piece.start, piece.stop) for piece in self.slices) if self.is_sliced else None
            out = adapted_linear(
                x.to(dtype).reshape(-1, self.in_features),
                weight,
                self.base_layer.bias,
                getattr(self, self.variant.factor_a),
                getattr(self, self.variant.factor_b),
                scale,
                fold,
                slices,
                branch_dropout,
            )
            return out.view(*x.shape[:-1], self.out_features)
        rows = self._branch_input(x, dtype)
        lead = x.shape[:-1]
        bias = self.base_layer.bias
        factors = self.factors()
        parts = []
        for start, stop, index in self.segments():
            piece_bias = None if bias is None else bias[start:stop]
            if index is None:
                parts.append(F.linear(x, weight[start:stop], piece_bias))
                continue
            _, factor_a, factor_b = factors[index]
            branch = low_rank_branch(rows, factor_a, factor_b, weight[start:stop], scale, fold).view(
                *lead, -1
            )
            parts.append(branch if piece_bias is None else branch + piece_bias.to(dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    # --- weight space: analysis, merge, unmerge, export -------------------------------------------------

    def _working_copies(self, dtype: torch.dtype) -> Iterator[tuple[OutputSlice, Factors, torch.Tensor]]:
        """`(slice, factors, rows of W)` per slice, detached copies in `dtype`."""
        weight = weight_matrix(self.base_layer).detach().to(dtype)
        for piece, factors in self.slice_factors():
            copies = {name: factor.detach().to(dtype) for name, factor in factors.items()}
            yield piece, copies, weight[piece.start : piece.stop]

    def delta_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """`W' − W` in the base weight's (d_out, d_in) orientation, rows outside the adapted slices zero.

        Computed without autograd in `dtype` (default: float32, or the weight's dtype if it is wider)."""
        weight = weight_matrix(self.base_layer)
        dtype = dtype or torch.promote_types(weight.dtype, torch.float32)
        delta = torch.zeros(weight.shape, dtype=dtype, device=weight.device)
        with torch.no_grad():
            for piece, factors, rows in self._working_copies(dtype):
                delta[piece.start : piece.stop] = self.variant.update(factors, rows)
        return delta

    def merged_weight(self) -> torch.Tensor:
        """`W'` in float64, (d_out, d_in): what `merge_adapters` writes into the base layer."""
        return weight_matrix(self.base_layer).detach().to(EXACT_DTYPE) + self.delta_weight(EXACT_DTYPE)

    def restored_weight(self) -> torch.Tensor:
        """`W` in float64 recovered from a base layer that currently holds `W'` (used by `unmerge_adapters`)."""
        with torch.no_grad():
            restored = weight_matrix(self.base_layer).detach().to(EXACT_DTYPE).clone()
            for piece, factors, rows in self._working_copies(EXACT_DTYPE):
                restored[piece.start : piece.stop] = self.variant.restore(factors, rows)
        return restored

    def exact_lora_factors(self) -> list[tuple[OutputSlice, torch.Tensor, torch.Tensor]] | None:
        """`(slice, B_s, A_s)` with `W'_s − W_s = B_s·A_s` exactly (scaling folded into `B_s`), in float64;
        `None` where the update is not low-rank (see `AdapterConfig.exports_exactly_to_lora`)."""
        if not self.variant.exports_exactly_to_lora:
            return None
        with torch.no_grad():
            return [
                (piece, *self.variant.lora_factors(factors, rows))
                for piece, factors, rows in self._working_copies(EXACT_DTYPE)
            ]

    def extra_repr(self) -> str:
        sliced = f", slices={self.slice_names}" if self.is_sliced else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, r={self.adapter_config.r}, "
            f"{self.variant.describe()}{sliced}"
        )


class LoraLinear(AdapterLayer):
    """LoRA: `W' = W + s·B·A` with `A` (r × d_in) Kaiming-uniform and `B` (d_out × r) zero."""

    method = "lora"


class LormaLinear(AdapterLayer):
    """LoRMA: `W' = M·W` (pre) or `W·M` (post), `M = I(B·A)` with the rank inflation `I` of
    `adapter_config.inflation` (see `variants.py`). `A` is r × n and `B` is n × r, n = d_out (of the slice)
    for pre and d_in for post.

    Training never builds `W'` for inflations with a low-rank form (`rri`, `none`): they run as a low-rank
    branch with a hand-written backward (see `functional.adapted_linear`). `shift` computes `P = s·π(B·A)`
    as the cost model picks per call (`functional.shift_linear`: dense `P` on activations or in `P·W`, or
    its structured FFT form); set `shift_path` to one computation to force it (benchmarks, tests).
    """

    method = "lorma"
    variant: Lorma
    _shift_path: ShiftPath = "auto"

    @property
    def shift_path(self) -> ShiftPath:
        """How `shift` is computed: `"auto"` (the cost model's choice per call, the default) or one of
        `functional.SHIFT_COMPUTATIONS`; other inflations ignore it."""
        return self._shift_path

    @shift_path.setter
    def shift_path(self, value: ShiftPath) -> None:
        if value not in SHIFT_PATHS:
            raise ValueError(f"shift_path={value!r} must be one of {SHIFT_PATHS}")
        self._shift_path = value

    def multiplier(self, slice_name: str | None = None) -> torch.Tensor:
        """`M = I(B·A)`, n × n, in float32 (or the factors' dtype if wider), without autograd.

        For a fused layer name the slice (`"q"`, `"v"`, …): each slice has its own multiplier, acting on that
        slice's rows of the weight (pre) or on the input side of those rows (post)."""
        _, factors = self._slice(slice_name)
        dtype = torch.promote_types(factors[self.variant.factor_a].dtype, torch.float32)
        with torch.no_grad():
            return self.variant.multiplier({name: factor.to(dtype) for name, factor in factors.items()})
