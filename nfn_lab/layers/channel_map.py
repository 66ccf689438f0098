"""A linear map over the channel axis of ``(B, C_in, ...)`` tensors, with a hand-written backward.

``y[b] = W x[b] + bias`` is one ``torch.baddbmm`` with an expanded weight. Where
:mod:`nfn_lab.layers.gemm` runs its products on a faster backend than ``torch.bmm`` (e.g.
NF-attention's query/key/value projections; ``benchmarks/bench_gemm.py``), the forward and
backward are the custom operators ``nfn_lab::channel_map`` and ``nfn_lab::channel_map_backward``
(see :mod:`nfn_lab.layers.custom_ops`), which ``torch.compile`` keeps as opaque calls; gemm
decides which (:func:`~nfn_lab.layers.gemm.differentiable_shared_matmul`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from nfn_lab.layers import gemm
from nfn_lab.layers.custom_ops import define, empty_grad, grads_or_none, without_autocast

__all__ = ["channel_map"]


def channel_map(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``weight @ x[b] (+ bias)`` over the channel axis: ``x: (B, C_in, *rest)``, ``weight: (C_out, C_in)``,
    ``bias: (C_out,)``, per sample ``(B, C_out)``, or None -> ``(B, C_out, *rest)`` (contiguous).

    Under autocast it computes in the autocast dtype, like ``nn.Linear``.
    """
    flat = x.reshape(x.shape[0], x.shape[1], -1)  # (B, C_in, P)
    flat, weight, bias = gemm.in_autocast_dtype(flat, weight, bias)
    out = gemm.differentiable_shared_matmul(weight, flat, bias, _channel_map)
    return out if x.dim() == 3 else out.view(x.shape[0], -1, *x.shape[2:])


@define("channel_map")
@without_autocast
def _channel_map(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x: (B, C_in, P)`` -> ``(B, C_out, P)``."""
    return gemm.shared_matmul(weight, x, bias)


@_channel_map.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[2])


@define("channel_map_backward")
@without_autocast
def _channel_map_backward(
    grad: Tensor, x: Tensor, weight: Tensor, needs_x: bool, needs_weight: bool, bias_dims: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`_channel_map` for ``x``, ``weight`` and a bias of ``bias_dims`` dimensions
    (0: none needed)."""
    grad_x = gemm.shared_matmul(weight.t(), grad) if needs_x else empty_grad(grad)
    grad_weight = gemm.batched_matmul_nt_sum(grad, x) if needs_weight else empty_grad(grad)
    grad_bias = {0: empty_grad(grad), 1: grad.sum((0, 2)), 2: grad.sum(2)}[bias_dims]
    return grad_x, grad_weight, grad_bias


@_channel_map_backward.register_fake
def _(
    grad: Tensor, x: Tensor, weight: Tensor, needs_x: bool, needs_weight: bool, bias_dims: int
) -> tuple[Tensor, Tensor, Tensor]:
    grad_bias = {0: empty_grad(grad), 1: grad.new_empty(grad.shape[1]), 2: grad.new_empty(grad.shape[:2])}[bias_dims]
    return (
        x.new_empty(x.shape) if needs_x else empty_grad(grad),
        weight.new_empty(weight.shape) if needs_weight else empty_grad(grad),
        grad_bias,
    )


def _setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor | None], output: Tensor) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.bias_dims = 0 if bias is None else bias.dim()


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, weight = ctx.saved_tensors
    needs_x, needs_weight, needs_bias = ctx.needs_input_grad
    grads = _channel_map_backward(
        grad.to(x.dtype), x, weight, needs_x, needs_weight, ctx.bias_dims if needs_bias else 0
    )
    return tuple(grads_or_none(grads, ctx.needs_input_grad))


_channel_map.register_autograd(_backward, setup_context=_setup_context)
