"""Per-network transforms for zoo items: symmetry augmentations and normalization.

All transforms take and return one network's :class:`WeightSpaceFeatures` without a
batch axis (``weights[i]: (C, n_out, n_in, *filter)``). The augmentations sample an
element of a true symmetry group of the network, so they never change its function:

- :class:`RandomHiddenPermutation`: any network (the HNP group);
- :class:`RandomSignFlip`: networks with odd activations (tanh, sine: SIRENs);
- :class:`RandomPositiveScale`: ReLU networks (and other positively homogeneous ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nfn_lab.symmetry import (
    feature_layer_sizes,
    permute_features,
    sample_permutations,
    sample_positive_scales,
    sample_sign_flips,
    scale_neurons,
)
from nfn_lab.weightspace import WeightSpaceFeatures

__all__ = ["Compose", "Normalize", "RandomHiddenPermutation", "RandomPositiveScale", "RandomSignFlip"]

_ITEM_LEAD = 1  # items carry a channel axis, no batch axis


class Compose:
    """Applies transforms in order."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        for t in self.transforms:
            wsfeat = t(wsfeat)
        return wsfeat

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class _RandomTransform:
    """Base: owns an optional ``torch.Generator`` so augmentation can be seeded per worker."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomHiddenPermutation(_RandomTransform):
    """Permutes the hidden neurons of every layer independently (input/output order kept)."""

    def __call__(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        sizes = feature_layer_sizes(wsfeat, lead=_ITEM_LEAD)
        return permute_features(wsfeat, sample_permutations(sizes, "hnp", self.generator), lead=_ITEM_LEAD)


class RandomSignFlip(_RandomTransform):
    """Flips the sign of random hidden neurons (incoming weights, bias, outgoing weights).

    A symmetry only of networks with odd activations (tanh, sine).
    """

    def __call__(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        sizes = feature_layer_sizes(wsfeat, lead=_ITEM_LEAD)
        return scale_neurons(wsfeat, sample_sign_flips(sizes, self.generator), lead=_ITEM_LEAD)


class RandomPositiveScale(_RandomTransform):
    """Scales each hidden neuron's incoming weights and bias by ``s`` and outgoing weights by ``1/s``.

    ``s`` is log-uniform in ``[low, high]``. A symmetry only of ReLU-like networks.
    """

    def __init__(self, low: float = 0.5, high: float = 2.0, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        if not 0 < low <= high:
            raise ValueError(f"RandomPositiveScale needs 0 < low <= high, got low={low}, high={high}.")
        self.low, self.high = low, high

    def __call__(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        sizes = feature_layer_sizes(wsfeat, lead=_ITEM_LEAD)
        scales = sample_positive_scales(sizes, self.low, self.high, self.generator)
        return scale_neurons(wsfeat, scales, lead=_ITEM_LEAD)

    def __repr__(self) -> str:
        return f"RandomPositiveScale(low={self.low}, high={self.high})"


class Normalize:
    """``(x - mean) / std`` per array and channel, with statistics from :mod:`nfn_lab.data.stats`.

    Args:
        weight_mean, weight_std, bias_mean, bias_std: per layer, a ``(C,)`` tensor.
    """

    def __init__(
        self,
        weight_mean: Sequence[Tensor],
        weight_std: Sequence[Tensor],
        bias_mean: Sequence[Tensor],
        bias_std: Sequence[Tensor],
    ) -> None:
        self.weight_mean, self.weight_std = list(weight_mean), list(weight_std)
        self.bias_mean, self.bias_std = list(bias_mean), list(bias_std)

    @staticmethod
    def _apply(x: Tensor, mean: Tensor, std: Tensor, lead: int) -> Tensor:
        shape = (1,) * (lead - 1) + (-1,) + (1,) * (x.dim() - lead)  # broadcast over the channel axis
        return (x - mean.to(x).view(shape)) / std.to(x).view(shape)

    def __call__(self, wsfeat: WeightSpaceFeatures, lead: int = _ITEM_LEAD) -> WeightSpaceFeatures:
        """Normalizes one network (``lead=1``: ``(C, ...)``) or a batch (``lead=2``: ``(B, C, ...)``)."""
        if len(wsfeat) != len(self.weight_mean):
            raise ValueError(
                f"Normalize has statistics for {len(self.weight_mean)} layers but the network has {len(wsfeat)}."
            )
        weights = [self._apply(w, m, s, lead) for w, m, s in zip(wsfeat.weights, self.weight_mean, self.weight_std)]
        biases = [self._apply(b, m, s, lead) for b, m, s in zip(wsfeat.biases, self.bias_mean, self.bias_std)]
        return WeightSpaceFeatures(weights, biases)

    def __repr__(self) -> str:
        return f"Normalize(layers={len(self.weight_mean)})"
