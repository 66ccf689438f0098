"""Per-layer, per-channel weight statistics of a zoo: one streaming pass, cached on disk."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from nfn_lab.data.cache import atomic_write, digest, zoo_cache_path
from nfn_lab.data.transforms import Normalize
from nfn_lab.weightspace import WeightSpaceFeatures

__all__ = ["WeightStats", "cached_weight_stats", "compute_weight_stats"]

MIN_STD = 1e-5  # arrays that never vary (e.g. zero biases) are left unscaled


@dataclass
class WeightStats:
    """Mean and std of every weight and bias array, per channel: lists of ``(C,)`` tensors."""

    weight_mean: list[Tensor]
    weight_std: list[Tensor]
    bias_mean: list[Tensor]
    bias_std: list[Tensor]
    count: int

    def normalizer(self) -> Normalize:
        return Normalize(self.weight_mean, self.weight_std, self.bias_mean, self.bias_std)

    def to_dict(self) -> dict:
        def listify(ts: list[Tensor]) -> list[list[float]]:
            return [t.tolist() for t in ts]

        return {
            "weight_mean": listify(self.weight_mean),
            "weight_std": listify(self.weight_std),
            "bias_mean": listify(self.bias_mean),
            "bias_std": listify(self.bias_std),
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: dict) -> WeightStats:
        def tensors(key: str) -> list[Tensor]:
            return [torch.tensor(v, dtype=torch.float32) for v in data[key]]

        return cls(
            tensors("weight_mean"), tensors("weight_std"), tensors("bias_mean"), tensors("bias_std"), data["count"]
        )


class _Moments:
    """Running per-channel sum and sum of squares of one array, in float64."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.total_sq: Tensor | None = None
        self.count = 0

    def update(self, x: Tensor) -> None:  # x: (B, C, ...)
        x = x.detach().to(torch.float64).transpose(0, 1).reshape(x.shape[1], -1)  # (C, B * entries)
        s, sq = x.sum(dim=1), x.square().sum(dim=1)
        self.total = s if self.total is None else self.total + s
        self.total_sq = sq if self.total_sq is None else self.total_sq + sq
        self.count += x.shape[1]

    def mean_std(self) -> tuple[Tensor, Tensor]:
        assert self.total is not None and self.total_sq is not None
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean.square()).clamp_min(0)
        std = var.sqrt()
        std = torch.where(std < MIN_STD, torch.ones_like(std), std)
        return mean.float(), std.float()


def compute_weight_stats(batches: Iterable, progress: bool = True) -> WeightStats:
    """One pass over batches of ``WeightSpaceFeatures`` (or ``(features, targets)`` pairs).

    Raises:
        ValueError: if there are no batches.
    """
    weights: list[_Moments] = []
    biases: list[_Moments] = []
    networks = 0
    for batch in tqdm(batches, desc="weight statistics", disable=not progress, leave=False):
        feats: WeightSpaceFeatures = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not weights:
            weights = [_Moments() for _ in range(len(feats))]
            biases = [_Moments() for _ in range(len(feats))]
        for m, w in zip(weights, feats.weights):
            m.update(w)
        for m, b in zip(biases, feats.biases):
            m.update(b)
        networks += feats.batch_size
    if not weights:
        raise ValueError("cannot compute weight statistics of an empty split.")
    wm, ws = zip(*(m.mean_std() for m in weights))
    bm, bs = zip(*(m.mean_std() for m in biases))
    return WeightStats(list(wm), list(ws), list(bm), list(bs), networks)


def cached_weight_stats(
    root: str | os.PathLike, key: str, compute: Callable[[], Iterable], progress: bool = True
) -> WeightStats:
    """Loads statistics cached beside the zoo (see :mod:`nfn_lab.data.cache`), else computes and saves them.

    Args:
        root: the zoo's folder.
        key: identifies the split and everything that changes the statistics (files, sizes).
        compute: returns the batches to pass to :func:`compute_weight_stats`.
    """
    path = zoo_cache_path(root, f"stats-{digest([key])}.json")
    if path.exists():
        try:
            return WeightStats.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError):
            path.unlink()  # a corrupt cache entry is ours to replace
    stats = compute_weight_stats(compute(), progress=progress)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps({"key": key, **stats.to_dict()})))
    return stats
