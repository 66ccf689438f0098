"""Matrix products for the hand-written NF-layer passes, on the fastest backend the tensors allow.

PyTorch runs float32 ``torch.mm`` on the CPU through MKL's sgemm. On AMD CPUs MKL takes
its AVX2 code path, about half the AVX-512 peak; oneDNN (``torch.ops.mkldnn``, the
library behind PyTorch's CPU convolutions and inductor's CPU linear kernels) comes close
to the peak on the same shapes (``benchmarks/bench_gemm.py``; figures in
``benchmarks/README.md``). Every function here decides its backend itself: float32/bfloat16
CPU products go through oneDNN's linear op where :data:`THRESHOLDS` says that is faster,
everything else (CUDA, float64, builds without oneDNN, thin or small products) through
``torch.mm``/``torch.bmm``. Callers never ask which backend runs; this module is the only
place that knows.

Set the environment variable ``NFN_LAB_ONEDNN=0`` (before importing nfn_lab) to run every
product on ``torch.mm``/``torch.bmm``, e.g. to compare against plain PyTorch.

The oneDNN op has no autograd formula: these functions are for code that runs without
autograd (the custom operators of :mod:`nfn_lab.layers.equivariant_map` and
:mod:`nfn_lab.layers.channel_map`). Shapes: ``x: (R, K)``, ``w: (K, N)``; batched: ``x: (B, K, P)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "THRESHOLDS",
    "Thresholds",
    "batched_matmul_nt_sum",
    "differentiable_shared_matmul",
    "in_autocast_dtype",
    "matmul",
    "matmul_acc",
    "matmul_plus",
    "matmul_tn",
    "shared_matmul",
    "shared_matmul_acc",
    "uses_onednn",
]


@dataclass(frozen=True)
class Thresholds:
    """Where a product leaves ``torch.mm``/``torch.bmm`` for oneDNN, tuned on one CPU (an AMD EPYC).

    Each crossover is measured by ``benchmarks/bench_gemm.py`` (see benchmarks/README.md);
    on another CPU, rerun it and replace :data:`THRESHOLDS` (``dataclasses.replace``).
    """

    # x @ w: thinner reductions K are memory-bound, where MKL runs as fast or faster.
    min_width: int = 32
    # x^T g: the wider side of the (K, N) output; at 32 x 32 MKL is faster.
    min_tn_width: int = 64
    # x^T g: the narrower side of the output; a thinner one (e.g. 1 channel) is faster on MKL.
    min_tn_narrow: int = 8
    # Any product: oneDNN's calls cost more than MKL's, which smaller products do not win back.
    min_macs: int = 1 << 20
    # x^T g: rows per oneDNN call; a long reduction in one call runs at about half speed.
    tn_block_rows: int = 2048
    # Batched products (one oneDNN call per item): below this per item, one MKL batched GEMM wins.
    min_item_macs: int = 1 << 22


THRESHOLDS = Thresholds()


def _onednn_linear() -> Any:
    """``torch.ops.mkldnn._linear_pointwise`` (``Y = X @ W^T + B``, ``W: (N, K)``), or None without
    oneDNN or with ``NFN_LAB_ONEDNN=0``."""
    if os.environ.get("NFN_LAB_ONEDNN", "1") == "0" or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):  # a build without the op
        return None


def _onednn_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes oneDNN's linear op takes on this CPU: float32, and bfloat16 where the CPU has its instructions."""
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (torch.float32, torch.bfloat16) if bf16 else (torch.float32,)


_LINEAR = _onednn_linear()
_DTYPES = _onednn_dtypes()


def in_autocast_dtype(*tensors: Tensor | None) -> tuple[Any, ...]:
    """``tensors`` in the autocast dtype when autocast is on for their device (as ``nn.Linear``
    computes; the hand-written passes then run with autocast off, in one dtype), else as given
    (None stays None)."""
    device_type = next(t for t in tensors if t is not None).device.type
    if not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(None if t is None else t.to(dtype) for t in tensors)


def uses_onednn(t: Tensor) -> bool:
    """Whether products of tensors like ``t`` can go through oneDNN at all (float32, or bfloat16 where
    the CPU supports it, on the CPU, with oneDNN available); for reports, not for routing (every
    function here routes itself)."""
    return _LINEAR is not None and t.device.type == "cpu" and t.dtype in _DTYPES


def _linear(x: Tensor, w_t: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ w_t^T + bias`` through oneDNN: ``x: (R, K)``, ``w_t: (N, K)``."""
    return _LINEAR(x, w_t, bias, "none", [], "")


def _wide_and_large(x: Tensor, width: int, min_width: int, macs: int) -> bool:
    """Whether a product of tensors like ``x`` with ``width`` (at least ``min_width``) and ``macs``
    multiply-adds runs on oneDNN."""
    return uses_onednn(x) and width >= min_width and macs >= THRESHOLDS.min_macs


def _matmul_on_onednn(x: Tensor, w: Tensor) -> bool:
    """Whether ``x @ w`` (``x: (R, K)``, ``w: (K, N)``) runs on oneDNN."""
    return _wide_and_large(x, x.shape[1], THRESHOLDS.min_width, x.shape[0] * x.shape[1] * w.shape[1])


def matmul(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ w [+ bias]``: ``x: (R, K)``, ``w: (K, N)``, ``bias: (N,)`` -> ``(R, N)``."""
    if _matmul_on_onednn(x, w):
        return _linear(x, w.t(), bias)
    return torch.mm(x, w) if bias is None else torch.addmm(bias, x, w)


def matmul_acc(out: Tensor, x: Tensor, w: Tensor) -> Tensor:
    """``out += x @ w`` in place: ``out: (R, N)``, ``x: (R, K)``, ``w: (K, N)``; returns ``out``."""
    if _matmul_on_onednn(x, w):
        return out.add_(_linear(x, w.t()))
    return out.addmm_(x, w)


def matmul_plus(x: Tensor, w: Tensor, add_terms: Callable[[Tensor | None], Tensor]) -> Tensor:
    """``x @ w`` plus terms that the caller adds, with one large allocation: ``x: (R, K)``,
    ``w: (K, N)`` -> ``(R, N)``.

    ``add_terms(out)`` adds the terms into ``out`` ``(R, N)`` in place and returns it;
    ``add_terms(None)`` returns them as a fresh ``(R, N)`` array. A backend that writes its
    product into fresh memory gets the terms added to it; one that accumulates adds the product
    into the terms.
    """
    if _matmul_on_onednn(x, w):
        return add_terms(_linear(x, w.t()))
    return add_terms(None).addmm_(x, w)


def matmul_tn(x: Tensor, g: Tensor) -> Tensor:
    """``x^T g``, the gradient of a weight ``(K, N)`` from its input ``x: (R, K)`` and output gradient ``g: (R, N)``."""
    narrow, wide = sorted((x.shape[1], g.shape[1]))
    macs = x.shape[0] * narrow * wide
    if not (_wide_and_large(x, wide, THRESHOLDS.min_tn_width, macs) and narrow >= THRESHOLDS.min_tn_narrow):
        return torch.mm(x.t(), g)
    # oneDNN runs the product fastest with the narrower operand as its left factor.
    return _blocked_tn(x, g) if x.shape[1] <= g.shape[1] else _blocked_tn(g, x).t()


def _blocked_tn(a: Tensor, b: Tensor) -> Tensor:
    """``a^T b`` summed over blocks of ``THRESHOLDS.tn_block_rows`` rows, through oneDNN."""
    step = THRESHOLDS.tn_block_rows
    return _linear_sum((a[i : i + step].t(), b[i : i + step].t()) for i in range(0, a.shape[0], step))


def _linear_sum(pairs: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
    """``sum of x @ w_t^T`` over the (at least one) ``(x, w_t)`` pairs, each product through oneDNN."""
    products = (_linear(x, w_t) for x, w_t in pairs)
    out = next(products)
    for product in products:
        out.add_(product)
    return out


def _per_item(x: Tensor, macs_per_item: int) -> bool:
    """Whether a batched product over the items of ``x`` runs one oneDNN call per item."""
    return uses_onednn(x) and x.shape[0] > 0 and macs_per_item >= THRESHOLDS.min_item_macs


def _bmm_shared(a: Tensor, x: Tensor, bias: Tensor | None) -> Tensor:
    """:func:`shared_matmul` as one ``torch.bmm``/``torch.baddbmm`` (differentiable)."""
    if bias is None:
        return torch.bmm(a.expand(x.shape[0], -1, -1), x)
    return torch.baddbmm(bias.unsqueeze(-1), a.expand(x.shape[0], -1, -1), x)


def shared_matmul(a: Tensor, x: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ x[b] [+ bias]`` for every ``b``: ``a: (N, K)``, ``x: (B, K, P)``, ``bias: (N,)`` or per
    item ``(B, N)`` -> ``(B, N, P)``."""
    batch, n = x.shape[0], a.shape[0]
    if not _per_item(x, n * a.shape[1] * x.shape[2]):
        return _bmm_shared(a, x, bias)
    if bias is None:
        return torch.stack([_linear(a, item.t()) for item in x])
    return shared_matmul_acc(bias.unsqueeze(-1).expand(batch, n, x.shape[2]).contiguous(), a, x)


def differentiable_shared_matmul(
    a: Tensor, x: Tensor, bias: Tensor | None, operator: Callable[[Tensor, Tensor, Tensor | None], Tensor]
) -> Tensor:
    """:func:`shared_matmul` with autograd: ``a: (N, K)``, ``x: (B, K, P)``, ``bias: (N,)``, ``(B, N)``
    or None -> ``(B, N, P)``.

    Where the products run on ``torch.bmm`` this is one ``torch.baddbmm`` with autograd's
    backward; elsewhere ``operator(x, a, bias)``, a custom operator whose forward and backward
    call this module's products (oneDNN's op has no autograd formula). The custom operator's
    extra Python is paid only where it buys a faster backend.
    """
    if _per_item(x, a.shape[0] * a.shape[1] * x.shape[2]):
        return operator(x, a, bias)
    return _bmm_shared(a, x, bias)


def shared_matmul_acc(out: Tensor, a: Tensor, x: Tensor) -> Tensor:
    """``out[b] += a @ x[b]`` in place: ``out: (B, N, P)``, ``a: (N, K)``, ``x: (B, K, P)``; returns ``out``."""
    if not _per_item(x, a.shape[0] * a.shape[1] * x.shape[2]):
        return out.baddbmm_(a.expand(x.shape[0], -1, -1), x)
    for b in range(x.shape[0]):  # out[b] (N, P) = a (N, K) @ x[b] (K, P): oneDNN's weight operand is x[b]^T
        out[b].add_(_linear(a, x[b].t()))
    return out


def batched_matmul_nt_sum(x: Tensor, g: Tensor) -> Tensor:
    """``sum_b x[b] @ g[b]^T``: ``x: (B, K, P)``, ``g: (B, N, P)`` -> ``(K, N)``."""
    if not _per_item(x, x.shape[1] * g.shape[1] * x.shape[2]):
        return torch.bmm(x, g.transpose(1, 2)).sum(dim=0)
    return _linear_sum(zip(x, g))
