"""Group elements of weight space: sampling them and applying them to features.

Neuron layer ``l`` (``0 <= l <= L``) is the output side of layer ``l`` and the input
side of layer ``l + 1``. A permutation ``p`` of neuron layer ``l`` acts as::

    W(l)[.., j, :]   -> W(l)[.., p[j], :]       b(l)[.., j] -> b(l)[.., p[j]]
    W(l+1)[.., :, k] -> W(l+1)[.., :, p[k]]

and a positive scale or sign ``s`` of neuron layer ``l`` as ``W(l) rows * s``,
``b(l) * s``, ``W(l+1) columns / s``. The same code serves augmentation (on dataset
items, ``lead=1``) and the equivariance tests (on batches, ``lead=2``).

Groups: ``"hnp"`` permutes hidden layers only (the true symmetry of an MLP/CNN);
``"np"`` also permutes the input and output neurons.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from nfn_lab.weightspace import WeightSpaceFeatures

__all__ = [
    "Group",
    "feature_layer_sizes",
    "permute_features",
    "permuted_layers",
    "sample_permutations",
    "sample_positive_scales",
    "sample_sign_flips",
    "scale_neurons",
]

Group = Literal["np", "hnp"]
NeuronMaps = Sequence[Tensor | None]  # one entry per neuron layer 0..L; None = identity


def feature_layer_sizes(wsfeat: WeightSpaceFeatures, lead: int = 2) -> tuple[int, ...]:
    """``(n(0), ..., n(L))`` of features whose arrays have ``lead`` leading axes."""
    return (wsfeat.weights[0].shape[lead + 1], *(w.shape[lead] for w in wsfeat.weights))


def permuted_layers(num_layers: int, group: Group) -> tuple[int, ...]:
    """Indices of the neuron layers that ``group`` permutes."""
    if group == "np":
        return tuple(range(num_layers + 1))
    if group == "hnp":
        return tuple(range(1, num_layers))
    raise ValueError(f"unknown group {group!r}; use 'np' or 'hnp'.")


def sample_permutations(
    layer_sizes: Sequence[int], group: Group = "hnp", generator: torch.Generator | None = None
) -> list[Tensor | None]:
    """A random group element: one index permutation per permuted neuron layer."""
    permuted = set(permuted_layers(len(layer_sizes) - 1, group))
    return [torch.randperm(n, generator=generator) if i in permuted else None for i, n in enumerate(layer_sizes)]


def _map_neurons(wsfeat: WeightSpaceFeatures, maps: NeuronMaps, lead: int, row_op, col_op) -> WeightSpaceFeatures:
    if len(maps) != len(wsfeat) + 1:
        raise ValueError(f"expected {len(wsfeat) + 1} neuron-layer entries (layers 0..L), got {len(maps)}.")
    weights, biases = [], []
    for i, (w, b) in enumerate(wsfeat, start=1):
        if maps[i] is not None:
            w = row_op(w, maps[i], lead)
            b = row_op(b, maps[i], lead)
        if maps[i - 1] is not None:
            w = col_op(w, maps[i - 1], lead + 1)
        weights.append(w)
        biases.append(b)
    return WeightSpaceFeatures(weights, biases)


def _index(x: Tensor, perm: Tensor, axis: int) -> Tensor:
    return x.index_select(axis, perm.to(x.device))


def _scale(x: Tensor, scale: Tensor, axis: int) -> Tensor:
    shape = [1] * x.dim()
    shape[axis] = -1
    return x * scale.to(x).reshape(shape)


def _unscale(x: Tensor, scale: Tensor, axis: int) -> Tensor:
    return _scale(x, 1.0 / scale, axis)


def permute_features(wsfeat: WeightSpaceFeatures, perms: NeuronMaps, lead: int = 2) -> WeightSpaceFeatures:
    """Applies neuron permutations (see module docstring).

    Args:
        wsfeat: features whose arrays have ``lead`` leading axes (2 for ``(B, C)``, 1 for an item).
        perms: per neuron layer ``0..L`` an index tensor ``(n(l),)`` or None.
    """
    return _map_neurons(wsfeat, perms, lead, _index, _index)


def scale_neurons(wsfeat: WeightSpaceFeatures, scales: NeuronMaps, lead: int = 2) -> WeightSpaceFeatures:
    """Scales each neuron's incoming weights and bias by ``s`` and its outgoing weights by ``1/s``.

    For ReLU networks this preserves the function when ``s > 0``; for odd activations
    (tanh, sine) when ``s = +-1``.
    """
    return _map_neurons(wsfeat, scales, lead, _scale, _unscale)


def sample_sign_flips(layer_sizes: Sequence[int], generator: torch.Generator | None = None) -> list[Tensor | None]:
    """Random ``+-1`` per hidden neuron (a symmetry of networks with odd activations)."""
    last = len(layer_sizes) - 1
    return [
        None if i in (0, last) else torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
        for i, n in enumerate(layer_sizes)
    ]


def sample_positive_scales(
    layer_sizes: Sequence[int], low: float = 0.5, high: float = 2.0, generator: torch.Generator | None = None
) -> list[Tensor | None]:
    """Random log-uniform scale in ``[low, high]`` per hidden neuron (a symmetry of ReLU networks)."""
    if not 0 < low <= high:
        raise ValueError(f"scales need 0 < low <= high, got low={low}, high={high}.")
    last = len(layer_sizes) - 1
    lo, hi = torch.tensor(low).log(), torch.tensor(high).log()
    return [
        None if i in (0, last) else (lo + (hi - lo) * torch.rand(n, generator=generator)).exp()
        for i, n in enumerate(layer_sizes)
    ]
