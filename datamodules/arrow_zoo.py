"""Zoos in nfn-lab's own Arrow/Parquet format (Hugging Face ``datasets``).

The format (docs/formats.md): a folder written by ``DatasetDict.save_to_disk``
(memory-mapped, never copied) or a Parquet folder / Hugging Face Hub dataset
(``data/<split>-*.parquet``), laid out as :mod:`nfn_lab.data.arrow_container` describes, with
a ``zoo.json`` giving the network spec, the target and metadata columns and the split sizes
and a ``README.md`` card (:mod:`nfn_lab.data.card`). This module holds the format's reader
(:class:`ArrowZooDataModule`, :func:`batch_to_tensors`) and its reference writer
(:class:`ZooWriter`, :func:`to_parquet`); ``nfn-lab zoo convert`` (from any other format) and
``nfn-lab zoo build`` write through it.

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
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.distributed import split_dataset_by_node
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from nfn_lab.data.arrow_container import (
    SPLITS,
    bias_column,
    locate_zoo,
    open_zoo,
    quiet_datasets,
    weight_column,
    write_parquet_split,
    zoo_layout,
)
from nfn_lab.data.card import ZooInfo, read_zoo_info, stamp_provenance, write_description
from nfn_lab.data.staging import INFO_FILE, StagedDirectory, StagedWriter
from nfn_lab.data.zoo import Item, Targets, Transform, ZooDataModule, ZooDataset, make_item
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures, collate

__all__ = [
    "ArrowZooDataModule",
    "ArrowZooDataset",
    "ArrowZooStream",
    "ZooWriter",
    "batch_to_tensors",
    "to_parquet",
]


# --- reading --------------------------------------------------------------------------------------------


def batch_to_tensors(
    batch: Mapping[str, np.ndarray], info: ZooInfo, target_names: Sequence[str]
) -> tuple[list[Tensor], list[Tensor], dict[str, Tensor]]:
    """Tensors from a numpy-formatted batch of rows (``ds.with_format("numpy")[indices]``).

    Returns:
        weights ``(B, n_out, n_in, *filter)``, biases ``(B, n_out)`` (float32, sharing memory
        with ``batch``) and targets ``(B,)`` (int64 for integer columns, else float32).
    """
    spec = info.network_spec

    def array(column: str, shape: tuple[int, ...]) -> Tensor:
        flat = np.ascontiguousarray(batch[column], dtype=np.float32)  # (B, prod(shape))
        if flat.ndim != 2 or flat.shape[1] != math.prod(shape):
            raise ValueError(
                f"column {column} holds rows of shape {flat.shape[1:]}, but zoo.json's network_spec gives that "
                f"array the shape {shape} ({math.prod(shape)} values); the zoo's data and zoo.json disagree."
            )
        return torch.from_numpy(flat).view(len(flat), *shape)

    weights = [array(weight_column(i), s.shape) for i, s in enumerate(spec.weight_spec)]
    biases = [array(bias_column(i), s.shape) for i, s in enumerate(spec.bias_spec)]

    def target(name: str) -> Tensor:
        values = np.asarray(batch[name])
        return torch.from_numpy(values.astype(np.int64 if np.issubdtype(values.dtype, np.integer) else np.float32))

    return weights, biases, {name: target(name) for name in target_names}


def _target_names(info: ZooInfo, target: str | Sequence[str] | None) -> tuple[str, ...]:
    names = info.target_names if target is None else (target,) if isinstance(target, str) else tuple(target)
    unknown = [t for t in names if t not in info.target_names]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; this zoo has {list(info.target_names)}.")
    return tuple(names)


class ArrowZooDataset(ZooDataset):
    """One split of an Arrow/Parquet zoo, read in batches.

    Args:
        table: the split (:func:`~nfn_lab.data.arrow_container.open_zoo`).
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
        stream: the split (:func:`~nfn_lab.data.arrow_container.open_zoo` with ``streaming=True``).
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
        dataset = self.split_dataset(split)
        assert isinstance(dataset, ArrowZooStream)
        stream: ArrowZooStream = dataset
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


# --- writing --------------------------------------------------------------------------------------------
def _array_features(spec: NetworkSpec) -> dict[str, datasets.List]:
    """The Hugging Face feature of each array column ``w<i>``, ``b<i>`` (fixed-length float32 lists)."""
    feats = {}
    for i, (w, b) in enumerate(zip(spec.weight_spec, spec.bias_spec)):
        feats[weight_column(i)] = datasets.List(datasets.Value("float32"), length=math.prod(w.shape))
        feats[bias_column(i)] = datasets.List(datasets.Value("float32"), length=math.prod(b.shape))
    return feats


def _metadata_schema(metadata: Mapping[str, list]) -> list[pa.Field]:
    fields = []
    for name, values in metadata.items():
        kind = pa.array(values).type
        if pa.types.is_null(kind):
            raise ValueError(
                f"metadata column {name!r} holds only None in the first batch, so its type is unknown; give at "
                "least one value in the first batch written."
            )
        fields.append(pa.field(name, kind))
    return fields


class ZooWriter(StagedWriter):
    """Writes a zoo in nfn-lab's Arrow format (or its Parquet layout), atomically.

    Rows are buffered in chunks of ``chunk_size`` networks and appended to one Arrow
    stream per split, so memory stays bounded whatever the zoo size; :meth:`close`
    assembles the zoo (one more sequential pass) and renames it into place. Use as a
    context manager: an exception inside the ``with`` block discards everything.

    Example::

        with ZooWriter("zoos/digits", spec, ["test_accuracy"], {"builder": "digits_cnn", "seed": 0}) as writer:
            writer.add("train", wsfeat, {"test_accuracy": acc}, {"network_id": ids})

    Args:
        root: destination folder.
        network_spec: every network's spec, all sizes set.
        target_names: names of the targets given to :meth:`add` (stored as float32, or as
            int64 if the first batch gives integers: class labels).
        provenance: where the zoo comes from, e.g. ``{"source_format": ..., "source_path": ...}``
            or ``{"builder": ..., "seed": ...}``; ``created``, ``library_versions`` and
            ``command`` (if absent) are added.
        metadata_columns: names of per-network metadata given to :meth:`add` (strings,
            integers, floats or booleans; their types are fixed by the first batch).
        overwrite: replace an existing zoo at ``root`` (only once the new one is complete).
        write_parquet: write the Parquet (Hub) layout instead of the Arrow layout.
        chunk_size: networks buffered per split before they are written out.

    Raises:
        FileExistsError: ``root`` is not empty and ``overwrite`` is False.
        ValueError: the spec has free sizes, or names clash.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        network_spec: NetworkSpec,
        target_names: Sequence[str],
        provenance: Mapping[str, Any] | None = None,
        metadata_columns: Sequence[str] = (),
        overwrite: bool = False,
        write_parquet: bool = False,
        chunk_size: int = 256,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
        self.info = ZooInfo(
            network_spec, tuple(target_names), tuple(metadata_columns), {}, stamp_provenance(provenance)
        )
        self.write_parquet = write_parquet
        self.chunk_size = chunk_size
        self._staged = StagedDirectory(root, overwrite)
        self._schema: pa.Schema | None = None
        self._features: datasets.Features | None = None
        self._buffers: dict[str, list[pa.RecordBatch]] = {}
        self._buffered: dict[str, int] = {}
        self._streams: dict[str, tuple[pa.NativeFile, pa.ipc.RecordBatchStreamWriter]] = {}

    @property
    def root(self) -> Path:
        return self._staged.root

    # --- adding rows ------------------------------------------------------------------------------------
    def add(
        self,
        split: str,
        wsfeat: WeightSpaceFeatures,
        targets: Mapping[str, Tensor | Sequence[float]],
        metadata: Mapping[str, list] | None = None,
    ) -> None:
        """Appends a batch of networks to ``split``.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            wsfeat: ``weights[i]: (B, 1, n_out, n_in, *filter)``, ``biases[i]: (B, 1, n_out)``.
            targets: one ``(B,)`` tensor (or sequence) per target name.
            metadata: one length-``B`` list per metadata column.

        Raises:
            ValueError: naming the split, row and array on a shape mismatch, missing or
                unexpected keys, or NaN/inf weights.
        """
        if self.ended:
            raise RuntimeError(f"ZooWriter for {self.root} is closed; open a new one to write more.")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}.")
        self.info.network_spec.check_features(wsfeat, channels=1, where=f"ZooWriter.add({split!r})")
        num = wsfeat.batch_size
        first_row = self.info.splits.get(split, 0)
        self._check_keys("targets", targets, self.info.target_names)
        target_values = {name: self._target_values(name, targets[name], num) for name in self.info.target_names}
        metadata = dict(metadata or {})
        self._check_keys("metadata", metadata, self.info.metadata_columns)
        for name in self.info.metadata_columns:
            if len(metadata[name]) != num:
                raise ValueError(
                    f"metadata {name!r} has {len(metadata[name])} values; expected {num}, one per network."
                )
        columns = self._array_columns(split, wsfeat, first_row)
        if self._schema is None:
            self._set_schema(target_values, {name: metadata[name] for name in self.info.metadata_columns})
        assert self._schema is not None
        for name, values in target_values.items():
            kind = self._schema.field(name).type
            if pa.types.is_integer(kind) and values.is_floating_point():
                raise ValueError(f"target {name!r} holds integers (class labels) in this zoo; got {values.dtype}.")
            columns[name] = pa.array(values.to(torch.int64 if pa.types.is_integer(kind) else torch.float32).numpy())
        for name in self.info.metadata_columns:
            kind = self._schema.field(name).type
            try:
                columns[name] = pa.array(metadata[name], type=kind)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
                raise ValueError(
                    f"metadata {name!r} in split {split!r}: values are not {kind} as before ({err})."
                ) from None
        batch = pa.RecordBatch.from_arrays(list(columns.values()), schema=self._schema)
        self._buffers.setdefault(split, []).append(batch)
        self._buffered[split] = self._buffered.get(split, 0) + num
        self.info.splits[split] = first_row + num
        if self._buffered[split] >= self.chunk_size:
            self._flush(split)

    def _array_columns(self, split: str, wsfeat: WeightSpaceFeatures, first_row: int) -> dict[str, pa.Array]:
        """``w0, b0, ...`` as FixedSizeList arrays; raises a ValueError on the first non-finite network."""
        num = wsfeat.batch_size
        columns = {}
        for name, x in zip(self.info.array_columns, (a for pair in wsfeat for a in pair)):
            flat = x.detach().reshape(num, -1).to("cpu", torch.float32).contiguous()  # (B, prod(shape))
            bad = (~torch.isfinite(flat)).any(dim=1).nonzero()
            if len(bad):
                row = int(bad[0])
                raise ValueError(
                    f"split {split!r}, network {first_row + row} (row {row} of this batch): array {name} has "
                    "NaN/inf values; drop diverged networks before writing."
                )
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.numpy().ravel()), flat.shape[1])
        return columns

    @staticmethod
    def _target_values(name: str, values: Tensor | Sequence[float], num: int) -> Tensor:
        """``(B,)`` int64 (integer targets: class labels) or float32 (all others)."""
        values = torch.as_tensor(values).detach().cpu()
        if values.shape != (num,):
            raise ValueError(f"target {name!r} has shape {tuple(values.shape)}; expected ({num},), one per network.")
        integer = not (values.is_floating_point() or values.is_complex() or values.dtype == torch.bool)
        return values.to(torch.int64 if integer else torch.float32)

    @staticmethod
    def _check_keys(what: str, given: Mapping[str, Any], expected: Sequence[str]) -> None:
        missing, unexpected = set(expected) - set(given), set(given) - set(expected)
        if missing or unexpected:
            raise ValueError(
                f"{what} keys {sorted(given)} do not match the writer's {list(expected)} (missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)})."
            )

    def _set_schema(self, targets: Mapping[str, Tensor], metadata: Mapping[str, list]) -> None:
        features = datasets.Features(
            {
                **_array_features(self.info.network_spec),
                **{name: datasets.Value(str(t.dtype).removeprefix("torch.")) for name, t in targets.items()},
                **datasets.Features.from_arrow_schema(pa.schema(_metadata_schema(metadata))),
            }
        )
        self._features = features
        self._schema = features.arrow_schema

    def _flush(self, split: str) -> None:
        batches = self._buffers.pop(split, [])
        self._buffered[split] = 0
        if not batches:
            return
        if split not in self._streams:
            sink = pa.OSFile(os.fspath(self._staged.scratch / f"{split}.arrow"), "wb")
            self._streams[split] = (sink, pa.ipc.new_stream(sink, self._schema))
        chunk = pa.Table.from_batches(batches).combine_chunks()
        self._streams[split][1].write_table(chunk)

    def _release(self) -> None:
        for sink, writer in self._streams.values():
            writer.close()
            sink.close()
        self._streams.clear()

    # --- finishing ----------------------------------------------------------------------------------------
    def _finish(self) -> None:
        """Assembles the zoo in the staging folder (``close()`` then moves it to :attr:`root`).

        Raises:
            ValueError: if no network was added (nothing is written).
        """
        if not self.info.splits:
            raise ValueError(f"no networks were added to the zoo for {self.root}; nothing was written.")
        for split in list(self._buffers):
            self._flush(split)
        self._release()
        info = datasets.DatasetInfo(features=self._features)
        tables = {
            split: datasets.Dataset.from_file(os.fspath(self._staged.scratch / f"{split}.arrow"), info=info)
            for split in SPLITS
            if split in self.info.splits
        }
        with quiet_datasets():
            if self.write_parquet:
                for split, table in tables.items():
                    write_parquet_split(table, self._staged.path / "data", split)
            else:
                datasets.DatasetDict(tables).save_to_disk(os.fspath(self._staged.path))
        del tables
        write_description(self._staged.path, self.info, "parquet" if self.write_parquet else "arrow")

    def __repr__(self) -> str:
        layout = "parquet" if self.write_parquet else "arrow"
        return (
            f"ZooWriter(root={str(self.root)!r}, layout={layout}, splits={self.info.splits}, {self.info.network_spec})"
        )


def to_parquet(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copies a local Arrow-layout zoo into the Parquet (Hub) layout at ``dst``, atomically.

    Upload the result with ``huggingface-cli upload <owner>/<name> <dst> --repo-type dataset``.
    """
    info = read_zoo_info(src)
    staged = StagedDirectory(dst, overwrite)
    try:
        with quiet_datasets():
            for split in info.splits:
                write_parquet_split(open_zoo(src, split), staged.path / "data", split)
        write_description(staged.path, info, "parquet")
        staged.commit()
    except BaseException:
        staged.abort()
        raise
    return staged.root
