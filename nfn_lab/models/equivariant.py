"""EquivariantNFN: maps a network's weights to a weight-space output of the same shape (e.g. INR editing)."""

from __future__ import annotations

from torch import nn

from nfn_lab.layers import LearnedScale, ResBlock, TupleOp
from nfn_lab.models import blocks
from nfn_lab.models.blocks import Backbone, InputEncoding, IOEncoding, LayerNormKind, Mode, equivariant_layer
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["EquivariantNFN"]


class EquivariantNFN(Backbone):
    """``[encoding] -> NF-layer -> ReLU -> residual blocks -> NF-layer -> LearnedScale``.

    The output is a weight-space *update*; an editing task adds it to the input. A small
    ``out_scale`` starts training near the identity edit.

    Args:
        network_spec: the weight space.
        hidden_channels: channels of the hidden NF-layers (the paper: 128).
        hidden_layers: number of hidden NF-layers (the first plus ``hidden_layers - 1`` residual blocks).
        mode: ``"HNP"``, ``"NP"``, ``"NP-PosEmb"`` or ``"PT"`` (pointwise baseline).
        out_channels: channels of the output (1 for an edited network).
        out_scale: initial value of the output's learned per-array scales.
        layer_norm: ``"simple"``, ``"param"`` or None inside the residual blocks.
        dropout: dropout on the residual branches.
        input_encoding: ``"gaussian"`` (the paper), ``"pointwise"`` or None.
        fourier_features, fourier_scale: size and frequency scale of the ``"gaussian"`` encoding.
        io_encoding: append sinusoidal input/output neuron codes; ``True`` or an
            :class:`~nfn_lab.models.blocks.IOEncoding` with its frequencies.
        normalize: standardize inputs with stored statistics.
        in_channels: channels of the input features.

    Shapes: ``(B, in_channels, ...) -> (B, out_channels, ...)`` of the same network.
    """

    def __init__(
        self,
        network_spec: NetworkSpec,
        hidden_channels: int = 128,
        hidden_layers: int = 3,
        mode: Mode = "HNP",
        out_channels: int = 1,
        out_scale: float = 0.01,
        layer_norm: LayerNormKind | None = None,
        dropout: float = 0.0,
        input_encoding: InputEncoding | None = "gaussian",
        io_encoding: bool | IOEncoding = False,
        fourier_features: int = 256,
        fourier_scale: float = 10.0,
        normalize: bool = False,
        in_channels: int = 1,
    ) -> None:
        super().__init__(network_spec, normalize, in_channels)
        if hidden_layers < 1:
            raise ValueError(f"hidden_layers must be at least 1, got {hidden_layers}.")
        layers, channels = blocks.input_encoding(
            input_encoding, io_encoding, network_spec, in_channels, hidden_channels, fourier_features, fourier_scale
        )
        layers += [equivariant_layer(mode, network_spec, channels, hidden_channels), TupleOp(nn.ReLU())]
        for _ in range(hidden_layers - 1):
            layers.append(
                ResBlock(
                    equivariant_layer(mode, network_spec, hidden_channels, hidden_channels),
                    TupleOp(nn.ReLU()),
                    dropout,
                    blocks.layer_norm(layer_norm, network_spec, hidden_channels),
                )
            )
        layers += [
            equivariant_layer(mode, network_spec, hidden_channels, out_channels),
            LearnedScale(network_spec, out_scale),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        return self.net(self.prepare(wsfeat))
