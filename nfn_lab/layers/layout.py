"""How an NF-layer sees one weight or bias array: permuted neuron axes, then features.

An array of features ``(B, C, *neuron_axes, *filter)`` is *folded* to
``(B, *kept_axes, D)``: the neuron axes that the layer's group permutes stay as axes
(rows before columns), and everything the group leaves alone (the channels, the filter
positions, and the indices of neuron layers that are held fixed, e.g. the input and
output neurons under HNP) becomes one feature axis ``D`` in the order
``(*fixed_axes, C, *filter)``. Folding is a permute plus reshape; when the features
were produced by another NF-layer the memory is already in that order and the reshape
is free. :meth:`ArrayLayout.unfold` is the inverse and returns a (non-copying) view.

Arrays without filters whose folded neuron axes all have size 1 (every array of an MLP
under NP; all but the first weight under HNP) can also be taken *features first*,
``(B, D, *kept_axes)``, a free view of contiguous ``(B, C, *neuron_axes)`` features: see
:meth:`ArrayLayout.takes_features_first`. The NF-layers use that form when the features
arrive channels-first, which saves the copies in and out of the folded form.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from torch import Tensor

from nfn_lab.weightspace import NetworkSpec

__all__ = ["ArrayLayout", "filter_fold", "filter_unfold", "mean_over", "network_layouts"]


@dataclass(frozen=True)
class ArrayLayout:
    """The folding of one array.

    Attributes:
        neuron_layers: neuron-layer index of each neuron axis (weight of layer ``i``, 0-based:
            ``(i + 1, i)``; its bias: ``(i + 1,)``).
        kept: per neuron axis, whether it stays an axis (permuted) or is folded (fixed).
        fixed_sizes: sizes of the folded neuron axes, in axis order.
        filter_shape: the filter shape (``()`` for dense layers and biases).
    """

    neuron_layers: tuple[int, ...]
    kept: tuple[bool, ...]
    fixed_sizes: tuple[int, ...]
    filter_shape: tuple[int, ...]

    @property
    def kept_layers(self) -> tuple[int, ...]:
        """Neuron-layer index of each kept axis, in axis order."""
        return tuple(layer for layer, k in zip(self.neuron_layers, self.kept) if k)

    def feature_dim(self, channels: int) -> int:
        """``D`` for ``channels`` channels."""
        return math.prod(self.fixed_sizes) * channels * math.prod(self.filter_shape)

    def _order(self) -> list[int]:
        n = len(self.neuron_layers)
        neuron_axes = list(range(2, 2 + n))
        kept = [a for a, k in zip(neuron_axes, self.kept) if k]
        fixed = [a for a, k in zip(neuron_axes, self.kept) if not k]
        return [0, *kept, *fixed, 1, *range(2 + n, 2 + n + len(self.filter_shape))]

    def takes_features_first(self, x: Tensor) -> bool:
        """Whether ``x`` folds to ``(B, D, *kept_axes)`` without a copy (contiguous, no filter,
        folded neuron axes of size 1)."""
        return not self.filter_shape and all(s == 1 for s in self.fixed_sizes) and x.is_contiguous()

    def fold(self, x: Tensor, features_first: bool = False) -> Tensor:
        """``(B, C, *neuron_axes, *filter)`` -> ``(B, *kept_axes, D)``, or ``(B, D, *kept_axes)`` (a view)
        if ``features_first`` (only where :meth:`takes_features_first`)."""
        if features_first:
            kept_sizes = [size for size, k in zip(x.shape[2:], self.kept) if k]
            return x.view(x.shape[0], -1, *kept_sizes)
        order = self._order()
        n_kept = sum(self.kept)
        x = x.permute(order)
        return x.reshape(*x.shape[: 1 + n_kept], -1)

    def unfold(self, y: Tensor, channels: int, features_first: bool = False) -> Tensor:
        """``(B, *kept_axes, D)`` (or ``(B, D, *kept_axes)`` if ``features_first``) ->
        ``(B, channels, *neuron_axes, *filter)`` (a view)."""
        if features_first:
            kept_sizes = iter(y.shape[2:])
            return y.view(y.shape[0], channels, *(next(kept_sizes) if k else 1 for k in self.kept))
        order = self._order()
        n_kept = sum(self.kept)
        y = y.view(*y.shape[: 1 + n_kept], *self.fixed_sizes, channels, *self.filter_shape)
        inverse = [0] * len(order)
        for pos, axis in enumerate(order):
            inverse[axis] = pos
        return y.permute(inverse)


def network_layouts(
    network_spec: NetworkSpec, fixed_layers: Collection[int] = ()
) -> tuple[tuple[ArrayLayout, ...], tuple[ArrayLayout, ...]]:
    """Layouts of every weight and bias of a network, given the neuron layers held fixed.

    Returns:
        ``(weight_layouts, bias_layouts)``, one per layer.

    Raises:
        ValueError: if a fixed neuron layer's size is left free (-1) in the spec.
    """
    sizes = network_spec.layer_sizes
    for layer in fixed_layers:
        if sizes[layer] == -1:
            raise ValueError(
                f"neuron layer {layer} is held fixed (not permuted), so its size must be known, but the "
                "network_spec leaves it free (-1); build the spec with network_spec_from_wsfeat."
            )

    def layout(neuron_layers: Sequence[int], filter_shape: tuple[int, ...]) -> ArrayLayout:
        kept = tuple(layer not in fixed_layers for layer in neuron_layers)
        fixed_sizes = tuple(sizes[layer] for layer, k in zip(neuron_layers, kept) if not k)
        return ArrayLayout(tuple(neuron_layers), kept, fixed_sizes, filter_shape)

    weights = tuple(layout((i + 1, i), f) for i, f in enumerate(network_spec.filter_shapes))
    biases = tuple(layout((i + 1,), ()) for i in range(len(network_spec)))
    return weights, biases


def filter_fold(w: Tensor) -> Tensor:
    """``(B, C, n_out, n_in, *filter)`` -> ``(B, C * prod(filter), n_out, n_in)`` (channel-major)."""
    if w.dim() == 4:
        return w
    w = w.movedim((2, 3), (-2, -1))  # (B, C, *filter, n_out, n_in)
    return w.reshape(w.shape[0], -1, w.shape[-2], w.shape[-1])


def filter_unfold(w: Tensor, filter_shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`filter_fold`."""
    if not filter_shape:
        return w
    w = w.reshape(w.shape[0], -1, *filter_shape, w.shape[-2], w.shape[-1])
    return w.movedim((-2, -1), (2, 3))


def mean_over(x: Tensor, dims: Sequence[int]) -> Tensor:
    """``x.mean(dims)`` whose gradient reaches ``x`` as a broadcast view, in no memory layout of its own.

    ``mean``'s backward materializes a contiguous gradient. When ``x`` is channels-last (the
    NF-layers' output form), the op before it then reads two layouts in its backward, several
    times slower (e.g. a ReLU followed by an invariant pool on the CNN zoo's last layer;
    ``benchmarks/bench_layers.py``). A sum and a division backpropagate as views.
    """
    return x.sum(dim=tuple(dims)) / math.prod([x.shape[d] for d in dims])
