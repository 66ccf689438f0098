"""InvariantNFN: equivariant NF-layers, invariant pooling, MLP head (e.g. predict generalization)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from nfn_lab.layers import ChannelDropout, HNPPool, NPPool, StatFeaturizer, TupleOp
from nfn_lab.models import blocks
from nfn_lab.models.blocks import Backbone, InputEncoding, IOEncoding, LayerNormKind, Mode, equivariant_layer, mlp
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["InvariantNFN"]


class InvariantNFN(Backbone):
    """A permutation-invariant network on weights: ``[encoding] -> (NF-layer, [norm], ReLU)* -> pool -> MLP``.

    Args:
        network_spec: the weight space of the input networks.
        hidden_channels: channels of each NF-layer (the paper: ``[16, 16, 5]``).
        mode: ``"HNP"``, ``"NP"``, ``"NP-PosEmb"`` (NP with learned input/output embeddings) or ``"PT"``.
        pool: ``"HNP"`` or ``"NP"`` invariant pooling (default: ``"NP"`` for mode NP, else ``"HNP"``).
        head_hidden: width of the MLP head's hidden layers.
        head_layers: number of hidden layers of the head.
        out_features: outputs (1 for a scalar prediction, the class count for classification).
        dropout: dropout in the head.
        feature_dropout: channel dropout after each NF-layer.
        layer_norm: ``"simple"``, ``"param"`` or None, after each NF-layer.
        input_encoding: ``"gaussian"``, ``"pointwise"`` or None, before the first NF-layer.
        fourier_features, fourier_scale: size and frequency scale of the ``"gaussian"`` encoding.
        io_encoding: append sinusoidal codes of the input/output neurons (NP with io position
            encoding): ``True``, or an :class:`~nfn_lab.models.blocks.IOEncoding` with its frequencies.
        append_stats: concatenate StatFeaturizer's statistics to the pooled features.
        sigmoid: squash the output into (0, 1) (e.g. for accuracies).
        normalize: standardize inputs (see :class:`~nfn_lab.models.blocks.InputNormalization`).
        in_channels: channels of the input features.

    Shapes: features ``(B, in_channels, ...)`` -> ``(B, out_features)``.
    """

    def __init__(
        self,
        network_spec: NetworkSpec,
        hidden_channels: Sequence[int] = (16, 16, 5),
        mode: Mode = "HNP",
        pool: Literal["HNP", "NP"] | None = None,
        head_hidden: int = 1000,
        head_layers: int = 2,
        out_features: int = 1,
        dropout: float = 0.0,
        feature_dropout: float = 0.0,
        layer_norm: LayerNormKind | None = None,
        input_encoding: InputEncoding | None = None,
        io_encoding: bool | IOEncoding = False,
        fourier_features: int = 256,
        fourier_scale: float = 10.0,
        append_stats: bool = False,
        sigmoid: bool = False,
        normalize: bool = False,
        in_channels: int = 1,
    ) -> None:
        super().__init__(network_spec, normalize, in_channels)
        if not hidden_channels:
            raise ValueError("hidden_channels needs at least one NF-layer.")
        layers, channels = blocks.input_encoding(
            input_encoding, io_encoding, network_spec, in_channels, hidden_channels[0], fourier_features, fourier_scale
        )
        for out in hidden_channels:
            layers.append(equivariant_layer(mode, network_spec, channels, out))
            norm = blocks.layer_norm(layer_norm, network_spec, out)
            if norm is not None:
                layers.append(norm)
            layers.append(TupleOp(nn.ReLU()))
            if feature_dropout > 0:
                layers.append(ChannelDropout(feature_dropout))
            channels = out
        self.features = nn.Sequential(*layers)
        pool_cls = {"HNP": HNPPool, "NP": NPPool}[pool or ("NP" if mode == "NP" else "HNP")]
        self.pool = pool_cls(network_spec)
        self.stats = StatFeaturizer(network_spec) if append_stats else None
        pooled = channels * pool_cls.get_num_outs(network_spec)
        if append_stats:
            pooled += in_channels * StatFeaturizer.get_num_outs(network_spec)
        self.head = mlp(pooled, head_hidden, head_layers, out_features, dropout, sigmoid)

    def forward(self, wsfeat: WeightSpaceFeatures) -> Tensor:
        wsfeat = self.prepare(wsfeat)
        pooled = self.pool(self.features(wsfeat)).flatten(start_dim=1)  # (B, C * num_outs)
        if self.stats is not None:
            pooled = torch.cat([pooled, self.stats(wsfeat).flatten(start_dim=1)], dim=1)
        return self.head(pooled)
