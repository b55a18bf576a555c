"""The π operator."""

from __future__ import annotations

import pytest
import torch

from lorma_exp.adapters.functional import cyclic_row_shift, pi


def test_pi_reproduces_the_papers_figure_3():
    rank_one = torch.tensor([[1.0, 2, 3], [2, 4, 6], [3, 6, 9]])
    shifted = pi(rank_one)
    assert torch.equal(shifted, torch.tensor([[1.0, 2, 3], [6, 2, 4], [6, 9, 3]]))
    assert torch.linalg.matrix_rank(rank_one) == 1 and torch.linalg.matrix_rank(shifted) == 3


def test_pi_moves_a_first_column_of_ones_onto_the_diagonal():
    matrix = torch.zeros(5, 5)
    matrix[:, 0] = 1.0
    assert torch.equal(pi(matrix), torch.eye(5))


def test_left_shift_inverts_pi_and_is_its_gradient():
    matrix = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.equal(cyclic_row_shift(pi(matrix), -1), matrix)
    assert torch.autograd.gradcheck(pi, (matrix,))


def test_pi_rejects_non_square_input():
    with pytest.raises(ValueError, match="square"):
        pi(torch.zeros(2, 3))
