"""Encodings of entries and positions: Fourier features of values, sinusoidal and learned position codes.

:class:`GaussianFourierFeatureTransform` encodes each entry's channel vector and is
NP-equivariant. :class:`IOSinusoidalEncoding` and :class:`LearnedPosEmbedding` tell the
next layers which layer an entry belongs to and, on the first and last layers, which input
or output neuron: they break the NP symmetry down to HNP (what ``io_embed`` does for NPLinear).
Both use one position code per array, built by :func:`_position_codes`:

    weights[i]: layer code[i]  (+ input code[col] if i == 0)  (+ output code[row] if i == L-1)
    biases[i]:  layer code[i]  (+ output code[row] if i == L-1)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from nfn_lab._fast_math import cos_and_sin_
from nfn_lab.layers import gemm
from nfn_lab.layers.custom_ops import define, empty_grad, grads_or_none, without_autocast
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["GaussianFourierFeatureTransform", "IOSinusoidalEncoding", "LearnedPosEmbedding", "fourier_encode"]


class GaussianFourierFeatureTransform(nn.Module):
    """Random Fourier features of every entry's channel vector (Tancik et al., 2020).

    ``y = [sin(2 pi x P), cos(2 pi x P)]`` with a fixed projection ``P ~ N(0, scale^2)`` of
    shape ``(in_channels, mapping_size)``, stored as a buffer (saved, moved by ``.to()``).

    Args:
        network_spec: the weight space.
        in_channels: ``C_in``.
        mapping_size: number of frequencies; the output has ``out_channels = 2 * mapping_size``.
        scale: standard deviation of the frequencies.

    Shapes: ``(B, C_in, ...) -> (B, 2 * mapping_size, ...)`` for every array.
    """

    def __init__(self, network_spec: NetworkSpec, in_channels: int, mapping_size: int = 256, scale: float = 10) -> None:
        super().__init__()
        self.network_spec = network_spec
        self.in_channels = in_channels
        self.mapping_size = mapping_size
        self.out_channels = 2 * mapping_size
        self.scale = scale
        self.register_buffer("projection", torch.randn(in_channels, mapping_size) * scale)

    projection: Tensor  # a buffer

    def _encode(self, x: Tensor) -> Tensor:
        """``(B, C_in, ...)`` -> ``(B, 2 * mapping_size, ...)``, contiguous."""
        x, projection = gemm.in_autocast_dtype(x, self.projection)
        return _fourier_features(x, (2 * math.pi) * projection)

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        self.network_spec.check_features(wsfeat, self.in_channels, where="GaussianFourierFeatureTransform")
        return wsfeat.map(self._encode)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, mapping_size={self.mapping_size}, scale={self.scale}"


def _phases(x: Tensor, angular: Tensor) -> Tensor:
    """``sum_c x[b, c, ...] * angular[c, m]``: ``(B, C_in, ...)`` and ``(C_in, M)`` -> ``(B, M, ...)``."""
    return torch.einsum("bc...,cm->bm...", x, angular)


@define("fourier_features")
@without_autocast
def _fourier_features(x: Tensor, angular: Tensor) -> Tensor:
    """``[sin(z), cos(z)]`` of the phases ``z = x . angular``: ``(B, C_in, ...)``, ``(C_in, M)`` ->
    ``(B, 2M, ...)``.

    The phases are written into the output's sine half and turned into cosines (the other half)
    and sines there (:func:`~nfn_lab._fast_math.cos_and_sin_`): one array of the output's size is
    allocated, not three (phases, scaled phases, output). On large inputs (e.g. the hidden weights
    of a SIREN batch) each fresh array costs as much in page faults as in arithmetic.
    """
    m = angular.shape[1]
    out = x.new_empty((x.shape[0], 2 * m, *x.shape[2:]))
    phases = out[:, :m]  # (B, M, ...)
    if angular.shape[0] == 1:  # an outer product: one broadcast multiply
        torch.mul(x, angular.view(1, m, *(1,) * (x.dim() - 2)), out=phases)
    else:
        phases.copy_(_phases(x, angular))
    cos_and_sin_(phases, out[:, m:])
    return out


@_fourier_features.register_fake
def _(x: Tensor, angular: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], 2 * angular.shape[1], *x.shape[2:]))


@define("fourier_features_backward")
@without_autocast
def _fourier_features_backward(
    grad: Tensor, x: Tensor, angular: Tensor, out: Tensor, needs_x: bool, needs_angular: bool
) -> tuple[Tensor, Tensor]:
    """Gradients for ``x`` and ``angular`` from the output's: ``d sin(z) = cos(z) dz``,
    ``d cos(z) = -sin(z) dz``, with ``sin(z)`` and ``cos(z)`` read from the output."""
    m = angular.shape[1]
    grad_z = grad[:, :m] * out[:, m:] - grad[:, m:] * out[:, :m]  # (B, M, ...)
    grad_x = torch.einsum("bm...,cm->bc...", grad_z, angular) if needs_x else empty_grad(grad)
    grad_angular = torch.einsum("bc...,bm...->cm", x, grad_z) if needs_angular else empty_grad(grad)
    return grad_x, grad_angular


@_fourier_features_backward.register_fake
def _(
    grad: Tensor, x: Tensor, angular: Tensor, out: Tensor, needs_x: bool, needs_angular: bool
) -> tuple[Tensor, Tensor]:
    return (
        x.new_empty(x.shape) if needs_x else empty_grad(grad),
        angular.new_empty(angular.shape) if needs_angular else empty_grad(grad),
    )


def _fourier_setup_context(ctx: Any, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
    ctx.save_for_backward(*inputs, output)


def _fourier_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, angular, out = ctx.saved_tensors
    grads = _fourier_features_backward(grad.to(out.dtype), x, angular, out, *ctx.needs_input_grad)
    return tuple(grads_or_none(grads, ctx.needs_input_grad))


_fourier_features.register_autograd(_fourier_backward, setup_context=_fourier_setup_context)


def fourier_encode(x: Tensor, max_freq: float, num_bands: int = 4) -> Tensor:
    """Sinusoidal code of positions ``x`` in ``[-1, 1]``: ``(...,)`` -> ``(..., 2 * num_bands + 1)``.

    ``[sin(pi f x), cos(pi f x), x]`` for ``num_bands`` frequencies ``f`` evenly spaced in
    ``[1, max_freq / 2]``.
    """
    freqs = torch.linspace(1.0, max_freq / 2, num_bands, device=x.device, dtype=x.dtype)
    z = math.pi * x.unsqueeze(-1) * freqs  # (..., num_bands)
    return torch.cat([z.sin(), z.cos(), x.unsqueeze(-1)], dim=-1)


def _io_sizes(network_spec: NetworkSpec, where: str) -> tuple[int, int]:
    n_in, n_out = network_spec.get_io()
    if -1 in (n_in, n_out):
        raise ValueError(
            f"{where} needs the network's input and output sizes, but network_spec leaves them free; "
            "build it with network_spec_from_wsfeat."
        )
    return n_in, n_out


def _position_codes(
    network_spec: NetworkSpec, weight_layer: Tensor, bias_layer: Tensor, inputs: Tensor, outputs: Tensor
) -> tuple[list[Tensor], list[Tensor]]:
    """Per-array position codes, broadcastable against the features.

    Args:
        weight_layer, bias_layer: ``(L, D)`` codes of the layer index for weights and biases.
        inputs: ``(n_in, D)`` codes of the input neurons.
        outputs: ``(n_out, D)`` codes of the output neurons.

    Returns:
        ``(weight_codes, bias_codes)``: ``(1, D, n_out or 1, n_in or 1, *1s)`` and ``(1, D, n_out or 1)``.
    """
    last = len(network_spec) - 1
    weight_codes, bias_codes = [], []
    for i, filter_shape in enumerate(network_spec.filter_shapes):
        ones = (1,) * len(filter_shape)
        w = weight_layer[i].reshape(1, -1, 1, 1, *ones)
        b = bias_layer[i].reshape(1, -1, 1)
        if i == 0:
            w = w + inputs.T.reshape(1, -1, 1, inputs.shape[0], *ones)
        if i == last:
            w = w + outputs.T.reshape(1, -1, outputs.shape[0], 1, *ones)
            b = b + outputs.T.unsqueeze(0)
        weight_codes.append(w)
        bias_codes.append(b)
    return weight_codes, bias_codes


class IOSinusoidalEncoding(nn.Module):
    """Appends sinusoidal position channels: layer index, and input/output neuron index on the
    first/last layer (see the module docstring for which array gets which code).

    Positions are spaced evenly in ``[-1, 1]`` and encoded by :func:`fourier_encode`, giving
    ``D = 2 * num_bands + 1`` channels; the codes that apply to an array are summed.
    HNP-equivariant, not NP-equivariant.

    Args:
        network_spec: the weight space; the input and output sizes must be set.
        max_freq: highest frequency is ``max_freq / 2``.
        num_bands: number of frequencies.
        enc_layers: whether to include the layer-index code (otherwise zero).

    Shapes: ``(B, C, ...) -> (B, C + D, ...)``; ``num_out_chan(C) == C + D``.
    """

    def __init__(
        self, network_spec: NetworkSpec, max_freq: float = 10, num_bands: int = 6, enc_layers: bool = True
    ) -> None:
        super().__init__()
        self.network_spec = network_spec
        self.max_freq = max_freq
        self.num_bands = num_bands
        self.enc_layers = enc_layers
        self.n_in, self.n_out = _io_sizes(network_spec, "IOSinusoidalEncoding")

    @property
    def code_channels(self) -> int:
        """``D = 2 * num_bands + 1``."""
        return 2 * self.num_bands + 1

    def num_out_chan(self, in_chan: int) -> int:
        """Output channel count for ``in_chan`` input channels."""
        return in_chan + self.code_channels

    def _encode_positions(self, n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``(n, D)`` codes of ``n`` positions spaced evenly in ``[-1, 1]``."""
        positions = torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)
        return fourier_encode(positions, self.max_freq, self.num_bands)

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        self.network_spec.check_features(wsfeat, where="IOSinusoidalEncoding")
        device, dtype = wsfeat.device, wsfeat.dtype
        num_layers = len(self.network_spec)
        if self.enc_layers:
            layer = self._encode_positions(num_layers, device, dtype)
        else:
            layer = torch.zeros(num_layers, self.code_channels, device=device, dtype=dtype)
        inputs = self._encode_positions(self.n_in, device, dtype)
        outputs = self._encode_positions(self.n_out, device, dtype)
        weight_codes, bias_codes = _position_codes(self.network_spec, layer, layer, inputs, outputs)

        def append(x: Tensor, code: Tensor) -> Tensor:
            return torch.cat([x, code.expand(x.shape[0], -1, *x.shape[2:])], dim=1)

        return WeightSpaceFeatures(
            tuple(append(w, c) for w, c in zip(wsfeat.weights, weight_codes)),
            tuple(append(b, c) for b, c in zip(wsfeat.biases, bias_codes)),
        )

    def extra_repr(self) -> str:
        return f"max_freq={self.max_freq}, num_bands={self.num_bands}, enc_layers={self.enc_layers}"


class LearnedPosEmbedding(nn.Module):
    """Adds learned embeddings of the layer index (one for weights, one for biases), the input
    neuron index (first weight) and the output neuron index (last weight and bias).

    HNP-equivariant, not NP-equivariant.

    Args:
        network_spec: the weight space; the input and output sizes must be set.
        channels: ``C``.

    Shapes: ``(B, C, ...) -> (B, C, ...)``.
    """

    def __init__(self, network_spec: NetworkSpec, channels: int) -> None:
        super().__init__()
        self.network_spec = network_spec
        self.channels = channels
        n_in, n_out = _io_sizes(network_spec, "LearnedPosEmbedding")
        self.weight_emb = nn.Parameter(torch.empty(len(network_spec), channels))
        self.bias_emb = nn.Parameter(torch.empty(len(network_spec), channels))
        self.inp_emb = nn.Parameter(torch.empty(n_in, channels))
        self.out_emb = nn.Parameter(torch.empty(n_out, channels))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Standard normal, as ``nn.Embedding``."""
        for p in (self.weight_emb, self.bias_emb, self.inp_emb, self.out_emb):
            p.normal_()

    def forward(self, wsfeat: WeightSpaceFeatures) -> WeightSpaceFeatures:
        self.network_spec.check_features(wsfeat, self.channels, where="LearnedPosEmbedding")
        weight_codes, bias_codes = _position_codes(
            self.network_spec, self.weight_emb, self.bias_emb, self.inp_emb, self.out_emb
        )
        return WeightSpaceFeatures(
            tuple(w + c for w, c in zip(wsfeat.weights, weight_codes)),
            tuple(b + c for b, c in zip(wsfeat.biases, bias_codes)),
        )

    def extra_repr(self) -> str:
        n_in, n_out = self.network_spec.get_io()
        return f"channels={self.channels}, num_layers={len(self.network_spec)}, n_in={n_in}, n_out={n_out}"
