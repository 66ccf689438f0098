"""Equivariant linear NF-layers: NPLinear, HNPLinear, Pointwise, ChannelLinear.

NPLinear and HNPLinear are one construction, the most general linear map that commutes
with a group of neuron permutations (docs/weight-space.md, section 3). Every permuted neuron
layer has its own symmetric group, and an array carries each neuron layer at most once,
so the orbits of (output entry, input entry) pairs are indexed by the set ``T`` of
permuted neuron layers on which the two entries are *tied* (same index). Each ``T`` gives
one term: every input array containing ``T`` is averaged over its other permuted axes,
the results are concatenated into a feature indexed by ``T``, mapped by one matrix, and
broadcast over the output's other permuted axes. ``T`` ranges over

- ``()``: the global term (every array averaged over all its permuted axes);
- ``(l,)`` for each permuted neuron layer ``l``: rows of ``W(l)``, ``b(l)``, columns of ``W(l+1)``;
- ``(l, l-1)`` when both sides of a weight are permuted: that weight, pointwise.

Neuron layers that the group does not permute (the input and output neurons under HNP)
are folded into the features (see :mod:`nfn_lab.layers.layout`), which yields every
extra HNP term. NP permutes every neuron layer; HNP all but the first and last.
The result has exactly one parameter block per orbit, which the rank test in
``tests/layers/test_linear.py`` verifies against an independent orbit count.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Literal, cast

import torch
from torch import Tensor, nn

from nfn_lab.layers.channel_map import channel_map
from nfn_lab.layers.equivariant_map import build_plan, equivariant_map
from nfn_lab.layers.layout import network_layouts
from nfn_lab.symmetry import permuted_layers
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["ChannelLinear", "HNPLinear", "InitType", "NPLinear", "Pointwise"]

InitType = Literal["pytorch_default", "kaiming_normal"]


class _PermutationEquivariantLinear(nn.Module):
    """The general equivariant linear map for a set of permuted neuron layers.

    Args:
        network_spec: the weight space.
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        fixed_layers: neuron layers that are not permuted.
        init_type: ``"pytorch_default"`` (uniform with bound ``1/sqrt(fan_in)``, the sum of the
            widths of all terms feeding an output) or ``"kaiming_normal"``.
    """

    def __init__(
        self,
        network_spec: NetworkSpec,
        in_channels: int,
        out_channels: int,
        fixed_layers: Collection[int],
        init_type: InitType = "pytorch_default",
    ) -> None:
        super().__init__()
        if init_type not in ("pytorch_default", "kaiming_normal"):
            raise ValueError(f"unknown init_type {init_type!r}; use 'pytorch_default' or 'kaiming_normal'.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got in={in_channels}, out={out_channels}.")
        self.network_spec = network_spec
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.init_type = init_type
        w_layouts, b_layouts = network_layouts(network_spec, fixed_layers)
        self._layouts = w_layouts + b_layouts
        permuted = [layer for layer in range(len(network_spec) + 1) if layer not in fixed_layers]
        self._plan = build_plan(self._layouts, permuted, in_channels, out_channels)
        self._plan_key = self._plan.to_key()
        self.weight = nn.ParameterDict(
            {t.name: nn.Parameter(torch.empty(self._plan.term_shape(t))) for t in self._plan.terms}
        )
        self.pointwise_weight = nn.ParameterList(
            nn.Parameter(torch.empty(self._plan.d_in[a], self._plan.d_out[a])) for a in self._plan.pairs
        )
        self.bias = nn.Parameter(torch.empty(sum(self._plan.d_out)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        plan = self._plan
        fan_ins = [plan.fan_in(a) for a in range(len(self._layouts))]
        for term in plan.terms:
            blocks = self.weight[term.name].split([plan.d_out[a] for a in term.outputs], dim=1)
            for a, block in zip(term.outputs, blocks):
                self._init_weight(block, fan_ins[a])
        for a, w in zip(plan.pairs, self.pointwise_weight):
            self._init_weight(w, fan_ins[a])
        for a, block in enumerate(self.bias.split(plan.d_out)):
            if self.init_type == "pytorch_default":
                block.uniform_(-1 / math.sqrt(fan_ins[a]), 1 / math.sqrt(fan_ins[a]))
            else:
                block.zero_()

    def _init_weight(self, block: Tensor, fan_in: int) -> None:
        if self.init_type == "pytorch_default":
            bound = 1 / math.sqrt(fan_in)
            block.uniform_(-bound, bound)
        else:
            block.normal_(0, math.sqrt(2 / fan_in))

    def _preprocess(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        return wsfeat

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        """``(B, C_in, ...)`` features -> ``(B, C_out, ...)`` features of the same network."""
        self.network_spec.check_features(wsfeat, self.in_channels, where=type(self).__name__)
        wsfeat = self._preprocess(wsfeat)
        arrays = (*wsfeat.weights, *wsfeat.biases)
        forms = tuple(layout.takes_features_first(x) for layout, x in zip(self._layouts, arrays))
        folded = [layout.fold(x, first) for layout, x, first in zip(self._layouts, arrays, forms)]
        ys = equivariant_map(
            self._plan_key,
            forms,
            [*folded, *(self.weight[t.name] for t in self._plan.terms), *self.pointwise_weight, self.bias],
        )
        out = [layout.unfold(y, self.out_channels, first) for layout, y, first in zip(self._layouts, ys, forms)]
        return WeightSpaceFeatures(out[: len(wsfeat)], out[len(wsfeat) :])

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"num_layers={len(self.network_spec)}, terms={len(self._plan.terms) + len(self._plan.pairs)}"
        )


class NPLinear(_PermutationEquivariantLinear):
    """Linear layer equivariant to the NP group (every neuron layer permuted independently).

    Args:
        network_spec: the weight space (hidden sizes may be free).
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        io_embed: add learned embeddings of the input and output neuron positions to the
            input, which breaks the input/output symmetry (the layer is then HNP-equivariant).
        init_type: ``"pytorch_default"`` or ``"kaiming_normal"``.

    Shapes: ``weights[i]: (B, C_in, n(i), n(i-1), *filter) -> (B, C_out, n(i), n(i-1), *filter)``,
    ``biases[i]: (B, C_in, n(i)) -> (B, C_out, n(i))``.
    """

    def __init__(
        self,
        network_spec: NetworkSpec,
        in_channels: int,
        out_channels: int,
        io_embed: bool = False,
        init_type: InitType = "pytorch_default",
    ) -> None:
        super().__init__(network_spec, in_channels, out_channels, fixed_layers=(), init_type=init_type)
        self.io_embed = io_embed
        if io_embed:
            n_in, n_out = network_spec.get_io()
            if -1 in (n_in, n_out):
                raise ValueError("io_embed needs the network's input and output sizes in network_spec.")
            first, last = network_spec.filter_shapes[0], network_spec.filter_shapes[-1]
            self.in_embed = nn.Parameter(torch.randn(1, in_channels, 1, n_in, *first))
            self.out_embed = nn.Parameter(torch.randn(1, in_channels, n_out, 1, *last))
            self.out_bias_embed = nn.Parameter(torch.randn(1, in_channels, n_out))

    def _preprocess(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        if not self.io_embed:
            return wsfeat
        weights, biases = list(wsfeat.weights), list(wsfeat.biases)
        weights[0] = weights[0] + self.in_embed
        weights[-1] = weights[-1] + self.out_embed
        biases[-1] = biases[-1] + self.out_bias_embed
        return WeightSpaceFeatures(weights, biases)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", io_embed={self.io_embed}"


class HNPLinear(_PermutationEquivariantLinear):
    """Linear layer equivariant to the HNP group (hidden neurons permuted; inputs/outputs fixed).

    Works for networks of any depth, including one layer (then nothing is permuted and
    the layer is a dense linear map). Needs the input and output sizes in the spec.

    Args:
        network_spec: the weight space.
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        init_type: ``"pytorch_default"`` or ``"kaiming_normal"``.
    """

    def __init__(
        self,
        network_spec: NetworkSpec,
        in_channels: int,
        out_channels: int,
        init_type: InitType = "pytorch_default",
    ) -> None:
        num_layers = len(network_spec)
        fixed = set(range(num_layers + 1)) - set(permuted_layers(num_layers, "hnp"))
        super().__init__(network_spec, in_channels, out_channels, fixed_layers=fixed, init_type=init_type)


class Pointwise(nn.Module):
    """Per-entry channel mixing, a separate map per layer (filter positions act as channels).

    Equivariant to any neuron permutation. ``weights[i]: (B, C_in, ...) -> (B, C_out, ...)``.
    """

    def __init__(self, network_spec: NetworkSpec, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.network_spec = network_spec
        self.in_channels = in_channels
        self.out_channels = out_channels
        w_layouts, b_layouts = network_layouts(network_spec)
        self._layouts = w_layouts + b_layouts
        self.maps = nn.ModuleList(
            nn.Linear(a.feature_dim(in_channels), a.feature_dim(out_channels)) for a in self._layouts
        )

    def reset_parameters(self) -> None:
        for m in self.maps:
            cast(nn.Linear, m).reset_parameters()

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        self.network_spec.check_features(wsfeat, self.in_channels, where="Pointwise")
        out = [
            layout.unfold(linear(layout.fold(x)), self.out_channels)
            for layout, linear, x in zip(self._layouts, self.maps, [*wsfeat.weights, *wsfeat.biases])
        ]
        return WeightSpaceFeatures(out[: len(wsfeat)], out[len(wsfeat) :])

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"


class ChannelLinear(nn.Module):
    """A linear map over the channel axis (axis 1) of a tensor ``(B, C_in, ...) -> (B, C_out, ...)``.

    Apply it to features with ``TupleOp(ChannelLinear(...))``. Parameters are those of the
    wrapped ``nn.Linear`` (``linear.weight``, ``linear.bias``); the product runs through
    :func:`~nfn_lab.layers.channel_map.channel_map`.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return channel_map(x, self.linear.weight, self.linear.bias)
