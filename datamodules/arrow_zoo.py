"""Zoos in nfn-lab's own Arrow/Parquet format (Hugging Face ``datasets``).

The format is specified in :mod:`nfn_lab.data.arrow_format`: a folder written by
``DatasetDict.save_to_disk`` (memory-mapped, never copied) or a Parquet folder / Hugging
Face Hub dataset (``data/<split>-*.parquet``), with a ``zoo.json`` giving the network
spec, the target and metadata columns and the split sizes. Write one with
:class:`~nfn_lab.data.arrow_format.ZooWriter`, ``nfn-lab zoo convert`` (from any other
format) or ``nfn-lab zoo build``.

Map-style reading (the default) fetches a whole batch with one Arrow ``take`` through
``with_format("numpy")``. With ``streaming=True`` the splits are iterated instead
(:class:`ArrowZooStream`): the training stream is shuffled through a buffer (the shard
order and the buffer are reseeded every epoch), and each split is divided between DDP
ranks (``datasets.distributed.split_dataset_by_node``) and then between DataLoader
workers (by shards: a local Arrow split is streamed as up to 64 shards; a Parquet split
has one shard per file, so more workers than files sit idle). Streamed evaluation under
DDP covers every network exactly once, but ranks may get different numbers of batches;
that is fine for epoch-level torchmetrics metrics, while per-step ``sync_dist`` logging
needs a split size divisible by ``world_size * eval_batch_size``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from nfn_lab.data.arrow_format import (
    INFO_FILE,
    SPLITS,
    ZooInfo,
    batch_to_tensors,
    locate_zoo,
    open_zoo,
    read_zoo_info,
    zoo_layout,
)
from nfn_lab.data.zoo import Item, Targets, Transform, ZooDataModule, ZooDataset, make_item
from nfn_lab.weightspace import NetworkSpec, collate

__all__ = ["ArrowZooDataModule", "ArrowZooDataset", "ArrowZooStream"]


def _target_names(info: ZooInfo, target: str | Sequence[str] | None) -> tuple[str, ...]:
    names = info.target_names if target is None else (target,) if isinstance(target, str) else tuple(target)
    unknown = [t for t in names if t not in info.target_names]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; this zoo has {list(info.target_names)}.")
    return tuple(names)


class ArrowZooDataset(ZooDataset):
    """One split of an Arrow/Parquet zoo, read in batches.

    Args:
        table: the split (:func:`~nfn_lab.data.arrow_format.open_zoo`).
        info: the zoo's ``zoo.json``.
        target_names: the target(s) each item carries (default: all of the zoo's).
        transform: applied to each network's features.
    """

    def __init__(
        self,
        table: datasets.Dataset,
        info: ZooInfo,
        target_names: str | Sequence[str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform)
        self.info = info
        self.target_names = _target_names(info, target_names)
        self.table = table
        self._arrays = table.with_format("numpy", columns=[*info.array_columns, *self.target_names])

    @property
    def network_spec(self) -> NetworkSpec:
        return self.info.network_spec

    @property
    def metadata_columns(self) -> tuple[str, ...]:
        return self.info.metadata_columns

    def __len__(self) -> int:
        return len(self.table)

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        indices = [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < len(self)]
        if bad:
            raise IndexError(f"network index {bad[0]} out of range for a zoo split of {len(self)} networks.")
        return indices

    def read_batch(self, indices: Sequence[int]) -> tuple[list[Tensor], list[Tensor], Targets]:
        """Weights ``(B, n_out, n_in, *filter)``, biases ``(B, n_out)``, targets ``(B,)``: one Arrow take."""
        return batch_to_tensors(self._arrays[self._check_indices(indices)], self.info, self.target_names)

    def read_metadata(self, indices: Sequence[int]) -> dict[str, list]:
        """The metadata columns of rows ``indices``: one list per column."""
        indices = self._check_indices(indices)
        if not self.metadata_columns:
            return {}
        return self.table.select_columns(list(self.metadata_columns))[indices]

    def read(self, index: int) -> tuple[list[Tensor], list[Tensor], Targets]:
        weights, biases, targets = self.read_batch([index])
        return [w[0] for w in weights], [b[0] for b in biases], {k: v[0] for k, v in targets.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(networks={len(self)}, targets={list(self.target_names)}, {self.network_spec})"


class ArrowZooStream(IterableDataset):
    """One split of an Arrow/Parquet zoo, streamed (items as :class:`ArrowZooDataset` gives them).

    Each call to ``iter`` is one epoch: the shard order and shuffle buffer (if any) are
    reseeded with ``seed + epoch``. With ``DataLoader(num_workers > 0)`` keep workers
    persistent (:class:`ZooDataModule` does) so that the epoch count survives.

    Args:
        stream: the split (:func:`~nfn_lab.data.arrow_format.open_zoo` with ``streaming=True``).
        info: the zoo's ``zoo.json``.
        target_names: the target(s) each item carries (default: all of the zoo's).
        transform: applied to each network's features.
    """

    def __init__(
        self,
        stream: datasets.IterableDataset,
        info: ZooInfo,
        target_names: str | Sequence[str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.info = info
        self.target_names = _target_names(info, target_names)
        self.transform = transform
        self.stream = stream.select_columns([*info.array_columns, *self.target_names]).with_format("numpy")
        self._epoch = -1

    @property
    def network_spec(self) -> NetworkSpec:
        return self.info.network_spec

    def _derive(self, stream: datasets.IterableDataset) -> ArrowZooStream:
        derived = copy.copy(self)
        derived.stream = stream
        return derived

    def shuffled(self, seed: int, buffer_size: int) -> ArrowZooStream:
        """This stream with its shards and, through a buffer of ``buffer_size`` networks, its rows shuffled."""
        return self._derive(self.stream.shuffle(seed=seed, buffer_size=buffer_size))

    def for_rank(self, rank: int, world_size: int) -> ArrowZooStream:
        """The part of this stream that DDP rank ``rank`` of ``world_size`` reads (disjoint, complete)."""
        return self._derive(split_dataset_by_node(self.stream, rank=rank, world_size=world_size))

    def __iter__(self) -> Iterator[Item]:
        self._epoch += 1
        self.stream.set_epoch(self._epoch)
        for row in self.stream:  # each array column (prod(shape),), each target a scalar
            batch = {name: np.asarray(value)[None] for name, value in row.items()}  # a batch of one
            weights, biases, targets = batch_to_tensors(batch, self.info, self.target_names)
            row_targets = {k: v[0] for k, v in targets.items()}
            yield make_item([w[0] for w in weights], [b[0] for b in biases], row_targets, self.transform)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(targets={list(self.target_names)}, {self.network_spec})"


class ArrowZooDataModule(ZooDataModule):
    """A zoo in nfn-lab's Arrow/Parquet format, local or on the Hugging Face Hub.

    Args:
        root: a zoo folder (Arrow or Parquet layout) or a Hub dataset id
            (``owner/name`` or ``hf://datasets/owner/name``).
        target: the target(s) each item carries (default: all of the zoo's targets).
        streaming: iterate the splits instead of indexing them (for zoos on the Hub, or
            larger than the disk); see the module docstring for shuffling and sharding.
        shuffle_buffer: networks in the training stream's shuffle buffer (streaming only).
        cache_dir: where ``datasets`` caches Parquet/Hub data converted to Arrow.
        where: keep only rows whose metadata columns equal these values, e.g.
            ``{"is_final": true}`` for the last checkpoint of every network (map-style only).
        **kwargs: :class:`~nfn_lab.data.zoo.ZooDataModule` options (``batch_size``,
            ``normalize``, ``augment``, ...).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        target: str | list[str] | None = None,
        streaming: bool = False,
        shuffle_buffer: int = 1000,
        cache_dir: str | os.PathLike | None = None,
        where: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        if where and streaming:
            raise ValueError("`where` filters an indexed zoo; it is not available with streaming=True.")
        self.source = os.fspath(root)  # kept as given: Path() would mangle "hf://datasets/..."
        self.target, self.streaming, self.shuffle_buffer, self.cache_dir = target, streaming, shuffle_buffer, cache_dir
        self.where = dict(where or {})

    @cached_property
    def info(self) -> ZooInfo:
        """The zoo's ``zoo.json`` (fetched once for a Hub dataset)."""
        return read_zoo_info(self.source)

    @property
    def splits(self) -> tuple[str, ...]:  # type: ignore[override]
        """The splits this zoo has, among ``("train", "val", "test")``."""
        return tuple(s for s in SPLITS if s in self.info.splits)

    def read_network_spec(self) -> NetworkSpec:
        return self.info.network_spec

    def _open(self, split: str, streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
        return open_zoo(self.source, split, streaming=streaming, cache_dir=self.cache_dir)

    def prepare_data(self) -> None:
        """Downloads a Hub zoo's splits into the ``datasets`` cache (once, before DDP processes read it)."""
        if locate_zoo(self.source)[1] is not None and not self.streaming:
            for split in self.splits:
                self._open(split, streaming=False)

    def make_dataset(  # type: ignore[override]  # a stream is not a (map-style) ZooDataset
        self, split: str, transform: Transform | None
    ) -> ArrowZooDataset | ArrowZooStream:
        if self.streaming:
            return ArrowZooStream(self._open(split, streaming=True), self.info, self.target, transform)
        return ArrowZooDataset(self._select(self._open(split, streaming=False)), self.info, self.target, transform)

    def _select(self, table: datasets.Dataset) -> datasets.Dataset:
        """The rows matching :attr:`where` (one vectorized pass over the named metadata columns)."""
        unknown = [c for c in self.where if c not in self.info.metadata_columns]
        if unknown:
            raise ValueError(
                f"`where` names {unknown}, not metadata columns of this zoo: {list(self.info.metadata_columns)}."
            )
        if not self.where:
            return table
        columns = table.with_format("numpy", columns=list(self.where))[:]
        keep = np.ones(len(table), dtype=bool)
        for column, value in self.where.items():
            keep &= np.asarray(columns[column]) == value
        return table.select(np.flatnonzero(keep))

    def stats_key(self) -> str:
        local, hub_id = locate_zoo(self.source)
        where = hub_id if local is None else local.resolve()
        created = self.info.provenance.get("created")
        return (
            f"{type(self).__qualname__}:{where}:{self.info.splits.get('train')}:{created}:{sorted(self.where.items())}"
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        if not self.streaming:
            return super()._loader(split, train)
        stream = self.split_dataset(split)
        assert isinstance(stream, ArrowZooStream)
        if train:
            stream = stream.shuffled(self.seed, self.shuffle_buffer)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            stream = stream.for_rank(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return DataLoader(
            stream,
            batch_size=self.batch_size if train else self.eval_batch_size,
            collate_fn=collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def __repr__(self) -> str:
        info = self.__dict__.get("info")  # only if already read: repr never fetches
        sizes = f", splits={info.splits}" if info is not None else ""
        return (
            f"{type(self).__name__}(root={self.source!r}, batch_size={self.batch_size}, "
            f"streaming={self.streaming}{sizes})"
        )

    # --- format discovery ---------------------------------------------------------------------------
    @classmethod
    def detect(cls, root: str | os.PathLike) -> bool:
        return (Path(root) / INFO_FILE).is_file()

    @classmethod
    def describe(cls, root: str | os.PathLike) -> dict[str, Any]:
        info = read_zoo_info(root)
        layout = zoo_layout(root)
        described: dict[str, Any] = {
            "format": f"nfn-lab zoo, {layout} layout (format version {info.format_version})",
            "splits": info.splits,
            "num_checkpoints": sum(info.splits.values()),
        }
        if "network_id" in info.metadata_columns:  # streams that one column only
            ids: set = set()
            for split in info.splits:
                column = open_zoo(root, split, streaming=True).select_columns(["network_id"])
                for batch in column.iter(batch_size=10_000):
                    ids.update(batch["network_id"])
            described["num_networks"] = len(ids)
        described.update(
            network_spec=info.network_spec,
            targets=list(info.target_names),
            metadata_columns=list(info.metadata_columns),
            provenance=info.provenance,
        )
        return described
