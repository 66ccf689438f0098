"""Invariant pooling: NPPool and HNPPool.

Each array is averaged over the neuron axes that the group permutes; what the group
leaves alone (channels, filter positions, fixed neuron indices) is kept. The result is
``(B, C, num_outs)``, ordered ``W(1), b(1), W(2), b(2), ...``, each flattened in
``(*fixed neuron axes, *filter)`` order; ``nn.Flatten(start_dim=-2)`` turns it into the
``(B, C * num_outs)`` input of an MLP head.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
from torch import Tensor, nn

from nfn_lab.layers.layout import ArrayLayout, mean_over, network_layouts
from nfn_lab.symmetry import Group, permuted_layers
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["HNPPool", "NPPool"]


def _pool_layouts(network_spec: NetworkSpec, group: Group) -> tuple[ArrayLayout, ...]:
    num_layers = len(network_spec)
    fixed: Collection[int] = set(range(num_layers + 1)) - set(permuted_layers(num_layers, group))
    weights, biases = network_layouts(network_spec, fixed)
    return tuple(a for pair in zip(weights, biases) for a in pair)  # W(1), b(1), W(2), ...


class _InvariantPool(nn.Module):
    group: Group

    def __init__(self, network_spec: NetworkSpec) -> None:
        super().__init__()
        self.network_spec = network_spec
        layouts = _pool_layouts(network_spec, self.group)
        # Neuron axes (of the (B, C, *neuron, *filter) array) that are averaged away.
        self._mean_dims = tuple(tuple(2 + ax for ax, k in enumerate(a.kept) if k) for a in layouts)

    @classmethod
    def get_num_outs(cls, network_spec: NetworkSpec) -> int:
        """Number of pooled features per channel (the last axis of the output)."""
        return sum(math.prod(a.fixed_sizes) * math.prod(a.filter_shape) for a in _pool_layouts(network_spec, cls.group))

    def forward(self, wsfeat: WeightSpaceFeatures) -> Tensor:
        """Features ``(B, C, ...)`` -> pooled ``(B, C, num_outs)``."""
        self.network_spec.check_features(wsfeat, where=type(self).__name__)
        arrays = [x for pair in zip(wsfeat.weights, wsfeat.biases) for x in pair]
        pooled = [mean_over(x, dims) if dims else x for x, dims in zip(arrays, self._mean_dims)]
        return torch.cat([p.reshape(*p.shape[:2], -1) for p in pooled], dim=-1)

    def extra_repr(self) -> str:
        return f"num_layers={len(self.network_spec)}, num_outs={self.get_num_outs(self.network_spec)}"


class NPPool(_InvariantPool):
    """NP-invariant pooling: every weight and bias averaged over all its neuron axes (filter kept).

    ``get_num_outs(spec) = sum_i (prod(filter_i) + 1)``.
    """

    group: Group = "np"


class HNPPool(_InvariantPool):
    """HNP-invariant pooling: keeps what HNP does not permute.

    Per input column of ``W(1)``, per output row of ``W(L)``, all of ``b(L)``; hidden axes
    averaged. For a one-layer network nothing is permuted and the arrays pass whole.
    Needs the input and output sizes in the spec.
    """

    group: Group = "hnp"
