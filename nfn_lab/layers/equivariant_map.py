"""The general permutation-equivariant linear map, with a fused forward and backward.

This module holds the math behind :class:`~nfn_lab.layers.NPLinear` and
:class:`~nfn_lab.layers.HNPLinear` (see :mod:`nfn_lab.layers.linear` for the derivation):
a :class:`MapPlan` lists, for one weight space and one set of permuted neuron layers,
every term of the map, and :func:`equivariant_map` evaluates it on folded arrays
``(B, *kept_axes, D)`` or, for arrays that arrive channels-first, on the same arrays
features first, ``(B, D, *kept_axes)`` (see :mod:`nfn_lab.layers.layout`).

Why a hand-written backward: the map is dominated by a few GEMMs plus broadcasts and
reductions over the large ``(B, n, m, D)`` arrays. Autograd would materialize every
broadcast and every mean's gradient separately; here each large array is allocated once
and read and written the minimum number of times (the pointwise GEMM and the summed
broadcast terms meet in one output, in both directions), and the GEMMs towards inputs
that need no gradient (raw weights) are skipped. The forward and the backward are the
custom operators ``nfn_lab::equivariant_map`` and ``nfn_lab::equivariant_map_backward``
(see :mod:`nfn_lab.layers.custom_ops`): ``torch.compile`` keeps them as opaque calls, as
what inductor generates from the traced passes runs slower than they do
(``benchmarks/bench_layers.py``, benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from nfn_lab.layers import gemm
from nfn_lab.layers.custom_ops import define, empty_grad, grads_or_none, without_autocast
from nfn_lab.layers.layout import ArrayLayout

__all__ = ["MapPlan", "Member", "Term", "build_plan", "equivariant_map"]

T = TypeVar("T")


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

    def to_key(self) -> str:
        """The plan as a string (JSON), how the custom operators take it; :meth:`from_key` inverts it.

        Computed once per layer, at construction: ``torch.compile`` reads it as a constant.
        """
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def from_key(key: str) -> MapPlan:
        """The plan that :meth:`to_key` wrote."""
        fields = json.loads(key)
        terms = tuple(
            Term(t["name"], tuple(Member(m["array"], m["reduce"]) for m in t["members"]), tuple(t["outputs"]))
            for t in fields["terms"]
        )
        return MapPlan(
            kept_layers=tuple(tuple(k) for k in fields["kept_layers"]),
            d_in=tuple(fields["d_in"]),
            d_out=tuple(fields["d_out"]),
            terms=terms,
            pairs=tuple(fields["pairs"]),
        )


def build_plan(
    layouts: Sequence[ArrayLayout], permuted: Collection[int], in_channels: int, out_channels: int
) -> MapPlan:
    """The terms of the most general equivariant linear map (one per orbit family)."""
    kept_layers = tuple(a.kept_layers for a in layouts)
    all_arrays = tuple(range(len(layouts)))
    terms = [Term("global", tuple(Member(a, "all") for a in all_arrays), all_arrays)]
    for layer in sorted(permuted):
        members, outputs = [], []
        for a, kept in enumerate(kept_layers):
            if layer in kept:
                outputs.append(a)
                reduce = "self" if len(kept) == 1 else ("rows" if kept[0] == layer else "cols")
                members.append(Member(a, reduce))
        terms.append(Term(f"neuron{layer}", tuple(members), tuple(outputs)))
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
            reduced[a, "self"] = _input_view(x, first)
            reduced[a, "all"] = x.mean(dim=dims[0])
        else:
            reduced[a, "all"] = _input_view(x, first)
    return reduced


def _cat(pieces: Sequence[Tensor]) -> Tensor:
    return torch.cat(list(pieces), dim=-1) if len(pieces) > 1 else pieces[0]


def _outer_sum(rows: Tensor, cols: Tensor, first: bool) -> Tensor:
    """``out[b, i, j] = rows[b, i] + cols[b, j]``: ``(B, n, D), (B, m, D)`` -> ``(B, n, m, D)``, or
    ``(B, D, n, m)`` if ``first``.

    One broadcast add into the output. Features first, the small operands are transposed
    first, so that the kernel's inner loop runs over contiguous ``m`` (several times faster on
    the CPU than reading them strided).
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
    ``(B, n, N)``, ``cols`` ``(B, m, N)`` -> ``(B, n, m, N)`` (or ``(B, N, n, m)``), with one
    large allocation (see :func:`~nfn_lab.layers.gemm.matmul_plus`).
    """
    if first:
        out = _outer_sum(rows, cols, first)
        batch = x.shape[0]
        gemm.shared_matmul_acc(out.view(batch, w.shape[1], -1), w.t(), x.reshape(batch, w.shape[0], -1))
        return out
    shape = (*x.shape[:-1], w.shape[1])

    def add_terms(out: Tensor | None) -> Tensor:
        if out is None:
            return _outer_sum(rows, cols, first).view(-1, w.shape[1])
        out.view(shape).add_(rows.unsqueeze(2)).add_(cols.unsqueeze(1))
        return out

    # _rows once: a copy when x is not row-major (e.g. an incoming gradient)
    return gemm.matmul_plus(_rows(x), w, add_terms).view(shape)


def _pointwise_weight_grad(x: Tensor, g: Tensor, first: bool) -> Tensor:
    """``sum over entries of x^T g``: ``(K, N)`` for ``x`` with ``K`` and ``g`` with ``N`` features."""
    if first:
        batch = x.shape[0]
        return gemm.batched_matmul_nt_sum(x.reshape(batch, x.shape[1], -1), g.reshape(batch, g.shape[1], -1))
    return gemm.matmul_tn(_rows(x), _rows(g))


def _split(plan: MapPlan, n_arrays: int, items: Sequence[T]) -> tuple[Sequence[T], ...]:
    """``items`` laid out as the operator's tensors, ``(*xs, *term_weights, *pair_weights, *rest)``,
    split into those four groups (``rest``: the bias, or the saved term inputs)."""
    terms_start = n_arrays
    pairs_start = terms_start + len(plan.terms)
    rest_start = pairs_start + len(plan.pairs)
    return items[:terms_start], items[terms_start:pairs_start], items[pairs_start:rest_start], items[rest_start:]


def _is_input_view(plan: MapPlan, term: Term) -> bool:
    """Whether the term's input is a view of an input array (one member taken as is), which the
    operator cannot return: the backward takes the view again (:func:`_input_view`)."""
    (member, *others) = term.members
    return not others and (member.reduce == "self" or not plan.kept_layers[member.array])


def _input_view(x: Tensor, first: bool) -> Tensor:
    """An array taken as is as a term's input, features last: ``(B, n, D)`` or ``(B, D)``."""
    return _features_last(x, first) if x.dim() == 3 else x


def equivariant_map(plan_key: str, forms: Sequence[bool], tensors: Sequence[Tensor]) -> list[Tensor]:
    """The map's outputs ``ys`` from ``tensors = (*xs, *term_weights, *pair_weights, bias)``, for the
    plan ``plan_key`` (:meth:`MapPlan.to_key`).

    Each array comes in one of two memory forms, given per array by ``forms`` (``True``:
    features first): ``xs[a]: (B, *kept_axes, d_in[a])`` -> ``ys[a]: (B, *kept_axes, d_out[a])``,
    or ``(B, d_in[a], *kept_axes)`` -> ``(B, d_out[a], *kept_axes)`` (then ``xs[a]`` must be
    contiguous). Outputs keep their input's form, so a stack of layers never converts.
    ``term_weights[t]: plan.term_shape(term)``; ``pair_weights[p]: (d_in, d_out)`` of
    ``plan.pairs[p]``; ``bias: (sum(d_out),)``. Under autocast it computes in the autocast dtype.
    """
    outs = _equivariant_map(plan_key, list(forms), list(gemm.in_autocast_dtype(*tensors)))
    return outs[: len(forms)]


@define("equivariant_map")
@without_autocast
def _equivariant_map(plan_key: str, forms: list[bool], tensors: list[Tensor]) -> list[Tensor]:
    """``[*ys, *term_inputs]``: the outputs, then each term's input for the backward (empty where
    it is a view of an input, see :func:`_is_input_view`)."""
    plan = MapPlan.from_key(plan_key)
    xs, term_ws, pair_ws, (bias,) = _split(plan, len(forms), tensors)
    reduced = _reductions(plan, forms, xs)

    parts: list[list[Tensor]] = [[] for _ in xs]  # per output array: global, then per kept axis
    term_inputs = []
    for term, w in zip(plan.terms, term_ws):
        inp = _cat([reduced[m.array, m.reduce] for m in term.members])
        if _is_input_view(plan, term):
            term_inputs.append(inp.new_empty(0))
        else:
            inp = inp.contiguous()  # (one reduction features first: a copy that the GEMM's rows needed anyway)
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
    return ys + term_inputs


@_equivariant_map.register_fake
def _(plan_key: str, forms: list[bool], tensors: list[Tensor]) -> list[Tensor]:
    plan = MapPlan.from_key(plan_key)
    xs = tensors[: len(forms)]
    ys = []
    for x, first, d_out in zip(xs, forms, plan.d_out):
        out_shape = list(x.shape)
        out_shape[1 if first else -1] = d_out
        ys.append(x.new_empty(out_shape))
    term_inputs = []
    for term, width in zip(plan.terms, (plan.term_shape(t)[0] for t in plan.terms)):
        m = term.members[0]
        x, first = xs[m.array], forms[m.array]
        dims = _neuron_dims(first, len(plan.kept_layers[m.array]))
        lead = () if m.reduce == "all" else (x.shape[dims[1 if m.reduce == "cols" else 0]],)
        shape = (0,) if _is_input_view(plan, term) else (x.shape[0], *lead, width)
        term_inputs.append(x.new_empty(shape))
    return ys + term_inputs


def _setup_context(ctx: Any, inputs: tuple[str, list[bool], list[Tensor]], output: list[Tensor]) -> None:
    plan_key, forms, tensors = inputs
    ctx.plan_key, ctx.forms = plan_key, forms
    ctx.save_for_backward(*tensors[:-1], *output[len(forms) :])  # all but the bias, and the term inputs


def _backward(ctx: Any, grads: list[Tensor]) -> tuple[None, None, list[Tensor | None]]:
    saved = list(ctx.saved_tensors)
    needs = ctx.needs_input_grad[2]
    ys_grads = [g.to(saved[0].dtype) for g in grads[: len(ctx.forms)]]  # autograd casts the results back per input
    return None, None, grads_or_none(_equivariant_map_backward(ctx.plan_key, ctx.forms, ys_grads, saved, needs), needs)


@define("equivariant_map_backward")
@without_autocast
def _equivariant_map_backward(
    plan_key: str, forms: list[bool], grads: list[Tensor], saved: list[Tensor], needs: list[bool]
) -> list[Tensor]:
    """Gradients for ``(*xs, *term_weights, *pair_weights, bias)`` from the outputs' gradients and
    ``saved = (*xs, *term_weights, *pair_weights, *term_inputs)``; empty where ``needs`` is False."""
    plan = MapPlan.from_key(plan_key)
    xs, term_ws, pair_ws, term_inputs = _split(plan, len(forms), saved)
    needs_x, needs_term_w, needs_pair_w, (needs_bias,) = _split(plan, len(forms), needs)

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
    term_w_grads: list[Tensor] = []
    bias_grad = empty_grad(grads[0])
    for term, w, inp, need_w in zip(plan.terms, term_ws, term_inputs, needs_term_w):
        key = "global" if term.name == "global" else int(term.name.removeprefix("neuron"))
        g_term = _cat([g_out[a, key] for a in term.outputs])
        if need_w:
            if _is_input_view(plan, term):
                inp = _input_view(xs[term.members[0].array], forms[term.members[0].array])
            term_w_grads.append(gemm.matmul_tn(_rows(inp), _rows(g_term)))
        else:
            term_w_grads.append(empty_grad(grads[0]))
        if term.name == "global" and needs_bias:
            bias_grad = g_term.sum(dim=0)
        if not any(needs_x[m.array] for m in term.members):
            continue  # e.g. a first layer's raw weights: no input-side product
        g_inp = _matmul_2d(g_term, w.t())
        widths = [plan.d_in[m.array] for m in term.members]
        for member, piece in zip(term.members, g_inp.split(widths, dim=-1)):
            key_m = (member.array, member.reduce)
            g_red[key_m] = g_red[key_m] + piece if key_m in g_red else piece

    pair_w = dict(zip(plan.pairs, pair_ws))
    x_grads: list[Tensor] = []
    for a, (kept, first, x) in enumerate(zip(plan.kept_layers, forms, xs)):
        dims = _neuron_dims(first, len(kept))
        if not needs_x[a]:
            x_grads.append(empty_grad(grads[0]))
        elif len(kept) == 2:
            n, m = x.shape[dims[0]], x.shape[dims[1]]
            rows = g_red[a, "rows"] / m + (g_red[a, "all"] / (n * m)).unsqueeze(1)
            x_grads.append(_pointwise_plus_outer_sum(grads[a], pair_w[a].t(), rows, g_red[a, "cols"] / n, first))
        elif len(kept) == 1:
            x_grads.append(_broadcast_add(g_red[a, "self"], g_red[a, "all"] / x.shape[dims[0]], first))
        else:
            x_grads.append(g_red[a, "all"].clone())

    pair_w_grads = [
        _pointwise_weight_grad(xs[a], grads[a], forms[a]) if need_w else empty_grad(grads[0])
        for a, need_w in zip(plan.pairs, needs_pair_w)
    ]
    return [*x_grads, *term_w_grads, *pair_w_grads, bias_grad]


@_equivariant_map_backward.register_fake
def _(plan_key: str, forms: list[bool], grads: list[Tensor], saved: list[Tensor], needs: list[bool]) -> list[Tensor]:
    plan = MapPlan.from_key(plan_key)
    xs, term_ws, pair_ws, _ = _split(plan, len(forms), saved)
    bias_shape = (sum(plan.d_out),)
    likes = [*(t.shape for t in (*xs, *term_ws, *pair_ws)), bias_shape]
    return [grads[0].new_empty(shape) if need else empty_grad(grads[0]) for shape, need in zip(likes, needs)]


_equivariant_map.register_autograd(_backward, setup_context=_setup_context)
