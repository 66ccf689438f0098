"""NF-attention's tokens: gathering them from the arrays and putting the attention outputs back.

Neuron layer ``l``'s tokens (see :mod:`nfn_lab.layers.attention`) are the columns of ``W(l)``,
the bias ``b(l)`` and the rows of ``W(l+1)``, each a vector over neuron layer ``l`` with
``ch`` channels per head. Every weight gives tokens to two neuron layers (its rows to one,
its columns to the other). Layers with the same token count ``T`` and width ``n`` form a
:class:`TokenGroup` and attend in one call, on arrays ``(B, H * G, T, ch * n)``.

Two custom operators (see :mod:`nfn_lab.layers.custom_ops`) move the data, each in one pass
over every array:

- :func:`gather_tokens`: per-array projections ``(B, 3, H, ch, *neurons)`` -> each group's
  queries, keys and values, one buffer each. Its backward writes each array's gradient
  once, adding the second neuron layer's contribution in place, where autograd through
  ``cat`` and ``unbind`` would allocate a gradient per use, sum them and stack queries, keys
  and values again.
- :func:`scatter_tokens`: each group's attention output -> per-array outputs ``(B, H, ch,
  *neurons)`` (contiguous), a weight's two contributions summed in the same pass, plus an
  optional per-sample shift (NF-attention's diagonal term) in place; its backward copies
  each array's gradient into its groups' buffers.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nfn_lab.layers.custom_ops import define, grads_or_none

__all__ = ["TokenGroup", "TokenPart", "gather_tokens", "neuron_sizes", "scatter_tokens", "token_groups"]


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
    sizes = neuron_sizes(shapes)
    grouped: dict[tuple[int, int], list[tuple[TokenPart, ...]]] = {}
    for layer in range(num_layers + 1):
        kinds = [("cols", layer - 1), ("bias", num_layers + layer - 1)] if layer > 0 else []
        kinds += [("rows", layer)] if layer < num_layers else []
        parts, offset = [], 0
        for kind, a in kinds:
            count = {"cols": shapes[a][-1], "rows": shapes[a][0], "bias": 1}[kind]
            parts.append(TokenPart(kind, a, offset, count))
            offset += count
        grouped.setdefault((offset, sizes[layer]), []).append(tuple(parts))
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


def neuron_sizes(shapes: Sequence[Sequence[int]]) -> list[int]:
    """``n(0), ..., n(L)`` from the arrays' neuron shapes (weights ``(n(i+1), n(i))``, then biases)."""
    num_layers = len(shapes) // 2
    return [shapes[0][1], *(s[0] for s in shapes[num_layers:])]


def _shapes(sizes: Sequence[int]) -> list[tuple[int, ...]]:
    """Inverse of :func:`neuron_sizes`: the arrays' neuron shapes."""
    weights = [(n, m) for m, n in itertools.pairwise(sizes)]
    return weights + [(n,) for n in sizes[1:]]


def gather_tokens(heads: int, qkv: Sequence[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Each group's queries, keys and values ``(B, H * G, T, ch * n)`` from the arrays' projections,
    in the order of :func:`token_groups`.

    ``qkv[a]``: ``(B, 3C, *neurons)`` with channels ordered ``(3, H, ch)``, contiguous.
    """
    outs = _gather_tokens(heads, list(qkv))
    return [(outs[i], outs[i + 1], outs[i + 2]) for i in range(0, len(outs), 3)]


@define("gather_tokens")
def _gather_tokens(heads: int, qkv: list[Tensor]) -> list[Tensor]:
    """Queries, keys and values of each group, one buffer each: ``[q_0, k_0, v_0, q_1, ...]``."""
    groups = token_groups([y.shape[2:] for y in qkv])
    arrays = _stacked_arrays(qkv, heads)
    batch, _, head_channels = arrays[0].shape[1:4]
    outs = []
    for g in groups:
        for s in range(3):  # queries, keys, values
            buffer = qkv[0].new_empty(batch, heads, len(g.layers), g.num_tokens, head_channels, g.size)
            for part, slot in _slots(g, buffer):
                slot.copy_(_token_view(part.kind, arrays[part.array][s]))
            outs.append(_attention_view(buffer))
    return outs


@_gather_tokens.register_fake
def _(heads: int, qkv: list[Tensor]) -> list[Tensor]:
    batch, head_channels = qkv[0].shape[0], qkv[0].shape[1] // (3 * heads)
    groups = token_groups([y.shape[2:] for y in qkv])
    shapes = [(batch, heads * len(g.layers), g.num_tokens, head_channels * g.size) for g in groups]
    return [qkv[0].new_empty(shape) for shape in shapes for _ in range(3)]


@define("gather_tokens_backward")
def _gather_tokens_backward(heads: int, sizes: list[int], grads: list[Tensor]) -> list[Tensor]:
    """Each array's gradient ``(B, 3C, *neurons)``, written once: the second neuron layer's
    contribution is added in place."""
    shapes = _shapes(sizes)
    groups = token_groups(shapes)
    batch, head_channels = grads[0].shape[0], grads[0].shape[-1] // groups[0].size
    out = [grads[0].new_empty(batch, 3 * heads * head_channels, *shape) for shape in shapes]
    arrays = _stacked_arrays(out, heads)
    written: set[tuple[int, int]] = set()
    for i, g in enumerate(groups):
        for s in range(3):  # queries, keys, values
            for part, slot in _slots(g, _group_view(g, grads[3 * i + s], heads)):
                _put(_token_view(part.kind, arrays[part.array][s]), slot, (part.array, s) not in written)
                written.add((part.array, s))
    return out


@_gather_tokens_backward.register_fake
def _(heads: int, sizes: list[int], grads: list[Tensor]) -> list[Tensor]:
    shapes = _shapes(sizes)
    batch, head_channels = grads[0].shape[0], grads[0].shape[-1] // token_groups(shapes)[0].size
    return [grads[0].new_empty(batch, 3 * heads * head_channels, *shape) for shape in shapes]


def _gather_setup_context(ctx: Any, inputs: tuple[int, list[Tensor]], output: list[Tensor]) -> None:
    heads, qkv = inputs
    ctx.heads, ctx.sizes = heads, neuron_sizes([y.shape[2:] for y in qkv])


def _gather_backward(ctx: Any, grads: list[Tensor]) -> tuple[None, list[Tensor | None]]:
    needs = ctx.needs_input_grad[1]
    return None, grads_or_none(_gather_tokens_backward(ctx.heads, ctx.sizes, list(grads)), needs)


_gather_tokens.register_autograd(_gather_backward, setup_context=_gather_setup_context)


def scatter_tokens(
    heads: int,
    shapes: Sequence[Sequence[int]],
    outs: Sequence[Tensor],
    shifts: Sequence[Tensor | None] | None = None,
) -> list[Tensor]:
    """Per-array outputs ``(B, H, ch, *shapes[a])`` (contiguous) from each group's attention output
    ``(B, H * G, T, ch * n)``, groups in the order of :func:`token_groups`; a weight's row and
    column contributions are summed.

    ``shapes``: the arrays' neuron shapes, as for :func:`token_groups`. ``shifts[a]``, ``(B, C)``
    or None, is added to array ``a``'s output, broadcast over its neurons (in the same pass,
    where a separate add would write a second array).
    """
    shifts = [None] * len(shapes) if shifts is None else shifts
    shifted = [a for a, t in enumerate(shifts) if t is not None]
    return _scatter_tokens(heads, neuron_sizes(shapes), shifted, list(outs), [shifts[a] for a in shifted])


def _array_shapes(heads: int, sizes: Sequence[int], outs: Sequence[Tensor]) -> list[tuple[int, ...]]:
    """The output arrays' shapes ``(B, H, ch, *neurons)``."""
    shapes = _shapes(sizes)
    head_channels = outs[0].shape[-1] // token_groups(shapes)[0].size
    return [(outs[0].shape[0], heads, head_channels, *s) for s in shapes]


@define("scatter_tokens")
def _scatter_tokens(
    heads: int, sizes: list[int], shifted: list[int], outs: list[Tensor], shifts: list[Tensor]
) -> list[Tensor]:
    """Each array's output; ``shifts[i]`` ``(B, C)`` is added to array ``shifted[i]``."""
    groups = token_groups(_shapes(sizes))
    by_array = dict(zip(shifted, shifts))
    shapes = _array_shapes(heads, sizes, outs)
    results = []
    for a, (shape, views) in enumerate(zip(shapes, _array_parts(groups, heads, outs, len(shapes)))):
        y = outs[0].new_empty(shape)
        if len(views) == 2:  # a weight: its rows' and its columns' outputs
            torch.add(*views, out=y)
        else:
            y.copy_(views[0])
        if a in by_array:
            y.add_(_broadcast_view(by_array[a], shape))
        results.append(y)
    return results


@_scatter_tokens.register_fake
def _(heads: int, sizes: list[int], shifted: list[int], outs: list[Tensor], shifts: list[Tensor]) -> list[Tensor]:
    return [outs[0].new_empty(shape) for shape in _array_shapes(heads, sizes, outs)]


@define("scatter_tokens_backward")
def _scatter_tokens_backward(heads: int, sizes: list[int], shifted: list[int], grads: list[Tensor]) -> list[Tensor]:
    """``[*group_grads, *shift_grads]``: each group's gradient ``(B, H * G, T, ch * n)``, then each
    shift's ``(B, C)``."""
    groups = token_groups(_shapes(sizes))
    out = []
    for g in groups:
        buffer = grads[0].new_empty(*grads[0].shape[:2], len(g.layers), g.num_tokens, grads[0].shape[2], g.size)
        for part, slot in _slots(g, buffer):
            slot.copy_(_token_view(part.kind, grads[part.array]))
        out.append(_attention_view(buffer))
    return out + [grads[a].sum(dim=tuple(range(3, grads[a].dim()))).flatten(1) for a in shifted]


@_scatter_tokens_backward.register_fake
def _(heads: int, sizes: list[int], shifted: list[int], grads: list[Tensor]) -> list[Tensor]:
    batch, head_channels = grads[0].shape[0], grads[0].shape[2]
    groups = token_groups(_shapes(sizes))
    group_shapes = [(batch, heads * len(g.layers), g.num_tokens, head_channels * g.size) for g in groups]
    return [grads[0].new_empty(s) for s in group_shapes] + [
        grads[0].new_empty(batch, heads * head_channels) for _ in shifted
    ]


def _scatter_setup_context(
    ctx: Any, inputs: tuple[int, list[int], list[int], list[Tensor], list[Tensor]], output: list[Tensor]
) -> None:
    ctx.heads, ctx.sizes, ctx.shifted = inputs[:3]


def _scatter_backward(
    ctx: Any, grads: list[Tensor]
) -> tuple[None, None, None, list[Tensor | None], list[Tensor | None]]:
    needs_outs, needs_shifts = ctx.needs_input_grad[3:]
    result = _scatter_tokens_backward(ctx.heads, ctx.sizes, ctx.shifted, list(grads))
    n = len(needs_outs)
    return None, None, None, grads_or_none(result[:n], needs_outs), grads_or_none(result[n:], needs_shifts)


_scatter_tokens.register_autograd(_scatter_backward, setup_context=_scatter_setup_context)


def _broadcast_view(shift: Tensor, shape: Sequence[int]) -> Tensor:
    """A per-sample shift ``(B, C)`` as ``(B, H, ch, 1, ...)``, broadcastable to ``shape`` ``(B, H, ch, *neurons)``."""
    return shift.view(*shape[:3], *[1] * (len(shape) - 3))
