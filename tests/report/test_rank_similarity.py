"""Numerical rank and update similarity on constructed matrices whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lorma_exp.analysis.rank import numerical_rank
from lorma_exp.analysis.similarity import (
    compare_updates,
    cosine_similarity,
    frobenius_distance,
    random_like,
    subspace_similarity,
)


def low_rank(rows: int, columns: int, rank: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    left = torch.randn(rows, rank, generator=generator, dtype=dtype)
    right = torch.randn(rank, columns, generator=generator, dtype=dtype)
    return left @ right


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_rank_of_a_product_of_rank_r_factors_is_r(rank):
    assert numerical_rank(low_rank(64, 48, rank, seed=rank)) == rank


def test_rank_of_zero_and_of_a_generic_square_matrix():
    assert numerical_rank(torch.zeros(16, 16)) == 0
    assert (
        numerical_rank(torch.randn(32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
        == 32
    )


def test_shift_inflation_example_from_the_paper_raises_rank_one_to_three():
    # method.md / the paper's Figure 3: π rotates row i right by i; rank 1 becomes rank 3.
    product = torch.tensor([[1.0, 2, 3], [2, 4, 6], [3, 6, 9]], dtype=torch.float64)
    shifted = torch.tensor([[1.0, 2, 3], [6, 2, 4], [6, 9, 3]], dtype=torch.float64)
    assert (numerical_rank(product), numerical_rank(shifted)) == (1, 3)


def test_identity_plus_zero_update_keeps_full_rank():
    # LoRMA₊ at initialisation: I + s·B·A with B = 0.
    size, r = 24, 4
    multiplier = torch.eye(size, dtype=torch.float64) + 2.0 * torch.zeros(
        size, r, dtype=torch.float64
    ) @ torch.ones(r, size, dtype=torch.float64)
    assert numerical_rank(multiplier) == size


def test_default_tolerance_agrees_with_numpy_matrix_rank():
    # Singular values straddling numpy's default threshold σ_max · max(m, n) · eps(float64).
    generator = np.random.default_rng(3)
    left, _ = np.linalg.qr(generator.standard_normal((20, 20)))
    right, _ = np.linalg.qr(generator.standard_normal((12, 12)))
    values = np.array([1.0, 0.5, 1e-3, 1e-9, 1e-12, 1e-13, 5e-15, 1e-15, 1e-16, 0, 0, 0])
    matrix = left[:, :12] @ np.diag(values) @ right.T
    assert numerical_rank(torch.from_numpy(matrix)) == np.linalg.matrix_rank(matrix)


def test_tolerance_follows_the_precision_the_matrix_was_computed_in():
    # A rank-4 product formed in float32 carries float32 rounding error: with eps(float32) it has rank 4,
    # while treating it as exact float64 counts the rounding error as extra rank.
    update = low_rank(64, 48, 4, seed=7, dtype=torch.float32)
    assert numerical_rank(update) == 4
    assert numerical_rank(update, precision=torch.float64) > 4


def test_an_explicit_tolerance_overrides_the_default():
    matrix = torch.diag(torch.tensor([3.0, 2.0, 1e-3], dtype=torch.float64))
    assert numerical_rank(matrix) == 3
    assert numerical_rank(matrix, tol=1e-2) == 2


def basis(size: int, index: int) -> torch.Tensor:
    vector = torch.zeros(size, dtype=torch.float64)
    vector[index] = 1.0
    return vector


def test_identical_updates_are_at_distance_zero_with_cosine_and_overlap_one():
    update = low_rank(10, 8, 3, seed=1)
    measures = compare_updates(update, update.clone(), dims=(1, 3))
    assert measures.frobenius_distance == pytest.approx(0.0, abs=1e-12)
    assert measures.cosine == pytest.approx(1.0)
    assert measures.subspace_left == pytest.approx({1: 1.0, 3: 1.0})
    assert measures.subspace_right == pytest.approx({1: 1.0, 3: 1.0})


def test_an_opposite_update_has_cosine_minus_one_but_the_same_subspaces():
    update = low_rank(10, 8, 2, seed=2)
    norm = float(torch.linalg.matrix_norm(update))
    assert cosine_similarity(-update, update) == pytest.approx(-1.0)
    assert frobenius_distance(-update, update) == pytest.approx(2 * norm)
    assert subspace_similarity(-update, update, 2, 2, "left") == pytest.approx(1.0)


def test_orthogonal_updates():
    # X = 3·e1 e1ᵀ, Y = e2 e2ᵀ: orthogonal as vectors and as subspaces; ||X − Y|| = sqrt(9 + 1).
    first = 3 * torch.outer(basis(5, 0), basis(4, 0))
    second = torch.outer(basis(5, 1), basis(4, 1))
    assert cosine_similarity(first, second) == pytest.approx(0.0)
    assert frobenius_distance(first, second) == pytest.approx(math.sqrt(10))
    assert subspace_similarity(first, second, 1, 1, "left") == pytest.approx(0.0)
    assert subspace_similarity(first, second, 1, 1, "right") == pytest.approx(0.0)


@pytest.mark.parametrize("angle", [0.0, 0.3, math.pi / 4, 1.2])
def test_subspace_similarity_of_one_direction_is_cos_squared_of_the_angle(angle):
    # Same right singular vector, left singular vectors at `angle`: φ_left = cos², φ_right = 1.
    right = basis(6, 2)
    first = torch.outer(basis(7, 0), right)
    second = 2.5 * torch.outer(math.cos(angle) * basis(7, 0) + math.sin(angle) * basis(7, 1), right)
    assert subspace_similarity(first, second, 1, 1, "left") == pytest.approx(math.cos(angle) ** 2)
    assert subspace_similarity(first, second, 1, 1, "right") == pytest.approx(1.0)


def test_subspace_similarity_normalises_by_the_smaller_dimension():
    # X spans {e1, e2} (singular values 2, 1); Y = e1 e1ᵀ: its direction lies inside X's top-2 space.
    first = torch.diag(torch.tensor([2.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    second = torch.outer(basis(4, 0), basis(4, 0))
    assert subspace_similarity(first, second, 2, 1, "left") == pytest.approx(1.0)
    # Z spans {e1, e3} (values 2, 1): X and Z share one of two directions, φ = (1 + 0) / 2.
    third = torch.diag(torch.tensor([2.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    assert subspace_similarity(first, third, 2, 2, "left") == pytest.approx(0.5)


def test_random_baseline_has_the_shape_and_norm_of_its_template():
    template = low_rank(12, 9, 2, seed=4)
    first = random_like(template, torch.Generator().manual_seed(5))
    again = random_like(template, torch.Generator().manual_seed(5))
    assert first.shape == template.shape
    assert torch.linalg.matrix_norm(first) == pytest.approx(float(torch.linalg.matrix_norm(template)))
    assert torch.equal(first, again)


def test_measures_refuse_updates_of_different_shapes_and_bad_dimensions():
    with pytest.raises(ValueError, match="differ in shape"):
        frobenius_distance(torch.zeros(3, 4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="must lie in"):
        subspace_similarity(torch.eye(3), torch.eye(3), 4, 1)
    with pytest.raises(ValueError, match="side must be"):
        subspace_similarity(torch.eye(3), torch.eye(3), 1, 1, "top")
