"""The adapter methods, one variant class each: LoRA, and LoRMA with each of its rank inflations.

A variant is the maths of one method; the layer (`layers.AdapterLayer`) owns what all share: the wrapped
frozen layer, output slices, dropout and the parameters. Per adapted slice a variant declares its factors
as a name → shape map (`factor_shapes`), initialises them, computes the training forward on activations
(`forward`; the adapted weight is built only where no cheaper activation form exists), the weight-space
update `W'_s − W_s` (`update`: merge, `delta_weight`, export), its inverse (`restore`: unmerge) where one
exists, and says whether the update is exactly a LoRA update (`exports_exactly_to_lora`, `lora_factors`).

`VARIANTS` registers every class by name: `"lora"` and LoRMA's inflations. A new inflation is one class
here decorated with `@register` (and a `conf/method` YAML and one test case line, see CONTRIBUTING.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base_layers import EXACT_DTYPE, compute_dtype, weight_matrix
from .functional import Fold, ShiftComputation, choose_shift_computation, pi, shift_costs, shift_linear

if TYPE_CHECKING:
    from .config import AdapterConfig
    from .layers import AdapterLayer

#: One slice's factors by name (the parameters themselves, views of them, or working copies).
Factors = dict[str, torch.Tensor]


class Variant:
    """The maths of one adapter method, bound to its `AdapterConfig`. Subclasses set the class attributes
    and implement `factor_shapes`, `initialise`, `forward`, `update` (LoRMA: `update_multiplier`) and
    `restore`, plus `lora_factors` where `exports_exactly_to_lora`."""

    #: `AdapterConfig.method` this variant belongs to.
    method: ClassVar[str]
    #: The registry key: `"lora"`, or the LoRMA inflation (`AdapterConfig.inflation`).
    name: ClassVar[str]
    #: Names of the low-rank pair (`A`: r × ·, `B`: · × r), also the parameter names in the state dict.
    factor_a: ClassVar[str]
    factor_b: ClassVar[str]
    #: Whether `W' − W` is exactly `B_s·A_s` of rank r for every slice (`lora_factors` gives them).
    exports_exactly_to_lora: ClassVar[bool] = False
    #: Whether there is a low-rank branch beside the frozen product that `dropout_on="adapter"` can drop.
    has_adapter_branch: ClassVar[bool] = True

    def __init__(self, config: AdapterConfig):
        self.config = config

    @property
    def scale(self) -> float:
        return self.config.scale

    def factor_shapes(self, rows: int, d_in: int) -> dict[str, tuple[int, ...]]:
        """Name → shape of each factor of one slice of `rows` output rows of a layer with `d_in` inputs."""
        raise NotImplementedError

    def initialise(self, factors: Factors) -> None:
        """Initialise one slice's factors in place (called under `torch.no_grad`)."""
        raise NotImplementedError

    def forward(self, layer: AdapterLayer, x: torch.Tensor) -> torch.Tensor:
        """The adapted layer's output for input `x` (already dropped out when `dropout_on="input"`)."""
        raise NotImplementedError

    def update(self, factors: Factors, weight: torch.Tensor) -> torch.Tensor:
        """`W'_s − W_s` of one slice from its rows `weight` of W (all in one working dtype, no autograd)."""
        raise NotImplementedError

    def restore(self, factors: Factors, merged: torch.Tensor) -> torch.Tensor:
        """The original rows `W_s` from merged rows `W'_s` (working dtype); `ValueError` if not invertible."""
        raise NotImplementedError

    def lora_factors(self, factors: Factors, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B_s, A_s)` with `W'_s − W_s = B_s·A_s` exactly, scaling folded into `B_s`; only for variants
        with `exports_exactly_to_lora`."""
        raise NotImplementedError(f"{self.describe()} is not exactly a LoRA update")

    def describe(self) -> str:
        """How a message names this variant: `method='lora'` or `method='lorma', inflation='shift'`."""
        return f"method={self.method!r}" + ("" if self.method == self.name else f", inflation={self.name!r}")


#: Every variant by name; filled by `@register`.
VARIANTS: dict[str, type[Variant]] = {}


def register(variant: type[Variant]) -> type[Variant]:
    """Class decorator: make `variant` selectable by its `name`."""
    if variant.name in VARIANTS:
        raise ValueError(f"a variant named {variant.name!r} is registered already ({VARIANTS[variant.name]})")
    VARIANTS[variant.name] = variant
    return variant


def variant_class(method: str, inflation: str | None) -> type[Variant]:
    """The variant a (validated) `AdapterConfig` selects."""
    return VARIANTS["lora"] if method == "lora" else VARIANTS[str(inflation)]


# --- LoRA ---------------------------------------------------------------------------------------------


@register
class Lora(Variant):
    """LoRA: `W' = W + s·B·A` with `A` (r × d_in) Kaiming-uniform and `B` (d_out × r) zero."""

    method = "lora"
    name = "lora"
    factor_a, factor_b = "lora_A", "lora_B"
    exports_exactly_to_lora = True

    def factor_shapes(self, rows: int, d_in: int) -> dict[str, tuple[int, ...]]:
        return {self.factor_a: (self.config.r, d_in), self.factor_b: (rows, self.config.r)}

    def initialise(self, factors: Factors) -> None:
        nn.init.kaiming_uniform_(factors[self.factor_a], a=math.sqrt(5))
        nn.init.zeros_(factors[self.factor_b])

    def forward(self, layer: AdapterLayer, x: torch.Tensor) -> torch.Tensor:
        return layer.branch_forward(x, "none", keep_base_output=True)

    def update(self, factors: Factors, weight: torch.Tensor) -> torch.Tensor:
        return self.scale * (factors[self.factor_b] @ factors[self.factor_a])

    def restore(self, factors: Factors, merged: torch.Tensor) -> torch.Tensor:
        return merged - self.update(factors, merged)

    def lora_factors(self, factors: Factors, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale * factors[self.factor_b], factors[self.factor_a]


# --- LoRMA --------------------------------------------------------------------------------------------


class Lorma(Variant):
    """LoRMA: `W' = M·W` (pre) or `W·M` (post) with `M = I(B·A)`, n × n: `A` is r × n and `B` n × r, with
    n = the slice's d_out for pre and d_in for post. Subclasses are the rank inflations `I`."""

    method = "lorma"
    factor_a, factor_b = "lorma_A", "lorma_B"

    @property
    def pre(self) -> bool:
        return self.config.mode == "pre"

    @property
    def fold(self) -> Fold:
        """Where the frozen weight enters the low-rank branch (see `functional.Fold`)."""
        return "into_A" if self.pre else "into_B"

    def factor_shapes(self, rows: int, d_in: int) -> dict[str, tuple[int, ...]]:
        n = rows if self.pre else d_in
        return {self.factor_a: (self.config.r, n), self.factor_b: (n, self.config.r)}

    def update_multiplier(self, factors: Factors) -> torch.Tensor:
        """`M − I` (n × n) in the factors' dtype."""
        raise NotImplementedError

    def multiplier(self, factors: Factors) -> torch.Tensor:
        """`M = I(B·A)` (n × n) in the factors' dtype."""
        update = self.update_multiplier(factors)
        return update + torch.eye(update.shape[0], dtype=update.dtype, device=update.device)

    def update(self, factors: Factors, weight: torch.Tensor) -> torch.Tensor:
        update = self.update_multiplier(factors)
        return update @ weight if self.pre else weight @ update

    def _divide_by_root_scale(self, factors: Factors) -> None:
        """Share the scaling between the factors, so that `s·B·A` is what the init built as `B·A`."""
        root_scale = math.sqrt(self.scale)
        factors[self.factor_b].div_(root_scale)
        factors[self.factor_a].div_(root_scale)


@register
class RankInflation(Lorma):
    """LoRMA₊: `M = I + s·B·A`, `B = 0` and `A` Kaiming-uniform at init, so `M = I` exactly.

    `W' − W` is `s·B·(A·W)` (pre) or `s·(W·B)·A` (post): a rank-r additive update, so training runs as a
    low-rank branch beside the frozen product (`functional.adapted_linear` / `low_rank_branch`), and the
    update exports exactly to LoRA."""

    name = "rri"
    exports_exactly_to_lora = True

    def initialise(self, factors: Factors) -> None:
        nn.init.zeros_(factors[self.factor_b])
        nn.init.kaiming_uniform_(factors[self.factor_a], a=math.sqrt(5))

    def forward(self, layer: AdapterLayer, x: torch.Tensor) -> torch.Tensor:
        return layer.branch_forward(x, self.fold, keep_base_output=True)

    def update_multiplier(self, factors: Factors) -> torch.Tensor:
        return self.scale * (factors[self.factor_b] @ factors[self.factor_a])

    def update(self, factors: Factors, weight: torch.Tensor) -> torch.Tensor:
        # s·B·(A·W) costs r·n·m, never n²·m.
        factor_a, factor_b, scale = factors[self.factor_a], factors[self.factor_b], self.scale
        return scale * factor_b @ (factor_a @ weight) if self.pre else scale * (weight @ factor_b) @ factor_a

    def restore(self, factors: Factors, merged: torch.Tensor) -> torch.Tensor:
        # Woodbury: (I + s·B·A)^{-1} = I − s·B·(I_r + s·A·B)^{-1}·A, so only an r × r system is solved.
        factor_a, factor_b, scale = factors[self.factor_a], factors[self.factor_b], self.scale
        eye_r = torch.eye(factor_a.shape[0], dtype=factor_a.dtype, device=factor_a.device)
        small = eye_r + scale * (factor_a @ factor_b)
        if self.pre:
            return merged - scale * factor_b @ torch.linalg.solve(small, factor_a @ merged)
        return merged - scale * (merged @ factor_b) @ torch.linalg.solve(small, factor_a)

    def lora_factors(self, factors: Factors, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factor_a, factor_b, scale = factors[self.factor_a], factors[self.factor_b], self.scale
        if self.pre:
            return scale * factor_b, factor_a @ weight
        return scale * (weight @ factor_b), factor_a


@register
class ShiftInflation(Lorma):
    """LoRMA_π: `M = s·π(B·A)`, π rotating row i cyclically right by i (`functional.pi`). At init `B` is
    Kaiming-uniform with column 0 set to 1 and `A = e₀e₀ᵀ`, both ÷ √s: `B·A` is a column of ones, which π
    moves onto the diagonal, so `M = I` up to rounding.

    `P = s·π(B·A)` is full rank: the forward (`functional.shift_linear`, per adapted slice) applies a dense
    `P` built in the compute dtype to the activations or into `P·W`, or applies `P` by FFT in its structured
    form, whichever the cost model prices lowest for this layer, call and device (`chosen_computation`;
    `LormaLinear.shift_path` forces one; docs/lorma_pi.md). Merge, unmerge and `multiplier()` build `P`
    through `pi`. There is no separate adapter branch, so adapter dropout is undefined: dropout drops the
    input."""

    name = "shift"
    has_adapter_branch = False

    def initialise(self, factors: Factors) -> None:
        factor_a, factor_b = factors[self.factor_a], factors[self.factor_b]
        nn.init.kaiming_uniform_(factor_b, a=math.sqrt(5))
        factor_b[:, 0] = 1.0
        factor_a.zero_()
        factor_a[0, 0] = 1.0
        self._divide_by_root_scale(factors)

    def shift_multiplier(self, factors: Factors) -> torch.Tensor:
        """`P = s·π(B·A)` in the factors' dtype, differentiable, autocast off (P sits near I; keep it exact)."""
        factor_a = factors[self.factor_a]
        with torch.autocast(factor_a.device.type, enabled=False):
            return self.scale * pi(factors[self.factor_b] @ factor_a)

    def update_multiplier(self, factors: Factors) -> torch.Tensor:
        multiplier = self.shift_multiplier(factors)
        return multiplier - torch.eye(multiplier.shape[0], dtype=multiplier.dtype, device=multiplier.device)

    def restore(self, factors: Factors, merged: torch.Tensor) -> torch.Tensor:
        multiplier = self.shift_multiplier(factors)
        if self.pre:
            return torch.linalg.solve(multiplier, merged)
        return torch.linalg.solve(multiplier.T, merged.T).T

    def forward(self, layer: AdapterLayer, x: torch.Tensor) -> torch.Tensor:
        weight = weight_matrix(layer.base_layer)
        bias = layer.base_layer.bias
        rows = x.to(compute_dtype(x, weight))
        computation = layer.shift_path
        if computation == "auto":
            tokens = rows.numel() // layer.in_features
            computation = self.chosen_computation(layer, tokens, rows.device.type, rows.dtype)
        slice_factors = layer.slice_factors()
        parts = []
        for start, stop, index in layer.segments():
            piece_bias = None if bias is None else bias[start:stop]
            if index is None:  # rows of a fused layer that no slice adapts (GPT-2's k)
                parts.append(F.linear(rows, weight[start:stop].to(rows.dtype), piece_bias))
                continue
            factors = slice_factors[index][1]
            parts.append(
                shift_linear(
                    rows,
                    weight[start:stop],
                    piece_bias,
                    factors[self.factor_a],
                    factors[self.factor_b],
                    self.scale,
                    self.config.mode,
                    computation,
                )
            )
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def chosen_computation(
        self, layer: AdapterLayer, tokens: int, device_type: str, dtype: torch.dtype
    ) -> ShiftComputation:
        """What the cost model (`functional.choose_shift_computation`) picks for `layer` at `tokens` input
        rows computed in `dtype` on a `device_type` device: from every slice's `(n, m)`, and whether the
        factors will need gradients (a training call)."""
        shapes = [
            (piece.size, layer.in_features) if self.pre else (layer.in_features, piece.size)
            for piece in layer.slices
        ]
        training = torch.is_grad_enabled() and any(p.requires_grad for p in layer.adapter_parameters())
        costs = shift_costs(device_type, dtype)
        return choose_shift_computation(tokens, shapes, self.config.r, training, costs)


@register
class NoInflation(Lorma):
    """LoRMA without rank inflation (the paper's Table 6 ablation): `M = s·B·A`, rank r. At init `B` is
    Kaiming-uniform and `A = pinv(B)`, both ÷ √s, so `M` is the projector `B·pinv(B)` (as the authors
    start it), not I. Training runs as the low-rank branch with the frozen output dropped."""

    name = "none"

    def initialise(self, factors: Factors) -> None:
        factor_a, factor_b = factors[self.factor_a], factors[self.factor_b]
        nn.init.kaiming_uniform_(factor_b, a=math.sqrt(5))
        if not factor_b.is_meta:
            factor_a.copy_(torch.linalg.pinv(factor_b.to(EXACT_DTYPE)))
        self._divide_by_root_scale(factors)

    def forward(self, layer: AdapterLayer, x: torch.Tensor) -> torch.Tensor:
        return layer.branch_forward(x, self.fold, keep_base_output=False)

    def update_multiplier(self, factors: Factors) -> torch.Tensor:
        product = self.scale * (factors[self.factor_b] @ factors[self.factor_a])
        return product - torch.eye(product.shape[0], dtype=product.dtype, device=product.device)

    def restore(self, factors: Factors, merged: torch.Tensor) -> torch.Tensor:
        raise ValueError(
            "inflation='none' multiplied the weight by a rank-r projector, which has no inverse: the "
            "original weight cannot be recovered; keep an unmerged copy of the model instead"
        )


@register
class RankInflationWithMagnitude(RankInflation):
    """Experimental, not in the paper: LoRMA₊ with a learnable magnitude per output row,
    `W' = diag(g)·(I + s·B·A)·W` (pre) or `diag(g)·W·(I + s·B·A)` (post), as DoRA adds a magnitude to
    LoRA. `g` has the slice's d_out entries and starts at ones, so `W' = W` exactly at init.

    Training rescales LoRMA₊'s output `y` (its activation form, no `W'` built) row-wise as
    `y + (g − 1)·(y − b)`: the magnitude never multiplies the bias, and at `g = 1` the correction is an
    exact zero. Autograd keeps one output-sized tensor (`y − b`) more than LoRMA₊, for the gradient of `g`.
    `diag(g)` makes the update full rank, so it exports to LoRA only lossily; unmerge divides the rows by
    `g`, then inverts `I + s·B·A` as LoRMA₊ does. `multiplier()` is `I + s·B·A`, without the magnitude."""

    name = "rri_magnitude"
    magnitude = "lorma_magnitude"
    exports_exactly_to_lora = False

    def factor_shapes(self, rows: int, d_in: int) -> dict[str, tuple[int, ...]]:
        return {**super().factor_shapes(rows, d_in), self.magnitude: (rows,)}

    def initialise(self, factors: Factors) -> None:
        super().initialise(factors)
        nn.init.ones_(factors[self.magnitude])

    def forward(self, layer: AdapterLayer, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(layer, x)
        gains = [factors[self.magnitude] - 1 for _, factors in layer.slice_factors()]
        if layer.is_sliced:  # rows outside the adapted slices keep their frozen output: gain 0
            gains = [
                gains[0].new_zeros(stop - start) if index is None else gains[index]
                for start, stop, index in layer.segments()
            ]
        gain = torch.cat(gains).to(out.dtype)
        bias = layer.base_layer.bias
        frozen_output = out if bias is None else out - bias.to(out.dtype)
        return torch.addcmul(out, gain, frozen_output)

    def update(self, factors: Factors, weight: torch.Tensor) -> torch.Tensor:
        # diag(g)·(W + Δ) − W = Δ + (g − 1)·(W + Δ): exactly zero at g = 1, Δ = 0.
        delta = super().update(factors, weight)
        return delta + (factors[self.magnitude] - 1)[:, None] * (weight + delta)

    def restore(self, factors: Factors, merged: torch.Tensor) -> torch.Tensor:
        magnitude = factors[self.magnitude]
        if not bool(magnitude.all()):
            raise ValueError(
                "inflation='rri_magnitude': the magnitude has zero entries, so merging zeroed those rows of the "
                "weight and the original cannot be recovered; keep an unmerged copy of the model instead"
            )
        return super().restore(factors, merged / magnitude[:, None])


#: LoRMA's rank inflations, the values `AdapterConfig.inflation` accepts, in registration order.
INFLATIONS: tuple[str, ...] = tuple(name for name, variant in VARIANTS.items() if variant.method == "lorma")
