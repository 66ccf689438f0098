"""A linear map over the channel axis of ``(B, C_in, ...)`` tensors, with a hand-written backward.

``y[b] = W x[b] + bias`` is ``torch.baddbmm`` with an expanded weight; autograd then runs
its products on ``torch.bmm``. Where :mod:`nfn_lab.layers.gemm` runs them on oneDNN (float32
CPU, large enough items; about 1.5-2x on NF-attention's query/key/value projections), the
forward and backward are two custom operators (``nfn_lab::channel_map`` and its backward),
which ``torch.compile`` keeps as opaque calls: inductor cannot lower oneDNN calls traced
inside a graph, and a graph break per projection costs more than oneDNN gains.
Double backward is not supported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nfn_lab.layers import gemm

__all__ = ["channel_map"]


def channel_map(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``weight @ x[b] (+ bias)`` over the channel axis: ``x: (B, C_in, *rest)``, ``weight: (C_out, C_in)``,
    ``bias: (C_out,)``, per sample ``(B, C_out)``, or None -> ``(B, C_out, *rest)`` (contiguous).

    Where the products would not run on oneDNN (CUDA, float64, small items) this is a plain
    ``torch.baddbmm`` with autograd's backward: the custom operators only pay for their extra
    Python where oneDNN runs. Under autocast it computes in the autocast dtype, like ``nn.Linear``.
    """
    flat = x.reshape(x.shape[0], x.shape[1], -1)  # (B, C_in, P)
    flat, weight, bias = gemm.in_autocast_dtype(flat, weight, bias)
    if gemm.shared_matmul_uses_onednn(weight, flat):
        out = _channel_map(flat, weight, bias)
    elif bias is None:
        out = torch.bmm(weight.expand(flat.shape[0], -1, -1), flat)
    else:
        out = torch.baddbmm(bias.unsqueeze(-1), weight.expand(flat.shape[0], -1, -1), flat)
    return out if x.dim() == 3 else out.view(x.shape[0], -1, *x.shape[2:])


@torch.library.custom_op("nfn_lab::channel_map", mutates_args=())
def _channel_map(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    with torch.autocast(x.device.type, enabled=False):
        if bias is None:
            return gemm.shared_matmul(weight, x)
        out = bias.unsqueeze(-1).expand(x.shape[0], weight.shape[0], x.shape[2]).contiguous()
        return gemm.shared_matmul_acc(out, weight, x)


@_channel_map.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[2])


@torch.library.custom_op("nfn_lab::channel_map_backward", mutates_args=())
def _channel_map_backward(
    grad: Tensor, x: Tensor, weight: Tensor, needs_x: bool, needs_weight: bool, bias_dims: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`_channel_map` for ``x``, ``weight`` and a bias of ``bias_dims`` dimensions
    (0: none); gradients nobody needs come back empty."""
    with torch.autocast(x.device.type, enabled=False):
        empty = grad.new_empty(0)
        grad_x = gemm.shared_matmul(weight.t(), grad) if needs_x else empty
        grad_weight = gemm.batched_matmul_nt_sum(grad, x) if needs_weight else empty
        grad_bias = {0: empty, 1: grad.sum((0, 2)), 2: grad.sum(2)}[bias_dims]
        return grad_x, grad_weight, grad_bias


@_channel_map_backward.register_fake
def _(
    grad: Tensor, x: Tensor, weight: Tensor, needs_x: bool, needs_weight: bool, bias_dims: int
) -> tuple[Tensor, Tensor, Tensor]:
    empty = grad.new_empty(0)
    grad_bias = {0: empty, 1: grad.new_empty(grad.shape[1]), 2: grad.new_empty(grad.shape[:2])}[bias_dims]
    return (
        x.new_empty(x.shape) if needs_x else empty,
        weight.new_empty(weight.shape) if needs_weight else empty,
        grad_bias,
    )


def _setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor | None], output: Tensor) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.bias_dims = 0 if bias is None else bias.dim()


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, weight = ctx.saved_tensors
    needs_x, needs_weight, needs_bias = ctx.needs_input_grad
    grad_x, grad_weight, grad_bias = _channel_map_backward(
        grad.to(x.dtype), x, weight, needs_x, needs_weight, ctx.bias_dims if needs_bias else 0
    )
    return (grad_x if needs_x else None, grad_weight if needs_weight else None, grad_bias if needs_bias else None)


_channel_map.register_autograd(_backward, setup_context=_setup_context)
