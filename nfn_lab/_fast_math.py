"""Elementwise functions through NumPy's SIMD kernels where those are much faster than PyTorch's.

On the CPU of a typical PyTorch build, ``torch.sin``/``torch.cos`` take about 3x and
``torch.tanh`` about 10x as long as NumPy's float32 kernels, and in SIREN fitting
(:class:`nfn_lab.siren.StackedSirenFit`) and the CNN zoo builder they are a large share of a
training step. These helpers use NumPy for CPU tensors (results equal
PyTorch's up to float rounding, a few ulp) and PyTorch everywhere else.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["cos_and_sin_", "tanh"]


def cos_and_sin_(z: Tensor, cos: Tensor) -> None:
    """Writes ``cos(z)`` into ``cos`` and then ``sin(z)`` into ``z`` (same shapes, any strides, no autograd).

    Through NumPy for float32/float64 CPU tensors, through PyTorch otherwise.
    """
    if z.device.type == "cpu" and z.dtype in (torch.float32, torch.float64):
        z_array = z.numpy()
        np.cos(z_array, out=cos.numpy())
        np.sin(z_array, out=z_array)
    else:
        torch.cos(z, out=cos)
        z.sin_()


class _NumpyTanh(torch.autograd.Function):
    """``tanh`` of a CPU tensor by NumPy, differentiable (the backward pass uses the output)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        y = torch.from_numpy(np.tanh(x.detach().numpy()))  # NumPy keeps x's memory layout (e.g. channels last)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return torch.ops.aten.tanh_backward(grad, y)  # grad * (1 - y^2)


def tanh(x: Tensor) -> Tensor:
    """``torch.tanh(x)``, differentiable, through NumPy for a CPU tensor."""
    return _NumpyTanh.apply(x) if x.device.type == "cpu" else torch.tanh(x)
