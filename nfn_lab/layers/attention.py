"""NF-attention: the Neural Functional Transformer's NP-equivariant weight-space self-attention.

:class:`NPAttention` (Zhou et al. 2023, "Neural Functional Transformers") is the sum of two
attention terms over the entries of a weight space, each NP-equivariant:

- the *cross term*: for every neuron layer ``l = 0..L``, the tokens are the arrays' slices
  that share neuron layer ``l``'s index: the columns of ``W(l)`` (one per neuron of layer
  ``l - 1``), the bias ``b(l)`` (one token) and the rows of ``W(l+1)`` (one per neuron of layer
  ``l + 1``). Each token is a vector over neuron layer ``l`` (that axis is folded into its
  features ``(head_channels, n(l))``), so permuting layer ``l`` permutes every token's
  features alike and leaves the attention weights unchanged, while permuting the other
  neuron layers permutes the tokens. Outputs go back where each token came from and a
  weight entry sums the outputs of its two neuron layers.
- the *diagonal term*: attention among the ``2L`` per-array summaries (the mean of each
  ``W(i)`` and ``b(i)`` over its neuron axes), broadcast back over the array.

Queries, keys and values are linear maps of each entry's channels, split into heads; a
token's feature vector for head ``h`` is ``(ch, n(l))`` flattened (``ch = C / num_heads``).
Convolution filters are folded into the channels: a weight entry's features ``(C, *filter)``
are projected to ``C``-dimensional queries, keys and values, and an *unprojection*
``C -> C * prod(filter)`` restores the filter from the attention output.

Implementation: everything stays channels-first; each array is projected once, neuron
layers with the same token count and width attend in one call, and
:mod:`nfn_lab.layers.attention_tokens` gathers their tokens and puts the outputs back, one
pass over each array in each direction.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfn_lab.layers.attention_tokens import gather_tokens, scatter_tokens
from nfn_lab.layers.channel_map import channel_map
from nfn_lab.layers.layout import filter_fold, filter_unfold, mean_over
from nfn_lab.layers.misc import FlattenWeights, UnflattenWeights
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["CrossAttnDecoder", "CrossAttnEncoder", "NPAttention"]


class NPAttention(nn.Module):
    """NP-equivariant multi-head self-attention over weight-space features (NFT's NF-attention).

    Args:
        network_spec: the weight space (hidden sizes may be free).
        channels: ``C``, the channels of input and output.
        num_heads: attention heads; must divide ``channels``.
        dropout: dropout probability on the cross term's attention weights (training only).
        share_projections: True: one query/key/value projection shared by all arrays whose
            entries have the same number of filter positions (every array of an MLP; for a CNN,
            one for each filter size and one for dense weights and biases), and one shared
            unprojection per filter size. False: one projection per array and one unprojection
            per convolution weight, as in ``nfn``.
        ablate_crossterm: drop the cross term (attention among tokens sharing a neuron index).
        ablate_diagonalterm: drop the diagonal term (attention among per-array means).

    Shapes: ``weights[i]: (B, C, n(i), n(i-1), *filter) -> same``, ``biases[i]: (B, C, n(i)) -> same``.
    Outputs may be non-contiguous views.

    Raises:
        ValueError: if ``channels`` is not divisible by ``num_heads``, if both terms are
            ablated, or (in forward) if the features do not match ``network_spec``.
    """

    def __init__(
        self,
        network_spec: NetworkSpec,
        channels: int,
        num_heads: int = 8,
        dropout: float = 0,
        share_projections: bool = True,
        ablate_crossterm: bool = False,
        ablate_diagonalterm: bool = False,
    ) -> None:
        super().__init__()
        if channels < 1 or num_heads < 1 or channels % num_heads != 0:
            raise ValueError(
                f"channels ({channels}) must be a positive multiple of num_heads ({num_heads}); change one of them."
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if ablate_crossterm and ablate_diagonalterm:
            raise ValueError("ablating both the cross and the diagonal term leaves nothing; keep at least one.")
        self.network_spec = network_spec
        self.channels = channels
        self.num_heads = num_heads
        self.dropout = dropout
        self.share_projections = share_projections
        self.ablate_crossterm = ablate_crossterm
        self.ablate_diagonalterm = ablate_diagonalterm

        num_layers = len(network_spec)
        filter_sizes = network_spec.filter_sizes
        array_filters = (*filter_sizes, *([1] * num_layers))  # weights, then biases
        # Query/key/value projections (f * C -> 3C): shared by the arrays with f filter positions
        # per entry, or one per array. Unprojections (C -> f * C) restore convolution filters.
        qkv_keys = array_filters if share_projections else range(2 * num_layers)
        self._qkv_index = _group_ids(qkv_keys)
        self.to_qkv = nn.ModuleList(
            nn.Linear(array_filters[self._qkv_index.index(g)] * channels, 3 * channels)
            for g in range(max(self._qkv_index) + 1)
        )
        conv = [i for i, f in enumerate(filter_sizes) if f > 1]
        unproject_index = _group_ids(filter_sizes[i] if share_projections else i for i in conv)
        self._unproject_index = dict(zip(conv, unproject_index))
        self.unproject = nn.ModuleList(
            nn.Linear(channels, filter_sizes[conv[unproject_index.index(g)]] * channels)
            for g in range(len(set(unproject_index)))
        )

    def reset_parameters(self) -> None:
        for linear in (*self.to_qkv, *self.unproject):
            linear.reset_parameters()

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        """``(B, C, ...)`` features -> ``(B, C, ...)`` features of the same network."""
        self.network_spec.check_features(wsfeat, self.channels, where="NPAttention")
        num_layers = len(wsfeat)
        inputs = [filter_fold(w) for w in wsfeat.weights] + list(wsfeat.biases)  # (B, f * C, *neurons)
        qkv = None if self.ablate_crossterm else [_linear(self._qkv(a), x) for a, x in enumerate(inputs)]
        # qkv: (B, 3C, *neurons), 3C = (3, H, ch); the diagonal term: (B, C) per array.
        diag = [None] * len(inputs) if self.ablate_diagonalterm else self._diagonal_term(inputs, qkv).unbind(1)
        unprojects = [self._unprojection(a) for a in range(len(inputs))]
        if qkv is None:  # the diagonal term alone: broadcast over each array
            outs = []
            for x, d, unproject in zip(inputs, diag, unprojects):
                assert d is not None  # __init__ refuses to ablate both terms
                d = d if unproject is None else unproject(d)
                outs.append(d.view(*d.shape, *[1] * (x.dim() - 2)).expand(x.shape).contiguous())
        else:
            # The diagonal term is added as the cross term is written out or, for convolution
            # weights, joins the unprojection's bias: unproject(cross + d).
            cross = self._cross_term(qkv, [d if u is None else None for d, u in zip(diag, unprojects)])
            outs = [y if u is None else _linear(u, y, shift=d) for y, d, u in zip(cross, diag, unprojects)]
        weights = [filter_unfold(out, w.shape[4:]) for out, w in zip(outs, wsfeat.weights)]
        return WeightSpaceFeatures(weights, outs[num_layers:])

    def _qkv(self, array: int) -> nn.Linear:
        return cast(nn.Linear, self.to_qkv[self._qkv_index[array]])

    def _unprojection(self, array: int) -> nn.Linear | None:
        """The map ``C -> f * C`` that restores a convolution weight's filter; None for other arrays."""
        if array not in self._unproject_index:
            return None
        return cast(nn.Linear, self.unproject[self._unproject_index[array]])

    def _diagonal_term(self, inputs: list[Tensor], qkv: list[Tensor] | None) -> Tensor:
        """Attention among the per-array means: ``(B, 2L, C)``."""
        means = []
        for a, x in enumerate(inputs):
            # mean(qkv(x)) = qkv(mean(x)): average whichever of the two is smaller.
            dims = range(2, x.dim())
            if qkv is not None and qkv[a].shape[1] < x.shape[1]:
                means.append(mean_over(qkv[a], dims))
            else:
                means.append(self._qkv(a)(mean_over(x, dims)))
        qkv_means = torch.stack(means, dim=1)  # (B, 2L, 3C)
        q, k, v = qkv_means.view(*qkv_means.shape[:2], 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = _attention(q, k, v, 0.0)  # (B, H, 2L, ch)
        return out.transpose(1, 2).reshape(out.shape[0], -1, self.channels)

    def _cross_term(self, qkv: list[Tensor], shifts: list[Tensor | None]) -> list[Tensor]:
        """Attention among the tokens of each neuron layer, plus ``shifts[a]`` ``(B, C)`` broadcast over
        array ``a``: per array ``(B, C, *neurons)``."""
        dropout = self.dropout if self.training else 0.0
        outs = [_attention(q, k, v, dropout) for q, k, v in gather_tokens(self.num_heads, qkv)]
        arrays = scatter_tokens(self.num_heads, [y.shape[2:] for y in qkv], outs, shifts)
        return [y.flatten(1, 2) for y in arrays]

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, num_heads={self.num_heads}, dropout={self.dropout}, "
            f"share_projections={self.share_projections}, ablate_crossterm={self.ablate_crossterm}, "
            f"ablate_diagonalterm={self.ablate_diagonalterm}"
        )


def _attention(q: Tensor, k: Tensor, v: Tensor, dropout: float) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` with dropout on the weights: ``(..., T, d)`` each -> ``(..., T, d)``.

    On the CPU, for the short token sequences of NF-attention (tens of tokens, long vectors),
    the explicit matrix products and softmax run forward and backward faster than PyTorch's
    flash kernel (``benchmarks/bench_layers.py``, benchmarks/README.md); elsewhere
    :func:`F.scaled_dot_product_attention` picks its best kernel.
    """
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)  # (..., T, T)
    if dropout > 0:
        weights = F.dropout(weights, dropout)
    return torch.matmul(weights, v)


class CrossAttnEncoder(nn.Module):
    """Learned latent queries cross-attend to every entry of the weight space (Perceiver-style).

    The entries are a set of tokens ``(B, N_params, C)`` (:class:`FlattenWeights`); attention
    without position codes ignores their order, so the encoding is invariant to every
    permutation of the entries, the NP group included. Single-head attention without
    projections, as in ``nfn``; put projections or position encodings in front if needed.

    Args:
        network_spec: the weight space, with every size set.
        channels: ``C`` of the features and the latents.
        num_latents: number of latent tokens.

    Shapes: features ``(B, C, ...)`` -> latents ``(B, num_latents, C)``.
    """

    def __init__(self, network_spec: NetworkSpec, channels: int, num_latents: int) -> None:
        super().__init__()
        if channels < 1 or num_latents < 1:
            raise ValueError(f"channels and num_latents must be positive, got {channels} and {num_latents}.")
        self.network_spec = network_spec
        self.channels = channels
        self.num_latents = num_latents
        self.flatten = FlattenWeights(network_spec)
        self.embeddings = nn.Parameter(torch.empty(num_latents, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embeddings)

    def forward(self, wsfeat: WeightSpaceFeatures) -> Tensor:
        self.network_spec.check_features(wsfeat, self.channels, where="CrossAttnEncoder")
        tokens = self.flatten(wsfeat)  # (B, N_params, C)
        queries = self.embeddings.expand(tokens.shape[0], -1, -1)  # (B, num_latents, C)
        return F.scaled_dot_product_attention(queries, tokens, tokens)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_latents={self.num_latents}"


class CrossAttnDecoder(nn.Module):
    """Learned per-parameter queries cross-attend to latents and become weight-space features.

    Inverse direction of :class:`CrossAttnEncoder`: one learned query per entry of the network
    attends to the latents (no position codes, so the result does not depend on their order)
    and :class:`UnflattenWeights` puts the answers back in place.

    Args:
        network_spec: the weight space, with every size set.
        channels: ``C`` of the latents and of the output features.
        num_params: number of entries of one network; defaults to (and must equal)
            ``network_spec.get_num_params()``.

    Shapes: latents ``(B, num_latents, C)`` -> features ``(B, C, ...)``.
    """

    def __init__(self, network_spec: NetworkSpec, channels: int, num_params: int | None = None) -> None:
        super().__init__()
        self.unflatten = UnflattenWeights(network_spec)
        if num_params is not None and num_params != self.unflatten.num_params:
            raise ValueError(
                f"CrossAttnDecoder: num_params={num_params} but the network_spec has {self.unflatten.num_params} "
                "entries; pass network_spec.get_num_params() or leave num_params out."
            )
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}.")
        self.network_spec = network_spec
        self.channels = channels
        self.num_params = self.unflatten.num_params
        self.embeddings = nn.Parameter(torch.empty(self.num_params, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embeddings)

    def forward(self, latents: Tensor) -> WeightSpaceFeatures:
        if latents.dim() != 3 or latents.shape[-1] != self.channels:
            raise ValueError(
                f"CrossAttnDecoder: expected latents (B, num_latents, {self.channels}), "
                f"got shape {tuple(latents.shape)}."
            )
        queries = self.embeddings.expand(latents.shape[0], -1, -1)  # (B, N_params, C)
        return self.unflatten(F.scaled_dot_product_attention(queries, latents, latents))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_params={self.num_params}"


def _linear(linear: nn.Linear, x: Tensor, shift: Tensor | None = None) -> Tensor:
    """``linear(x + shift)`` over the channel axis: ``(B, C_in, *rest) -> (B, C_out, *rest)``.

    ``shift``, ``(B, C_in)``, is broadcast over ``rest``; it is mapped once, not per entry.
    """
    bias = linear.bias if shift is None else linear(shift)  # (C_out,) or (B, C_out)
    return channel_map(x, linear.weight, bias)


def _group_ids(keys: Iterable[Hashable]) -> list[int]:
    """Ids of equal keys, numbered by first appearance: ``(9, 9, 1, 9) -> [0, 0, 1, 0]``."""
    ids: dict[Hashable, int] = {}
    return [ids.setdefault(k, len(ids)) for k in keys]
