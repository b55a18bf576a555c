"""The maths under the layers: the π operator, the low-rank branch with its hand-written backward, and the
flop count that picks how LoRMA_π is computed.

Notation as in docs/adapters.md: a frozen weight `W` (d_out × d_in), input rows `x` (tokens × d_in),
factors `A` (r × ·) and `B` (· × r), scaling `s`.
"""

from __future__ import annotations

from typing import Literal

import torch

#: Where the frozen weight enters a low-rank branch `s·(x A_eff^T) B_eff^T`:
#: `"none"` (LoRA: A_eff = A, B_eff = B), `"into_A"` (LoRMA pre: A_eff = A·W),
#: `"into_B"` (LoRMA post: B_eff = W·B).
Fold = Literal["none", "into_A", "into_B"]


def cyclic_row_shift(matrix: torch.Tensor, direction: int = 1) -> torch.Tensor:
    """Rotate row `i` of a square matrix cyclically by `i` places: right for `direction=1` (the paper's π,
    `π(M)[i, j] = M[i, (j − i) mod n]`), left for `direction=-1` (its inverse).

    Row `i` of the result is a length-n window of row `i` of `[M, M]`, starting at column `n − i` (right)
    or `i` (left); one strided view of the doubled matrix reads all the windows at once, so the cost is
    O(n²) with no index tensor.
    """
    n = matrix.shape[0]
    if matrix.dim() != 2 or matrix.shape[1] != n:
        raise ValueError(f"cyclic_row_shift needs a square matrix, got shape {tuple(matrix.shape)}")
    if direction not in (1, -1):
        raise ValueError(f"direction={direction!r} must be 1 (π) or -1 (its inverse)")
    doubled = torch.cat([matrix, matrix], dim=1)
    row_stride, first = (2 * n - 1, n) if direction == 1 else (2 * n + 1, 0)
    return doubled.as_strided((n, n), (row_stride, 1), doubled.storage_offset() + first).clone()


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


class _AdaptedLinear(torch.autograd.Function):
    """A whole adapted layer, frozen product and low-rank branch in one node:
    `out = x·W^T + b + s·(x·A_eff^T)·B_eff^T`, keeping for backward only what LoRA keeps: `x` and
    `U = x·A_eff^T` (tokens × r), besides the frozen weight.

    The branch is accumulated into the frozen products in place (`addmm_`): no output-sized sum in forward
    and no input-sized one in backward. Per fold, with `G` the output gradient and `dXf = G·W` the frozen
    layer's input gradient:
    - `"none"` (LoRA): `dX = dXf + s·(G·B)·A`, `dA = s·(G·B)^T·x`, `dB = s·G^T·U`;
    - `"into_A"` (LoRMA pre, `A_eff = A·W`, rebuilt in backward rather than kept): as LoRA with `A_eff`,
      then `dA = dA_eff·W^T`. Three r × weight products per step; the alternative through `h = x·W^T`
      (`U = h·A^T`, `dX = (G + s·G·B·A)·W`) needs an output-sized copy of `G` in backward, which costs more;
    - `"into_B"` (LoRMA post, `B_eff = W·B`, built in forward): backward reuses `dXf` instead of `B_eff`,
      `G·B_eff = dXf·B` and `dB = s·dXf^T·U`, so one r × weight product per step (when `x` needs no
      gradient `dXf` is not computed and `B_eff` is rebuilt instead).
    The frozen weight is cast to the compute dtype at most once per call (as autocast casts it for
    `F.linear`), and that copy is what backward keeps, as an autocast linear keeps it.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, factor_a, factor_b, scale: float, fold: Fold):
        with torch.autocast(x.device.type, enabled=False):
            weight_c = weight.to(x.dtype)
            a_eff, b_eff = _effective_factors(factor_a, factor_b, weight_c, fold, x.dtype)
            u = x @ a_eff.T
            out = x @ weight_c.T if bias is None else torch.addmm(bias.to(x.dtype), x, weight_c.T)
            out.addmm_(u, b_eff.T, alpha=scale)
        ctx.save_for_backward(x, u, weight_c, factor_a, factor_b)
        ctx.scale, ctx.fold = scale, fold
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, u, weight_c, factor_a, factor_b = ctx.saved_tensors
        scale, fold = ctx.scale, ctx.fold
        needs_x, _, needs_bias, needs_a, needs_b = ctx.needs_input_grad[:5]
        grad_x = grad_bias = grad_a = grad_b = None
        with torch.autocast(x.device.type, enabled=False):
            grad_out = grad_out.to(x.dtype)
            a, b = factor_a.to(x.dtype), factor_b.to(x.dtype)
            if fold == "into_B" and needs_x:
                grad_x = grad_out @ weight_c
                scaled_gb = grad_x @ (b * scale)
                if needs_b:
                    grad_b = (grad_x.T @ u).mul_(scale)
                grad_x.addmm_(scaled_gb, a)
            else:
                b_eff = weight_c @ b if fold == "into_B" else b
                scaled_gb = grad_out @ (b_eff * scale)
                if needs_b:
                    grad_b = (grad_out.T @ u).mul_(scale)
                    if fold == "into_B":
                        grad_b = weight_c.T @ grad_b
                if needs_x:
                    a_eff = a @ weight_c if fold == "into_A" else a
                    grad_x = (grad_out @ weight_c).addmm_(scaled_gb, a_eff)
            if needs_a:
                grad_a = scaled_gb.T @ x
                if fold == "into_A":
                    grad_a = grad_a @ weight_c.T
            if needs_bias:
                grad_bias = grad_out.sum(0).to(ctx.bias_dtype)
        grad_a = None if grad_a is None else grad_a.to(factor_a.dtype)
        grad_b = None if grad_b is None else grad_b.to(factor_b.dtype)
        return grad_x, None, grad_bias, grad_a, grad_b, None, None


def adapted_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    factor_a: torch.Tensor,
    factor_b: torch.Tensor,
    scale: float,
    fold: Fold,
) -> torch.Tensor:
    """`x·W^T + b + s·(x A_eff^T) B_eff^T` for 2-D `x` (tokens × d_in), computed in `x.dtype`; see `Fold`.

    The same function as the frozen layer plus `low_rank_branch`, at fewer products and temporaries. `weight`
    (d_out, d_in) must be frozen; `bias` may train.
    """
    if weight.requires_grad:
        raise ValueError("adapted_linear: the base weight must be frozen (requires_grad=False)")
    return _AdaptedLinear.apply(x, weight, bias, factor_a, factor_b, scale, fold)


def shift_prefers_weight_path(tokens: int, shapes: list[tuple[int, int]], training: bool) -> bool:
    """Whether building `P·W` (or `W·P`) beats applying the n×n multipliers `P` to activations.

    `shapes` holds `(n, m)` per multiplier: `n` its size, `m` the other side of the weight slice it
    multiplies. Extra flops beyond the frozen layer, forward (+ backward when training):
    - activations: `x·P^T` forward, `G·P` and `G^T·h` backward: `tokens·n²` each;
    - weight: `P·W` forward (`n²·m`), then `dW' = G^T x` (`tokens·n·m`) and `dP = dW'·W^T` (`n²·m`).
    """
    passes = 3 if training else 1
    on_activations = passes * tokens * sum(n * n for n, _ in shapes)
    build_weight = sum(n * n * m for n, m in shapes) * (2 if training else 1)
    if training:
        build_weight += tokens * sum(n * m for n, m in shapes)
    return build_weight < on_activations
