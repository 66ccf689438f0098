"""The paper's NFNs, built from either library's layers (Zhou et al. 2023, reference repo ``experiments/``).

Each builder takes a library's layer namespace (see :mod:`benchmarks._libraries`) and the
network spec of the input weights, so the reference and nfn-lab get the same architecture
from the same code. The configurations follow the reference repository's YAML files:

- :func:`predict_gen_hnp`: ``predict_gen_configs/nfnet/hnp_inv.yaml`` (HNP layers, channels
  16, 16, 5, HNPPool, MLP head 1000-1000-1 with a sigmoid);
- :func:`predict_gen_np`: ``np_inv.yaml``, the same with ``NPLinear(io_embed=True)``
  ("NP-PosEmb"); the head still pools with HNPPool (``head_cls/mlp.yaml``);
- :func:`edit_hnp`: ``stylize_configs/nfnet/equiv.yaml`` (Gaussian Fourier features of
  128 frequencies at scale 3, HNP layers of 128 channels, three hidden, a 1-channel output
  layer and ``LearnedScale(0.01)``);
- :func:`edit_np`: ``equiv_io.yaml``, the same with NP layers and sinusoidal IO encoding;
- :func:`classify_np512`: ``classify_siren_configs/nfnet/inv_ff_io_mnist.yaml`` (Fourier
  features at scale 3, sinusoidal IO encoding, three NP layers of 512 channels with
  channel dropout 0.1, HNPPool, MLP head 1000-1000-10 with dropout 0.1).

The reference's optional input normalization (``normalize: true`` in ``np_inv.yaml``) is a
per-entry affine map applied before the network; it is left out on both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from types import SimpleNamespace
from typing import Any

from torch import nn

# (network_spec, in_channels, out_channels) -> an equivariant NF-layer.
LayerFactory = Callable[[Any, int, int], nn.Module]


def _encoders(
    layers: SimpleNamespace, spec: Any, fourier_scale: float | None, sinusoidal: tuple[float, int] | None
) -> tuple[list[nn.Module], int]:
    """Input encoders of a 1-channel weight space: Fourier features (128 frequencies), then IO encoding.

    Returns the modules and the channel count they produce.
    """
    modules: list[nn.Module] = []
    channels = 1
    if fourier_scale is not None:
        fourier = layers.GaussianFourierFeatureTransform(spec, channels, mapping_size=128, scale=fourier_scale)
        modules.append(fourier)
        channels = fourier.out_channels
    if sinusoidal is not None:
        max_freq, num_bands = sinusoidal
        encoding = layers.IOSinusoidalEncoding(spec, max_freq=max_freq, num_bands=num_bands, enc_layers=False)
        modules.append(encoding)
        channels = encoding.num_out_chan(channels)
    return modules, channels


def _mlp_head(
    layers: SimpleNamespace, spec: Any, channels: int, num_out: int, dropout: float, sigmoid: bool
) -> nn.Sequential:
    """HNPPool, flatten, ``Linear(-, 1000)``, ReLU, ``Linear(1000, 1000)``, ReLU, ``Linear(1000, num_out)``."""
    drop = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(
        layers.HNPPool(spec),
        nn.Flatten(start_dim=-2),  # (B, C, num_outs) -> (B, C * num_outs)
        nn.Linear(channels * layers.HNPPool.get_num_outs(spec), 1000),
        nn.ReLU(),
        *drop,
        nn.Linear(1000, 1000),
        nn.ReLU(),
        *drop,
        nn.Linear(1000, num_out),
        *([nn.Sigmoid()] if sigmoid else []),
    )


def _invariant_nfn(
    layers: SimpleNamespace,
    spec: Any,
    layer: LayerFactory,
    hchannels: Sequence[int],
    head: dict[str, Any],
    fourier_scale: float | None = None,
    sinusoidal: tuple[float, int] | None = None,
    feature_dropout: float = 0.0,
) -> nn.Sequential:
    """The reference's ``InvariantNFN``: encoders, (NF-layer, ReLU, dropout) per entry of ``hchannels``, MLP head."""
    modules, channels = _encoders(layers, spec, fourier_scale, sinusoidal)
    for out_channels in hchannels:
        modules += [layer(spec, channels, out_channels), layers.TupleOp(nn.ReLU())]
        if feature_dropout > 0:
            modules.append(layers.ChannelDropout(feature_dropout))
        channels = out_channels
    return nn.Sequential(*modules, _mlp_head(layers, spec, channels, **head))


def _transfer_net(
    layers: SimpleNamespace,
    spec: Any,
    layer: LayerFactory,
    hidden_chan: int,
    hidden_layers: int,
    fourier_scale: float,
    sinusoidal: tuple[float, int] | None = None,
) -> nn.Sequential:
    """The reference's ``TransferNet`` (INR editing): encoders, ``hidden_layers`` NF-layers with ReLU,
    a 1-channel NF-layer and ``LearnedScale(0.01)``; features in, features out."""
    modules, channels = _encoders(layers, spec, fourier_scale, sinusoidal)
    for _ in range(hidden_layers):
        modules += [layer(spec, channels, hidden_chan), layers.TupleOp(nn.ReLU())]
        channels = hidden_chan
    return nn.Sequential(*modules, layer(spec, channels, 1), layers.LearnedScale(spec, 0.01))


def predict_gen_hnp(layers: SimpleNamespace, spec: Any) -> nn.Module:
    """Generalization prediction, HNP (``hnp_inv.yaml``): 1-channel weights -> ``(B, 1)`` in (0, 1)."""
    head = {"num_out": 1, "dropout": 0.0, "sigmoid": True}
    return _invariant_nfn(layers, spec, layers.HNPLinear, (16, 16, 5), head)


def predict_gen_np(layers: SimpleNamespace, spec: Any) -> nn.Module:
    """Generalization prediction, NP with learned IO embeddings (``np_inv.yaml``)."""
    head = {"num_out": 1, "dropout": 0.0, "sigmoid": True}
    return _invariant_nfn(layers, spec, partial(layers.NPLinear, io_embed=True), (16, 16, 5), head)


def edit_hnp(layers: SimpleNamespace, spec: Any) -> nn.Module:
    """INR editing, HNP (``stylize_configs/nfnet/equiv.yaml``): weights -> 1-channel weight deltas."""
    return _transfer_net(layers, spec, layers.HNPLinear, hidden_chan=128, hidden_layers=3, fourier_scale=3)


def edit_np(layers: SimpleNamespace, spec: Any) -> nn.Module:
    """INR editing, NP with sinusoidal IO encoding (``equiv_io.yaml``)."""
    return _transfer_net(
        layers, spec, layers.NPLinear, hidden_chan=128, hidden_layers=3, fourier_scale=3, sinusoidal=(3, 3)
    )


def classify_np512(layers: SimpleNamespace, spec: Any) -> nn.Module:
    """INR classification, NP with 512 channels (``inv_ff_io_mnist.yaml``): weights -> ``(B, 10)`` logits."""
    head = {"num_out": 10, "dropout": 0.1, "sigmoid": False}
    return _invariant_nfn(
        layers,
        spec,
        layers.NPLinear,
        (512, 512, 512),
        head,
        fourier_scale=3,
        sinusoidal=(3, 3),
        feature_dropout=0.1,
    )
