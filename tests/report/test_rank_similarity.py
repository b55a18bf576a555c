"""Numerical rank and the Table 9 similarity measures: each against its literal definition (numpy / scipy,
float64) on small matrices, and on constructed matrices whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from lorma_exp.analysis.rank import numerical_rank
from lorma_exp.analysis.similarity import (
    compare_updates,
    cosine_similarity,
    eigenvalue_squared_difference,
    eigenvalues_by_modulus,
    first_principal_angle_degrees,
    frobenius_distance,
    principal_angles,
    random_baseline,
    singular_value_squared_difference,
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


def pair(seed: int, rows: int = 9, columns: int = 7, rank: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two generic matrices: a rank-``rank`` one (a LoRA-like update) and a full one."""
    generator = np.random.default_rng(seed)
    low = generator.standard_normal((rows, rank)) @ generator.standard_normal((rank, columns))
    return generator.standard_normal((rows, columns)), low


def literal_top_vectors(matrix: np.ndarray, count: int, side: str) -> np.ndarray:
    left, _, right_transposed = np.linalg.svd(matrix)
    return left[:, :count] if side == "left" else right_transposed[:count].T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_measure_agrees_with_its_literal_definition(seed):
    x, y = pair(seed)
    k = 3
    assert frobenius_distance(x, y) == pytest.approx(math.sqrt(((x - y) ** 2).sum()), rel=1e-12)
    cosine = (x * y).sum() / (math.sqrt((x**2).sum()) * math.sqrt((y**2).sum()))
    assert cosine_similarity(x, y) == pytest.approx(cosine, rel=1e-12)
    sigma_x, sigma_y = np.linalg.svd(x, compute_uv=False), np.linalg.svd(y, compute_uv=False)
    assert singular_value_squared_difference(x, y, k) == pytest.approx(
        ((sigma_x[:k] - sigma_y[:k]) ** 2).sum()
    )
    for side in ("left", "right"):
        u_x, u_y = literal_top_vectors(x, k, side), literal_top_vectors(y, k, side)
        phi = np.linalg.norm(u_x.T @ u_y, "fro") ** 2 / k
        assert subspace_similarity(x, y, k, k, side) == pytest.approx(phi, rel=1e-10)
        # scipy's principal angles (an oracle of its own, largest first): Θ₁ is the smallest.
        angles = scipy.linalg.subspace_angles(u_x, u_y)
        assert first_principal_angle_degrees(x, y, k, side) == pytest.approx(
            math.degrees(angles.min()), abs=1e-9
        )
        # ‖U_X^k⊤ U_Y^k‖_F² is the sum of cos² of the principal angles, so φ is their mean.
        assert subspace_similarity(x, y, k, k, side) == pytest.approx(np.mean(np.cos(angles) ** 2), rel=1e-10)


def test_eigenvalue_difference_agrees_with_numpy_eigenvalues_ordered_by_modulus():
    generator = np.random.default_rng(4)
    x, y = generator.standard_normal((8, 8)), generator.standard_normal((8, 8))
    k = 4

    def ordered(matrix):
        values = np.linalg.eigvals(matrix)
        return np.array(sorted(values, key=lambda value: (-abs(value), -value.imag)))

    expected = (np.abs(ordered(x)[:k] - ordered(y)[:k]) ** 2).sum()
    assert eigenvalue_squared_difference(x, y, k) == pytest.approx(expected, rel=1e-10)


def test_eigenvalues_are_ordered_by_modulus_then_imaginary_part():
    # A 2-D rotation by 60° scaled by 2 has the conjugate pair 2·e^{±iπ/3}; then the real 3 and −0.5.
    c, s = math.cos(math.pi / 3), math.sin(math.pi / 3)
    matrix = torch.zeros(4, 4, dtype=torch.float64)
    matrix[:2, :2] = 2 * torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    matrix[2, 2], matrix[3, 3] = -0.5, 3.0
    values = eigenvalues_by_modulus(matrix)
    expected = [3.0, 2 * complex(c, s), 2 * complex(c, -s), -0.5]
    assert [complex(value) for value in values] == pytest.approx(expected)


def test_eigenvalue_difference_of_known_spectra():
    # diag(5, 2, 1) against diag(4, 2, 3): by modulus (5, 2, 1) and (4, 3, 2); top 2: (5−4)² + (2−3)² = 2.
    first = torch.diag(torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64))
    second = torch.diag(torch.tensor([4.0, 2.0, 3.0], dtype=torch.float64))
    assert eigenvalue_squared_difference(first, second, 2) == pytest.approx(2.0)
    assert singular_value_squared_difference(first, second, 2) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="square"):
        eigenvalue_squared_difference(torch.zeros(3, 4), torch.zeros(3, 4), 1)


def test_identical_updates_score_distance_zero_cosine_one_phi_one_and_angle_zero():
    update = low_rank(10, 10, 3, seed=1)
    measures = compare_updates(update, update.clone(), rank=3)
    assert measures.frobenius_distance == pytest.approx(0.0, abs=1e-12)
    assert measures.cosine == pytest.approx(1.0)
    assert measures.subspace_similarity == pytest.approx({"left": 1.0, "right": 1.0})
    assert measures.singular_value_squared_difference == pytest.approx(0.0, abs=1e-20)
    assert measures.eigenvalue_squared_difference == pytest.approx(0.0, abs=1e-16)
    assert measures.first_principal_angle == pytest.approx({"left": 0.0, "right": 0.0}, abs=1e-5)


def test_an_opposite_update_has_cosine_minus_one_but_the_same_subspaces_and_singular_values():
    update = low_rank(10, 8, 2, seed=2)
    norm = float(torch.linalg.matrix_norm(update))
    measures = compare_updates(-update, update, rank=2)
    assert measures.cosine == pytest.approx(-1.0)
    assert measures.frobenius_distance == pytest.approx(2 * norm)
    assert measures.subspace_similarity["left"] == pytest.approx(1.0)
    assert measures.singular_value_squared_difference == pytest.approx(0.0, abs=1e-20)
    assert measures.eigenvalue_squared_difference is None  # 10 × 8 has no eigenvalues


def test_orthogonal_updates():
    # X = 3·e1 e1ᵀ, Y = e2 e2ᵀ: orthogonal as vectors and as subspaces; ‖X − Y‖ = √(9 + 1); σ: 3 vs 1.
    first = 3 * torch.outer(basis(5, 0), basis(5, 0))
    second = torch.outer(basis(5, 1), basis(5, 1))
    measures = compare_updates(first, second, rank=1)
    assert measures.cosine == pytest.approx(0.0)
    assert measures.frobenius_distance == pytest.approx(math.sqrt(10))
    assert measures.subspace_similarity == pytest.approx({"left": 0.0, "right": 0.0})
    assert measures.first_principal_angle == pytest.approx({"left": 90.0, "right": 90.0})
    assert measures.singular_value_squared_difference == pytest.approx(4.0)
    assert measures.eigenvalue_squared_difference == pytest.approx(4.0)


@pytest.mark.parametrize("angle", [0.0, 0.3, math.pi / 4, 1.2])
def test_one_direction_at_an_angle(angle):
    # Same right singular vector, left singular vectors at `angle`: φ_left = cos², Θ₁ left = the angle.
    right = basis(6, 2)
    first = torch.outer(basis(7, 0), right)
    second = 2.5 * torch.outer(math.cos(angle) * basis(7, 0) + math.sin(angle) * basis(7, 1), right)
    assert subspace_similarity(first, second, 1, 1, "left") == pytest.approx(math.cos(angle) ** 2)
    assert subspace_similarity(first, second, 1, 1, "right") == pytest.approx(1.0)
    assert first_principal_angle_degrees(first, second, 1, "left") == pytest.approx(
        math.degrees(angle), abs=1e-6
    )
    assert first_principal_angle_degrees(first, second, 1, "right") == pytest.approx(0.0, abs=1e-6)


def test_principal_angles_of_two_planes_sharing_one_direction():
    # span{e1, e2} and span{e1, cos t·e2 + sin t·e3}: angles 0 and t, smallest first.
    t = 0.7
    first = torch.diag(torch.tensor([2.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    second = 1.5 * torch.outer(basis(4, 0), basis(4, 0)) + torch.outer(
        math.cos(t) * basis(4, 1) + math.sin(t) * basis(4, 2), basis(4, 1)
    )
    angles = principal_angles(first, second, 2, "left")
    assert angles.tolist() == pytest.approx([0.0, t], abs=1e-7)
    assert subspace_similarity(first, second, 2, 2, "left") == pytest.approx((1 + math.cos(t) ** 2) / 2)


def test_subspace_similarity_normalises_by_the_smaller_dimension():
    # X spans {e1, e2} (singular values 2, 1); Y = e1 e1ᵀ: its direction lies inside X's top-2 space.
    first = torch.diag(torch.tensor([2.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    second = torch.outer(basis(4, 0), basis(4, 0))
    assert subspace_similarity(first, second, 2, 1, "left") == pytest.approx(1.0)
    # Z spans {e1, e3} (values 2, 1): X and Z share one of two directions, φ = (1 + 0) / 2.
    third = torch.diag(torch.tensor([2.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    assert subspace_similarity(first, third, 2, 2, "left") == pytest.approx(0.5)


def test_the_random_baseline_is_an_unscaled_standard_normal_matrix():
    # The paper's distance of about 1024 for a 1024 × 1024 layer: ‖N‖_F ≈ √(m·n) for N(0, 1) entries, far
    # above any fine-tuning update, so its distance to ΔW_LoRA is about √(m·n) too.
    first = random_baseline((256, 256), torch.Generator().manual_seed(5))
    again = random_baseline((256, 256), torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and first.dtype == torch.float64
    assert float(first.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(first.std()) == pytest.approx(1.0, abs=0.02)
    small_update = 1e-3 * low_rank(256, 256, 8, seed=6)
    assert frobenius_distance(first, small_update) == pytest.approx(256.0, rel=0.01)


def test_measures_refuse_updates_of_different_shapes_and_bad_dimensions():
    with pytest.raises(ValueError, match="differ in shape"):
        frobenius_distance(torch.zeros(3, 4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="must lie in"):
        subspace_similarity(torch.eye(3), torch.eye(3), 4, 1)
    with pytest.raises(ValueError, match="must lie in"):
        singular_value_squared_difference(torch.eye(3), torch.eye(3), 4)
    with pytest.raises(ValueError, match="side must be"):
        subspace_similarity(torch.eye(3), torch.eye(3), 1, 1, "top")
    with pytest.raises(ValueError, match="zero matrix"):
        cosine_similarity(torch.zeros(3, 3), torch.eye(3))
