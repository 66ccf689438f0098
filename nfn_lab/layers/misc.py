"""Small building blocks: TupleOp, ResBlock, LearnedScale, StatFeaturizer, Flatten/UnflattenWeights.

Every layer here except :class:`FlattenWeights` and :class:`UnflattenWeights` commutes with
any neuron permutation that the layers it wraps commute with: :class:`TupleOp` and
:class:`LearnedScale` act entrywise, :class:`StatFeaturizer` summarizes each array by
order statistics (NP-invariant). Flattening turns the weight space into a plain token
sequence ``(B, N_params, C)`` for non-equivariant baselines (e.g. a transformer over all
parameters) and needs every size of the network fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["FlattenWeights", "LearnedScale", "ResBlock", "StatFeaturizer", "TupleOp", "UnflattenWeights"]


class TupleOp(nn.Module):
    """Applies a tensor op to every weight and bias array, e.g. ``TupleOp(nn.ReLU())``.

    On the CPU the op stays out of ``torch.compile`` graphs (a graph break; the one left in the
    layers, as it is no hand-written pass that a custom operator could hold): inductor's CPU
    kernel for an activation that saves a boolean mask for its backward (ReLU's ``x <= 0``)
    runs many times slower than eager PyTorch, which made compiled NFNs slower than eager ones
    (predict-gen networks, ``benchmarks/bench_layers.py``, benchmarks/README.md). On GPUs the
    op is compiled with the rest.

    Args:
        op: a module or function ``(B, C, ...) -> (B, C', ...)`` that acts on each array alone.
            Entrywise ops (activations, dropout) and channel maps
            (:class:`~nfn_lab.layers.linear.ChannelLinear`) keep the layer equivariant.
    """

    def __init__(self, op: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.op = op

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        if wsfeat.weights[0].device.type == "cpu":
            return _eager_map(self.op, wsfeat)
        return wsfeat.map(self.op)

    def extra_repr(self) -> str:
        # A module op is printed as a child; a plain function is named here.
        return "" if isinstance(self.op, nn.Module) else f"op={getattr(self.op, '__name__', repr(self.op))}"


@torch.compiler.disable
def _eager_map(op: Callable[[Tensor], Tensor], wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
    """``wsfeat.map(op)`` outside compiled graphs (see :class:`TupleOp`)."""
    return wsfeat.map(op)


class ResBlock(nn.Module):
    """Pre-norm residual block: ``x + dropout(activation(base_layer(norm(x))))``.

    Args:
        base_layer: an NF-layer mapping ``C`` channels to ``C`` channels (e.g. ``NPLinear(spec, C, C)``).
        activation: applied to the base layer's output, e.g. ``TupleOp(nn.ReLU())``.
        dropout: entrywise dropout probability on the residual branch (0 disables it).
        norm: applied before the base layer, e.g. ``SimpleLayerNorm(spec, C)``; None for no norm.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        activation: nn.Module,
        dropout: float = 0.0,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResBlock: dropout must be in [0, 1), got {dropout}.")
        self.base_layer = base_layer
        self.activation = activation
        self.dropout = TupleOp(nn.Dropout(dropout)) if dropout > 0 else nn.Identity()
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        res = self.dropout(self.activation(self.base_layer(self.norm(wsfeat))))
        for i, (x, r) in enumerate(zip((*wsfeat.weights, *wsfeat.biases), (*res.weights, *res.biases))):
            if x.shape != r.shape:
                raise ValueError(
                    f"ResBlock: the residual branch maps array {i} of shape {tuple(x.shape)} to "
                    f"{tuple(r.shape)}; the base layer must keep the channel count (in_channels == out_channels)."
                )
        return wsfeat + res


class LearnedScale(nn.Module):
    """Multiplies each weight array and each bias array by its own learned scalar.

    Args:
        network_spec: the weight space.
        init_scale: initial value of every scale.
    """

    def __init__(self, network_spec: NetworkSpec, init_scale: float = 1.0) -> None:
        super().__init__()
        self.network_spec = network_spec
        self.init_scale = init_scale
        self.weight_scales = nn.Parameter(torch.empty(len(network_spec)))
        self.bias_scales = nn.Parameter(torch.empty(len(network_spec)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight_scales.fill_(self.init_scale)
        self.bias_scales.fill_(self.init_scale)

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        self.network_spec.check_features(wsfeat, where="LearnedScale")
        return WeightSpaceFeatures(
            tuple(w * s for w, s in zip(wsfeat.weights, self.weight_scales)),
            tuple(b * s for b, s in zip(wsfeat.biases, self.bias_scales)),
        )

    def extra_repr(self) -> str:
        return f"num_layers={len(self.network_spec)}, init_scale={self.init_scale}"


class StatFeaturizer(nn.Module):
    """Per-array statistics (the StatNN baseline): NP-invariant features of a network.

    For each array ``W(1), b(1), W(2), b(2), ...`` and each channel: mean, variance (over all
    entries, filter positions included) and the 0, 25, 50, 75 and 100 % quantiles.

    Args:
        network_spec: if given, inputs are checked against it.

    Shapes: features ``(B, C, ...)`` -> ``(B, C, 7 * 2L)``, ordered per array then statistic;
    ``get_num_outs(network_spec) == 14 L`` is the size of the last axis.
    """

    NUM_STATS = 7
    QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)

    def __init__(self, network_spec: NetworkSpec | None = None) -> None:
        super().__init__()
        self.network_spec = network_spec

    def forward(self, wsfeat: WeightSpaceFeatures) -> Tensor:
        if self.network_spec is not None:
            self.network_spec.check_features(wsfeat, where="StatFeaturizer")
        stats = [self._stats(x) for w, b in wsfeat for x in (w, b)]
        return torch.cat(stats, dim=-1)

    def _stats(self, x: Tensor) -> Tensor:
        """``(B, C, ...)`` -> ``(B, C, 7)``."""
        x = x.flatten(start_dim=2)  # (B, C, N)
        q = torch.tensor(self.QUANTILES, dtype=x.dtype, device=x.device)
        quantiles = torch.quantile(x, q, dim=-1)  # (5, B, C)
        # Population variance: defined for one-entry arrays (e.g. the bias of a 1-output net).
        var = x.var(dim=-1, correction=0)
        return torch.stack([x.mean(dim=-1), var, *quantiles], dim=-1)

    @classmethod
    def get_num_outs(cls, network_spec: NetworkSpec) -> int:
        """Size of the output's last axis: 7 statistics for each of the ``2L`` arrays."""
        return 2 * len(network_spec) * cls.NUM_STATS


def _array_shapes(network_spec: NetworkSpec, where: str) -> list[tuple[int, ...]]:
    """Shapes ``W(1), b(1), W(2), b(2), ...``; raises if any size is free."""
    shapes = []
    for i, (w, b) in enumerate(zip(network_spec.weight_spec, network_spec.bias_spec)):
        if -1 in w.shape or -1 in b.shape:
            raise ValueError(
                f"{where}: layer {i} has a free size (-1) in network_spec, but flattening needs every size; "
                "build the spec with network_spec_from_wsfeat(wsfeat, set_all_dims=True)."
            )
        shapes += [w.shape, b.shape]
    return shapes


class FlattenWeights(nn.Module):
    """All entries of each network as a token sequence: features ``(B, C, ...)`` -> ``(B, N_params, C)``.

    Tokens are ordered ``W(1), b(1), W(2), b(2), ...``, each array row-major (a convolution's
    filter positions are separate tokens), as :meth:`WeightSpaceFeatures.flatten`.
    :class:`UnflattenWeights` is the exact inverse.

    Args:
        network_spec: the weight space, with every size set
            (``network_spec_from_wsfeat(wsfeat, set_all_dims=True)``).
    """

    def __init__(self, network_spec: NetworkSpec) -> None:
        super().__init__()
        self.network_spec = network_spec
        self.num_params = sum(math.prod(s) for s in _array_shapes(network_spec, "FlattenWeights"))

    def forward(self, wsfeat: WeightSpaceFeatures) -> Tensor:
        self.network_spec.check_features(wsfeat, where="FlattenWeights")
        return wsfeat.flatten().transpose(1, 2)  # (B, C, N) -> (B, N, C)

    def extra_repr(self) -> str:
        return f"num_params={self.num_params}"


class UnflattenWeights(nn.Module):
    """Inverse of :class:`FlattenWeights`: ``(B, N_params, C)`` -> features ``(B, C, ...)``.

    Args:
        network_spec: the weight space, with every size set.
    """

    def __init__(self, network_spec: NetworkSpec) -> None:
        super().__init__()
        self.network_spec = network_spec
        self._shapes = _array_shapes(network_spec, "UnflattenWeights")
        self.num_params = sum(math.prod(s) for s in self._shapes)

    def forward(self, x: Tensor) -> WeightSpaceFeatures:
        if x.dim() != 3 or x.shape[1] != self.num_params:
            raise ValueError(
                f"UnflattenWeights: expected tokens (B, {self.num_params}, C), got shape {tuple(x.shape)}."
            )
        batch, _, channels = x.shape
        parts = x.transpose(1, 2).split([math.prod(s) for s in self._shapes], dim=-1)  # each (B, C, n)
        arrays = [p.reshape(batch, channels, *s) for p, s in zip(parts, self._shapes)]
        return WeightSpaceFeatures(arrays[0::2], arrays[1::2])

    def extra_repr(self) -> str:
        return f"num_params={self.num_params}"
