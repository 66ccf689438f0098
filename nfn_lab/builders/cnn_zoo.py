"""A zoo of small CNNs with the Small CNN Zoo's weight shapes, trained on scikit-learn's digits.

Each network is the Small CNN Zoo's architecture (Unterthiner et al. 2020), 4,970
parameters: three ``Conv2d(16, 3x3, stride 2)`` with the network's activation and dropout,
global average pooling, ``Linear(16, 10)``. The zoo trains on the 8x8 digits bundled with
scikit-learn (no download), pixels scaled to [-1, 1], with the same 1,200 / 597 train/test
split as :func:`nfn_lab.digits.load_digits_split`; the convolutions pad by 1 so that the
8x8 input shrinks to 4x4, 2x2, 1x1 (the real zoo uses valid padding on 28x28/32x32 images).

Hyperparameters are sampled per network as in the Small CNN Zoo (:data:`SEARCH_SPACE`):
activation, weight and bias initialization, initialization scale, optimizer (SGD, Adam,
RMSProp), learning rate, L2 penalty on the kernels, dropout, and the fraction of the
training images the network sees. An epoch is one pass over the network's own training
subset in minibatches of ``batch_size``, as in Keras. Checkpoints are taken at the epochs
in ``steps`` (the ``step`` column, as in the Small CNN Zoo), each with test/train accuracy
and cross-entropy (train metrics on the network's own subset, without dropout or penalty).

Training is vectorized: a chunk of networks with the same training-set size and activation
is one batch of stacked parameters ``(N, ...)``, run as grouped convolutions over one
channels-last map holding every network's channels (:func:`grouped_forward`) and updated by
:class:`~nfn_lab.builders._optim.StackedOptimizer`,
so networks with different optimizers and learning rates train together. Chunks are saved
as they finish (see :mod:`nfn_lab.builders._resumable`); the zoo is written at the end with
:class:`datamodules.arrow_zoo.ZooWriter` (and, on request, in the Small CNN Zoo's own layout with
:class:`datamodules.small_cnn_zoo.SmallCNNZooWriter`).

Determinism: hyperparameters, initial weights and training subsets come from generators
keyed by ``(seed, network_id)``; minibatch order and dropout masks from one generator per
chunk keyed by ``(seed, chunk)``. The same configuration (including ``chunk_size``) gives
the same zoo, resumed or not.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.arrow_zoo import ZooWriter
from datamodules.small_cnn_zoo import SmallCNNZooWriter
from nfn_lab._fast_math import tanh
from nfn_lab.builders._optim import OPTIMIZERS, StackedOptimizer
from nfn_lab.builders._provenance import summarize
from nfn_lab.builders._resumable import Advance, ChunkStore, FinishedChunks, derive_seed, run_chunks
from nfn_lab.conversion import network_spec_from_module
from nfn_lab.data.arrow_container import SPLITS
from nfn_lab.data.staging import check_destination
from nfn_lab.digits import load_digits_split
from nfn_lab.weightspace import WeightSpaceFeatures

__all__ = [
    "SEARCH_SPACE",
    "TARGETS",
    "CNNZooConfig",
    "build_cnn_zoo",
    "grouped_forward",
    "init_network",
    "sample_hyperparameters",
    "small_cnn",
    "train_chunk",
]

# --- the architecture ---------------------------------------------------------------------

CHANNELS = 16
NUM_CLASSES = 10
# Per array, in PyTorch layout: conv1 W, b, conv2 W, b, conv3 W, b, dense W, b (4,970 numbers).
PARAM_SHAPES: tuple[tuple[int, ...], ...] = (
    (CHANNELS, 1, 3, 3), (CHANNELS,),
    (CHANNELS, CHANNELS, 3, 3), (CHANNELS,),
    (CHANNELS, CHANNELS, 3, 3), (CHANNELS,),
    (NUM_CLASSES, CHANNELS), (NUM_CLASSES,),
)  # fmt: skip
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def small_cnn(activation: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    """One network of the zoo as a module (load a zoo row into it with ``wsfeat_to_modules``).

    ``(B, 1, 8, 8) -> (B, 10)``: three ``[Conv2d(., 16, 3, stride=2, padding=1), activation,
    Dropout]``, ``AdaptiveAvgPool2d(1)``, ``Flatten``, ``Linear(16, 10)``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}.")
    layers: list[nn.Module] = []
    for c_in in (1, CHANNELS, CHANNELS):
        layers += [nn.Conv2d(c_in, CHANNELS, 3, stride=2, padding=1), ACTIVATIONS[activation](), nn.Dropout(dropout)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS, NUM_CLASSES)]
    return nn.Sequential(*layers)


def _shared_first_conv(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """The first convolution of all networks on the same images: ``(B, 1, S, S) -> (B, N * 16, S/2, S/2)``.

    One matrix product of the images' 3x3 patches ``(B * S/2 * S/2, 9)`` with all ``N * 16``
    kernels (``weight: (N * 16, 1, 3, 3)``), in channels-last memory; oneDNN's convolution with
    one input and many output channels is much slower (benchmarks/bench_builders.py).
    """
    side = (x.shape[-1] + 1) // 2
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2)  # (B, side * side, 9), positions row-major
    out = torch.addmm(bias, patches.reshape(-1, patches.shape[-1]), weight.flatten(1).T)  # (B * side * side, N * 16)
    return out.view(x.shape[0], side, side, -1).permute(0, 3, 1, 2)


def grouped_forward(params: Sequence[Tensor], x: Tensor, keep: Sequence[Tensor] | None, activation: str) -> Tensor:
    """Logits ``(N, B, 10)`` of ``N`` stacked networks (:func:`small_cnn`'s function), as grouped convolutions.

    Network ``n``'s activations are channels ``16n .. 16n + 15`` of one ``(B, N * 16, s, s)`` map,
    so each convolution is one ``F.conv2d`` with ``groups=N``.

    Args:
        params: the 8 arrays of :data:`PARAM_SHAPES`, stacked ``(N, *shape)``.
        x: ``(B, 1, 8, 8)``: the same images for every network (the first convolution is then
            an ordinary one with ``N * 16`` output channels), or ``(B, N, 8, 8)``: image ``b`` of
            network ``n`` in channel ``n``.
        keep: per convolution, dropout masks already scaled by ``1 / (1 - p)``, ``(B, N, 16, s, s)``
            for ``s = 4, 2, 1``, or None (no dropout).
        activation: ``"relu"`` or ``"tanh"``.
    """
    act = torch.relu if activation == "relu" else tanh
    n = params[0].shape[0]
    h = x.contiguous(memory_format=torch.channels_last)  # oneDNN's grouped convolutions are faster on NHWC
    for i in range(3):
        weight, bias = params[2 * i].flatten(0, 1), params[2 * i + 1].flatten()  # (N * 16, c_in, 3, 3), (N * 16,)
        if i == 0 and x.shape[1] == 1:
            h = act(_shared_first_conv(x, weight, bias))
        else:
            h = act(F.conv2d(h, weight, bias, stride=2, padding=1, groups=h.shape[1] // weight.shape[1]))
        if keep is not None:
            h = (h.unflatten(1, (n, CHANNELS)) * keep[i]).flatten(1, 2)
    pooled = h.mean(dim=(-2, -1)).unflatten(1, (n, CHANNELS))  # (B, N, 16): global average pooling
    return torch.baddbmm(params[7].unsqueeze(1), pooled.transpose(0, 1), params[6].mT)


# --- hyperparameters ----------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """Uniform over ``values``."""

    values: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)


@dataclass(frozen=True)
class Uniform:
    """Uniform on ``[low, high]``; log-uniform if ``log``."""

    low: float
    high: float
    log: bool = False

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def describe(self) -> str:
        return f"{'log-uniform' if self.log else 'uniform'} on [{self.low:g}, {self.high:g}]"


# The Small CNN Zoo's ranges (Unterthiner et al. 2020, section 3); init_std is the standard
# deviation of the RandomNormal/TruncatedNormal initializers, the others ignore it.
SEARCH_SPACE: dict[str, Choice | Uniform] = {
    "activation": Choice(("relu", "tanh")),
    "w_init": Choice(("glorot_normal", "glorot_uniform", "he_normal", "orthogonal", "RandomNormal", "TruncatedNormal")),
    "b_init": Choice(("zeros", "RandomNormal")),
    "init_std": Uniform(1e-3, 0.5, log=True),
    "optimizer": Choice(OPTIMIZERS),
    "learning_rate": Uniform(5e-4, 5e-2, log=True),
    "l2reg": Uniform(1e-8, 1e-2, log=True),
    "dropout": Uniform(0.0, 0.7),
    "train_fraction": Choice((0.1, 0.25, 0.5, 1.0)),
}
_STREAM_HPARAMS, _STREAM_INIT, _STREAM_CHUNK, _STREAM_SPLIT = range(4)


def sample_hyperparameters(seed: int, network_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Each network's hyperparameters, drawn from :data:`SEARCH_SPACE` with a generator keyed by ``(seed, id)``.

    A network's hyperparameters do not depend on how many networks the zoo has.
    """
    out = []
    for network_id in network_ids:
        rng = np.random.default_rng(derive_seed(seed, _STREAM_HPARAMS, network_id))
        out.append({name: dist.sample(rng) for name, dist in SEARCH_SPACE.items()})
    return out


_TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2] (Keras's correction)


def _init_array(shape: tuple[int, ...], kind: str, init_std: float, generator: torch.Generator) -> Tensor:
    """One array initialized as Keras's initializer ``kind`` would (fans of a ``(out, in, *filter)`` array)."""
    x = torch.empty(shape)

    def truncated(std: float) -> Tensor:
        return nn.init.trunc_normal_(x, std=std, a=-2 * std, b=2 * std, generator=generator)

    if kind == "zeros":
        return x.zero_()
    if kind == "RandomNormal":
        return nn.init.normal_(x, std=init_std, generator=generator)
    if kind == "TruncatedNormal":
        return truncated(init_std)
    receptive = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    if kind == "glorot_uniform":
        limit = math.sqrt(6 / (fan_in + fan_out))
        return nn.init.uniform_(x, -limit, limit, generator=generator)
    if kind == "glorot_normal":
        return truncated(math.sqrt(2 / (fan_in + fan_out)) / _TRUNCATED_STD)
    if kind == "he_normal":
        return truncated(math.sqrt(2 / fan_in) / _TRUNCATED_STD)
    if kind == "orthogonal":
        return nn.init.orthogonal_(x, generator=generator)
    raise ValueError(f"unknown initializer {kind!r}.")


def init_network(hparams: dict[str, Any], generator: torch.Generator) -> list[Tensor]:
    """Initial arrays of one network (:data:`PARAM_SHAPES`) from its ``w_init``, ``b_init``, ``init_std``."""
    arrays = []
    for shape in PARAM_SHAPES:
        kind = hparams["w_init"] if len(shape) > 1 else hparams["b_init"]
        arrays.append(_init_array(shape, kind, hparams["init_std"], generator))
    return arrays


# --- configuration ------------------------------------------------------------------------

TARGETS = ("test_accuracy", "test_loss", "train_accuracy", "train_loss")


@dataclass(frozen=True)
class CNNZooConfig:
    """Everything that determines a CNN zoo (see the module docstring).

    Args:
        num_networks: networks in the zoo (each with ``len(steps)`` checkpoints).
        seed: the build seed.
        steps: epochs at which to save a checkpoint, increasing; the last one ends training.
        batch_size: minibatch size.
        chunk_size: networks trained together (and saved together for resuming).
        split_fractions: fractions of the networks in the train/val/test splits (all
            checkpoints of a network go to one split).
    """

    num_networks: int = 1024
    seed: int = 0
    steps: tuple[int, ...] = (0, 1, 2, 3, 5, 10, 15, 20, 25)
    batch_size: int = 32
    chunk_size: int = 64
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        if self.num_networks < 1 or self.batch_size < 1 or self.chunk_size < 1:
            raise ValueError("num_networks, batch_size and chunk_size must be positive.")
        if not self.steps or self.steps[0] < 0 or any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError(f"steps must be increasing epochs >= 0, e.g. 0,1,2,5,10; got {list(self.steps)}.")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or sum(self.split_fractions) <= 0:
            raise ValueError(
                f"split_fractions needs three non-negative train/val/test fractions, got {self.split_fractions}."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Digits:
    """The zoo's data: ``x_*: (N, 1, 8, 8)`` in [-1, 1], ``y_*: (N,)``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    @classmethod
    def load(cls, device: torch.device) -> _Digits:
        digits = load_digits_split(0)  # pixels in [0, 1], (N, 64)

        def images(x: Tensor) -> Tensor:
            return (x.reshape(-1, 1, 8, 8) * 2 - 1).to(device)

        return cls(images(digits.x_train), digits.y_train.to(device), images(digits.x_test), digits.y_test.to(device))


# Networks that train together share these (one training-set size, one activation function).
_CHUNK_KEYS = ("train_fraction", "activation")


@dataclass
class _Plan:
    """Which networks each chunk trains.

    Networks are grouped by :data:`_CHUNK_KEYS` (in the order of :data:`SEARCH_SPACE`'s
    values) and each group, in id order, is cut into nearly equal chunks of at most
    ``chunk_size`` networks; a chunk lists its networks by optimizer, then id.
    """

    hparams: list[dict[str, Any]]
    chunks: list[list[int]] = field(default_factory=list)

    @classmethod
    def make(cls, config: CNNZooConfig) -> _Plan:
        plan = cls(sample_hyperparameters(config.seed, range(config.num_networks)))
        groups: dict[tuple[Any, ...], list[int]] = {
            key: []
            for key in itertools.product(*(SEARCH_SPACE[k].values for k in _CHUNK_KEYS))  # type: ignore[union-attr]
        }
        for i, h in enumerate(plan.hparams):
            groups[tuple(h[k] for k in _CHUNK_KEYS)].append(i)
        for ids in groups.values():
            for part in np.array_split(ids, math.ceil(len(ids) / config.chunk_size)) if ids else ():
                # Networks of one optimizer side by side: StackedOptimizer updates them through views.
                plan.chunks.append(sorted(part.tolist(), key=lambda i: OPTIMIZERS.index(plan.hparams[i]["optimizer"])))
        return plan


# --- training one chunk -------------------------------------------------------------------


_EVAL_SIZE = 2048  # networks x images per evaluation batch: the activations (2 MB) then stay in cache


def _metrics(params: Sequence[Tensor], activation: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Accuracy and mean cross-entropy ``(N,)`` per network, in batches, without dropout.

    ``x``: ``(M, 1, 8, 8)`` for every network or ``(M, N, 8, 8)`` (see :func:`grouped_forward`);
    ``y``: ``(M,)`` or ``(N, M)`` likewise.
    """
    n_nets, num = params[0].shape[0], x.shape[0]
    batch = max(1, _EVAL_SIZE // n_nets)
    correct = torch.zeros(n_nets, device=x.device)
    loss = torch.zeros(n_nets, device=x.device)
    with torch.no_grad():
        for s in range(0, num, batch):
            logits = grouped_forward(params, x[s : s + batch], None, activation)  # (N, b, 10)
            yb = y[..., s : s + batch].expand(logits.shape[:2])
            correct += (logits.argmax(-1) == yb).sum(-1)
            loss += F.cross_entropy(logits.transpose(1, 2), yb, reduction="none").sum(-1)
    return correct / num, loss / num


def _dropout_masks(keep_prob: Tensor, batch: int, generator: torch.Generator) -> list[Tensor]:
    """Inverted-dropout masks ``(b, N, 16, s, s)`` for the three convolutions (s = 4, 2, 1).

    One draw ``(N, b, 336)`` for all three (the masks' random stream, network-major), written
    in the memory layout of :func:`grouped_forward`'s channels-last activations ``(b, s, s, N, 16)``.
    """
    n, sides, device = len(keep_prob), (4, 2, 1), keep_prob.device
    sizes = [CHANNELS * side * side for side in sides]
    u = torch.rand((n, batch, sum(sizes)), generator=generator, device=device)
    keep, scale = keep_prob.view(n, 1, 1, 1, 1), (1 / keep_prob).view(n, 1, 1, 1, 1)
    masks = []
    for draws, side in zip(u.split(sizes, dim=-1), sides):
        mask = torch.empty(batch, side, side, n, CHANNELS, device=device).permute(0, 3, 4, 1, 2)  # (b, N, 16, s, s)
        torch.mul(draws.unflatten(-1, (CHANNELS, side, side)) < keep, scale, out=mask.transpose(0, 1))
        masks.append(mask)
    return masks


def _own_images(data: _Digits, rows: Tensor) -> Tensor:
    """Each network's training images ``rows: (N, b)`` in :func:`grouped_forward`'s layout ``(b, N, 8, 8)``."""
    return data.x_train[rows.T].squeeze(2)


def train_chunk(
    network_ids: Sequence[int],
    hparams: Sequence[dict[str, Any]],
    config: CNNZooConfig,
    chunk_seed: int,
    data: _Digits,
    advance: Advance = lambda k: None,
) -> dict[str, Tensor]:
    """Trains networks of one ``train_fraction`` and ``activation`` together; returns their checkpoints.

    Args:
        network_ids: the networks (their ids key their initialization and training subset).
        hparams: each network's hyperparameters (:func:`sample_hyperparameters`).
        config: epochs (``steps``), batch size and build seed.
        chunk_seed: seeds the minibatch order and dropout masks of the whole chunk.
        data: the digits, on the device to train on.
        advance: called with the networks' worth of work done after each epoch.

    Returns:
        ``network_id: (N,)``, ``param.<j>: (N, K, *PARAM_SHAPES[j])`` for the ``K =
        len(config.steps)`` checkpoints, and each of :data:`TARGETS`: ``(N, K)``.
    """
    device = data.x_train.device
    n_nets = len(network_ids)
    common = {key: {h[key] for h in hparams} for key in _CHUNK_KEYS}
    if any(len(values) != 1 for values in common.values()):
        raise ValueError(f"the networks of a chunk must share {_CHUNK_KEYS}; got {common}.")
    fraction, activation = (values.pop() for values in common.values())
    num_pool = len(data.y_train)
    subset_size = max(1, round(fraction * num_pool))

    params, subsets = [], []
    for network_id, h in zip(network_ids, hparams):
        gen = torch.Generator().manual_seed(derive_seed(config.seed, _STREAM_INIT, network_id))
        params.append(init_network(h, gen))
        subsets.append(torch.randperm(num_pool, generator=gen)[:subset_size])
    stacked = [torch.stack(arrays).to(device).requires_grad_() for arrays in zip(*params)]  # (N, *shape) each
    subset = torch.stack(subsets).to(device)  # (N, n): each network's training images
    x_own, y_own = _own_images(data, subset), data.y_train[subset]  # (n, N, 8, 8), (N, n)

    def column(name: str) -> Tensor:
        return torch.tensor([h[name] for h in hparams], dtype=torch.float32, device=device)

    keep_prob, l2reg = 1 - column("dropout"), column("l2reg")
    optimizer = StackedOptimizer(stacked, [h["optimizer"] for h in hparams], column("learning_rate"))
    generator = torch.Generator(device=device).manual_seed(chunk_seed)

    checkpoints: list[list[Tensor]] = []
    metrics: dict[str, list[Tensor]] = {name: [] for name in TARGETS}

    def checkpoint() -> None:
        checkpoints.append([p.detach().clone() for p in stacked])
        for split, x, y in (("test", data.x_test, data.y_test), ("train", x_own, y_own)):
            acc, loss = _metrics(stacked, activation, x, y)
            metrics[f"{split}_accuracy"].append(acc)
            metrics[f"{split}_loss"].append(loss)

    last = config.steps[-1]
    for epoch in range(last + 1):
        if epoch > 0:
            order = torch.rand((n_nets, subset_size), generator=generator, device=device).argsort(dim=1)
            for s in range(0, subset_size, config.batch_size):
                rows = subset.gather(1, order[:, s : s + config.batch_size])  # (N, b) rows of the training pool
                xb, yb = _own_images(data, rows), data.y_train[rows]  # (b, N, 8, 8), (N, b)
                logits = grouped_forward(stacked, xb, _dropout_masks(keep_prob, rows.shape[1], generator), activation)
                # Sum over networks of each network's mean cross-entropy plus its L2 penalty on the kernels.
                loss = F.cross_entropy(logits.transpose(1, 2), yb, reduction="none").mean(-1).sum()
                penalty = sum(p.square().flatten(1).sum(1) for p in stacked[0::2])
                optimizer.step(torch.autograd.grad(loss + (l2reg * penalty).sum(), stacked))
            advance(n_nets / last)
        if epoch in config.steps:
            checkpoint()

    out = {"network_id": torch.tensor(list(network_ids))}
    for j, arrays in enumerate(zip(*checkpoints)):
        out[f"param.{j}"] = torch.stack(arrays, dim=1)  # (N, K, *shape)
    out.update({name: torch.stack(values, dim=1) for name, values in metrics.items()})  # (N, K)
    return out


# --- assembling the zoo ---------------------------------------------------------------------------

_WRITE_GROUP = 64  # networks read from the chunks and handed to the writer at a time


class _Checkpoints(FinishedChunks):
    """Every network's checkpoints, looked up by network id in the finished chunks."""

    def params(self, ids: Sequence[int]) -> list[Tensor]:
        """Per array of :data:`PARAM_SHAPES`, ``(G, K, *shape)`` for networks ``ids``."""
        return [self.gather(f"param.{j}", ids) for j in range(len(PARAM_SHAPES))]

    def metrics(self, ids: Sequence[int]) -> dict[str, Tensor]:
        """Per target, ``(G, K)``."""
        return {name: self.gather(name, ids) for name in TARGETS}

    def finite(self, network_id: int) -> bool:
        """Whether every checkpoint and metric of the network is finite (False for a diverged run)."""
        arrays = [*self.params([network_id]), *self.metrics([network_id]).values()]
        return all(bool(torch.isfinite(a).all()) for a in arrays)


def _split_ids(ids: Sequence[int], config: CNNZooConfig) -> dict[str, list[int]]:
    """Networks per split: a seeded shuffle cut by ``config.split_fractions``, each split in id order."""
    order = np.random.default_rng(derive_seed(config.seed, _STREAM_SPLIT)).permutation(len(ids))
    fractions = np.asarray(config.split_fractions) / sum(config.split_fractions)
    cuts = np.round(np.cumsum(fractions) * len(ids)).astype(int)
    parts = np.split(order, cuts[:-1])
    return {split: sorted(ids[i] for i in part) for split, part in zip(SPLITS, parts)}


def _rows_metadata(ids: Sequence[int], plan: _Plan, steps: Sequence[int]) -> dict[str, list]:
    """Metadata columns for networks ``ids``, one row per checkpoint (network-major)."""
    rows = [(nid, step) for nid in ids for step in steps]
    return {
        "network_id": [nid for nid, _ in rows],
        "step": [step for _, step in rows],
        "is_final": [step == steps[-1] for _, step in rows],
        **{name: [plan.hparams[nid][name] for nid, _ in rows] for name in SEARCH_SPACE},
    }


def _write_arrow(
    out: Path,
    checkpoints: _Checkpoints,
    plan: _Plan,
    splits: dict[str, list[int]],
    config: CNNZooConfig,
    provenance: dict[str, Any],
    overwrite: bool,
) -> None:
    spec = network_spec_from_module(small_cnn())
    metadata_columns = list(_rows_metadata([0], plan, config.steps))
    with ZooWriter(out, spec, TARGETS, provenance, metadata_columns, overwrite=overwrite) as writer:
        for split, ids in splits.items():
            for start in range(0, len(ids), _WRITE_GROUP):
                group = ids[start : start + _WRITE_GROUP]
                rows = [p.flatten(0, 1).unsqueeze(1) for p in checkpoints.params(group)]  # (G*K, 1, *shape)
                wsfeat = WeightSpaceFeatures(rows[0::2], rows[1::2])
                targets = {name: v.flatten() for name, v in checkpoints.metrics(group).items()}  # (G*K,)
                writer.add(split, wsfeat, targets, _rows_metadata(group, plan, config.steps))


# --- the Small CNN Zoo's file layout ------------------------------------------------------------------

SMALL_CNN_ZOO_FOLDER = "small_cnn_zoo"


def _metrics_rows(nid: int, metrics: dict[str, Tensor], plan: _Plan, config: CNNZooConfig) -> list[dict[str, Any]]:
    """``metrics.csv.gz`` rows of network ``nid`` (one per checkpoint); ``metrics``: per target ``(K,)``."""
    run = {
        **{f"config.{name}": plan.hparams[nid][name] for name in SEARCH_SPACE},
        "config.dataset": "sklearn_digits",
        "config.dnn_architecture": "cnn",
        "config.epochs": config.steps[-1],
        "config.num_layers": 3,
        "config.num_units": CHANNELS,
        "config.random_seed": derive_seed(config.seed, _STREAM_INIT, nid),
        "modeldir": f"network_{nid:06d}",
    }
    return [
        {
            **run,
            "step": step,
            **{name: float(metrics[name][k]) for name in TARGETS},
            "laststep": step == config.steps[-1],
        }
        for k, step in enumerate(config.steps)
    ]


def _write_small_cnn_zoo(
    folder: Path, checkpoints: _Checkpoints, plan: _Plan, ids: Sequence[int], config: CNNZooConfig
) -> None:
    """The Small CNN Zoo's ``weights.npy``, ``layout.csv``, ``metrics.csv.gz``; rows by network id, then step."""
    spec = network_spec_from_module(small_cnn())
    with SmallCNNZooWriter(folder, spec, len(ids) * len(config.steps)) as writer:
        for start in range(0, len(ids), _WRITE_GROUP):
            group = ids[start : start + _WRITE_GROUP]
            rows = [p.flatten(0, 1).unsqueeze(1) for p in checkpoints.params(group)]  # (G*K, 1, *shape)
            metrics = checkpoints.metrics(group)  # per target (G, K)
            records = [
                record
                for g, nid in enumerate(group)
                for record in _metrics_rows(nid, {name: m[g] for name, m in metrics.items()}, plan, config)
            ]
            writer.add(WeightSpaceFeatures(rows[0::2], rows[1::2]), records)


# --- the builder --------------------------------------------------------------------------------------


def _provenance(
    config: CNNZooConfig, checkpoints: _Checkpoints, kept: list[int], dropped: list[int], command: str
) -> dict[str, Any]:
    accuracy = torch.cat([checkpoints.metrics(kept[s : s + 256])["test_accuracy"] for s in range(0, len(kept), 256)])
    edges = np.linspace(0, 1, 11)
    return {
        "builder": "nfn_lab.builders.cnn_zoo",
        "command": command,
        "seed": config.seed,
        "config": config.to_dict(),
        "data": "scikit-learn load_digits (8x8, 1,797 images), pixels scaled to [-1, 1]; train pool 1,200 / test 597 "
        "(nfn_lab.digits.load_digits_split(0)); each network trains on its train_fraction of the pool",
        "architecture": "3 x [Conv2d(16, 3x3, stride 2, padding 1), activation, Dropout], global average pooling, "
        "Linear(16, 10); nfn_lab.builders.cnn_zoo.small_cnn(activation)",
        "training": f"epochs over each network's own subset, minibatch {config.batch_size}, cross-entropy plus "
        "l2reg * sum of squared kernels; checkpoints at the epochs in config.steps (metadata 'step')",
        "search_space": {name: dist.describe() for name, dist in SEARCH_SPACE.items()},
        "networks": len(kept),
        "dropped_nonfinite_networks": dropped,
        "final_test_accuracy": summarize(accuracy[:, -1].numpy(), edges),  # (N, K) -> the last checkpoint
        "median_test_accuracy_by_step": {
            int(step): round(float(accuracy[:, k].median()), 4) for k, step in enumerate(config.steps)
        },
    }


def build_cnn_zoo(
    out: str | Path,
    config: CNNZooConfig = CNNZooConfig(),
    *,
    overwrite: bool = False,
    small_cnn_zoo_layout: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Trains the zoo (resuming from ``<out>.work`` if an earlier run was interrupted) and writes it.

    Args:
        out: the zoo folder to create (nfn-lab's Arrow format, see
            docs/formats.md); rows are checkpoints, split by network.
        config: what to build.
        overwrite: replace an existing zoo at ``out`` (and discard a work folder of
            another configuration).
        small_cnn_zoo_layout: also write ``out/small_cnn_zoo/`` with ``weights.npy``,
            ``layout.csv`` and ``metrics.csv.gz`` in the public Small CNN Zoo layout
            (readable by :class:`datamodules.small_cnn_zoo.SmallCNNZooDataset` with ``step="last"``),
            atomically, after the Arrow zoo: if the build stops between the two, rerun it with
            ``overwrite=True`` (the trained chunks are kept, so only the files are written again).
        device: where to train, e.g. ``"cuda"``.
        progress: show a progress bar.
        command: recorded in the provenance (the CLI passes its command line).

    Returns:
        the zoo folder.

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is False (checked first).
        ValueError: a work folder of another configuration exists (see :class:`ChunkStore`).
    """
    out = Path(out).expanduser()
    check_destination(out, overwrite)
    plan = _Plan.make(config)
    store = ChunkStore(out, {"builder": "cnn_zoo", **config.to_dict()}, overwrite=overwrite)
    data = _Digits.load(torch.device(device))

    def compute(index: int, advance: Advance) -> dict[str, Tensor]:
        ids = plan.chunks[index]
        chunk_seed = derive_seed(config.seed, _STREAM_CHUNK, index)
        return train_chunk(ids, [plan.hparams[i] for i in ids], config, chunk_seed, data, advance)

    run_chunks(store, [len(c) for c in plan.chunks], compute, desc=f"training CNNs for {out.name}", progress=progress)

    checkpoints = _Checkpoints(store, plan.chunks)
    kept = [i for i in range(config.num_networks) if checkpoints.finite(i)]
    dropped = sorted(set(range(config.num_networks)) - set(kept))
    if not kept:
        raise ValueError("every network diverged (NaN/inf weights); nothing to write. Try other steps or seed.")
    command = command or f"nfn_lab.builders.build_cnn_zoo({str(out)!r}, {config!r})"
    splits = {split: ids for split, ids in _split_ids(kept, config).items() if ids}
    _write_arrow(
        out, checkpoints, plan, splits, config, _provenance(config, checkpoints, kept, dropped, command), overwrite
    )
    if small_cnn_zoo_layout:
        _write_small_cnn_zoo(out / SMALL_CNN_ZOO_FOLDER, checkpoints, plan, kept, config)
    del checkpoints
    store.remove()
    return out
