"""The general permutation-equivariant linear map, with a fused forward and backward.

This module holds the math behind :class:`~nfn_lab.layers.NPLinear` and
:class:`~nfn_lab.layers.HNPLinear` (see :mod:`nfn_lab.layers.linear` for the derivation):
a :class:`MapPlan` lists, for one weight space and one set of permuted neuron layers,
every term of the map, and :class:`EquivariantMapFunction` evaluates it on folded
arrays ``(B, *kept_axes, D)`` (see :mod:`nfn_lab.layers.layout`).

Why a hand-written backward: the map is dominated by a few GEMMs plus broadcasts and
reductions over the large ``(B, n, m, D)`` arrays. Autograd would materialize every
broadcast and every mean's gradient separately; here each large array is read and
written the minimum number of times (the broadcast terms are summed once, then the
pointwise GEMM accumulates into them, in both directions), and the GEMMs for inputs
that need no gradient (raw weights) are skipped. Double backward is not supported.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from nfn_lab.layers.layout import ArrayLayout

__all__ = ["Member", "Term", "MapPlan", "build_plan", "EquivariantMapFunction"]


@dataclass(frozen=True)
class Member:
    """One input array's contribution to a term.

    ``reduce``: ``"all"`` (mean over every kept axis), ``"rows"`` (mean over columns,
    rows kept), ``"cols"`` (mean over rows, columns kept), ``"self"`` (the array as is).
    """

    array: int
    reduce: str


@dataclass(frozen=True)
class Term:
    """One orbit family: the members feeding it and the output arrays it feeds."""

    name: str
    members: tuple[Member, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class MapPlan:
    """Everything the fused map needs to know about a weight space, fixed at construction.

    Attributes:
        kept_layers: per array (weights, then biases), the neuron layer of each kept axis.
        d_in, d_out: per array, the folded feature width ``D`` in and out.
        terms: broadcast terms, global first (its matrix comes with the output bias).
        pairs: arrays whose two neuron axes are both permuted: they get a pointwise term.
    """

    kept_layers: tuple[tuple[int, ...], ...]
    d_in: tuple[int, ...]
    d_out: tuple[int, ...]
    terms: tuple[Term, ...]
    pairs: tuple[int, ...]

    def term_shape(self, term: Term) -> tuple[int, int]:
        """Shape of the term's matrix: ``(sum of member widths, sum of output widths)``."""
        return sum(self.d_in[m.array] for m in term.members), sum(self.d_out[a] for a in term.outputs)

    def fan_in(self, array: int) -> int:
        """Total input width of all terms feeding ``array`` (for initialization)."""
        width = sum(self.term_shape(t)[0] for t in self.terms if array in t.outputs)
        return width + (self.d_in[array] if array in self.pairs else 0)


def build_plan(
    layouts: Sequence[ArrayLayout], permuted: Collection[int], in_channels: int, out_channels: int
) -> MapPlan:
    """The terms of the most general equivariant linear map (one per orbit family)."""
    kept_layers = tuple(a.kept_layers for a in layouts)
    all_arrays = tuple(range(len(layouts)))
    terms = [Term("global", tuple(Member(a, "all") for a in all_arrays), all_arrays)]
    for l in sorted(permuted):
        members, outputs = [], []
        for a, kept in enumerate(kept_layers):
            if l in kept:
                outputs.append(a)
                reduce = "self" if len(kept) == 1 else ("rows" if kept[0] == l else "cols")
                members.append(Member(a, reduce))
        terms.append(Term(f"neuron{l}", tuple(members), tuple(outputs)))
    return MapPlan(
        kept_layers=kept_layers,
        d_in=tuple(a.feature_dim(in_channels) for a in layouts),
        d_out=tuple(a.feature_dim(out_channels) for a in layouts),
        terms=tuple(terms),
        pairs=tuple(a for a, kept in enumerate(kept_layers) if len(kept) == 2),
    )


def _reductions(plan: MapPlan, xs: Sequence[Tensor]) -> dict[tuple[int, str], Tensor]:
    reduced: dict[tuple[int, str], Tensor] = {}
    for a, x in enumerate(xs):
        reduced[a, "self"] = x
        n_kept = len(plan.kept_layers[a])
        if n_kept == 2:
            reduced[a, "rows"] = x.sum(dim=2).mul_(1 / x.shape[2])  # (B, n_rows, D)
            reduced[a, "cols"] = x.sum(dim=1).mul_(1 / x.shape[1])  # (B, n_cols, D)
            reduced[a, "all"] = reduced[a, "rows"].mean(dim=1)  # (B, D)
        elif n_kept == 1:
            reduced[a, "all"] = x.mean(dim=1)  # (B, D)
        else:
            reduced[a, "all"] = x
    return reduced


def _cat(pieces: Sequence[Tensor]) -> Tensor:
    return torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]


def _outer_sum(rows: Tensor, cols: Tensor) -> Tensor:
    """``out[b, i, j] = rows[b, i] + cols[b, j]``: ``(B, n, D), (B, m, D) -> (B, n, m, D)``.

    A copy of the expanded rows plus an in-place add is several times faster on CPU than
    ``rows[:, :, None] + cols[:, None]``, whose doubly-broadcast kernel is slow.
    """
    shape = (rows.shape[0], rows.shape[1], cols.shape[1], rows.shape[2])
    out = torch.empty(shape, dtype=rows.dtype, device=rows.device)
    out.copy_(rows.unsqueeze(2).expand(shape))
    return out.add_(cols.unsqueeze(1))


def _matmul_2d(x: Tensor, w: Tensor) -> Tensor:
    """``(..., K) @ (K, N)`` as one GEMM."""
    return torch.mm(x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[1])


class EquivariantMapFunction(torch.autograd.Function):
    """``apply(plan, n_arrays, *xs, *term_weights, *pair_weights, bias) -> ys``.

    Shapes: ``xs[a]: (B, *kept_axes, d_in[a])`` -> ``ys[a]: (B, *kept_axes, d_out[a])``;
    ``term_weights[t]: plan.term_shape(term)``; ``pair_weights[p]: (d_in, d_out)`` of
    ``plan.pairs[p]``; ``bias: (sum(d_out),)``.
    """

    @staticmethod
    def forward(ctx: Any, plan: MapPlan, n_arrays: int, *tensors: Tensor) -> tuple[Tensor, ...]:
        # Under autocast, compute in the autocast dtype throughout (in-place GEMMs need one dtype).
        device_type = tensors[0].device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            tensors = tuple(t.to(dtype) for t in tensors)
        with torch.autocast(device_type, enabled=False):
            return EquivariantMapFunction._forward(ctx, plan, n_arrays, tensors)

    @staticmethod
    def _forward(ctx: Any, plan: MapPlan, n_arrays: int, tensors: Sequence[Tensor]) -> tuple[Tensor, ...]:
        xs = tensors[:n_arrays]
        term_ws = tensors[n_arrays : n_arrays + len(plan.terms)]
        pair_ws = tensors[n_arrays + len(plan.terms) : -1]
        bias = tensors[-1]
        reduced = _reductions(plan, xs)

        parts: list[list[Tensor]] = [[] for _ in xs]  # per output array: global, then per kept axis
        term_inputs = []
        for term, w in zip(plan.terms, term_ws):
            inp = _cat([reduced[m.array, m.reduce] for m in term.members])
            term_inputs.append(inp)
            out = torch.addmm(bias, inp, w) if term.name == "global" else _matmul_2d(inp, w)
            for a, part in zip(term.outputs, out.split([plan.d_out[a] for a in term.outputs], dim=-1)):
                parts[a].append(part)

        ys = []
        for a, (kept, p) in enumerate(zip(plan.kept_layers, parts)):
            glob = p[0]
            if not kept:
                ys.append(glob.clone())
            elif len(kept) == 1:
                ys.append(p[1] + glob.unsqueeze(1))
            else:
                # Terms arrive in neuron-layer order; the rows' layer is kept[0].
                by_layer = dict(zip(sorted(kept), p[1:]))
                rows, cols = by_layer[kept[0]], by_layer[kept[1]]
                ys.append(_outer_sum(rows + glob.unsqueeze(1), cols))  # (B, n, m, D_out)
        for a, w in zip(plan.pairs, pair_ws):
            d_out = plan.d_out[a]
            ys[a].view(-1, d_out).addmm_(xs[a].reshape(-1, plan.d_in[a]), w)  # pointwise term, in the GEMM

        ctx.plan, ctx.n_arrays = plan, n_arrays
        ctx.save_for_backward(*xs, *term_ws, *pair_ws, *term_inputs)
        return tuple(ys)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        grads = tuple(g.to(saved[0].dtype) for g in grads)  # autograd casts the results back per input
        with torch.autocast(saved[0].device.type, enabled=False):
            return EquivariantMapFunction._backward(ctx, saved, grads)

    @staticmethod
    def _backward(ctx: Any, saved: Sequence[Tensor], grads: Sequence[Tensor]) -> tuple[Tensor | None, ...]:
        plan: MapPlan = ctx.plan
        n_arrays, n_terms, n_pairs = ctx.n_arrays, len(plan.terms), len(plan.pairs)
        xs = saved[:n_arrays]
        term_ws = saved[n_arrays : n_arrays + n_terms]
        pair_ws = saved[n_arrays + n_terms : n_arrays + n_terms + n_pairs]
        term_inputs = saved[n_arrays + n_terms + n_pairs :]
        needs = ctx.needs_input_grad[2:]  # skip plan, n_arrays
        needs_x = needs[:n_arrays]
        needs_term_w = needs[n_arrays : n_arrays + n_terms]
        needs_pair_w = needs[n_arrays + n_terms : n_arrays + n_terms + n_pairs]

        # Gradients of each output's broadcast terms: sums of its gradient over the broadcast axes.
        g_out: dict[tuple[int, str], Tensor] = {}
        for a, (kept, g) in enumerate(zip(plan.kept_layers, grads)):
            if len(kept) == 2:
                g_out[a, kept[0]] = g.sum(dim=2)  # rows' term, (B, n, D)
                g_out[a, kept[1]] = g.sum(dim=1)  # cols' term, (B, m, D)
                g_out[a, "global"] = g_out[a, kept[0]].sum(dim=1)
            elif len(kept) == 1:
                g_out[a, kept[0]] = g
                g_out[a, "global"] = g.sum(dim=1)
            else:
                g_out[a, "global"] = g

        g_red: dict[tuple[int, str], Tensor] = {}
        term_w_grads: list[Tensor | None] = []
        bias_grad = None
        for term, w, inp, need_w in zip(plan.terms, term_ws, term_inputs, needs_term_w):
            key = "global" if term.name == "global" else int(term.name.removeprefix("neuron"))
            g_term = _cat([g_out[a, key] for a in term.outputs])
            g_flat = g_term.reshape(-1, g_term.shape[-1])
            term_w_grads.append(torch.mm(inp.reshape(-1, inp.shape[-1]).t(), g_flat) if need_w else None)
            if term.name == "global":
                bias_grad = g_term.sum(dim=0)
            g_inp = _matmul_2d(g_term, w.t())
            widths = [plan.d_in[m.array] for m in term.members]
            for m, piece in zip(term.members, g_inp.split(widths, dim=-1)):
                key_m = (m.array, m.reduce)
                g_red[key_m] = g_red[key_m] + piece if key_m in g_red else piece

        x_grads: list[Tensor | None] = []
        for a, (kept, x) in enumerate(zip(plan.kept_layers, xs)):
            if not needs_x[a]:
                x_grads.append(None)
            elif len(kept) == 2:
                n, m = x.shape[1], x.shape[2]
                rows = g_red[a, "rows"] / m + (g_red[a, "all"] / (n * m)).unsqueeze(1)
                x_grads.append(_outer_sum(rows, g_red[a, "cols"] / n))  # (B, n, m, D_in)
            elif len(kept) == 1:
                x_grads.append(g_red[a, "self"] + (g_red[a, "all"] / x.shape[1]).unsqueeze(1))
            else:
                x_grads.append(g_red[a, "all"].clone())

        pair_w_grads: list[Tensor | None] = []
        for a, w, need_w in zip(plan.pairs, pair_ws, needs_pair_w):
            g2d = grads[a].reshape(-1, plan.d_out[a])
            x2d = xs[a].reshape(-1, plan.d_in[a])
            if x_grads[a] is not None:
                x_grads[a].view(-1, plan.d_in[a]).addmm_(g2d, w.t())
            pair_w_grads.append(torch.mm(x2d.t(), g2d) if need_w else None)

        return (None, None, *x_grads, *term_w_grads, *pair_w_grads, bias_grad)
