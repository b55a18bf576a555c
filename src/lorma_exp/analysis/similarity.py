"""How alike two weight updates are: the paper's Table 9 measures of ΔW_LoRMA against ΔW_LoRA of a layer.

For updates X (the compared update) and Y (the reference, LoRA's) of the same shape m × n, all computed in
float64, with k the LoRA rank r:

- Frobenius distance: ‖X − Y‖_F.
- Cosine similarity of the flattened matrices: ⟨X, Y⟩_F / (‖X‖_F · ‖Y‖_F), in [−1, 1].
- Normalised subspace similarity φ (Hu et al., "LoRA", 2021, Section 7.2):

      φ(X, Y, i, j) = ‖U_X^{i⊤} U_Y^j‖_F² / min(i, j)  ∈ [0, 1],

  U_X^i holding the singular vectors of X for its i largest singular values; reported at i = j = k.
  ‖U_X^{k⊤} U_Y^k‖_F² is the sum of cos² of the k principal angles between the two subspaces, so φ = 1
  when they coincide and 0 when they are orthogonal. The LoRA paper applies it to right singular vectors
  (the input space); an update has two sides, so both are reported: ``side="left"`` (column / output
  space) and ``side="right"`` (row / input space).
- Squared difference of the top-k singular values: Σ_{i≤k} (σ_i(X) − σ_i(Y))², σ in decreasing order.
- Squared difference of the top-k eigenvalues: Σ_{i≤k} |λ_i(X) − λ_i(Y)|², the (complex) eigenvalues of
  each square matrix in decreasing modulus, ties in decreasing imaginary part (so that a conjugate pair
  a ± bi of X meets the pair of Y in the same order). Undefined (None) for a non-square update.
- First principal angle Θ₁ between the top-k singular subspaces, in degrees: the principal angles
  0 ≤ θ_1 ≤ … ≤ θ_k ≤ 90° (Björck & Golub) are the arccosines of the singular values of U_X^{k⊤} U_Y^k,
  and Θ₁ = arccos of the largest, the smallest angle (scipy.linalg.subspace_angles lists them largest
  first). Both sides, as for φ.

The random baseline is the paper's: an unscaled matrix of i.i.d. N(0, 1) entries of the reference's shape
(its Frobenius norm is about √(m·n), 1024 for a 1024 × 1024 layer, which is the distance the paper prints
for it), compared with the reference by the same measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lorma_exp.analysis.rank import MatrixLike, as_float64

SIDES = ("left", "right")


def frobenius_distance(first: MatrixLike, second: MatrixLike) -> float:
    first, second = _same_shape(first, second)
    return float(torch.linalg.matrix_norm(first - second, ord="fro"))


def cosine_similarity(first: MatrixLike, second: MatrixLike) -> float:
    """Cosine of the angle between the flattened matrices; undefined (error) for a zero matrix."""
    first, second = _same_shape(first, second)
    norms = torch.linalg.vector_norm(first) * torch.linalg.vector_norm(second)
    if norms == 0:
        raise ValueError("cosine similarity is undefined for a zero matrix")
    return float(torch.sum(first * second) / norms)


def top_singular_vectors(matrix: MatrixLike, count: int, side: str) -> torch.Tensor:
    """Orthonormal columns spanning the top-``count`` left (m × count) or right (n × count) singular
    subspace of ``matrix``."""
    tensor = as_float64(matrix)
    if not 1 <= count <= min(tensor.shape):
        raise ValueError(f"subspace dimension {count} must lie in [1, {min(tensor.shape)}]")
    left, _, right_transposed = torch.linalg.svd(tensor, full_matrices=False)
    if side == "left":
        return left[:, :count]
    if side == "right":
        return right_transposed[:count, :].T
    raise ValueError(f"side must be one of {SIDES}, not {side!r}")


def subspace_similarity(first: MatrixLike, second: MatrixLike, i: int, j: int, side: str = "right") -> float:
    """φ(first, second, i, j) = ‖U_first^{i⊤} U_second^j‖_F² / min(i, j) (Hu et al. 2021)."""
    first, second = _same_shape(first, second)
    overlap = top_singular_vectors(first, i, side).T @ top_singular_vectors(second, j, side)
    return float(torch.linalg.matrix_norm(overlap, ord="fro") ** 2 / min(i, j))


def principal_angles(first: MatrixLike, second: MatrixLike, count: int, side: str) -> torch.Tensor:
    """The ``count`` principal angles (radians, smallest first) between the top-``count`` singular
    subspaces of the two matrices on ``side``."""
    first, second = _same_shape(first, second)
    overlap = top_singular_vectors(first, count, side).T @ top_singular_vectors(second, count, side)
    cosines = torch.linalg.svdvals(overlap).clamp(max=1.0)  # rounding may put a cosine a hair above 1
    return torch.arccos(cosines)


def first_principal_angle_degrees(first: MatrixLike, second: MatrixLike, count: int, side: str) -> float:
    """Θ₁, the smallest principal angle between the top-``count`` singular subspaces, in degrees."""
    return math.degrees(float(principal_angles(first, second, count, side)[0]))


def singular_value_squared_difference(first: MatrixLike, second: MatrixLike, count: int) -> float:
    """Σ_{i≤count} (σ_i(first) − σ_i(second))², singular values in decreasing order."""
    first, second = _same_shape(first, second)
    _check_count(count, min(first.shape))
    difference = torch.linalg.svdvals(first)[:count] - torch.linalg.svdvals(second)[:count]
    return float(torch.sum(difference**2))


def eigenvalues_by_modulus(matrix: MatrixLike) -> torch.Tensor:
    """The complex eigenvalues of a square matrix, in decreasing modulus, ties in decreasing imaginary part."""
    tensor = as_float64(matrix)
    if tensor.shape[0] != tensor.shape[1]:
        raise ValueError(f"eigenvalues need a square matrix, not {tuple(tensor.shape)}")
    values = torch.linalg.eigvals(tensor)
    order = sorted(range(values.numel()), key=lambda i: (-abs(complex(values[i])), -float(values[i].imag)))
    return values[order]


def eigenvalue_squared_difference(first: MatrixLike, second: MatrixLike, count: int) -> float:
    """Σ_{i≤count} |λ_i(first) − λ_i(second)|², eigenvalues ordered by :func:`eigenvalues_by_modulus`."""
    first, second = _same_shape(first, second)
    _check_count(count, first.shape[0])
    difference = eigenvalues_by_modulus(first)[:count] - eigenvalues_by_modulus(second)[:count]
    return float(torch.sum(difference.abs() ** 2))


def random_baseline(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """The paper's random update: i.i.d. N(0, 1) entries, unscaled."""
    return torch.randn(shape, generator=generator, dtype=torch.float64)


@dataclass(frozen=True)
class UpdateSimilarity:
    """The Table 9 measures of one update against a reference, at subspace dimension ``rank``; sided
    measures by side (``left``, ``right``); ``eigenvalue_squared_difference`` None for non-square updates."""

    rank: int
    frobenius_distance: float
    cosine: float
    subspace_similarity: dict[str, float]
    singular_value_squared_difference: float
    eigenvalue_squared_difference: float | None
    first_principal_angle: dict[str, float]


def compare_updates(update: MatrixLike, reference: MatrixLike, rank: int) -> UpdateSimilarity:
    update, reference = _same_shape(update, reference)
    square = update.shape[0] == update.shape[1]
    return UpdateSimilarity(
        rank=rank,
        frobenius_distance=frobenius_distance(update, reference),
        cosine=cosine_similarity(update, reference),
        subspace_similarity={
            side: subspace_similarity(update, reference, rank, rank, side) for side in SIDES
        },
        singular_value_squared_difference=singular_value_squared_difference(update, reference, rank),
        eigenvalue_squared_difference=eigenvalue_squared_difference(update, reference, rank)
        if square
        else None,
        first_principal_angle={
            side: first_principal_angle_degrees(update, reference, rank, side) for side in SIDES
        },
    )


def _check_count(count: int, available: int) -> None:
    if not 1 <= count <= available:
        raise ValueError(f"the number of values compared, {count}, must lie in [1, {available}]")


def _same_shape(first: MatrixLike, second: MatrixLike) -> tuple[torch.Tensor, torch.Tensor]:
    first, second = as_float64(first), as_float64(second)
    if first.shape != second.shape:
        raise ValueError(f"updates differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}")
    if not (torch.isfinite(first).all() and torch.isfinite(second).all()):
        raise ValueError("updates must be finite")
    return first, second
