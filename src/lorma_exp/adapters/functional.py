"""The maths under the layers: the low-rank branch with its hand-written backward (LoRA, LoRMA₊, LoRMA
without inflation); and LoRMA_π: the π operator, its multiplier `P = s·π(B·A)` built dense in the compute
dtype or applied by FFT in O(r·n·log n) per vector (docs/lorma_pi.md), and the cost model that picks how a
layer computes it.

Notation as in docs/adapters.md: a frozen weight `W` (d_out × d_in), input rows `x` (tokens × d_in),
factors `A` (r × ·) and `B` (· × r), scaling `s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

#: Where the frozen weight enters a low-rank branch `s·(x A_eff^T) B_eff^T`:
#: `"none"` (LoRA: A_eff = A, B_eff = B), `"into_A"` (LoRMA pre: A_eff = A·W),
#: `"into_B"` (LoRMA post: B_eff = W·B).
Fold = Literal["none", "into_A", "into_B"]


def _effective_factors(
    factor_a: torch.Tensor, factor_b: torch.Tensor, weight: torch.Tensor, fold: Fold, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(A_eff, B_eff)` in `dtype`. A product with `W` runs in W's own dtype (the small factor is cast, never
    the weight), so no weight-sized copy is made."""
    if fold == "into_A":
        factor_a = factor_a.to(weight.dtype) @ weight
    elif fold == "into_B":
        factor_b = weight @ factor_b.to(weight.dtype)
    return factor_a.to(dtype), factor_b.to(dtype)


class _LowRankBranch(torch.autograd.Function):
    """`s·(x A_eff^T) B_eff^T` keeping only `x` and `U = x A_eff^T` (tokens × r) for backward, as LoRA does.

    With `G` the output gradient and `GB = G·B_eff`:
    `dB_eff = s·G^T U`, `dA_eff = s·GB^T x`, `dx = s·GB·A_eff`; then `dA = dA_eff·W^T` (into_A) or
    `dB = W^T·dB_eff` (into_B). Every product is tokens × r or r × weight-sized: no extra large GEMM,
    and `A_eff`, `B_eff` are rebuilt in backward rather than stored.

    Autocast is off inside: the caller passes `x` already in the compute dtype, the factors are cast to it,
    and backward uses the same dtypes whatever autocast state the backward pass runs under.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        factor_a: torch.Tensor,
        factor_b: torch.Tensor,
        weight: torch.Tensor,
        scale: float,
        fold: Fold,
    ) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            a_eff, b_eff = _effective_factors(factor_a, factor_b, weight, fold, x.dtype)
            u = x @ a_eff.T
            out = u @ (b_eff * scale).T
        ctx.save_for_backward(x, u, factor_a, factor_b, weight)
        ctx.scale = scale
        ctx.fold = fold
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, u, factor_a, factor_b, weight = ctx.saved_tensors
        scale, fold = ctx.scale, ctx.fold
        needs_x, needs_a, needs_b = ctx.needs_input_grad[:3]
        grad_x = grad_a = grad_b = None
        with torch.autocast(x.device.type, enabled=False):
            a_eff, b_eff = _effective_factors(factor_a, factor_b, weight, fold, x.dtype)
            grad_out = grad_out.to(x.dtype)
            scaled_gb = grad_out @ (b_eff * scale)
            if needs_x:
                grad_x = scaled_gb @ a_eff
            if needs_a:
                grad_a_eff = scaled_gb.T @ x
                if fold == "into_A":
                    grad_a_eff = grad_a_eff.to(weight.dtype) @ weight.T
                grad_a = grad_a_eff.to(factor_a.dtype)
            if needs_b:
                grad_b_eff = (grad_out.T @ u) * scale
                if fold == "into_B":
                    grad_b_eff = weight.T @ grad_b_eff.to(weight.dtype)
                grad_b = grad_b_eff.to(factor_b.dtype)
        return grad_x, grad_a, grad_b, None, None, None


def low_rank_branch(
    x: torch.Tensor,
    factor_a: torch.Tensor,
    factor_b: torch.Tensor,
    weight: torch.Tensor,
    scale: float,
    fold: Fold,
) -> torch.Tensor:
    """`s·(x A_eff^T) B_eff^T` for 2-D `x` (tokens × d_in), computed in `x.dtype`; see `Fold`.

    `weight` is the frozen base weight (or a row slice of it) in the (d_out, d_in) orientation; it must not
    require grad.
    """
    if weight.requires_grad:
        raise ValueError("low_rank_branch: the base weight must be frozen (requires_grad=False)")
    return _LowRankBranch.apply(x, factor_a, factor_b, weight, scale, fold)


#: Output rows `[start, stop)` of a layer that one adapter slice acts on (`adapted_linear`'s `slices`).
RowRange = tuple[int, int]


def _joined(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """`torch.cat(parts, dim)`, without the copy when there is one part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _slice_effective_factors(
    factor_a: torch.Tensor,
    factor_b: torch.Tensor,
    weight: torch.Tensor,
    fold: Fold,
    slices: tuple[RowRange, ...],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Every slice's `A_eff` stacked into one `(slices·r, d_in)` matrix (one product gives the whole `U`),
    and each slice's `B_eff` (`n_s × r`), in `weight`'s dtype (the compute dtype)."""
    count, dtype = len(slices), weight.dtype
    factor_a = factor_a.reshape(count, -1, factor_a.shape[-1])
    factor_b = factor_b.reshape(count, factor_b.shape[-2], -1)
    if fold == "into_A":
        stacked_a = _joined([factor_a[s].to(dtype) @ weight[a:b] for s, (a, b) in enumerate(slices)], 0)
    else:
        stacked_a = factor_a.reshape(-1, factor_a.shape[-1]).to(dtype)
    if fold == "into_B":
        effective_b = [weight[a:b] @ factor_b[s].to(dtype) for s, (a, b) in enumerate(slices)]
    else:
        effective_b = [factor_b[s].to(dtype) for s in range(count)]
    return stacked_a, effective_b


class _AdaptedLinear(torch.autograd.Function):
    """An adapted layer, frozen product and low-rank branches in one node:
    `out = x·W^T + b`, plus on the rows of every adapted slice `s` (a whole layer is one slice)
    `s·(x_d·A_eff,s^T)·B_eff,s^T`, where `x_d` is `x` (`dropped` None), or `x` with adapter dropout (`keep` the kept
    positions, `keep_scale = 1/(1 − p)`: the branch sees `x_d`, the frozen product `x`). Backward keeps only
    what LoRA keeps: `x_d` (which is `x` without dropout), `U = x_d·A_eff^T` (tokens × slices·r) and the
    dropout mask, besides the frozen weight.

    The branches are accumulated into the frozen product's output in place (`addmm_` into each slice's
    columns): no output-sized sum or concatenation in forward, and none of input size in backward. Per fold,
    with `G` the output gradient, `G_s` its slice columns and `dXf = G·W` the frozen layer's input gradient:
    - `"none"` (LoRA): `dX = dXf + s·Σ_s (G_s·B_s)·A_s` (masked by `keep·keep_scale` under dropout),
      `dA_s = s·(G_s·B_s)^T·x_d`, `dB_s = s·G_s^T·U_s`;
    - `"into_A"` (LoRMA pre, `A_eff,s = A_s·W_s`, rebuilt in backward rather than kept): as LoRA with
      `A_eff`, then `dA_s = dA_eff,s·W_s^T`. Three r × weight products per step; the alternative through
      `h = x·W^T` (`U = h·A^T`, `dX = (G + s·G·B·A)·W`) needs an output-sized copy of `G` in backward;
    - `"into_B"` (LoRMA post, `B_eff,s = W_s·B_s`): `dB_s = W_s^T·dB_eff,s`. On a whole layer backward reuses
      `dXf` instead of `B_eff`: `G·B_eff = dXf·B` and `dB = s·dXf^T·U`, one r × weight product per step
      (when `x` needs no gradient `dXf` is not computed and `B_eff` is rebuilt instead).
    The frozen weight is cast to the compute dtype at most once per call (as autocast casts it for
    `F.linear`), and that copy is what backward keeps, as an autocast linear keeps it.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        dropped: torch.Tensor | None,
        keep: torch.Tensor | None,
        keep_scale: float,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        factor_a: torch.Tensor,
        factor_b: torch.Tensor,
        scale: float,
        fold: Fold,
        slices: tuple[RowRange, ...],
    ) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            weight_c = weight.to(x.dtype)
            stacked_a, effective_b = _slice_effective_factors(factor_a, factor_b, weight_c, fold, slices)
            dropped = x if dropped is None else dropped
            u = dropped @ stacked_a.T
            out = x @ weight_c.T if bias is None else torch.addmm(bias.to(x.dtype), x, weight_c.T)
            for (start, stop), u_slice, b_eff in zip(
                slices, _columns_per_slice(u, slices), effective_b, strict=True
            ):
                out[:, start:stop].addmm_(u_slice, b_eff.T, alpha=scale)
        ctx.save_for_backward(dropped, u, keep, weight_c, factor_a, factor_b)
        ctx.keep_scale, ctx.scale, ctx.fold, ctx.slices = keep_scale, scale, fold, slices
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        dropped, u, keep, weight_c, factor_a, factor_b = ctx.saved_tensors
        scale, fold, slices = ctx.scale, ctx.fold, ctx.slices
        needs_x, needs_bias, needs_a, needs_b = (ctx.needs_input_grad[index] for index in (0, 5, 6, 7))
        grad_x = grad_bias = grad_a = grad_b = None
        dtype = dropped.dtype
        with torch.autocast(dropped.device.type, enabled=False):
            grad_out = grad_out.to(dtype)
            if fold == "into_B" and slices == ((0, weight_c.shape[0]),) and needs_x:
                # a whole layer: G·B_eff = (G·W)·B reuses the input gradient's product
                stacked_a = factor_a.reshape(-1, factor_a.shape[-1]).to(dtype)
                grad_x = grad_out @ weight_c
                scaled_gb = grad_x @ (factor_b.reshape(factor_b.shape[-2], -1).to(dtype) * scale)
                if needs_b:
                    grad_b = (grad_x.T @ u).mul_(scale)
            else:
                stacked_a, effective_b = _slice_effective_factors(factor_a, factor_b, weight_c, fold, slices)
                grads_out = [grad_out[:, start:stop] for start, stop in slices]
                scaled_gb = _joined(
                    [g @ (b_eff * scale) for g, b_eff in zip(grads_out, effective_b, strict=True)], 1
                )
                if needs_b:
                    grads_b = []
                    for (start, stop), g, u_slice in zip(
                        slices, grads_out, _columns_per_slice(u, slices), strict=True
                    ):
                        grad_b_eff = (g.T @ u_slice).mul_(scale)
                        grads_b.append(
                            weight_c[start:stop].T @ grad_b_eff if fold == "into_B" else grad_b_eff
                        )
                    grad_b = _joined(grads_b, 0)
                if needs_x:
                    grad_x = grad_out @ weight_c
            if needs_x:
                if keep is None:
                    grad_x.addmm_(scaled_gb, stacked_a)
                else:  # through the dropout: only the kept positions, scaled as they were
                    grad_x.add_((scaled_gb @ stacked_a).mul_(keep), alpha=ctx.keep_scale)
            if needs_a:
                grad_a = scaled_gb.T @ dropped
                if fold == "into_A":
                    per_slice = grad_a.chunk(len(slices), dim=0)
                    grad_a = _joined(
                        [
                            g @ weight_c[start:stop].T
                            for (start, stop), g in zip(slices, per_slice, strict=True)
                        ],
                        0,
                    )
                grad_a = grad_a.reshape(factor_a.shape).to(factor_a.dtype)
            if needs_bias:
                grad_bias = grad_out.sum(0).to(ctx.bias_dtype)
        grad_b = None if grad_b is None else grad_b.reshape(factor_b.shape).to(factor_b.dtype)
        return grad_x, None, None, None, None, grad_bias, grad_a, grad_b, None, None, None


def _columns_per_slice(matrix: torch.Tensor, slices: tuple[RowRange, ...]) -> list[torch.Tensor]:
    """`matrix`'s columns split into equal parts, one per slice (`U`'s r columns of each slice)."""
    return list(matrix.chunk(len(slices), dim=1)) if len(slices) > 1 else [matrix]


def adapted_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    factor_a: torch.Tensor,
    factor_b: torch.Tensor,
    scale: float,
    fold: Fold,
    slices: tuple[RowRange, ...] | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """`x·W^T + b` plus `s·(x_d·A_eff^T)·B_eff^T` on the adapted rows, for 2-D `x` (tokens × d_in), computed
    in `x.dtype` as one autograd node; see `Fold` and `_AdaptedLinear`.

    The same function as the frozen layer plus `low_rank_branch` per slice, at fewer products and
    temporaries. `slices` (default: the whole layer) lists the output rows `[start, stop)` each adapted
    slice acts on (GPT-2's fused q and v); then the factors are stacked along a leading slice dimension,
    `A`: `(slices, r, ·)` and `B`: `(slices, ·, r)`. `dropout > 0` drops the branch's input `x_d` (not the
    frozen product's), drawing the same masks as `nn.Dropout` on `x` would. `weight` (d_out, d_in) must be
    frozen; `bias` may train.
    """
    if weight.requires_grad:
        raise ValueError("adapted_linear: the base weight must be frozen (requires_grad=False)")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"adapted_linear: dropout={dropout!r} must be in [0, 1)")
    slices = ((0, weight.shape[0]),) if slices is None else tuple(slices)
    dropped = keep = None  # without dropout the branch reads `x` (passing it twice breaks a compiled graph)
    if dropout > 0:
        with torch.no_grad():
            dropped, keep = torch.native_dropout(x, dropout, True)
    keep_scale = 1.0 / (1.0 - dropout)
    return _AdaptedLinear.apply(
        x, dropped, keep, keep_scale, weight, bias, factor_a, factor_b, scale, fold, slices
    )


# --- LoRMA_π: P = s·π(B·A) -------------------------------------------------------------------------------
#
# docs/lorma_pi.md derives everything below. In short: row i of π(B·A) is row i of B·[A, A] read from
# column n − i, and π(b_t a_tᵀ) = diag(b_t)·C(a_t) with C(a)[i, j] = a[(j − i) mod n], so
# `P·h = s·Σ_t b_t ⊙ (a_t ⋆ h)` (⋆: cyclic cross-correlation) and `Pᵀ·g = s·Σ_t a_t ∗ (b_t ⊙ g)` (∗: cyclic
# convolution): r element-wise products with FFT correlations, O(r·n·log n) per vector instead of O(n²).

#: How `shift_linear` computes LoRMA_π: a dense `P` applied to the activations, or built into the weight
#: (`W' = P·W` pre, `W·P` post) for one linear; or the same two with `P` applied by FFT ("structured").
ShiftComputation = Literal["activations", "weight", "structured_activations", "structured_weight"]
SHIFT_COMPUTATIONS: tuple[ShiftComputation, ...] = get_args(ShiftComputation)
Mode = Literal["pre", "post"]


def _doubled_row_windows(matrix: torch.Tensor, direction: int) -> torch.Tensor:
    """An n × n view whose row `i` is row `i` of `[M, M]` from column `n − i` (`direction=1`) or `i` (`-1`).

    `[M, M]` is written row by row into a flat buffer of length `start + n·step`; a row of the view then
    starts `step = 2n − direction` elements after the previous one, so a slice and two views read every
    window (no `as_strided`, nothing `torch.compile` cannot trace). The buffer's last `n` elements
    (direction −1 only) pad the final view row and are never read.
    """
    n = matrix.shape[0]
    step = 2 * n - direction
    start = n if direction == 1 else 0
    buffer = matrix.new_empty(start + n * step)
    doubled = buffer[: 2 * n * n].view(n, 2 * n)
    doubled[:, :n] = matrix
    doubled[:, n:] = matrix
    return buffer[start:].view(n, step)[:, :n]


def cyclic_row_shift(matrix: torch.Tensor, direction: int = 1) -> torch.Tensor:
    """Rotate row `i` of a square matrix cyclically by `i` places: right for `direction=1` (the paper's π,
    `π(M)[i, j] = M[i, (j − i) mod n]`), left for `direction=-1` (its inverse). Returns a new contiguous
    matrix; O(n²), no index tensor, and it compiles with `torch.compile(fullgraph=True)`."""
    n = matrix.shape[0]
    if matrix.dim() != 2 or matrix.shape[1] != n:
        raise ValueError(f"cyclic_row_shift needs a square matrix, got shape {tuple(matrix.shape)}")
    if direction not in (1, -1):
        raise ValueError(f"direction={direction!r} must be 1 (π) or -1 (its inverse)")
    return _doubled_row_windows(matrix, direction).contiguous()


class _CyclicRowShift(torch.autograd.Function):
    """π with its exact backward: the gradient of a permutation is the inverse permutation."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor) -> torch.Tensor:
        return cyclic_row_shift(matrix, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return cyclic_row_shift(grad, -1)


def pi(matrix: torch.Tensor) -> torch.Tensor:
    """The permutation-based rank inflation π of LoRMA_π (differentiable)."""
    return _CyclicRowShift.apply(matrix)


class _ShiftMultiplier(torch.autograd.Function):
    """`P = s·π(B·A)` as one product: row `i` of `(s·B)·[A, A]` (n × 2n, computed in the requested dtype)
    from column `n − i` is row `i` of P, so P is one n × r × 2n product and one n × n copy: no n × n
    concatenation, cast or scaling pass.

    Backward, with `dM = π⁻¹(dP)` (again a view): `dB = s·dM·Aᵀ`, `dA = s·Bᵀ·dM`.
    """

    @staticmethod
    def forward(ctx, factor_a, factor_b, scale: float, dtype: torch.dtype):
        n = factor_a.shape[1]
        with torch.autocast(factor_a.device.type, enabled=False):
            a = factor_a.to(dtype)
            product = (factor_b.to(dtype) * scale) @ torch.cat([a, a], dim=1)
        ctx.save_for_backward(factor_a, factor_b)
        ctx.scale = scale
        # The window view has row stride 2n − 1 (odd, unaligned), which slows the large products that
        # consume P (measured 1.8× on a CPU GEMM); one contiguous copy costs less.
        return product.view(-1)[n : n + n * (2 * n - 1)].view(n, 2 * n - 1)[:, :n].contiguous()

    @staticmethod
    def backward(ctx, grad_p: torch.Tensor):
        factor_a, factor_b = ctx.saved_tensors
        needs_a, needs_b = ctx.needs_input_grad[:2]
        grad_a = grad_b = None
        with torch.autocast(grad_p.device.type, enabled=False):
            grad_m = _doubled_row_windows(grad_p, -1)
            if needs_a:
                grad_a = (factor_b.to(grad_p.dtype).T @ grad_m).mul_(ctx.scale).to(factor_a.dtype)
            if needs_b:
                grad_b = (grad_m @ factor_a.to(grad_p.dtype).T).mul_(ctx.scale).to(factor_b.dtype)
        return grad_a, grad_b, None, None


def shift_multiplier(
    factor_a: torch.Tensor, factor_b: torch.Tensor, scale: float, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """`P = s·π(B·A)` (n × n, contiguous) in `dtype` (default: the factors'), differentiable in `A` (r × n)
    and `B` (n × r); see `_ShiftMultiplier` for how it is built."""
    if factor_a.dim() != 2 or factor_b.shape != factor_a.shape[::-1]:
        raise ValueError(
            f"shift_multiplier needs A (r × n) and B (n × r), got {tuple(factor_a.shape)} and "
            f"{tuple(factor_b.shape)}"
        )
    return _ShiftMultiplier.apply(factor_a, factor_b, scale, dtype or factor_a.dtype)


def _fft_dtype(dtype: torch.dtype) -> torch.dtype:
    """FFTs run in float32, or float64 for float64 inputs (half precision FFTs are neither general nor exact)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _apply_p(v: torch.Tensor, spectra_a: torch.Tensor, factor_b: torch.Tensor, n: int) -> torch.Tensor:
    """`v·Pᵀ / s` row by row: `Σ_t b_t ⊙ (a_t ⋆ v)`, one correlation per rank at a time (k × n memory)."""
    spectrum_v = torch.fft.rfft(v, dim=-1)
    out = torch.zeros_like(v)
    for t in range(factor_b.shape[1]):
        out.addcmul_(factor_b[:, t], torch.fft.irfft(spectra_a[t].conj() * spectrum_v, n=n, dim=-1))
    return out


def _apply_p_transposed(
    u: torch.Tensor, spectra_a: torch.Tensor, factor_b: torch.Tensor, n: int
) -> torch.Tensor:
    """`u·P / s` row by row: `Σ_t a_t ∗ (b_t ⊙ u)`, summed in the frequency domain: r forward FFTs, one inverse."""
    total = None
    for t in range(factor_b.shape[1]):
        term = spectra_a[t] * torch.fft.rfft(u * factor_b[:, t], dim=-1)
        total = term if total is None else total.add_(term)
    return torch.fft.irfft(total, n=n, dim=-1)


def _bilinear_grads(
    u: torch.Tensor,
    v: torch.Tensor,
    factor_b: torch.Tensor,
    spectra_a: torch.Tensor,
    needs: tuple[bool, bool, bool, bool],
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of `L = Σ_{k,t,i} B[i,t]·u[k,i]·(a_t ⋆ v_k)[i] = Σ_k u_k·(P v_k) / s` with respect to
    `(u, v, A, B)` (those `needs` asks for), unscaled:
    `∂u = Σ_t b_t ⊙ (a_t ⋆ v)`, `∂v = Σ_t a_t ∗ (b_t ⊙ u)`, `∂B[:, t] = Σ_k u_k ⊙ (a_t ⋆ v_k)`,
    `∂a_t = Σ_k (b_t ⊙ u_k) ⋆ v_k` (a sum over rows in the frequency domain, then one inverse FFT)."""
    needs_u, needs_v, needs_a, needs_b = needs
    n = v.shape[-1]
    spectrum_v = torch.fft.rfft(v, dim=-1)
    grad_u = torch.zeros_like(u) if needs_u else None
    grad_b = torch.empty_like(factor_b) if needs_b else None
    spectra_grad_a = torch.empty_like(spectra_a) if needs_a else None
    spectrum_grad_v = None
    for t in range(factor_b.shape[1]):
        if needs_u or needs_b:
            correlation = torch.fft.irfft(spectra_a[t].conj() * spectrum_v, n=n, dim=-1)
            if needs_u:
                grad_u.addcmul_(factor_b[:, t], correlation)
            if needs_b:
                grad_b[:, t] = (u * correlation).sum(0)
        if needs_v or needs_a:
            spectrum_weighted_u = torch.fft.rfft(u * factor_b[:, t], dim=-1)
            if needs_a:
                spectra_grad_a[t] = (spectrum_weighted_u.conj() * spectrum_v).sum(0)
            if needs_v:
                term = spectra_a[t] * spectrum_weighted_u
                spectrum_grad_v = term if spectrum_grad_v is None else spectrum_grad_v.add_(term)
    grad_v = torch.fft.irfft(spectrum_grad_v, n=n, dim=-1) if needs_v else None
    grad_a = torch.fft.irfft(spectra_grad_a, n=n, dim=-1) if needs_a else None
    return grad_u, grad_v, grad_a, grad_b


class _StructuredShift(torch.autograd.Function):
    """`rows·Pᵀ` (each row `h` becomes `P·h`) or, with `transposed`, `rows·P`, by FFT in float32 (float64
    for float64 rows); the result in the rows' dtype. Keeps only `rows` (and the factors) for backward.

    Both directions are gradients of one bilinear form (`_bilinear_grads`): for `Y = H·Pᵀ` with output
    gradient `G` it is `L(u=G, v=H)`, for `Y = G·P` it is `L(u=G, v=dY)`.
    """

    @staticmethod
    def forward(ctx, rows, factor_a, factor_b, scale: float, transposed: bool):
        work = _fft_dtype(rows.dtype)
        n = rows.shape[-1]
        with torch.autocast(rows.device.type, enabled=False):
            b = factor_b.to(work)
            spectra_a = torch.fft.rfft(factor_a.to(work), dim=-1)
            apply = _apply_p_transposed if transposed else _apply_p
            out = apply(rows.to(work), spectra_a, b, n).mul_(scale).to(rows.dtype)
        ctx.save_for_backward(rows, factor_a, factor_b)
        ctx.scale, ctx.transposed = scale, transposed
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        rows, factor_a, factor_b = ctx.saved_tensors
        needs_rows, needs_a, needs_b = ctx.needs_input_grad[:3]
        work = _fft_dtype(rows.dtype)
        with torch.autocast(rows.device.type, enabled=False):
            a, b = factor_a.to(work), factor_b.to(work)
            spectra_a = torch.fft.rfft(a, dim=-1)
            grad, x = grad_out.to(work), rows.to(work)
            if ctx.transposed:
                grad_rows, _, grad_a, grad_b = _bilinear_grads(
                    x, grad, b, spectra_a, (needs_rows, False, needs_a, needs_b)
                )
            else:
                _, grad_rows, grad_a, grad_b = _bilinear_grads(
                    grad, x, b, spectra_a, (False, needs_rows, needs_a, needs_b)
                )
        scale = ctx.scale
        grad_rows = None if grad_rows is None else grad_rows.mul_(scale).to(rows.dtype)
        grad_a = None if grad_a is None else grad_a.mul_(scale).to(factor_a.dtype)
        grad_b = None if grad_b is None else grad_b.mul_(scale).to(factor_b.dtype)
        return grad_rows, grad_a, grad_b, None, None


def structured_shift(
    rows: torch.Tensor, factor_a: torch.Tensor, factor_b: torch.Tensor, scale: float, transposed: bool = False
) -> torch.Tensor:
    """`rows·Pᵀ` (`transposed=False`: every row `h` → `P·h`) or `rows·P` (every row `g` → `Pᵀ·g`) with
    `P = s·π(B·A)`, for 2-D `rows` (k × n), by FFT: O(r·k·n·log n) and k × n memory, never n × n."""
    if rows.dim() != 2 or rows.shape[1] != factor_a.shape[1]:
        raise ValueError(
            f"structured_shift needs rows (k × n) with n = {factor_a.shape[1]} (A's columns), got "
            f"{tuple(rows.shape)}"
        )
    return _StructuredShift.apply(rows, factor_a, factor_b, scale, transposed)


def shift_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    factor_a: torch.Tensor,
    factor_b: torch.Tensor,
    scale: float,
    mode: Mode,
    computation: ShiftComputation,
) -> torch.Tensor:
    """A LoRMA_π layer (or one output slice of it): `x·(P·W)ᵀ + b` (pre, P of size d_out) or `x·(W·P)ᵀ + b`
    (post, P of size d_in), `P = s·π(B·A)`, for `x` (..., d_in) in `x.dtype`, computed as `computation`
    says (see `ShiftComputation`; `choose_shift_computation` picks the cheapest).

    `weight` (d_out × d_in, frozen) and `bias` are cast to `x.dtype` once, as autocast casts them for
    `F.linear`; a dense `P` is built in `x.dtype` (`shift_multiplier`), the structured form runs its FFTs
    in float32 (`structured_shift`).
    """
    if weight.requires_grad:
        raise ValueError("shift_linear: the base weight must be frozen (requires_grad=False)")
    if computation not in SHIFT_COMPUTATIONS:
        raise ValueError(f"computation={computation!r} must be one of {SHIFT_COMPUTATIONS}")
    if mode not in ("pre", "post"):
        raise ValueError(f"mode={mode!r} must be 'pre' or 'post'")
    d_out, d_in = weight.shape
    rows = x.reshape(-1, d_in)
    with torch.autocast(x.device.type, enabled=False):
        weight_c = weight.to(x.dtype)
        bias_c = None if bias is None else bias.to(x.dtype)
        out = _shift_rows(rows, weight_c, bias_c, factor_a, factor_b, scale, mode == "pre", computation)
    return out.view(*x.shape[:-1], d_out)


def _shift_rows(
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    factor_a: torch.Tensor,
    factor_b: torch.Tensor,
    scale: float,
    pre: bool,
    computation: ShiftComputation,
) -> torch.Tensor:
    """`shift_linear` on 2-D rows, everything already in the rows' dtype."""
    linear = torch.nn.functional.linear
    if computation in ("activations", "weight"):
        multiplier = shift_multiplier(factor_a, factor_b, scale, rows.dtype)
        if computation == "weight":
            return linear(rows, multiplier @ weight if pre else weight @ multiplier, bias)
        if pre:
            return linear(linear(rows, weight), multiplier, bias)
        return linear(linear(rows, multiplier), weight, bias)
    if computation == "structured_activations":
        if pre:
            out = structured_shift(linear(rows, weight), factor_a, factor_b, scale)
            return out if bias is None else out + bias
        return linear(structured_shift(rows, factor_a, factor_b, scale), weight, bias)
    # structured_weight: W'ᵀ = Wᵀ·Pᵀ (pre) has the columns of W as its rows to transform; W' = W·P (post)
    # has W's own rows.
    if pre:
        out = rows @ structured_shift(weight.T.contiguous(), factor_a, factor_b, scale)
        return out if bias is None else out + bias
    return linear(rows, structured_shift(weight, factor_a, factor_b, scale, transposed=True), bias)


# --- choosing a computation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftCosts:
    """What the operations of the LoRMA_π computations cost on one kind of device and compute dtype, in
    multiply-adds of a large dense matrix product in that dtype (so a product costs its multiply-add count).

    `memory_pass`: one element written and read once more (copies, element-wise ops, low-rank products
    whose time is memory). `fft`: one element of one length-n real FFT, per log2(n), with the element-wise
    work of the structured form around it (complex products, weighting, accumulation).
    """

    memory_pass: float
    fft: float


#: CPU: measured with `python -m lorma_exp.bench.calibrate --threads 1` (sizes 512 and 1024, rounded) on
#: one thread of a Xeon with AMX, where bfloat16 products run about 6× faster than float32 ones, so memory
#: and FFTs weigh more against them. CUDA: derived from the H200 anchors of performance.md (a bfloat16
#: product at ~250 T multiply-adds/s, copies at 4.1 TB/s, a plain FFT form 7× slower than dense `P` on
#: activations); run the calibration on a GPU to replace it. Other dtypes use their device's bfloat16 entry.
SHIFT_COSTS: dict[tuple[str, torch.dtype], ShiftCosts] = {
    ("cpu", torch.bfloat16): ShiftCosts(memory_pass=60.0, fft=150.0),
    ("cpu", torch.float32): ShiftCosts(memory_pass=25.0, fft=25.0),
    ("cpu", torch.float64): ShiftCosts(memory_pass=20.0, fft=20.0),
    ("cuda", torch.bfloat16): ShiftCosts(memory_pass=250.0, fft=400.0),
}


def shift_costs(device_type: str, dtype: torch.dtype) -> ShiftCosts:
    """The `SHIFT_COSTS` entry for a device type and compute dtype: the device's bfloat16 entry for a dtype
    it does not list, CUDA's for a device type other than CPU (an accelerator: fast products, slow FFTs)."""
    device_type = "cpu" if device_type == "cpu" else "cuda"
    return SHIFT_COSTS.get((device_type, dtype), SHIFT_COSTS[(device_type, torch.bfloat16)])


def _dense_multiply_adds(tokens: int, n: int, m: int, training: bool) -> dict[str, int]:
    """Multiply-adds beyond the frozen layer of the two dense computations, one multiplier (n, m):
    activations: `h·Pᵀ` forward, `G·P` and `Gᵀ·h` backward (T·n² each);
    weight: `P·W` forward (n²·m), then `dW' = Gᵀ·x` (T·n·m) and `dP = dW'·Wᵀ` (n²·m)."""
    if not training:
        return {"activations": tokens * n * n, "weight": n * n * m}
    return {"activations": 3 * tokens * n * n, "weight": 2 * n * n * m + tokens * n * m}


def shift_computation_costs(
    tokens: int, shapes: list[tuple[int, int]], r: int, training: bool, costs: ShiftCosts
) -> dict[ShiftComputation, float]:
    """Estimated cost of each computation for one layer call, beyond the frozen layer, in multiply-adds.

    `shapes` holds `(n, m)` per multiplier: `n` its size, `m` the other side of the weight slice it
    multiplies. Dense: the products of `_dense_multiply_adds`, building `P` (`2·r·n²` multiply-adds and
    2n² written, doubled by backward) and the large tensors each writes (docs/lorma_pi.md, "Cost model").
    Structured: `(3r+3)` FFTs of the rows for training, `r+1` for inference (activations: T rows;
    weight: m rows, plus `dW' = Gᵀ·x`)."""
    passes = 2 if training else 1
    total: dict[ShiftComputation, float] = dict.fromkeys(SHIFT_COMPUTATIONS, 0.0)
    for n, m in shapes:
        dense = _dense_multiply_adds(tokens, n, m, training)
        build = passes * (2 * r * n * n + costs.memory_pass * 2 * n * n)
        total["activations"] += dense["activations"] + build + costs.memory_pass * passes * tokens * n
        total["weight"] += dense["weight"] + build + costs.memory_pass * passes * n * m
        transforms = 3 * r + 3 if training else r + 1
        per_row = transforms * n * (costs.fft * math.log2(max(n, 2)))
        total["structured_activations"] += tokens * per_row
        total["structured_weight"] += m * per_row + (tokens * n * m if training else 0)
    return total


def choose_shift_computation(
    tokens: int, shapes: list[tuple[int, int]], r: int, training: bool, costs: ShiftCosts
) -> ShiftComputation:
    """The computation `shift_computation_costs` finds cheapest (ties: the order of `SHIFT_COMPUTATIONS`)."""
    estimates = shift_computation_costs(tokens, shapes, r, training, costs)
    return min(SHIFT_COMPUTATIONS, key=estimates.__getitem__)
