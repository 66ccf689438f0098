"""Elementwise functions through NumPy's SIMD kernels where those are much faster than PyTorch's.

On the CPU of a typical PyTorch build, NumPy's float32 ``sin``, ``cos`` and ``tanh`` kernels
run several times faster than ``torch.sin``/``torch.cos``/``torch.tanh``, and in SIREN fitting
(:class:`nfn_lab.siren.StackedSirenFit`) and the CNN zoo builder they are a large share of a
training step (``benchmarks/bench_builders.py``, benchmarks/README.md). These helpers use
NumPy for CPU tensors (results equal PyTorch's up to float rounding, a few ulp) and PyTorch
everywhere else. The differentiable one is a custom operator with a registered fake, so that
``torch.compile`` keeps it as one opaque call (see :mod:`nfn_lab.layers.custom_ops`).
"""

from __future__ import annotations

from typing import Any

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


@torch.library.custom_op("nfn_lab::numpy_tanh", mutates_args=())
def _numpy_tanh(x: Tensor) -> Tensor:
    """``tanh`` of a CPU tensor by NumPy, which keeps ``x``'s memory layout (e.g. channels last)."""
    return torch.from_numpy(np.tanh(x.numpy()))


@_numpy_tanh.register_fake
def _(x: Tensor) -> Tensor:
    return torch.empty_like(x)


def _tanh_setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
    ctx.save_for_backward(output)


def _tanh_backward(ctx: Any, grad: Tensor) -> Tensor:
    (y,) = ctx.saved_tensors
    return torch.ops.aten.tanh_backward(grad, y)  # grad * (1 - y^2)


_numpy_tanh.register_autograd(_tanh_backward, setup_context=_tanh_setup_context)


def tanh(x: Tensor) -> Tensor:
    """``torch.tanh(x)``, differentiable, through NumPy (the custom operator ``nfn_lab::numpy_tanh``)
    for a float32/float64 CPU tensor."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return _numpy_tanh(x)
    return torch.tanh(x)
