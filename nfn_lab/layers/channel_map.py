"""A linear map over the channel axis of ``(B, C_in, P)`` tensors, with a hand-written backward.

``y[b] = W x[b] + bias`` is ``torch.baddbmm`` with an expanded weight; autograd then runs
its products on ``torch.bmm``. Here forward and backward go through
:mod:`nfn_lab.layers.gemm`, which runs them on oneDNN where that is faster (float32 CPU,
large enough items), about 1.5-2x on NF-attention's query/key/value projections.
Double backward is not supported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from nfn_lab.layers import gemm

__all__ = ["channel_map"]


def channel_map(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``weight @ x[b] (+ bias)``: ``x: (B, C_in, P)``, ``weight: (C_out, C_in)``, ``bias: (C_out,)``,
    per sample ``(B, C_out)``, or None -> ``(B, C_out, P)`` (contiguous).

    Where the products would not run on oneDNN (CUDA, float64, small items), and under
    ``torch.compile``, this is a plain ``torch.baddbmm`` with autograd's backward: the
    hand-written function only pays for its extra Python where oneDNN runs. Inductor cannot
    lower its oneDNN calls, and a graph break per projection costs more than they gain
    (NF-attention, compiled, CPU).
    """
    if torch.compiler.is_compiling() or not gemm.shared_matmul_uses_onednn(weight, x):
        batch_weight = weight.expand(x.shape[0], -1, -1)
        if bias is None:
            return torch.bmm(batch_weight, x)
        return torch.baddbmm(bias.unsqueeze(-1), batch_weight, x)
    return _ChannelMapFunction.apply(x, weight, bias)


class _ChannelMapFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):  # compute in the autocast dtype, like nn.Linear
            dtype = torch.get_autocast_dtype(device_type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        with torch.autocast(device_type, enabled=False):
            if bias is None:
                out = gemm.shared_matmul(weight, x)
            else:
                out = bias.unsqueeze(-1).expand(x.shape[0], weight.shape[0], x.shape[2]).contiguous()
                gemm.shared_matmul_acc(out, weight, x)
        ctx.save_for_backward(x, weight)
        ctx.per_sample_bias = bias is not None and bias.dim() == 2
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_x = grad_weight = grad_bias = None
        with torch.autocast(x.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_x = gemm.shared_matmul(weight.t(), grad)
            if ctx.needs_input_grad[1]:
                grad_weight = gemm.batched_matmul_nt_sum(grad, x)
            if ctx.needs_input_grad[2]:
                grad_bias = grad.sum(2) if ctx.per_sample_bias else grad.sum((0, 2))
        return grad_x, grad_weight, grad_bias
