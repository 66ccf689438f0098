"""Base classes for model zoos: a Dataset of networks and a LightningDataModule around it.

A zoo format is one subclass of :class:`ZooDataset` (how to read one network and its
targets) and one of :class:`ZooDataModule` (where the splits are); see ``datamodules/``.
An item is ``(features, targets)``: the network's :class:`WeightSpaceFeatures` with a
channel axis of 1 and no batch axis (``weights[i]: (1, n_out, n_in, *filter)``), and a
dict of scalar target tensors. :func:`nfn_lab.collate` batches items.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from nfn_lab.data.stats import WeightStats, cached_weight_stats
from nfn_lab.data.transforms import Compose
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures, collate

__all__ = ["Item", "ZooDataset", "ZooDataModule", "EpochShuffleSampler", "EvalDistributedSampler", "check_finite"]

Targets = dict[str, Tensor]
Item = tuple[WeightSpaceFeatures, Targets]
Transform = Callable[[WeightSpaceFeatures], WeightSpaceFeatures]


def check_finite(arrays: Sequence[Tensor], where: str) -> None:
    """Raises a ValueError naming ``where`` (a file or row) if any array holds NaN or inf."""
    for i, x in enumerate(arrays):
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).sum().item()
            raise ValueError(
                f"{where}: array {i} has {bad} non-finite (NaN/inf) values; drop this network from the split "
                "(e.g. a diverged training run) or repair the file."
            )


class ZooDataset(Dataset[Item], ABC):
    """One network per item.

    Subclasses implement :meth:`__len__`, :attr:`network_spec` (from metadata, without
    reading weights) and :meth:`read` (one network's arrays and targets).

    Args:
        transform: applied to each network's features (augmentation, normalization).
    """

    def __init__(self, transform: Transform | None = None) -> None:
        self.transform = transform

    @property
    @abstractmethod
    def network_spec(self) -> NetworkSpec:
        """The spec of every network in the zoo, with all sizes set."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, index: int) -> tuple[list[Tensor], list[Tensor], Targets]:
        """Weights ``(n_out, n_in, *filter)``, biases ``(n_out,)`` and targets of network ``index``.

        Raises a ValueError naming the file or row if it is unreadable or not finite.
        """

    def __getitem__(self, index: int) -> Item:
        if not 0 <= index < len(self):
            raise IndexError(f"network index {index} out of range for a zoo split of {len(self)} networks.")
        weights, biases, targets = self.read(index)
        feats = WeightSpaceFeatures([w.unsqueeze(0) for w in weights], [b.unsqueeze(0) for b in biases])
        if self.transform is not None:
            feats = self.transform(feats)
        return feats, targets


class EvalDistributedSampler(DistributedSampler):
    """Shards a split across processes with no sample repeated and none dropped.

    Rank ``r`` of ``R`` gets indices ``r, r + R, ...``; shards may differ in length by one.
    (PyTorch's DistributedSampler pads the last shard by repeating samples, which silently
    changes metrics such as Kendall's tau.) Lightning keeps a DistributedSampler it is
    given, so evaluation dataloaders that use this one are not re-wrapped.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """Shuffles with a permutation drawn from ``seed + epoch``.

    Lightning calls :meth:`set_epoch` before every epoch, so a run resumed from a checkpoint
    sees exactly the order an uninterrupted run would have seen.
    """

    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items, self.seed, self.epoch = num_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_items


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class ZooDataModule(L.LightningDataModule, ABC):
    """A model zoo as a LightningDataModule.

    Subclasses implement :meth:`make_dataset` and :meth:`read_network_spec`; everything
    else (loaders, sharding, normalization, augmentation) lives here.

    Args:
        root: the zoo's folder (or file, for single-file formats).
        batch_size: networks per training batch.
        eval_batch_size: networks per validation/test batch (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        normalize: standardize every array per layer and channel with statistics from the
            training split (one streaming pass, cached beside the zoo).
        augment: symmetry augmentations for the training split, e.g.
            ``[RandomHiddenPermutation()]`` (see :mod:`nfn_lab.data.transforms`).
        pin_memory: pin batches for faster host-to-GPU copies.
        seed: seeds the training shuffle.
    """

    splits: tuple[str, ...] = ("train", "val", "test")

    def __init__(
        self,
        root: str | os.PathLike,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        normalize: bool = False,
        augment: Sequence[Transform] = (),
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.root = Path(root).expanduser()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.normalize = normalize
        self.augment = list(augment)
        self.pin_memory = pin_memory
        self.seed = seed
        self.datasets: dict[str, ZooDataset] = {}
        self.weight_stats: WeightStats | None = None
        self._network_spec: NetworkSpec | None = None

    # --- what a format provides ---------------------------------------------------------------------
    @abstractmethod
    def make_dataset(self, split: str, transform: Transform | None) -> ZooDataset:
        """The dataset of one split (``"train"``, ``"val"``, ``"test"``)."""

    @abstractmethod
    def read_network_spec(self) -> NetworkSpec:
        """The zoo's network spec from its metadata, without reading any weights."""

    def stats_key(self) -> str:
        """Identifies the training split for the statistics cache; override to add more."""
        return f"{type(self).__qualname__}:{self.root.resolve()}:{len(self._dataset('train', None))}"

    # --- format discovery (``nfn-lab zoo info`` / ``convert`` ask every subclass) ---------------------
    @classmethod
    def detect(cls, root: str | os.PathLike) -> bool:
        """Whether ``root`` holds a zoo in this format, judged cheaply from file names.

        The default says no; a format opts in to automatic detection by overriding it.
        """
        return False

    @classmethod
    def describe(cls, root: str | os.PathLike) -> dict[str, Any]:
        """A summary of the zoo at ``root`` for ``nfn-lab zoo info``: label -> printable value.

        Conventional keys: ``format``, ``splits`` (split -> rows), ``num_networks``,
        ``num_checkpoints``, ``network_spec``, ``targets``, ``provenance``. The default
        builds the DataModule with its default arguments and reports the spec and the
        split sizes; override it to report more or to avoid opening the splits.
        """
        datamodule = cls(root)  # type: ignore[call-arg]  # subclasses take root first
        splits = {split: len(datamodule.make_dataset(split, None)) for split in datamodule.splits}
        return {"format": cls.__name__, "network_spec": datamodule.network_spec, "splits": splits}

    # --- shared machinery ----------------------------------------------------------------------------
    @property
    def network_spec(self) -> NetworkSpec:
        """The zoo's spec; available before :meth:`setup`, so a model can be built from it."""
        if self._network_spec is None:
            self._network_spec = self.read_network_spec()
        return self._network_spec

    def _dataset(self, split: str, transform: Transform | None) -> ZooDataset:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; this zoo has {self.splits}.")
        return self.make_dataset(split, transform)

    def compute_weight_stats(self, progress: bool = True) -> WeightStats:
        """Statistics of the training split (cached)."""

        def batches() -> DataLoader:
            plain = self._dataset("train", None)
            return DataLoader(plain, batch_size=256, num_workers=self.num_workers, collate_fn=collate)

        return cached_weight_stats(self.root, self.stats_key(), batches, progress=progress)

    def _transform(self, split: str) -> Transform | None:
        steps: list[Transform] = list(self.augment) if split == "train" else []
        if self.normalize:
            if self.weight_stats is None:
                self.weight_stats = self.compute_weight_stats()
            steps.append(self.weight_stats.normalizer())
        return Compose(steps) if steps else None

    def split_dataset(self, split: str) -> ZooDataset:
        """The dataset of ``split`` with its transforms, built once."""
        if split not in self.datasets:
            self.datasets[split] = self._dataset(split, self._transform(split))
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", self.splits):
            self.split_dataset(split)

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.split_dataset(split)
        kwargs: dict[str, Any] = dict(
            collate_fn=collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
        if train:
            sampler = EpochShuffleSampler(len(dataset), self.seed)
            return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, **kwargs)
        sampler = EvalDistributedSampler(dataset) if _distributed() else None
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(d)}" for s, d in self.datasets.items())
        return f"{type(self).__name__}(root={str(self.root)!r}, batch_size={self.batch_size}{', ' + sizes if sizes else ''})"
