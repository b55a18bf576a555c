"""What the library needs to know about the layers it wraps: which ones it can wrap, how to read and write
their weight as a (d_out, d_in) matrix, and which dtype they compute in."""

from __future__ import annotations

import sys

import torch
from torch import nn

#: Working precision for merge, unmerge and export: exact enough that casting back is the only rounding.
EXACT_DTYPE = torch.float64


def is_conv1d(module: nn.Module) -> bool:
    """Whether `module` is transformers' GPT-2 `Conv1D` (weight stored transposed, `(d_in, d_out)`).

    Looks the class up only if transformers is already imported: otherwise no module can be one.
    """
    pytorch_utils = sys.modules.get("transformers.pytorch_utils")
    return pytorch_utils is not None and isinstance(module, pytorch_utils.Conv1D)


def is_adaptable(module: nn.Module) -> bool:
    """Layers the library can wrap: `nn.Linear` and GPT-2's `Conv1D`."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as a (d_out, d_in) matrix (a transposed view for `Conv1D`)."""
    return layer.weight.T if is_conv1d(layer) else layer.weight


def set_weight_matrix(layer: nn.Module, value: torch.Tensor) -> None:
    """Overwrite the layer's weight in place from a (d_out, d_in) matrix, in the weight's own dtype."""
    with torch.no_grad():
        weight_matrix(layer).copy_(value)


def compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the frozen layer computes in: autocast's when it is on for `x`'s device, else the weight's."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return weight.dtype
