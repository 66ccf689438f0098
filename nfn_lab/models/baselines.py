"""Baselines: StatNN (per-array statistics -> MLP) and an MLP on the flattened weights."""

from __future__ import annotations

from torch import Tensor

from nfn_lab.layers import FlattenWeights, LearnedScale, StatFeaturizer, UnflattenWeights
from nfn_lab.models.blocks import Backbone, mlp
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["FlatMLP", "StatNN"]


class StatNN(Backbone):
    """Unterthiner et al. (2020): mean, variance and quantiles of every array -> MLP.

    Args:
        network_spec: the weight space.
        hidden: width of the MLP's hidden layers.
        num_hidden: number of hidden layers.
        out_features: outputs.
        dropout: dropout after each hidden layer.
        sigmoid: squash the output into (0, 1).
        normalize: standardize inputs with stored statistics.

    Shapes: ``(B, 1, ...) -> (B, out_features)``.
    """

    def __init__(
        self,
        network_spec: NetworkSpec,
        hidden: int = 1000,
        num_hidden: int = 2,
        out_features: int = 1,
        dropout: float = 0.0,
        sigmoid: bool = False,
        normalize: bool = False,
    ) -> None:
        super().__init__(network_spec, normalize)
        self.stats = StatFeaturizer(network_spec)
        self.head = mlp(StatFeaturizer.get_num_outs(network_spec), hidden, num_hidden, out_features, dropout, sigmoid)

    def forward(self, wsfeat: WeightSpaceFeatures) -> Tensor:
        return self.head(self.stats(self.prepare(wsfeat)).flatten(start_dim=1))


class FlatMLP(Backbone):
    """An MLP on all parameters flattened into one vector (not permutation-aware).

    Train it with :class:`~nfn_lab.data.RandomHiddenPermutation` augmentation for the
    "MLP + augmentation" baseline.

    Args:
        network_spec: the weight space; every size must be set.
        hidden: width of the hidden layers.
        num_hidden: number of hidden layers.
        out_features: outputs; None to output a weight-space update of the input's shape
            (for editing), scaled by a learned per-array scale starting at ``out_scale``.
        dropout: dropout after each hidden layer.
        sigmoid: squash a scalar output into (0, 1).
        out_scale: initial output scale when ``out_features`` is None.
        normalize: standardize inputs with stored statistics.

    Shapes: ``(B, 1, ...) -> (B, out_features)`` or ``(B, 1, ...)`` features.
    """

    def __init__(
        self,
        network_spec: NetworkSpec,
        hidden: int = 1000,
        num_hidden: int = 2,
        out_features: int | None = 1,
        dropout: float = 0.0,
        sigmoid: bool = False,
        out_scale: float = 0.01,
        normalize: bool = False,
    ) -> None:
        super().__init__(network_spec, normalize)
        num_params = network_spec.get_num_params()
        self.flatten = FlattenWeights(network_spec)
        self.mlp = mlp(
            num_params, hidden, num_hidden, out_features or num_params, dropout, sigmoid and bool(out_features)
        )
        self.unflatten = UnflattenWeights(network_spec) if out_features is None else None
        self.scale = LearnedScale(network_spec, out_scale) if out_features is None else None

    def forward(self, wsfeat: WeightSpaceFeatures) -> Tensor | WeightSpaceFeatures:
        flat = self.flatten(self.prepare(wsfeat)).flatten(start_dim=1)  # (B, num_params * 1)
        out = self.mlp(flat)
        if self.unflatten is None or self.scale is None:
            return out
        return self.scale(self.unflatten(out.unsqueeze(-1)))
