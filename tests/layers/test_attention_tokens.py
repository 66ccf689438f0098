"""NF-attention's token gather and scatter: the groups, the round trip, and both backward passes."""

from __future__ import annotations

import itertools

import pytest
import torch

from nfn_lab.layers.attention_tokens import TokenGroup, TokenPart, gather_tokens, scatter_tokens, token_groups

HEADS, HEAD_CHANNELS, BATCH = 2, 3, 2


def _mlp_shapes(sizes: list[int]) -> list[tuple[int, ...]]:
    """Neuron shapes of an MLP's arrays: weights ``(n(i+1), n(i))``, then biases ``(n(i+1),)``."""
    weights = [(n, m) for m, n in itertools.pairwise(sizes)]
    return weights + [(n,) for n in sizes[1:]]


def _projections(shapes, dtype=torch.float64, requires_grad=False):
    """Random ``(B, 3C, *neurons)`` arrays, channels ordered ``(3, H, ch)``."""
    gen = torch.Generator().manual_seed(0)
    channels = 3 * HEADS * HEAD_CHANNELS
    return [torch.randn(BATCH, channels, *s, generator=gen, dtype=dtype).requires_grad_(requires_grad) for s in shapes]


def _token(kind: str, array: torch.Tensor, i: int) -> torch.Tensor:
    """Token ``i`` of an array ``(B, H, ch, *neurons)``, from the definition: a column, a row, the bias."""
    if kind == "cols":
        return array[..., i]
    if kind == "rows":
        return array[..., i, :]
    return array


def test_groups_list_each_layers_tokens_in_order():
    groups = token_groups(_mlp_shapes([3, 4, 2]))
    assert groups == (
        TokenGroup(4, 3, ((TokenPart("rows", 0, 0, 4),),)),  # layer 0: the rows of W(1)
        TokenGroup(  # layer 1: columns of W(1), b(1), rows of W(2)
            6, 4, ((TokenPart("cols", 0, 0, 3), TokenPart("bias", 2, 3, 1), TokenPart("rows", 1, 4, 2)),)
        ),
        TokenGroup(5, 2, ((TokenPart("cols", 1, 0, 4), TokenPart("bias", 3, 4, 1)),)),  # layer 2
    )


def test_layers_with_equal_token_count_and_width_share_a_group():
    groups = token_groups(_mlp_shapes([3, 3, 3, 3]))
    shared = [g for g in groups if len(g.layers) > 1]
    assert len(shared) == 1 and (shared[0].num_tokens, shared[0].size) == (7, 3)
    assert [parts[0].array for parts in shared[0].layers] == [0, 1]  # layers 1 and 2: columns of W(1), W(2)


@pytest.mark.parametrize("sizes", [[3, 4, 2], [3, 3, 3, 3], [2, 5]], ids=["L2", "L3-uniform", "L1"])
def test_gather_puts_each_token_in_its_place(sizes):
    shapes = _mlp_shapes(sizes)
    groups = token_groups(shapes)
    qkv = _projections(shapes)
    for g, tokens in zip(groups, gather_tokens(HEADS, qkv)):
        for s, t in enumerate(tokens):  # queries, keys, values: (B, H * G, T, ch * n)
            assert t.shape == (BATCH, HEADS * len(g.layers), g.num_tokens, HEAD_CHANNELS * g.size)
            t = t.view(BATCH, HEADS, len(g.layers), g.num_tokens, HEAD_CHANNELS, g.size)
            for j, parts in enumerate(g.layers):
                for part in parts:
                    array = qkv[part.array].view(BATCH, 3, HEADS, HEAD_CHANNELS, *shapes[part.array])[:, s]
                    for i in range(part.count):
                        expected = _token(part.kind, array, i)
                        torch.testing.assert_close(t[:, :, j, part.offset + i], expected, rtol=0, atol=0)


def _shifts(shapes, requires_grad=False):
    """A per-sample shift ``(B, C)`` for every other array, None for the rest."""
    gen = torch.Generator().manual_seed(1)
    return [
        torch.randn(BATCH, HEADS * HEAD_CHANNELS, generator=gen, dtype=torch.float64).requires_grad_(requires_grad)
        if a % 2 == 0
        else None
        for a in range(len(shapes))
    ]


def test_scatter_of_gathered_values_gives_each_entry_once_per_neuron_layer():
    shapes = _mlp_shapes([3, 4, 2])
    qkv, shifts = _projections(shapes), _shifts(shapes)
    values = [tokens[2] for tokens in gather_tokens(HEADS, qkv)]
    out = scatter_tokens(HEADS, shapes, values, shifts)
    for a, (y, shape, shift) in enumerate(zip(out, shapes, shifts)):
        v = qkv[a].view(BATCH, 3, HEADS, HEAD_CHANNELS, *shape)[:, 2]
        assert y.is_contiguous()
        # A weight entry is a token of two neuron layers (its row's and its column's); a bias of one.
        expected = v * (2 if len(shape) == 2 else 1)
        if shift is not None:
            expected = expected + shift.view(BATCH, HEADS, HEAD_CHANNELS, *[1] * len(shape))
        torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("sizes", [[3, 4, 2], [3, 3, 3, 3]], ids=["L2", "L3-uniform"])
def test_gradients_match_finite_differences(sizes):
    shapes = _mlp_shapes(sizes)
    qkv = _projections(shapes, requires_grad=True)

    def gather(*arrays):
        return tuple(t for tokens in gather_tokens(HEADS, arrays) for t in tokens)

    assert torch.autograd.gradcheck(gather, qkv)
    outs = [tokens[2].detach().requires_grad_() for tokens in gather_tokens(HEADS, qkv)]
    shifts = _shifts(shapes, requires_grad=True)

    def scatter(*tensors):
        given = iter(tensors[len(outs) :])
        return scatter_tokens(HEADS, shapes, tensors[: len(outs)], [None if t is None else next(given) for t in shifts])

    assert torch.autograd.gradcheck(scatter, (*outs, *(t for t in shifts if t is not None)))
