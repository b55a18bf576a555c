"""What the oracle tests share: a relative error, and reading or writing an adapter layer's factors and
their gradients through `layer.factors()` alone, whatever the layer's parameter layout."""

from __future__ import annotations

import torch

from lorma_exp.adapters import LoraLinear, LormaLinear

AdapterLayer = LoraLinear | LormaLinear
#: Slice name ("" for a whole layer, "q"/"k"/"v" for GPT-2's fused c_attn) -> (A, B).
Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ (Frobenius), in float64."""
    expected = expected.detach().double()
    return float((actual.detach().double() - expected).norm() / expected.norm())


def set_factors(layer: AdapterLayer, values: Factors) -> None:
    """Write (A, B) into every adapted slice of `layer`."""
    with torch.no_grad():
        for piece, factor_a, factor_b in layer.factors():
            new_a, new_b = values[piece.name]
            factor_a.copy_(new_a)
            factor_b.copy_(new_b)


def get_factors(layer: AdapterLayer) -> Factors:
    """A copy of (A, B) of every adapted slice of `layer`."""
    return {piece.name: (a.detach().clone(), b.detach().clone()) for piece, a, b in layer.factors()}


def factor_gradients(layer: AdapterLayer) -> Factors:
    """The gradient of (A, B) of every adapted slice, after a backward pass.

    `factors()` hands out the trainable parameters or views of them, so reading it while each trainable
    parameter holds its own gradient gives each factor's gradient, however the factors are stored.
    """
    parameters = [p for p in layer.parameters() if p.requires_grad]
    with torch.no_grad():
        values = [p.detach().clone() for p in parameters]
        for parameter in parameters:
            parameter.copy_(torch.zeros_like(parameter) if parameter.grad is None else parameter.grad)
        gradients = get_factors(layer)
        for parameter, value in zip(parameters, values, strict=True):
            parameter.copy_(value)
    return gradients
