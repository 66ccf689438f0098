"""NF-attention's tokens: gathering them from the arrays and putting the attention outputs back.

Neuron layer ``l``'s tokens (see :mod:`nfn_lab.layers.attention`) are the columns of ``W(l)``,
the bias ``b(l)`` and the rows of ``W(l+1)``, each a vector over neuron layer ``l`` with
``ch`` channels per head. Every weight gives tokens to two neuron layers (its rows to one,
its columns to the other). Layers with the same token count ``T`` and width ``n`` form a
:class:`TokenGroup` and attend in one call, on arrays ``(B, H * G, T, ch * n)``.

Two autograd functions move the data, each in one pass over every array:

- :func:`gather_tokens`: per-array projections ``(B, 3, H, ch, *neurons)`` -> each group's
  queries, keys and values, one buffer per group. Its backward writes each array's gradient
  once, adding the second neuron layer's contribution in place, where autograd through
  ``cat`` and ``unbind`` would allocate a gradient per use, sum them and stack queries, keys
  and values again.
- :func:`scatter_tokens`: each group's attention output -> per-array outputs ``(B, H, ch,
  *neurons)`` (contiguous), a weight's two contributions summed in the same pass, plus an
  optional per-sample shift (NF-attention's diagonal term) in place; its backward copies
  each array's gradient into its groups' buffers.

Under ``torch.compile`` both are written as ``cat`` and ``add`` instead, which inductor fuses
with the ops around them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["TokenGroup", "TokenPart", "gather_tokens", "scatter_tokens", "token_groups"]


@dataclass(frozen=True)
class TokenPart:
    """One array's tokens for one neuron layer: ``kind`` ``"cols"``, ``"rows"`` or ``"bias"``,
    ``array`` index, and the tokens' place ``[offset, offset + count)`` in the layer's sequence."""

    kind: str
    array: int
    offset: int
    count: int


@dataclass(frozen=True)
class TokenGroup:
    """Neuron layers with ``num_tokens`` tokens of width ``size`` (``n(l)``), attending in one call.

    ``layers[j]`` lists the parts of the group's ``j``-th neuron layer.
    """

    num_tokens: int
    size: int
    layers: tuple[tuple[TokenPart, ...], ...]


def token_groups(shapes: Sequence[Sequence[int]]) -> tuple[TokenGroup, ...]:
    """The groups of a weight space from its arrays' neuron shapes (weights ``(n, m)``, then biases ``(n,)``)."""
    return _token_groups(tuple(tuple(s) for s in shapes))


@functools.lru_cache(maxsize=64)
def _token_groups(shapes: tuple[tuple[int, ...], ...]) -> tuple[TokenGroup, ...]:
    """:func:`token_groups`, computed once per weight space (NF-attention asks on every forward)."""
    num_layers = len(shapes) // 2
    sizes = [shapes[0][1], *(s[0] for s in shapes[num_layers:])]  # n(0), ..., n(L)
    grouped: dict[tuple[int, int], list[tuple[TokenPart, ...]]] = {}
    for l in range(num_layers + 1):
        kinds = [("cols", l - 1), ("bias", num_layers + l - 1)] if l > 0 else []
        kinds += [("rows", l)] if l < num_layers else []
        parts, offset = [], 0
        for kind, a in kinds:
            count = {"cols": shapes[a][-1], "rows": shapes[a][0], "bias": 1}[kind]
            parts.append(TokenPart(kind, a, offset, count))
            offset += count
        grouped.setdefault((offset, sizes[l]), []).append(tuple(parts))
    return tuple(TokenGroup(t, n, tuple(layers)) for (t, n), layers in grouped.items())


def _token_view(kind: str, x: Tensor) -> Tensor:
    """An array ``(..., ch, *neurons)`` seen as its tokens ``(..., T_part, ch, n)`` (a view).

    The columns of a weight ``(..., ch, n, m)`` are ``m`` tokens over ``n``, its rows ``n``
    tokens over ``m``; a bias ``(..., ch, n)`` is one token.
    """
    if kind == "cols":
        return x.movedim(-1, -3)
    if kind == "rows":
        return x.transpose(-2, -3)
    return x.unsqueeze(-3)


def _array_view(kind: str, tokens: Tensor) -> Tensor:
    """Inverse of :func:`_token_view`: tokens ``(..., T_part, ch, n)`` in their array's shape (a view)."""
    if kind == "cols":
        return tokens.movedim(-3, -1)
    if kind == "rows":
        return tokens.transpose(-2, -3)
    return tokens.squeeze(-3)


def _slots(group: TokenGroup, buffer: Tensor) -> list[tuple[TokenPart, Tensor]]:
    """Each part of ``group`` with its slice ``(..., count, ch, n)`` of ``buffer`` ``(..., G, T, ch, n)``."""
    return [
        (part, buffer.select(-4, j).narrow(-3, part.offset, part.count))
        for j, parts in enumerate(group.layers)
        for part in parts
    ]


def _put(dst: Tensor, src: Tensor, first: bool) -> None:
    """``dst = src`` on the first write, ``dst += src`` after."""
    if first:
        dst.copy_(src)
    else:
        dst.add_(src)


def _group_view(group: TokenGroup, x: Tensor, heads: int) -> Tensor:
    """A group's attention array ``(..., B, H * G, T, ch * n)`` as ``(..., B, H, G, T, ch, n)``."""
    lead = x.shape[:-3]
    return x.reshape(*lead, heads, len(group.layers), group.num_tokens, -1, group.size)


def _attention_view(buffer: Tensor) -> Tensor:
    """Inverse of :func:`_group_view` (a view of a contiguous buffer)."""
    *lead, heads, g, t, ch, n = buffer.shape
    return buffer.reshape(*lead, heads * g, t, ch * n)


def _stacked_arrays(qkv: Sequence[Tensor], heads: int) -> list[Tensor]:
    """Projections ``(B, 3C, *neurons)`` as ``(3, B, H, ch, *neurons)`` views: queries, keys and
    values in front, so that one copy moves all three."""
    batch, head_channels = qkv[0].shape[0], qkv[0].shape[1] // (3 * heads)
    return [y.view(batch, 3, heads, head_channels, *y.shape[2:]).transpose(0, 1) for y in qkv]


def _array_parts(
    groups: Sequence[TokenGroup], heads: int, outs: Sequence[Tensor], num_arrays: int
) -> list[list[Tensor]]:
    """Each array's contributions from the groups' outputs, in the array's shape ``(B, H, ch, *neurons)`` (views)."""
    parts: list[list[Tensor]] = [[] for _ in range(num_arrays)]
    for g, o in zip(groups, outs):
        for part, slot in _slots(g, _group_view(g, o, heads)):
            parts[part.array].append(_array_view(part.kind, slot))
    return parts


class _GatherTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, groups: tuple[TokenGroup, ...], heads: int, *qkv: Tensor) -> tuple[Tensor, ...]:
        arrays = _stacked_arrays(qkv, heads)
        batch, _, head_channels = arrays[0].shape[1:4]
        outs: list[Tensor] = []
        for g in groups:
            buffer = qkv[0].new_empty(3, batch, heads, len(g.layers), g.num_tokens, head_channels, g.size)
            for part, slot in _slots(g, buffer):
                slot.copy_(_token_view(part.kind, arrays[part.array]))
            outs += _attention_view(buffer).unbind(0)
        ctx.groups, ctx.heads, ctx.shapes = groups, heads, [y.shape for y in qkv]
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        out = [grads[0].new_empty(shape) for shape in ctx.shapes]
        arrays = _stacked_arrays(out, ctx.heads)
        written: set[tuple[int, int]] = set()
        for i, g in enumerate(ctx.groups):
            for s in range(3):  # queries, keys, values
                for part, slot in _slots(g, _group_view(g, grads[3 * i + s], ctx.heads)):
                    _put(_token_view(part.kind, arrays[part.array][s]), slot, (part.array, s) not in written)
                    written.add((part.array, s))
        return (None, None, *out)


class _ScatterTokens(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        groups: tuple[TokenGroup, ...],
        heads: int,
        shapes: tuple[tuple[int, ...], ...],
        shifted: tuple[int, ...],
        *tensors: Tensor,
    ) -> tuple[Tensor, ...]:
        outs, shifts = tensors[: len(groups)], dict(zip(shifted, tensors[len(groups) :]))
        results = []
        for a, (shape, views) in enumerate(zip(shapes, _array_parts(groups, heads, outs, len(shapes)))):
            y = outs[0].new_empty(shape)
            if len(views) == 2:  # a weight: its rows' and its columns' outputs
                torch.add(*views, out=y)
            else:
                y.copy_(views[0])
            if a in shifts:
                y.add_(_broadcast_view(shifts[a], shape))
            results.append(y)
        ctx.groups, ctx.heads, ctx.shifted = groups, heads, shifted
        ctx.group_shapes = [o.shape for o in outs]
        ctx.shift_shapes = [t.shape for t in tensors[len(groups) :]]
        return tuple(results)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        out = []
        for g, shape in zip(ctx.groups, ctx.group_shapes):
            buffer = _group_view(g, grads[0].new_empty(shape), ctx.heads)
            for part, slot in _slots(g, buffer):
                slot.copy_(_token_view(part.kind, grads[part.array]))
            out.append(_attention_view(buffer))
        shift_grads = [
            grads[a].sum(dim=tuple(range(3, grads[a].dim()))).view(shape)
            for a, shape in zip(ctx.shifted, ctx.shift_shapes)
        ]
        return (None, None, None, None, *out, *shift_grads)


def _broadcast_view(shift: Tensor, shape: Sequence[int]) -> Tensor:
    """A per-sample shift ``(B, C)`` as ``(B, H, ch, 1, ...)``, broadcastable to ``shape`` ``(B, H, ch, *neurons)``."""
    return shift.view(*shape[:3], *[1] * (len(shape) - 3))


# Under torch.compile the same data movement is written with cat and add: the hand-written
# functions above, traced or left out of the graph, ran compiled NF-attention up to 13 % slower.


def gather_tokens(groups: tuple[TokenGroup, ...], heads: int, qkv: Sequence[Tensor]) -> list[tuple[Tensor, ...]]:
    """Each group's queries, keys and values ``(B, H * G, T, ch * n)`` from the arrays' projections.

    ``qkv[a]``: ``(B, 3C, *neurons)`` with channels ordered ``(3, H, ch)``, contiguous.
    """
    if torch.compiler.is_compiling():
        arrays = _stacked_arrays(qkv, heads)
        outs = []
        for g in groups:
            for s in range(3):  # queries, keys, values: one cat each fuses better than one for all three
                parts = [_token_view(p.kind, arrays[p.array][s]) for layer in g.layers for p in layer]
                outs.append(_attention_view(torch.cat(parts, dim=-3).unflatten(2, (len(g.layers), g.num_tokens))))
    else:
        outs = _GatherTokens.apply(groups, heads, *qkv)
    return [tuple(outs[3 * i : 3 * i + 3]) for i in range(len(groups))]


def scatter_tokens(
    groups: tuple[TokenGroup, ...],
    heads: int,
    shapes: Sequence[Sequence[int]],
    outs: Sequence[Tensor],
    shifts: Sequence[Tensor | None] | None = None,
) -> tuple[Tensor, ...]:
    """Per-array outputs ``(B, H, ch, *shapes[a])`` from each group's attention output
    ``(B, H * G, T, ch * n)``; a weight's row and column contributions are summed.

    ``shapes``: the arrays' neuron shapes, as for :func:`token_groups`. ``shifts[a]``, ``(B, C)``
    or None, is added to array ``a``'s output, broadcast over its neurons (in the same pass,
    where a separate add would write a second array).
    """
    head_channels = outs[0].shape[-1] // groups[0].size
    array_shapes = tuple((outs[0].shape[0], heads, head_channels, *s) for s in shapes)
    shifts = [None] * len(shapes) if shifts is None else shifts
    if torch.compiler.is_compiling():
        parts = _array_parts(groups, heads, outs, len(shapes))
        return tuple(
            sum(views[1:] + ([] if t is None else [_broadcast_view(t, shape)]), views[0])
            for views, t, shape in zip(parts, shifts, array_shapes)
        )
    shifted = tuple(a for a, t in enumerate(shifts) if t is not None)
    tensors = [*outs, *(shifts[a] for a in shifted)]
    return _ScatterTokens.apply(groups, heads, array_shapes, shifted, *tensors)
