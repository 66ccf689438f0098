"""Normalization and regularization NF-layers: ChannelLayerNorm, SimpleLayerNorm, ParamLayerNorm, ChannelDropout.

A layer norm is equivariant to a neuron permutation group when it normalizes each entry
over axes that the group does not permute: :class:`SimpleLayerNorm` normalizes over the
channels and filter positions of each entry (NP-equivariant); :class:`ParamLayerNorm`
also includes the fixed input neurons of the first layer and output neurons of the last
(HNP-equivariant only). Both work on the folded layout of
:mod:`nfn_lab.layers.layout`, whose feature axis ``D`` is exactly the set of unpermuted axes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfn_lab.layers.layout import network_layouts
from nfn_lab.symmetry import permuted_layers
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["ChannelDropout", "ChannelLayerNorm", "ParamLayerNorm", "SimpleLayerNorm"]


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channel axis of one tensor ``(B, C, ...)``, with learned gain and shift.

    Apply it to features with ``TupleOp(ChannelLayerNorm(C))``.

    Args:
        channels: ``C``.
        eps: added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.empty(channels))
        self.beta = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.gamma.fill_(1.0)
        self.beta.zero_()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(f"ChannelLayerNorm: expected (B, {self.channels}, ...), got shape {tuple(x.shape)}.")
        y = F.layer_norm(x.movedim(1, -1), (self.channels,), self.gamma, self.beta, self.eps)
        return y.movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, eps={self.eps}"


class _FoldedLayerNorm(nn.Module):
    """Per array, layer norm over the folded feature axis ``D`` (the axes the group leaves alone)."""

    def __init__(self, network_spec: NetworkSpec, channels: int, fixed_layers: Collection[int], eps: float) -> None:
        super().__init__()
        self.network_spec = network_spec
        self.channels = channels
        self.eps = eps
        weight_layouts, bias_layouts = network_layouts(network_spec, fixed_layers)
        self._layouts = weight_layouts + bias_layouts
        self.norms = nn.ModuleList(nn.LayerNorm(a.feature_dim(channels), eps=eps) for a in self._layouts)

    def reset_parameters(self) -> None:
        for norm in self.norms:
            cast(nn.LayerNorm, norm).reset_parameters()

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        """Features ``(B, C, ...)`` -> normalized features of the same shapes."""
        self.network_spec.check_features(wsfeat, self.channels, where=type(self).__name__)
        out = [
            layout.unfold(norm(layout.fold(x)), self.channels)  # (B, *kept, D) normalized over D
            for layout, norm, x in zip(self._layouts, self.norms, (*wsfeat.weights, *wsfeat.biases))
        ]
        return WeightSpaceFeatures(out[: len(wsfeat)], out[len(wsfeat) :])

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_layers={len(self.network_spec)}, eps={self.eps}"


class SimpleLayerNorm(_FoldedLayerNorm):
    """Layer norm of each entry over its channels (and filter positions), a gain/shift per array.

    NP-equivariant. ``weights[i]`` is normalized over ``C * prod(filter)`` values per
    ``(b, row, col)``, ``biases[i]`` over ``C`` values per ``(b, row)``.

    Args:
        network_spec: the weight space (hidden sizes may be free).
        channels: ``C``.
        eps: added to the variance.
    """

    def __init__(self, network_spec: NetworkSpec, channels: int, eps: float = 1e-5) -> None:
        super().__init__(network_spec, channels, fixed_layers=(), eps=eps)


class ParamLayerNorm(_FoldedLayerNorm):
    """Layer norm that also normalizes over the input neurons of the first layer and the output
    neurons of the last, which HNP does not permute.

    HNP-equivariant but not NP-equivariant: the gain and shift differ per input/output neuron
    (at their initial values, unit gain and zero shift, the layer happens to be NP-equivariant).
    Per array, the normalized axes are: ``W(1)``: ``(n_in, C, *filter)`` per row; ``W(L)``:
    ``(n_out, C, *filter)`` per column; ``b(L)``: ``(n_out, C)``; hidden arrays: ``(C, *filter)``
    per entry. A one-layer network has no permuted neurons: each array is normalized as a whole.

    Args:
        network_spec: the weight space; the input and output sizes must be set.
        channels: ``C``.
        eps: added to the variance.
    """

    def __init__(self, network_spec: NetworkSpec, channels: int, eps: float = 1e-5) -> None:
        num_layers = len(network_spec)
        fixed = set(range(num_layers + 1)) - set(permuted_layers(num_layers, "hnp"))
        super().__init__(network_spec, channels, fixed_layers=fixed, eps=eps)


class ChannelDropout(nn.Module):
    """Zeroes whole channels of each array, per sample, like ``nn.Dropout2d``.

    For each array and sample, every channel (of a convolution weight: every channel and
    filter position) is kept with probability ``1 - dropout`` and scaled by
    ``1 / (1 - dropout)``, or zeroed, across all its neurons. The mask does not depend on
    neuron indices, so the layer is equivariant to any neuron permutation for a fixed RNG state.
    Identity in eval mode.

    Args:
        dropout: probability of zeroing a channel, in ``[0, 1]``.
    """

    def __init__(self, dropout: float) -> None:
        super().__init__()
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"ChannelDropout: dropout must be in [0, 1], got {dropout}.")
        self.dropout = dropout

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        if not self.training or self.dropout == 0.0:
            return wsfeat
        weights = tuple(self._drop(w, neuron_axes=2) for w in wsfeat.weights)
        biases = tuple(self._drop(b, neuron_axes=1) for b in wsfeat.biases)
        return WeightSpaceFeatures(weights, biases)

    def _drop(self, x: Tensor, neuron_axes: int) -> Tensor:
        """``(B, C, *neurons, *filter)``: one Bernoulli draw per ``(b, c, *filter)``."""
        if self.dropout == 1.0:
            return torch.zeros_like(x)
        keep = 1.0 - self.dropout
        mask_shape = (*x.shape[:2], *(1,) * neuron_axes, *x.shape[2 + neuron_axes :])
        mask = x.new_empty(mask_shape).bernoulli_(keep).div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}"
