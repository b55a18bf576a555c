"""Adapter layers: `LoraLinear` and `LormaLinear` wrap a frozen `nn.Linear` or transformers' GPT-2 `Conv1D`
(kept intact as `base_layer`) and add trainable low-rank factors.

A layer adapts either its whole output or named row slices of it (GPT-2's fused `c_attn`: q, k, v). A
sliced layer stacks its factors along a leading slice dimension: `lorma_A` is `(slices, r, n)` instead of
`(r, n)`; `factors()` hands them out per slice.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdapterConfig
from .functional import Fold, adapted_linear, low_rank_branch, pi, shift_prefers_weight_path

ShiftPath = Literal["auto", "activations", "weight"]
SHIFT_PATHS: tuple[ShiftPath, ...] = ("auto", "activations", "weight")

#: Working precision for merge, unmerge and export: exact enough that casting back is the only rounding.
EXACT_DTYPE = torch.float64


def is_conv1d(module: nn.Module) -> bool:
    """Whether `module` is transformers' GPT-2 `Conv1D` (weight stored transposed, `(d_in, d_out)`).

    Looks the class up only if transformers is already imported: otherwise no module can be one.
    """
    pytorch_utils = sys.modules.get("transformers.pytorch_utils")
    return pytorch_utils is not None and isinstance(module, pytorch_utils.Conv1D)


def is_adaptable(module: nn.Module) -> bool:
    """Layers the library can wrap: `nn.Linear` and GPT-2's `Conv1D`."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as a (d_out, d_in) matrix (a transposed view for `Conv1D`)."""
    return layer.weight.T if is_conv1d(layer) else layer.weight


def set_weight_matrix(layer: nn.Module, value: torch.Tensor) -> None:
    """Overwrite the layer's weight in place from a (d_out, d_in) matrix, in the weight's own dtype."""
    with torch.no_grad():
        weight_matrix(layer).copy_(value)


def compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the frozen layer computes in: autocast's when it is on for `x`'s device, else the weight's."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return weight.dtype


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
    """What `LoraLinear` and `LormaLinear` share: the wrapped layer, slicing, dropout, parameter layout and
    the weight-space view used by merge, unmerge and export.

    Subclasses name their factors (`factor_names`), give each slice's factor shapes and initialisation,
    and implement `forward`, `_slice_update` and `_restore_slice`.
    """

    factor_names: ClassVar[tuple[str, str]]

    def __init__(
        self, base_layer: nn.Module, config: AdapterConfig, slices: Sequence[OutputSlice] | None = None
    ):
        super().__init__()
        if not is_adaptable(base_layer):
            raise TypeError(
                f"{type(self).__name__} wraps nn.Linear or GPT-2 Conv1D, not {type(base_layer).__name__}"
            )
        weight = weight_matrix(base_layer)
        base_layer.weight.requires_grad_(False)
        self.base_layer = base_layer
        self.adapter_config = config
        self.out_features, self.in_features = weight.shape
        self.is_sliced = slices is not None
        self.slices = self._ordered_slices(slices) if slices else (OutputSlice("", 0, self.out_features),)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.train(base_layer.training)  # an eval-mode model stays in eval mode
        # Half-precision bases get float32 factors, so optimiser updates are not lost to rounding.
        factor_dtype = torch.promote_types(weight.dtype, torch.float32)
        a_shape, b_shape = self._factor_shapes(self.slices[0])
        leading = (len(self.slices),) if self.is_sliced else ()
        for name, shape in zip(self.factor_names, (a_shape, b_shape), strict=True):
            tensor = torch.empty(leading + shape, dtype=factor_dtype, device=weight.device)
            self.register_parameter(name, nn.Parameter(tensor))
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

    def _factor_shapes(self, piece: OutputSlice) -> tuple[tuple[int, int], tuple[int, int]]:
        raise NotImplementedError

    def _init_slice(self, factor_a: torch.Tensor, factor_b: torch.Tensor) -> None:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """Initialise every slice's factors as the method prescribes (see docs/adapters.md)."""
        with torch.no_grad():
            for _, factor_a, factor_b in self.factors():
                self._init_slice(factor_a, factor_b)

    def factors(self) -> list[tuple[OutputSlice, torch.Tensor, torch.Tensor]]:
        """`(slice, A, B)` per adapted slice; A and B are the parameters or views of them."""
        factor_a, factor_b = (getattr(self, name) for name in self.factor_names)
        if not self.is_sliced:
            return [(self.slices[0], factor_a, factor_b)]
        return [(piece, factor_a[index], factor_b[index]) for index, piece in enumerate(self.slices)]

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable factor parameters of this layer."""
        for name in self.factor_names:
            yield getattr(self, name)

    @property
    def slice_names(self) -> tuple[str, ...]:
        """Names of the adapted slices of a fused layer (`("q", "v")`); `()` for a whole layer."""
        return tuple(piece.name for piece in self.slices) if self.is_sliced else ()

    def _slice(self, name: str | None) -> tuple[OutputSlice, torch.Tensor, torch.Tensor]:
        if not self.is_sliced:
            if name is not None:
                raise ValueError(f"this layer is not sliced; call without a slice name (got {name!r})")
            return self.factors()[0]
        for piece, factor_a, factor_b in self.factors():
            if piece.name == name:
                return piece, factor_a, factor_b
        raise ValueError(
            f"slice={name!r}: this fused layer adapts slices {self.slice_names}; name one of them"
        )

    # --- forward helpers --------------------------------------------------------------------------------

    def _segments(self) -> list[tuple[int, int, int | None]]:
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

    def _with_branches(self, x: torch.Tensor, fold: Fold, keep_base_output: bool) -> torch.Tensor:
        """`base(x) + branch` per slice (`keep_base_output`), or `branch + bias` (LoRMA without inflation).

        A whole layer whose branch sees the same input as the frozen product (no dropout on the branch)
        runs as one fused node (`functional.adapted_linear`); slices, branch dropout and `none` add the
        branch to the frozen layer's output."""
        weight = weight_matrix(self.base_layer)
        dtype = compute_dtype(x, weight)
        branch_dropout = (
            self.training and self.adapter_config.dropout > 0 and self.adapter_config.dropout_on == "adapter"
        )
        if keep_base_output and not self.is_sliced and not branch_dropout:
            _, factor_a, factor_b = self.factors()[0]
            rows = x.to(dtype).reshape(-1, self.in_features)
            out = adapted_linear(
                rows, weight, self.base_layer.bias, factor_a, factor_b, self.adapter_config.scale, fold
            )
            return out.view(*x.shape[:-1], self.out_features)
        rows = self._branch_input(x, dtype)
        lead = x.shape[:-1]
        scale = self.adapter_config.scale
        branches = [
            low_rank_branch(rows, factor_a, factor_b, weight[piece.start : piece.stop], scale, fold).view(
                *lead, -1
            )
            for piece, factor_a, factor_b in self.factors()
        ]
        bias = self.base_layer.bias
        if keep_base_output:
            base_out = self.base_layer(x)
            if not self.is_sliced:
                return base_out + branches[0]
            parts = [
                base_out[..., start:stop] if index is None else base_out[..., start:stop] + branches[index]
                for start, stop, index in self._segments()
            ]
            return torch.cat(parts, dim=-1)
        parts = []
        for start, stop, index in self._segments():
            piece_bias = None if bias is None else bias[start:stop]
            if index is None:
                parts.append(F.linear(x, weight[start:stop], piece_bias))
            else:
                parts.append(
                    branches[index] if piece_bias is None else branches[index] + piece_bias.to(dtype)
                )
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    # --- weight space: analysis, merge, unmerge, export -------------------------------------------------

    def _slice_update(
        self, factor_a: torch.Tensor, factor_b: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """`W'_s − W_s` for one slice, from the slice's rows `weight` (all in the working dtype)."""
        raise NotImplementedError

    def _restore_slice(
        self, factor_a: torch.Tensor, factor_b: torch.Tensor, merged: torch.Tensor
    ) -> torch.Tensor:
        """The original rows `W_s` from merged rows `W'_s` (all in the working dtype)."""
        raise NotImplementedError

    def exact_lora_factors(self) -> list[tuple[OutputSlice, torch.Tensor, torch.Tensor]] | None:
        """`(slice, B_s, A_s)` with `W'_s − W_s = B_s·A_s` exactly (scaling folded into `B_s`), in float64;
        `None` where the update is not low-rank (LoRMA_π, LoRMA without inflation)."""
        raise NotImplementedError

    def _working_copies(
        self, dtype: torch.dtype
    ) -> Iterator[tuple[OutputSlice, torch.Tensor, torch.Tensor, torch.Tensor]]:
        weight = weight_matrix(self.base_layer).detach().to(dtype)
        for piece, factor_a, factor_b in self.factors():
            yield (
                piece,
                factor_a.detach().to(dtype),
                factor_b.detach().to(dtype),
                weight[piece.start : piece.stop],
            )

    def delta_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """`W' − W` in the base weight's (d_out, d_in) orientation, rows outside the adapted slices zero.

        Computed without autograd in `dtype` (default: float32, or the weight's dtype if it is wider)."""
        weight = weight_matrix(self.base_layer)
        dtype = dtype or torch.promote_types(weight.dtype, torch.float32)
        delta = torch.zeros(weight.shape, dtype=dtype, device=weight.device)
        with torch.no_grad():
            for piece, factor_a, factor_b, rows in self._working_copies(dtype):
                delta[piece.start : piece.stop] = self._slice_update(factor_a, factor_b, rows)
        return delta

    def merged_weight(self) -> torch.Tensor:
        """`W'` in float64, (d_out, d_in): what `merge_adapters` writes into the base layer."""
        return weight_matrix(self.base_layer).detach().to(EXACT_DTYPE) + self.delta_weight(EXACT_DTYPE)

    def restored_weight(self) -> torch.Tensor:
        """`W` in float64 recovered from a base layer that currently holds `W'` (used by `unmerge_adapters`)."""
        with torch.no_grad():
            restored = weight_matrix(self.base_layer).detach().to(EXACT_DTYPE).clone()
            for piece, factor_a, factor_b, rows in self._working_copies(EXACT_DTYPE):
                restored[piece.start : piece.stop] = self._restore_slice(factor_a, factor_b, rows)
        return restored

    def extra_repr(self) -> str:
        sliced = f", slices={self.slice_names}" if self.is_sliced else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.adapter_config.r}{sliced}"


class LoraLinear(AdapterLayer):
    """LoRA: `W' = W + s·B·A` with `A` (r × d_in) Kaiming-uniform and `B` (d_out × r) zero."""

    factor_names = ("lora_A", "lora_B")

    def _factor_shapes(self, piece: OutputSlice) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.adapter_config.r, self.in_features), (piece.size, self.adapter_config.r)

    def _init_slice(self, factor_a: torch.Tensor, factor_b: torch.Tensor) -> None:
        nn.init.kaiming_uniform_(factor_a, a=math.sqrt(5))
        nn.init.zeros_(factor_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter_config.dropout_on == "input":
            x = self.dropout(x)
        return self._with_branches(x, "none", keep_base_output=True)

    def _slice_update(
        self, factor_a: torch.Tensor, factor_b: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        return self.adapter_config.scale * (factor_b @ factor_a)

    def _restore_slice(
        self, factor_a: torch.Tensor, factor_b: torch.Tensor, merged: torch.Tensor
    ) -> torch.Tensor:
        return merged - self.adapter_config.scale * (factor_b @ factor_a)

    def exact_lora_factors(self) -> list[tuple[OutputSlice, torch.Tensor, torch.Tensor]] | None:
        return [
            (piece, self.adapter_config.scale * b, a) for piece, a, b, _ in self._working_copies(EXACT_DTYPE)
        ]


class LormaLinear(AdapterLayer):
    """LoRMA: `W' = M·W` (pre) or `W·M` (post), `M = I(B·A)` with rank inflation `I` = `rri`
    (`I + s·B·A`), `shift` (`s·π(B·A)`) or `none` (`s·B·A`). `A` is r × n and `B` is n × r, n = d_out
    (of the slice) for pre and d_in for post.

    Training never builds `W'` for `rri` and `none`: they run as a low-rank branch with a hand-written
    backward (see `functional.low_rank_branch`). `shift` applies `P = s·π(B·A)` to activations or builds
    `P·W` once per call, whichever costs fewer flops; set `shift_path` to `"activations"` or `"weight"`
    to force one (benchmarks, tests).
    """

    factor_names = ("lorma_A", "lorma_B")
    _shift_path: ShiftPath = "auto"

    @property
    def shift_path(self) -> ShiftPath:
        """How `shift` is computed: `"auto"` (by flop count, the default), `"activations"` or `"weight"`."""
        return self._shift_path

    @shift_path.setter
    def shift_path(self, value: ShiftPath) -> None:
        if value not in SHIFT_PATHS:
            raise ValueError(f"shift_path={value!r} must be one of {SHIFT_PATHS}")
        self._shift_path = value

    def _multiplier_size(self, piece: OutputSlice) -> int:
        return piece.size if self.adapter_config.mode == "pre" else self.in_features

    def _factor_shapes(self, piece: OutputSlice) -> tuple[tuple[int, int], tuple[int, int]]:
        n = self._multiplier_size(piece)
        return (self.adapter_config.r, n), (n, self.adapter_config.r)

    def _init_slice(self, factor_a: torch.Tensor, factor_b: torch.Tensor) -> None:
        inflation = self.adapter_config.inflation
        if inflation == "rri":
            nn.init.zeros_(factor_b)
            nn.init.kaiming_uniform_(factor_a, a=math.sqrt(5))
            return
        nn.init.kaiming_uniform_(factor_b, a=math.sqrt(5))
        if inflation == "shift":
            # B·A is a column of ones in column 0; π moves it onto the diagonal, so s·π(B·A) = I.
            factor_b[:, 0] = 1.0
            factor_a.zero_()
            factor_a[0, 0] = 1.0
        elif not factor_b.is_meta:
            # Without inflation M = s·B·A starts as the projector B·pinv(B), as the authors start it.
            factor_a.copy_(torch.linalg.pinv(factor_b.to(EXACT_DTYPE)))
        root_scale = math.sqrt(self.adapter_config.scale)
        factor_b.div_(root_scale)
        factor_a.div_(root_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter_config.dropout_on == "input":
            x = self.dropout(x)
        if self.adapter_config.inflation == "shift":
            return self._shift_forward(x)
        fold: Fold = "into_A" if self.adapter_config.mode == "pre" else "into_B"
        return self._with_branches(x, fold, keep_base_output=self.adapter_config.inflation == "rri")

    # --- LoRMA_π ------------------------------------------------------------------------------------------

    def _shift_multiplier(self, factor_a: torch.Tensor, factor_b: torch.Tensor) -> torch.Tensor:
        """`P = s·π(B·A)` in the factors' dtype, differentiable, autocast off (P sits near I; keep it exact)."""
        with torch.autocast(factor_a.device.type, enabled=False):
            return self.adapter_config.scale * pi(factor_b @ factor_a)

    def _shift_forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = weight_matrix(self.base_layer)
        bias = self.base_layer.bias
        dtype = compute_dtype(x, weight)
        multipliers = [self._shift_multiplier(factor_a, factor_b) for _, factor_a, factor_b in self.factors()]
        pre = self.adapter_config.mode == "pre"
        if self.shift_path == "auto":
            tokens = x.numel() // self.in_features
            shapes = [
                (piece.size, self.in_features) if pre else (self.in_features, piece.size)
                for piece in self.slices
            ]
            training = torch.is_grad_enabled() and any(p.requires_grad for p in self.adapter_parameters())
            use_weight = shift_prefers_weight_path(tokens, shapes, training)
        else:
            use_weight = self.shift_path == "weight"
        segments = self._segments()
        if use_weight:
            rows = []
            for start, stop, index in segments:
                piece_weight = weight[start:stop]
                if index is not None:
                    p = multipliers[index].to(weight.dtype)
                    piece_weight = p @ piece_weight if pre else piece_weight @ p
                rows.append(piece_weight)
            adapted = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
            return F.linear(x, adapted, bias)
        if pre:
            h = F.linear(x, weight)
            parts = [
                h[..., start:stop]
                if index is None
                else F.linear(h[..., start:stop], multipliers[index].to(dtype))
                for start, stop, index in segments
            ]
        else:
            parts = [
                F.linear(
                    x if index is None else F.linear(x, multipliers[index].to(dtype)), weight[start:stop]
                )
                for start, stop, index in segments
            ]
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return out if bias is None else out + bias.to(dtype)

    # --- weight space ---------------------------------------------------------------------------------

    def _update_multiplier(self, factor_a: torch.Tensor, factor_b: torch.Tensor) -> torch.Tensor:
        """`M − I` (n × n) in the factors' dtype: `s·B·A` (rri), `s·π(B·A) − I` (shift), `s·B·A − I` (none)."""
        product = self.adapter_config.scale * (factor_b @ factor_a)
        if self.adapter_config.inflation == "rri":
            return product
        if self.adapter_config.inflation == "shift":
            product = pi(product)
        return product - torch.eye(product.shape[0], dtype=product.dtype, device=product.device)

    def multiplier(self, slice_name: str | None = None) -> torch.Tensor:
        """`M = I(B·A)`, n × n, in float32 (or the factors' dtype if wider), without autograd.

        For a fused layer name the slice (`"q"`, `"v"`, …): each slice has its own multiplier, acting on that
        slice's rows of the weight (pre) or on the input side of those rows (post)."""
        _, factor_a, factor_b = self._slice(slice_name)
        dtype = torch.promote_types(factor_a.dtype, torch.float32)
        with torch.no_grad():
            update = self._update_multiplier(factor_a.to(dtype), factor_b.to(dtype))
            return update + torch.eye(update.shape[0], dtype=dtype, device=update.device)

    def _slice_update(
        self, factor_a: torch.Tensor, factor_b: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        pre = self.adapter_config.mode == "pre"
        if self.adapter_config.inflation == "rri":
            # s·B·(A·W) costs r·n·m, never n²·m.
            scale = self.adapter_config.scale
            return scale * factor_b @ (factor_a @ weight) if pre else scale * (weight @ factor_b) @ factor_a
        update = self._update_multiplier(factor_a, factor_b)
        return update @ weight if pre else weight @ update

    def _restore_slice(
        self, factor_a: torch.Tensor, factor_b: torch.Tensor, merged: torch.Tensor
    ) -> torch.Tensor:
        pre = self.adapter_config.mode == "pre"
        scale = self.adapter_config.scale
        if self.adapter_config.inflation == "rri":
            # Woodbury: (I + s·B·A)^{-1} = I − s·B·(I_r + s·A·B)^{-1}·A, so only an r × r system is solved.
            eye_r = torch.eye(factor_a.shape[0], dtype=factor_a.dtype, device=factor_a.device)
            small = eye_r + scale * (factor_a @ factor_b)
            if pre:
                return merged - scale * factor_b @ torch.linalg.solve(small, factor_a @ merged)
            return merged - scale * (merged @ factor_b) @ torch.linalg.solve(small, factor_a)
        if self.adapter_config.inflation == "none":
            raise ValueError(
                "inflation='none' multiplied the weight by a rank-r projector, which has no inverse: the "
                "original weight cannot be recovered; keep an unmerged copy of the model instead"
            )
        multiplier = scale * pi(factor_b @ factor_a)
        if pre:
            return torch.linalg.solve(multiplier, merged)
        return torch.linalg.solve(multiplier.T, merged.T).T

    def exact_lora_factors(self) -> list[tuple[OutputSlice, torch.Tensor, torch.Tensor]] | None:
        if self.adapter_config.inflation != "rri":
            return None
        scale = self.adapter_config.scale
        factors = []
        for piece, a, b, weight in self._working_copies(EXACT_DTYPE):
            if self.adapter_config.mode == "pre":
                factors.append((piece, scale * b, a @ weight))
            else:
                factors.append((piece, scale * (weight @ b), a))
        return factors
