"""Numerical rank of weight updates (Table 15) and of LoRMA multipliers I(BA) (Figure 7).

Numerical rank: the number of singular values σ_i of the matrix with σ_i > tol, the singular values being
computed in float64. The default tolerance is numpy.linalg.matrix_rank's,

    tol = σ_max · max(m, n) · eps,

where eps is the machine epsilon of the precision the matrix's ingredients carry (the tensor's dtype, or
``precision``): below it a singular value is indistinguishable from rounding. The run-folder layer
(``analysis.adapter_updates``) forms ΔW and I(BA) in float64 from the saved parameters, so no rounding of
its own enters, and passes the parameters' precision (float32 for most runs, eps ≈ 1.2e-7): a matrix that
is singular up to the resolution of its float32 factors counts as singular, as torch.linalg.matrix_rank
counts it on the float32 matrix.
"""

from __future__ import annotations

import numpy as np
import torch

MatrixLike = torch.Tensor | np.ndarray


def as_float64(matrix: MatrixLike) -> torch.Tensor:
    tensor = torch.as_tensor(matrix)
    if tensor.ndim != 2:
        raise ValueError(f"expected a matrix, got a tensor of shape {tuple(tensor.shape)}")
    return tensor.detach().to(device="cpu", dtype=torch.float64)


def singular_values(matrix: MatrixLike) -> torch.Tensor:
    """Singular values in float64, largest first."""
    return torch.linalg.svdvals(as_float64(matrix))


def default_tolerance(values: torch.Tensor, shape: tuple[int, int], precision: torch.dtype) -> float:
    """numpy.linalg.matrix_rank's default: σ_max · max(m, n) · eps(precision)."""
    largest = float(values.max()) if values.numel() else 0.0
    return largest * max(shape) * torch.finfo(precision).eps


def numerical_rank(
    matrix: MatrixLike, *, tol: float | None = None, precision: torch.dtype | None = None
) -> int:
    """The number of singular values above ``tol`` (default: :func:`default_tolerance`).

    ``precision`` is the dtype the matrix was computed in; by default the tensor's own floating dtype.
    """
    tensor = torch.as_tensor(matrix)
    if precision is None:
        precision = tensor.dtype if tensor.is_floating_point() else torch.float64
    values = singular_values(tensor)
    threshold = default_tolerance(values, tuple(tensor.shape), precision) if tol is None else tol
    return int((values > threshold).sum())
