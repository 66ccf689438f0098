"""A zoo held in memory: networks you already have as tensors (a demo, a small experiment, tests)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence

from torch import Tensor

from nfn_lab.data.zoo import Targets, Transform, ZooDataModule, ZooDataset
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures, network_spec_from_wsfeat

__all__ = ["TensorZooDataModule", "TensorZooDataset"]


class TensorZooDataset(ZooDataset):
    """Networks from batched one-channel features ``(N, 1, ...)`` and targets ``{name: (N,)}``."""

    def __init__(
        self, wsfeat: WeightSpaceFeatures, targets: Mapping[str, Tensor], transform: Transform | None = None
    ) -> None:
        super().__init__(transform)
        if wsfeat.num_channels != 1:
            raise ValueError(f"a zoo holds raw weights with one channel; got {wsfeat.num_channels}.")
        for name, t in targets.items():
            if len(t) != wsfeat.batch_size:
                raise ValueError(f"target {name!r} has {len(t)} values for {wsfeat.batch_size} networks.")
        self.wsfeat, self.targets = wsfeat, dict(targets)

    @property
    def network_spec(self) -> NetworkSpec:
        return network_spec_from_wsfeat(self.wsfeat, set_all_dims=True)

    def __len__(self) -> int:
        return self.wsfeat.batch_size

    def read(self, index: int) -> tuple[list[Tensor], list[Tensor], Targets]:
        return (
            [w[index, 0] for w in self.wsfeat.weights],
            [b[index, 0] for b in self.wsfeat.biases],
            {name: t[index] for name, t in self.targets.items()},
        )


class TensorZooDataModule(ZooDataModule):
    """Splits in-memory networks into consecutive train/val/test blocks.

    Args:
        wsfeat: ``(N, 1, ...)`` features of all networks.
        targets: ``{name: (N,)}``.
        split_sizes: networks in train, val, test (the rest after train and val goes to test
            when the last entry is -1).
        root: where to cache statistics (default: a temporary folder).
        **kwargs: see :class:`ZooDataModule`.
    """

    def __init__(
        self,
        wsfeat: WeightSpaceFeatures,
        targets: Mapping[str, Tensor],
        split_sizes: Sequence[int] = (-1, 0, 0),
        root: str | os.PathLike | None = None,
        **kwargs,
    ) -> None:
        super().__init__(root if root is not None else tempfile.mkdtemp(prefix="nfn_lab_zoo_"), **kwargs)
        sizes = list(split_sizes)
        n = wsfeat.batch_size
        if -1 in sizes:
            sizes[sizes.index(-1)] = n - sum(s for s in sizes if s != -1)
        if len(sizes) != 3 or sum(sizes) != n or min(sizes) < 0:
            raise ValueError(f"split_sizes {list(split_sizes)} do not divide {n} networks into train/val/test.")
        bounds, start = {}, 0
        for split, size in zip(self.splits, sizes):
            bounds[split] = (start, start + size)
            start += size
        self.bounds = bounds
        self.wsfeat, self.targets = wsfeat, dict(targets)

    def make_dataset(self, split: str, transform: Transform | None) -> TensorZooDataset:
        lo, hi = self.bounds[split]
        return TensorZooDataset(
            self.wsfeat.map(lambda t: t[lo:hi]), {k: v[lo:hi] for k, v in self.targets.items()}, transform
        )

    def read_network_spec(self) -> NetworkSpec:
        return network_spec_from_wsfeat(self.wsfeat, set_all_dims=True)
