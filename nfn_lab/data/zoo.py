"""Base classes for model zoos: a Dataset of networks and a LightningDataModule around it.

A zoo format is one subclass of :class:`ZooDataset` (how to read one network and its
targets) and one of :class:`ZooDataModule` (where the splits are); see ``datamodules/``.
An item is ``(features, targets)``: the network's :class:`WeightSpaceFeatures` with a
channel axis of 1 and no batch axis (``weights[i]: (1, n_out, n_in, *filter)``), and a
dict of scalar target tensors. :func:`nfn_lab.collate` batches items.
"""

from __future__ import annotations

import functools
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
from nfn_lab.data.transforms import Compose, Normalize
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures, collate

__all__ = [
    "BatchedZooView",
    "EpochBatchSampler",
    "EpochShuffleSampler",
    "EvalBatchSampler",
    "EvalDistributedSampler",
    "Item",
    "ZooDataModule",
    "ZooDataset",
    "check_finite",
    "make_item",
]

Targets = dict[str, Tensor]
Item = tuple[WeightSpaceFeatures, Targets]
Transform = Callable[[WeightSpaceFeatures], WeightSpaceFeatures]
# ``augment``'s element type returns Any: jsonargparse (LightningCLI) reads ``Callable[..., SomeClass]``
# as a factory of SomeClass and would reject ``- class_path: nfn_lab.data.RandomHiddenPermutation``.
Augmentation = Callable[[WeightSpaceFeatures], Any]


def check_finite(arrays: Sequence[Tensor], where: str) -> None:
    """Raises a ValueError naming ``where`` (a file or row) if any array holds NaN or inf."""
    for i, x in enumerate(arrays):
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).sum().item()
            raise ValueError(
                f"{where}: array {i} has {bad} non-finite (NaN/inf) values; drop this network from the split "
                "(e.g. a diverged training run) or repair the file."
            )


def make_item(
    weights: Sequence[Tensor], biases: Sequence[Tensor], targets: Targets, transform: Transform | None
) -> Item:
    """One network's item: arrays ``(n_out, n_in, *filter)`` get the channel axis, then ``transform``."""
    feats = WeightSpaceFeatures([w.unsqueeze(0) for w in weights], [b.unsqueeze(0) for b in biases])  # (1, ...)
    return (feats if transform is None else transform(feats)), targets


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

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"network index {index} out of range for a zoo split of {len(self)} networks.")

    def read_batch(self, indices: Sequence[int]) -> tuple[list[Tensor], list[Tensor], Targets]:
        """Networks ``indices`` without the transform: weights ``(B, n_out, n_in, *filter)``,
        biases ``(B, n_out)``, targets ``{name: (B,)}``.

        The default stacks :meth:`read`; formats that can read many networks at once
        (one memmap or Arrow read) override it, and every batched path below uses it.
        """
        for index in indices:
            self._check_index(index)
        rows = [self.read(index) for index in indices]
        weights = [torch.stack(ws) for ws in zip(*(r[0] for r in rows))]
        biases = [torch.stack(bs) for bs in zip(*(r[1] for r in rows))]
        targets = {name: torch.stack([torch.as_tensor(r[2][name]) for r in rows]) for name in rows[0][2]}
        return weights, biases, targets

    def __getitem__(self, index: int) -> Item:
        self._check_index(index)
        weights, biases, targets = self.read(index)
        return self._item(weights, biases, targets)

    def _item(self, weights: Sequence[Tensor], biases: Sequence[Tensor], targets: Targets) -> Item:
        return make_item(weights, biases, targets, self.transform)

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        """Items ``[self[i] for i in indices]`` from one :meth:`read_batch` (DataLoader calls this)."""
        weights, biases, targets = self.read_batch(indices)
        return [
            self._item([w[k] for w in weights], [b[k] for b in biases], {n: t[k] for n, t in targets.items()})
            for k in range(len(indices))
        ]

    def batch(self, indices: Sequence[int], transform: Transform | None = None) -> Item:
        """Networks ``indices`` as one batch: features ``(B, 1, ...)`` and targets ``{name: (B,)}``.

        Skips per-network objects and collation altogether; ``transform`` must work on batches
        (e.g. :class:`~nfn_lab.data.transforms.Normalize` with ``lead=2``), and the item
        transform is not applied.
        """
        weights, biases, targets = self.read_batch(indices)
        feats = WeightSpaceFeatures([w.unsqueeze(1) for w in weights], [b.unsqueeze(1) for b in biases])
        return (feats if transform is None else transform(feats)), targets


class BatchedZooView(Dataset[Item]):
    """A dataset indexed by lists of network indices, each giving a whole batch (see :meth:`ZooDataset.batch`)."""

    def __init__(self, dataset: ZooDataset, transform: Transform | None = None) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Sequence[int]) -> Item:
        return self.dataset.batch(indices, self.transform)


class EpochBatchSampler(torch.utils.data.BatchSampler):
    """A BatchSampler that passes Lightning's ``set_epoch`` on to the sampler it wraps."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def _unwrap(batch: Any) -> Item:
    """The collate function of a loader with ``batch_size=None``: the batch is already one item."""
    return batch


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


class EvalBatchSampler(EvalDistributedSampler):
    """Batches (lists of indices) of this process's unpadded shard, in order.

    A DistributedSampler subclass, so Lightning does not re-shard it under DDP; with one
    process it yields the whole split.
    """

    def __init__(self, dataset: Dataset, batch_size: int) -> None:
        distributed = _distributed()
        super().__init__(dataset, num_replicas=None if distributed else 1, rank=None if distributed else 0)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        shard = list(super().__iter__())
        return iter([shard[i : i + self.batch_size] for i in range(0, len(shard), self.batch_size)])

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)


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
        augment: Sequence[Augmentation] = (),
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
        datamodule = cls(root)
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

    def _normalizer(self) -> Normalize | None:
        if not self.normalize:
            return None
        if self.weight_stats is None:
            self.weight_stats = self.compute_weight_stats()
        return self.weight_stats.normalizer()

    def _augments(self, split: str) -> list[Transform]:
        return list(self.augment) if split == "train" else []

    def _transform(self, split: str) -> Transform | None:
        normalizer = self._normalizer()
        steps = self._augments(split) + ([normalizer] if normalizer is not None else [])
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
        """Batches of ``(features (B, 1, ...), targets)``.

        Without per-network augmentation, each batch is read in one go through
        :meth:`ZooDataset.batch` (normalized as a batch); otherwise items are read, transformed
        one by one and collated.
        """
        dataset = self.split_dataset(split)
        kwargs: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
        }
        normalizer = self._normalizer()
        view = BatchedZooView(dataset, None if normalizer is None else functools.partial(normalizer, lead=2))
        if not train:
            return DataLoader(
                view,
                sampler=EvalBatchSampler(dataset, self.eval_batch_size),
                batch_size=None,
                collate_fn=_unwrap,
                **kwargs,
            )
        sampler = EpochShuffleSampler(len(dataset), self.seed)
        if self._augments(split):
            return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=collate, **kwargs)
        batches = EpochBatchSampler(sampler, self.batch_size, drop_last=False)
        return DataLoader(view, sampler=batches, batch_size=None, collate_fn=_unwrap, **kwargs)

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
        sizes = f", {sizes}" if sizes else ""
        return f"{type(self).__name__}(root={str(self.root)!r}, batch_size={self.batch_size}{sizes})"
