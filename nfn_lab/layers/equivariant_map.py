"""The general permutation-equivariant linear map, with a fused forward and backward.

This module holds the math behind :class:`~nfn_lab.layers.NPLinear` and
:class:`~nfn_lab.layers.HNPLinear` (see :mod:`nfn_lab.layers.linear` for the derivation):
a :class:`MapPlan` lists, for one weight space and one set of permuted neuron layers,
every term of the map, and :class:`EquivariantMapFunction` evaluates it on folded
arrays ``(B, *kept_axes, D)`` or, for arrays that arrive channels-first, on the same
arrays features first, ``(B, D, *kept_axes)`` (see :mod:`nfn_lab.layers.layout`).

Why a hand-written backward: the map is dominated by a few GEMMs plus broadcasts and
reductions over the large ``(B, n, m, D)`` arrays. Autograd would materialize every
broadcast and every mean's gradient separately; here each large array is allocated once
and read and written the minimum number of times (the pointwise GEMM and the summed
broadcast terms meet in one output, in both directions), and the GEMMs towards inputs
that need no gradient (raw weights) are skipped. Double backward is not supported.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from nfn_lab.layers import gemm
from nfn_lab.layers.layout import ArrayLayout

__all__ = ["EquivariantMapFunction", "MapPlan", "Member", "Term", "build_plan"]


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


def _neuron_dims(first: bool, n_kept: int) -> tuple[int, ...]:
    """Dimensions of the kept neuron axes: ``(B, D, *kept)`` if ``first`` else ``(B, *kept, D)``."""
    return tuple(range(2, 2 + n_kept)) if first else tuple(range(1, 1 + n_kept))


def _features_last(t: Tensor, first: bool) -> Tensor:
    """A view ``(B, *kept, D)`` of an array in either form."""
    return t.movedim(1, -1) if first else t


def _reductions(plan: MapPlan, forms: Sequence[bool], xs: Sequence[Tensor]) -> dict[tuple[int, str], Tensor]:
    """Every member input, features last: ``"rows"`` ``(B, n, D)``, ``"cols"`` ``(B, m, D)``, ``"all"`` ``(B, D)``."""
    reduced: dict[tuple[int, str], Tensor] = {}
    for a, (first, x) in enumerate(zip(forms, xs)):
        n_kept = len(plan.kept_layers[a])
        dims = _neuron_dims(first, n_kept)
        if n_kept == 2:
            n, m = x.shape[dims[0]], x.shape[dims[1]]
            reduced[a, "rows"] = _features_last(x.sum(dim=dims[1]).mul_(1 / m), first)
            reduced[a, "cols"] = _features_last(x.sum(dim=dims[0]).mul_(1 / n), first)
            reduced[a, "all"] = reduced[a, "rows"].mean(dim=1)
        elif n_kept == 1:
            reduced[a, "self"] = _features_last(x, first)
            reduced[a, "all"] = x.mean(dim=dims[0])
        else:
            reduced[a, "all"] = x
    return reduced


def _cat(pieces: Sequence[Tensor]) -> Tensor:
    return torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]


def _outer_sum(rows: Tensor, cols: Tensor, first: bool) -> Tensor:
    """``out[b, i, j] = rows[b, i] + cols[b, j]``: ``(B, n, D), (B, m, D)`` -> ``(B, n, m, D)``, or
    ``(B, D, n, m)`` if ``first``.

    One broadcast add into the output. Features first, the small operands are transposed
    first, so that the kernel's inner loop runs over contiguous ``m`` (5x faster on CPU than
    reading them strided).
    """
    batch, n, d = rows.shape
    m = cols.shape[1]
    if first:
        out = rows.new_empty((batch, d, n, m))
        return torch.add(
            rows.transpose(1, 2).contiguous().unsqueeze(3), cols.transpose(1, 2).contiguous().unsqueeze(2), out=out
        )
    out = rows.new_empty((batch, n, m, d))
    return torch.add(rows.unsqueeze(2), cols.unsqueeze(1), out=out)


def _broadcast_add(rows: Tensor, glob: Tensor, first: bool) -> Tensor:
    """``out[b, i] = rows[b, i] + glob[b]``: ``(B, n, D), (B, D)`` -> ``(B, n, D)``, or ``(B, D, n)`` if ``first``."""
    if not first:
        return rows + glob.unsqueeze(1)
    out = rows.new_empty((rows.shape[0], rows.shape[2], rows.shape[1]))
    return torch.add(rows.transpose(1, 2), glob.unsqueeze(2), out=out)


def _rows(x: Tensor) -> Tensor:
    """``(..., K)`` -> ``(R, K)``, the entries as matrix rows."""
    return x.reshape(-1, x.shape[-1])


def _matmul_2d(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """``(..., K) @ (K, N) [+ bias]`` as one GEMM."""
    return gemm.matmul(_rows(x), w, bias=bias).view(*x.shape[:-1], w.shape[1])


def _pointwise_plus_outer_sum(x: Tensor, w: Tensor, rows: Tensor, cols: Tensor, first: bool) -> Tensor:
    """``x @ w`` per entry plus ``rows[b, i] + cols[b, j]``: the output of an array with two kept axes.

    ``x`` ``(B, n, m, K)`` (or features first ``(B, K, n, m)``), ``w`` ``(K, N)``, ``rows``
    ``(B, n, N)``, ``cols`` ``(B, m, N)`` -> ``(B, n, m, N)`` (or ``(B, N, n, m)``). Where
    oneDNN runs the product, it writes into fresh memory anyway: the broadcast terms are then
    added to it in place (one large allocation, not two); elsewhere the product accumulates
    into their outer sum.
    """
    if first:
        out = _outer_sum(rows, cols, first)
        batch = x.shape[0]
        gemm.shared_matmul_acc(out.view(batch, w.shape[1], -1), w.t(), x.reshape(batch, w.shape[0], -1))
        return out
    x_rows = _rows(x)  # once: a copy when x is not row-major (e.g. an incoming gradient)
    if gemm.matmul_uses_onednn(x_rows, w):
        out = gemm.matmul(x_rows, w).view(*x.shape[:-1], w.shape[1])
        return out.add_(rows.unsqueeze(2)).add_(cols.unsqueeze(1))
    out = _outer_sum(rows, cols, first)
    gemm.matmul_acc(out.view(-1, w.shape[1]), x_rows, w)
    return out


def _pointwise_weight_grad(x: Tensor, g: Tensor, first: bool) -> Tensor:
    """``sum over entries of x^T g``: ``(K, N)`` for ``x`` with ``K`` and ``g`` with ``N`` features."""
    if first:
        batch = x.shape[0]
        return gemm.batched_matmul_nt_sum(x.reshape(batch, x.shape[1], -1), g.reshape(batch, g.shape[1], -1))
    return gemm.matmul_tn(_rows(x), _rows(g))


def _split(plan: MapPlan, n_arrays: int, items: Sequence[Any]) -> tuple[Sequence[Any], ...]:
    """``items`` laid out as the function's tensors, ``(*xs, *term_weights, *pair_weights, *rest)``,
    split into those four groups (``rest``: the bias, or the saved term inputs)."""
    terms_start = n_arrays
    pairs_start = terms_start + len(plan.terms)
    rest_start = pairs_start + len(plan.pairs)
    return items[:terms_start], items[terms_start:pairs_start], items[pairs_start:rest_start], items[rest_start:]


class EquivariantMapFunction(torch.autograd.Function):
    """``apply(plan, forms, *xs, *term_weights, *pair_weights, bias) -> ys``.

    Each array comes in one of two memory forms, given per array by ``forms`` (``True``:
    features first): ``xs[a]: (B, *kept_axes, d_in[a])`` -> ``ys[a]: (B, *kept_axes, d_out[a])``,
    or ``(B, d_in[a], *kept_axes)`` -> ``(B, d_out[a], *kept_axes)`` (then ``xs[a]`` must be
    contiguous). Outputs keep their input's form, so a stack of layers never converts.
    ``term_weights[t]: plan.term_shape(term)``; ``pair_weights[p]: (d_in, d_out)`` of
    ``plan.pairs[p]``; ``bias: (sum(d_out),)``.
    """

    @staticmethod
    def forward(ctx: Any, plan: MapPlan, forms: tuple[bool, ...], *tensors: Tensor) -> tuple[Tensor, ...]:
        # Under autocast, compute in the autocast dtype throughout (in-place GEMMs need one dtype).
        tensors = gemm.in_autocast_dtype(*tensors)
        with torch.autocast(tensors[0].device.type, enabled=False):
            return EquivariantMapFunction._forward(ctx, plan, forms, tensors)

    @staticmethod
    def _forward(ctx: Any, plan: MapPlan, forms: tuple[bool, ...], tensors: Sequence[Tensor]) -> tuple[Tensor, ...]:
        xs, term_ws, pair_ws, (bias,) = _split(plan, len(forms), tensors)
        reduced = _reductions(plan, forms, xs)

        parts: list[list[Tensor]] = [[] for _ in xs]  # per output array: global, then per kept axis
        term_inputs = []
        for term, w in zip(plan.terms, term_ws):
            inp = _cat([reduced[m.array, m.reduce] for m in term.members])
            term_inputs.append(inp)
            out = _matmul_2d(inp, w, bias if term.name == "global" else None)
            for a, part in zip(term.outputs, out.split([plan.d_out[a] for a in term.outputs], dim=-1)):
                parts[a].append(part)

        pair_w = dict(zip(plan.pairs, pair_ws))
        ys = []
        for a, (kept, first, p) in enumerate(zip(plan.kept_layers, forms, parts)):
            glob = p[0]
            if not kept:
                ys.append(glob.clone())
            elif len(kept) == 1:
                ys.append(_broadcast_add(p[1], glob, first))
            else:
                # Terms arrive in neuron-layer order; the rows' layer is kept[0].
                by_layer = dict(zip(sorted(kept), p[1:]))
                rows, cols = by_layer[kept[0]], by_layer[kept[1]]
                ys.append(_pointwise_plus_outer_sum(xs[a], pair_w[a], rows + glob.unsqueeze(1), cols, first))

        ctx.plan, ctx.forms = plan, forms
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
        forms: tuple[bool, ...] = ctx.forms
        xs, term_ws, pair_ws, term_inputs = _split(plan, len(forms), saved)
        needs_x, needs_term_w, needs_pair_w, _ = _split(plan, len(forms), ctx.needs_input_grad[2:])  # skip plan, forms

        # Gradients of each output's broadcast terms (features last): sums over the broadcast axes.
        g_out: dict[tuple[int, str | int], Tensor] = {}
        for a, (kept, first, g) in enumerate(zip(plan.kept_layers, forms, grads)):
            dims = _neuron_dims(first, len(kept))
            if len(kept) == 2:
                g_out[a, kept[0]] = _features_last(g.sum(dim=dims[1]), first)  # rows' term, (B, n, D)
                g_out[a, kept[1]] = _features_last(g.sum(dim=dims[0]), first)  # cols' term, (B, m, D)
                g_out[a, "global"] = g_out[a, kept[0]].sum(dim=1)
            elif len(kept) == 1:
                g_out[a, kept[0]] = _features_last(g, first)
                g_out[a, "global"] = g.sum(dim=dims[0])
            else:
                g_out[a, "global"] = g

        g_red: dict[tuple[int, str], Tensor] = {}
        term_w_grads: list[Tensor | None] = []
        bias_grad = None
        for term, w, inp, need_w in zip(plan.terms, term_ws, term_inputs, needs_term_w):
            key = "global" if term.name == "global" else int(term.name.removeprefix("neuron"))
            g_term = _cat([g_out[a, key] for a in term.outputs])
            term_w_grads.append(gemm.matmul_tn(_rows(inp), _rows(g_term)) if need_w else None)
            if term.name == "global":
                bias_grad = g_term.sum(dim=0)
            if not any(needs_x[m.array] for m in term.members):
                continue  # e.g. a first layer's raw weights: no input-side product
            g_inp = _matmul_2d(g_term, w.t())
            widths = [plan.d_in[m.array] for m in term.members]
            for m, piece in zip(term.members, g_inp.split(widths, dim=-1)):
                key_m = (m.array, m.reduce)
                g_red[key_m] = g_red[key_m] + piece if key_m in g_red else piece

        pair_w = dict(zip(plan.pairs, pair_ws))
        x_grads: list[Tensor | None] = []
        for a, (kept, first, x) in enumerate(zip(plan.kept_layers, forms, xs)):
            dims = _neuron_dims(first, len(kept))
            if not needs_x[a]:
                x_grads.append(None)
            elif len(kept) == 2:
                n, m = x.shape[dims[0]], x.shape[dims[1]]
                rows = g_red[a, "rows"] / m + (g_red[a, "all"] / (n * m)).unsqueeze(1)
                x_grads.append(_pointwise_plus_outer_sum(grads[a], pair_w[a].t(), rows, g_red[a, "cols"] / n, first))
            elif len(kept) == 1:
                x_grads.append(_broadcast_add(g_red[a, "self"], g_red[a, "all"] / x.shape[dims[0]], first))
            else:
                x_grads.append(g_red[a, "all"].clone())

        pair_w_grads: list[Tensor | None] = []
        for a, need_w in zip(plan.pairs, needs_pair_w):
            pair_w_grads.append(_pointwise_weight_grad(xs[a], grads[a], forms[a]) if need_w else None)

        return (None, None, *x_grads, *term_w_grads, *pair_w_grads, bias_grad)
