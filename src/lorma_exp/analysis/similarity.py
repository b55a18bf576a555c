"""How alike two weight updates are (Table 9: ΔW_LoRMA against ΔW_LoRA of the same layer).

For updates X and Y of the same shape (m × n), all computed in float64:

- Frobenius distance: ||X − Y||_F.
- Cosine similarity of the flattened matrices: <X, Y>_F / (||X||_F · ||Y||_F), in [−1, 1].
- Normalised subspace similarity (Hu et al., "LoRA", 2021, Section 7.2 and Appendix G):

      φ(X, Y, i, j) = ||U_X^{i⊤} U_Y^j||_F² / min(i, j)  ∈ [0, 1],

  where U_X^i holds the singular vectors of X for its i largest singular values. ||U_X^{i⊤} U_Y^j||_F² is
  the sum of cos² of the principal angles between the two subspaces, so φ = 1 when the smaller subspace
  lies inside the larger and 0 when they are orthogonal. The LoRA paper applies it to the right singular
  vectors of its A matrices (the input space); a weight update has two sides, so both are reported:
  ``side="left"`` (column / output space) and ``side="right"`` (row / input space).
- Random baseline: a matrix of i.i.d. Gaussian entries rescaled to the Frobenius norm of the reference
  update (a "random update as large as LoRA's"), compared with the reference by the same measures. For a
  random k-dimensional subspace of R^m, φ against a fixed one averages k/m.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lorma_exp.analysis.rank import MatrixLike, as_float64


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
    raise ValueError(f"side must be 'left' or 'right', not {side!r}")


def subspace_similarity(first: MatrixLike, second: MatrixLike, i: int, j: int, side: str = "right") -> float:
    """φ(first, second, i, j) = ||U_first^{i⊤} U_second^j||_F² / min(i, j) (Hu et al. 2021)."""
    first, second = _same_shape(first, second)
    overlap = top_singular_vectors(first, i, side).T @ top_singular_vectors(second, j, side)
    return float(torch.linalg.matrix_norm(overlap, ord="fro") ** 2 / min(i, j))


def random_like(matrix: MatrixLike, generator: torch.Generator) -> torch.Tensor:
    """Gaussian matrix of ``matrix``'s shape with the same Frobenius norm."""
    tensor = as_float64(matrix)
    noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
    return noise * (torch.linalg.matrix_norm(tensor, ord="fro") / torch.linalg.matrix_norm(noise, ord="fro"))


@dataclass(frozen=True)
class UpdateSimilarity:
    """The Table 9 measures of one update against a reference; φ at i = j = each of ``dims``."""

    frobenius_distance: float
    cosine: float
    subspace_left: dict[int, float]
    subspace_right: dict[int, float]


def compare_updates(update: MatrixLike, reference: MatrixLike, dims: tuple[int, ...]) -> UpdateSimilarity:
    return UpdateSimilarity(
        frobenius_distance=frobenius_distance(update, reference),
        cosine=cosine_similarity(update, reference),
        subspace_left={k: subspace_similarity(update, reference, k, k, "left") for k in dims},
        subspace_right={k: subspace_similarity(update, reference, k, k, "right") for k in dims},
    )


def _same_shape(first: MatrixLike, second: MatrixLike) -> tuple[torch.Tensor, torch.Tensor]:
    first, second = as_float64(first), as_float64(second)
    if first.shape != second.shape:
        raise ValueError(f"updates differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}")
    if not (torch.isfinite(first).all() and torch.isfinite(second).all()):
        raise ValueError("updates must be finite")
    return first, second
