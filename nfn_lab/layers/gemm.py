"""Matrix products for the fused NF-layer maps, on the fastest backend the tensors allow.

PyTorch runs float32 ``torch.mm`` on the CPU through MKL's sgemm. On AMD CPUs MKL takes
its AVX2 code path, about half the AVX-512 peak; oneDNN (``torch.ops.mkldnn``, the
library behind PyTorch's CPU convolutions and inductor's CPU linear kernels) comes close
to the peak on the same shapes: 1.3-3.3x faster on the products of the paper's networks
(one thread, ``python -m benchmarks.bench_gemm``; recorded in
``benchmarks/results/20261128-021755_gemm.md``). This module routes float32/bfloat16
CPU products through oneDNN's linear op where that is faster, and everything else (CUDA,
float64, builds without oneDNN, thin products) through ``torch.mm``/``torch.bmm``.

Set the environment variable ``NFN_LAB_ONEDNN=0`` (before importing nfn_lab) to run every
product on ``torch.mm``/``torch.bmm``, e.g. to compare against plain PyTorch.

The oneDNN op has no autograd formula: these functions are for code that runs without
autograd (the hand-written forward and backward passes of
:class:`~nfn_lab.layers.equivariant_map.EquivariantMapFunction` and :mod:`nfn_lab.layers.channel_map`).
Shapes: ``x: (R, K)``, ``w: (K, N)``; batched: ``x: (B, K, P)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "batched_matmul_nt_sum",
    "in_autocast_dtype",
    "matmul",
    "matmul_acc",
    "matmul_tn",
    "matmul_uses_onednn",
    "shared_matmul",
    "shared_matmul_acc",
    "shared_matmul_uses_onednn",
    "uses_onednn",
]

# x @ w goes through oneDNN only where the reduction K is at least this wide: thinner products
# are memory-bound and MKL runs them as fast or faster (K = 9: MKL 1.2-1.3x faster; K = 16:
# even; K = 32-64: oneDNN 1.3-2.5x faster, e.g. the CNN zoo's 5-channel input gradient,
# (R, 45) @ (45, 144); bench_gemm.py).
_MIN_WIDTH = 32
# x^T g goes through oneDNN when the wider side of its output is at least this (at 32 x 32
# MKL is 1.4x faster) and its narrower at least _MIN_TN_NARROW: a thinner product (e.g. a
# 1-channel output) is faster on MKL.
_MIN_TN_WIDTH = 64
_MIN_TN_NARROW = 8
# oneDNN only for products of at least this many multiply-adds: its calls cost about 12 us
# more than MKL's, which smaller products do not win back (crossover near 1M, bench_gemm.py).
_MIN_MACS = 1 << 20
# Rows per block of x^T g: a long reduction over R rows runs at about half speed in one
# oneDNN call; blocks of 2048 rows keep both operands in cache.
_TN_BLOCK_ROWS = 2048
# Batched products run one oneDNN call per batch item; below this many multiply-adds per
# item the calls' overhead loses to one MKL batched GEMM.
_MIN_ITEM_MACS = 1 << 22


def _onednn_linear() -> Any:
    """``torch.ops.mkldnn._linear_pointwise`` (``Y = X @ W^T + B``, ``W: (N, K)``), or None without
    oneDNN or with ``NFN_LAB_ONEDNN=0``."""
    if os.environ.get("NFN_LAB_ONEDNN", "1") == "0" or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):  # a build without the op
        return None


_LINEAR = _onednn_linear()


def in_autocast_dtype(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """``tensors`` in the autocast dtype when autocast is on for their device (as ``nn.Linear``
    computes; the hand-written passes then run with autocast off, in one dtype), else as given."""
    device_type = next(t for t in tensors if t is not None).device.type
    if not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(None if t is None else t.to(dtype) for t in tensors)


def uses_onednn(t: Tensor) -> bool:
    """Whether products of tensors like ``t`` can go through oneDNN (float32/bfloat16 on the CPU)."""
    return _LINEAR is not None and t.device.type == "cpu" and t.dtype in (torch.float32, torch.bfloat16)


def _linear(x: Tensor, w_t: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ w_t^T + bias`` through oneDNN: ``x: (R, K)``, ``w_t: (N, K)``."""
    return _LINEAR(x, w_t, bias, "none", [], "")


def _wide_and_large(x: Tensor, width: int, min_width: int, macs: int) -> bool:
    """Whether a product of tensors like ``x`` with ``width`` (at least ``min_width``) and ``macs``
    multiply-adds runs on oneDNN."""
    return uses_onednn(x) and width >= min_width and macs >= _MIN_MACS


def matmul_uses_onednn(x: Tensor, w: Tensor) -> bool:
    """Whether :func:`matmul` and :func:`matmul_acc` of ``x: (R, K)`` and ``w: (K, N)`` run on oneDNN."""
    return _wide_and_large(x, x.shape[1], _MIN_WIDTH, x.shape[0] * x.shape[1] * w.shape[1])


def matmul(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ w [+ bias]``: ``x: (R, K)``, ``w: (K, N)``, ``bias: (N,)`` -> ``(R, N)``."""
    if matmul_uses_onednn(x, w):
        return _linear(x, w.t(), bias)
    return torch.mm(x, w) if bias is None else torch.addmm(bias, x, w)


def matmul_acc(out: Tensor, x: Tensor, w: Tensor) -> Tensor:
    """``out += x @ w`` in place: ``out: (R, N)``, ``x: (R, K)``, ``w: (K, N)``; returns ``out``."""
    if matmul_uses_onednn(x, w):
        return out.add_(_linear(x, w.t()))
    return out.addmm_(x, w)


def matmul_tn(x: Tensor, g: Tensor) -> Tensor:
    """``x^T g``, the gradient of a weight ``(K, N)`` from its input ``x: (R, K)`` and output gradient ``g: (R, N)``."""
    narrow, wide = sorted((x.shape[1], g.shape[1]))
    if not (_wide_and_large(x, wide, _MIN_TN_WIDTH, x.shape[0] * narrow * wide) and narrow >= _MIN_TN_NARROW):
        return torch.mm(x.t(), g)
    # oneDNN runs the product fastest with the narrower operand as its left factor.
    return _blocked_tn(x, g) if x.shape[1] <= g.shape[1] else _blocked_tn(g, x).t()


def _blocked_tn(a: Tensor, b: Tensor) -> Tensor:
    """``a^T b`` summed over blocks of :data:`_TN_BLOCK_ROWS` rows, through oneDNN."""
    blocks = range(0, a.shape[0], _TN_BLOCK_ROWS)
    return _linear_sum((a[i : i + _TN_BLOCK_ROWS].t(), b[i : i + _TN_BLOCK_ROWS].t()) for i in blocks)


def _linear_sum(pairs: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
    """``sum of x @ w_t^T`` over the (at least one) ``(x, w_t)`` pairs, each product through oneDNN."""
    products = (_linear(x, w_t) for x, w_t in pairs)
    out = next(products)
    for product in products:
        out.add_(product)
    return out


def _per_item(x: Tensor, macs_per_item: int) -> bool:
    return uses_onednn(x) and x.shape[0] > 0 and macs_per_item >= _MIN_ITEM_MACS


def shared_matmul_uses_onednn(a: Tensor, x: Tensor) -> bool:
    """Whether :func:`shared_matmul` of ``a: (N, K)`` and ``x: (B, K, P)`` runs on oneDNN (else one ``torch.bmm``)."""
    return _per_item(x, a.shape[0] * a.shape[1] * x.shape[2])


def shared_matmul(a: Tensor, x: Tensor) -> Tensor:
    """``a @ x[b]`` for every ``b``: ``a: (N, K)``, ``x: (B, K, P)`` -> ``(B, N, P)``."""
    if not shared_matmul_uses_onednn(a, x):
        return torch.bmm(a.expand(x.shape[0], -1, -1), x)
    return torch.stack([_linear(a, item.t()) for item in x])


def shared_matmul_acc(out: Tensor, a: Tensor, x: Tensor) -> Tensor:
    """``out[b] += a @ x[b]`` in place: ``out: (B, N, P)``, ``a: (N, K)``, ``x: (B, K, P)``; returns ``out``."""
    if not shared_matmul_uses_onednn(a, x):
        return out.baddbmm_(a.expand(x.shape[0], -1, -1), x)
    for b in range(x.shape[0]):  # out[b] (N, P) = a (N, K) @ x[b] (K, P): oneDNN's weight operand is x[b]^T
        out[b].add_(_linear(a, x[b].t()))
    return out


def batched_matmul_nt_sum(x: Tensor, g: Tensor) -> Tensor:
    """``sum_b x[b] @ g[b]^T``: ``x: (B, K, P)``, ``g: (B, N, P)`` -> ``(K, N)``."""
    if not _per_item(x, x.shape[1] * g.shape[1] * x.shape[2]):
        return torch.bmm(x, g.transpose(1, 2)).sum(dim=0)
    return _linear_sum(zip(x, g))
