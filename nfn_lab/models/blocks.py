"""Building blocks shared by the backbones: layer choice by mode, input encodings, MLP heads,
and input normalization stored with the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from nfn_lab.data.stats import WeightStats
from nfn_lab.layers import (
    GaussianFourierFeatureTransform,
    HNPLinear,
    IOSinusoidalEncoding,
    NPLinear,
    ParamLayerNorm,
    Pointwise,
    SimpleLayerNorm,
)
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = [
    "Backbone",
    "IOEncoding",
    "InputNormalization",
    "Mode",
    "equivariant_layer",
    "input_encoding",
    "layer_norm",
    "mlp",
]

Mode = Literal["HNP", "NP", "NP-PosEmb", "PT"]
LayerNormKind = Literal["simple", "param"]
InputEncoding = Literal["gaussian", "pointwise"]


@dataclass(frozen=True)
class IOEncoding:
    """Options of the sinusoidal input/output neuron codes (:class:`~nfn_lab.layers.IOSinusoidalEncoding`).

    A backbone's ``io_encoding: true`` uses these defaults (the reference's); in a config,
    ``io_encoding: {max_freq: 8, num_bands: 4}`` sets them.

    Attributes:
        max_freq: the highest frequency of the codes.
        num_bands: frequencies per code (each gives a sine and a cosine channel).
        enc_layers: also code which layer an entry belongs to.
    """

    max_freq: float = 10
    num_bands: int = 6
    enc_layers: bool = True


def equivariant_layer(mode: Mode, network_spec: NetworkSpec, in_channels: int, out_channels: int) -> nn.Module:
    """The linear NF-layer of a mode: HNP, NP, NP with learned io embeddings, or pointwise."""
    if mode == "HNP":
        return HNPLinear(network_spec, in_channels, out_channels)
    if mode == "NP":
        return NPLinear(network_spec, in_channels, out_channels)
    if mode == "NP-PosEmb":
        return NPLinear(network_spec, in_channels, out_channels, io_embed=True)
    if mode == "PT":
        return Pointwise(network_spec, in_channels, out_channels)
    raise ValueError(f"unknown mode {mode!r}; use one of 'HNP', 'NP', 'NP-PosEmb', 'PT'.")


def layer_norm(kind: LayerNormKind | None, network_spec: NetworkSpec, channels: int) -> nn.Module | None:
    """SimpleLayerNorm (NP-equivariant) or ParamLayerNorm (HNP), or None."""
    if kind is None:
        return None
    if kind == "simple":
        return SimpleLayerNorm(network_spec, channels)
    if kind == "param":
        return ParamLayerNorm(network_spec, channels)
    raise ValueError(f"unknown layer norm {kind!r}; use 'simple', 'param' or null.")


def input_encoding(
    kind: InputEncoding | None,
    io_encoding: bool | IOEncoding,
    network_spec: NetworkSpec,
    in_channels: int,
    channels: int,
    fourier_features: int = 256,
    fourier_scale: float = 10.0,
) -> tuple[list[nn.Module], int]:
    """Layers that lift raw weights to richer per-entry features, and the channels they output.

    ``gaussian``: ``fourier_features`` random Fourier features (frequencies of scale
    ``fourier_scale``) of each entry, giving ``2 * fourier_features`` channels; ``pointwise``:
    a learned per-entry linear map to ``channels``; ``io_encoding``: sinusoidal codes of the
    input/output neurons (``True``: with :class:`IOEncoding`'s defaults).
    """
    layers: list[nn.Module] = []
    if kind == "gaussian":
        enc = GaussianFourierFeatureTransform(network_spec, in_channels, fourier_features, fourier_scale)
        layers.append(enc)
        in_channels = enc.out_channels
    elif kind == "pointwise":
        layers.append(Pointwise(network_spec, in_channels, channels))
        in_channels = channels
    elif kind is not None:
        raise ValueError(f"unknown input encoding {kind!r}; use 'gaussian', 'pointwise' or null.")
    if io_encoding:
        options = io_encoding if isinstance(io_encoding, IOEncoding) else IOEncoding()
        pos = IOSinusoidalEncoding(network_spec, **asdict(options))
        layers.append(pos)
        in_channels = pos.num_out_chan(in_channels)
    return layers, in_channels


def mlp(
    in_features: int,
    hidden: int,
    num_hidden: int,
    out_features: int,
    dropout: float = 0.0,
    sigmoid: bool = False,
) -> nn.Sequential:
    """``Linear -> ReLU (-> Dropout)`` repeated ``num_hidden`` times, then ``Linear`` (``-> Sigmoid``)."""
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(num_hidden):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, out_features))
    if sigmoid:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


class InputNormalization(nn.Module):
    """Standardizes each array per channel with statistics stored as buffers (saved in checkpoints).

    Set the statistics once with :meth:`set_stats` (tasks do it from the DataModule's training
    split); until then the layer refuses to run, so an unnormalized model never trains silently.
    """

    weight_mean: Tensor  # (L, C): one row per layer
    weight_std: Tensor
    bias_mean: Tensor
    bias_std: Tensor
    initialized: Tensor  # () bool

    def __init__(self, network_spec: NetworkSpec, in_channels: int = 1) -> None:
        super().__init__()
        self.num_layers = len(network_spec)
        for kind in ("weight", "bias"):
            for stat, fill in (("mean", 0.0), ("std", 1.0)):
                self.register_buffer(f"{kind}_{stat}", torch.full((self.num_layers, in_channels), fill))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def set_stats(self, stats: WeightStats) -> None:
        if len(stats.weight_mean) != self.num_layers:
            raise ValueError(f"statistics cover {len(stats.weight_mean)} layers, the model {self.num_layers}.")
        self.weight_mean.copy_(torch.stack(stats.weight_mean))
        self.weight_std.copy_(torch.stack(stats.weight_std))
        self.bias_mean.copy_(torch.stack(stats.bias_mean))
        self.bias_std.copy_(torch.stack(stats.bias_std))
        self.initialized.fill_(True)

    @staticmethod
    def _standardize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - mean.view(shape)) / std.view(shape)

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        if not bool(self.initialized):
            raise RuntimeError(
                "InputNormalization has no statistics: call set_stats(datamodule.compute_weight_stats()) "
                "(the tasks do this in setup), or build the model with normalize=False."
            )
        return WeightSpaceFeatures(
            [self._standardize(w, m, s) for w, m, s in zip(wsfeat.weights, self.weight_mean, self.weight_std)],
            [self._standardize(b, m, s) for b, m, s in zip(wsfeat.biases, self.bias_mean, self.bias_std)],
        )


class Backbone(nn.Module):
    """Base of the backbones: holds ``network_spec`` and the optional input normalization.

    Args:
        network_spec: the weight space of the input networks.
        normalize: standardize inputs with statistics set by :meth:`set_input_stats`.
        in_channels: channels of the input features (1 for raw weights).
    """

    def __init__(self, network_spec: NetworkSpec, normalize: bool = False, in_channels: int = 1) -> None:
        super().__init__()
        self.network_spec = network_spec
        self.input_norm = InputNormalization(network_spec, in_channels) if normalize else None

    def set_input_stats(self, stats: WeightStats) -> None:
        """Stores the training split's weight statistics (no-op without ``normalize``)."""
        if self.input_norm is not None:
            self.input_norm.set_stats(stats)

    def prepare(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        """Checks the input against ``network_spec`` and normalizes it if configured."""
        self.network_spec.check_features(wsfeat, where=type(self).__name__)
        return wsfeat if self.input_norm is None else self.input_norm(wsfeat)
