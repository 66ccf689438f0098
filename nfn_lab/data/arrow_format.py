"""nfn-lab's native model-zoo format: Arrow tables (Hugging Face ``datasets``) plus a ``zoo.json``.

Any tool may write this format; :class:`ZooWriter` is the reference writer and
:func:`open_zoo` / :func:`read_zoo_info` the reference readers.

**Arrow layout** (local training; memory-mapped on load, nothing is copied)::

    <root>/
      zoo.json             metadata, see below (written last: a folder without it is not a zoo)
      README.md            dataset card: YAML front matter + a description generated from zoo.json
      dataset_dict.json    ┐
      train/  val/  test/  ┘ DatasetDict.save_to_disk(root); any subset of the three splits
        data-00000-of-00001.arrow, dataset_info.json, state.json

**Parquet layout** (the layout of a Hugging Face Hub dataset repository; written by
``ZooWriter(..., write_parquet=True)`` or :func:`to_parquet`)::

    <root>/
      zoo.json, README.md  (the card's front matter maps each split to its files)
      data/<split>-00000-of-0000N.parquet

A Hub dataset in the Parquet layout is read by its id (``owner/name`` or
``hf://datasets/owner/name``) with ``load_dataset`` (optionally streaming); its
``zoo.json`` is fetched with ``huggingface_hub.hf_hub_download``.

**Columns** (one row = one network checkpoint):

- ``w0, b0, w1, b1, ...``: layer ``i``'s weight and bias in PyTorch layout
  (``(n_out, n_in, *filter)`` and ``(n_out,)``), flattened row-major, each a fixed-length
  list of float32 (``datasets.List(Value("float32"), length=k)``, Arrow ``FixedSizeList``);
  the shapes are in ``zoo.json``'s ``network_spec``. All values are finite.
- one column per target (e.g. ``test_accuracy``): float32, or int64 for class labels;
- optional per-network metadata columns (e.g. ``network_id``, ``step``, hyperparameters as
  strings, integers or floats).

**zoo.json**::

    {
      "format": "nfn-lab-zoo",
      "format_version": 1,
      "network_spec": {"weight_shapes": [[16, 1, 3, 3], ...], "bias_shapes": [[16], ...]},
      "target_names": ["test_accuracy"],
      "metadata_columns": ["network_id", "step"],
      "splits": {"train": 800, "val": 200, "test": 1000},
      "provenance": {"source_format": ..., "source_path": ...}   (converted zoos)
                 or {"builder": ..., "seed": ...}                (built zoos)
                    plus "command", "created" (UTC, ISO 8601) and "library_versions"
    }

**Writing is atomic**: a zoo is assembled in a hidden sibling folder
(``.<name>.partial-*``) and renamed into place when complete, so an interrupted write
never leaves a folder that looks like a zoo. An existing non-empty destination is
refused unless ``overwrite=True``, and even then it is removed only after the new zoo
is complete (and only if it is itself a zoo, so a mistyped path cannot delete other
data).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
import yaml
from torch import Tensor

from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = [
    "FORMAT_VERSION",
    "INFO_FILE",
    "SPLITS",
    "StagedDirectory",
    "ZooInfo",
    "ZooWriter",
    "batch_to_tensors",
    "check_destination",
    "dataset_card",
    "locate_zoo",
    "open_zoo",
    "read_zoo_info",
    "to_parquet",
    "zoo_layout",
]

FORMAT_NAME = "nfn-lab-zoo"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
INFO_FILE = "zoo.json"
CARD_FILE = "README.md"
HUB_PREFIX = "hf://datasets/"
MAX_SHARD_BYTES = 500 * 2**20  # the Hub's usual Parquet shard size
STREAM_SHARDS = 64  # shards of a local Arrow split when streamed: up to 64 workers x ranks share it
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def weight_column(layer: int) -> str:
    return f"w{layer}"


def bias_column(layer: int) -> str:
    return f"b{layer}"


# --- zoo.json -----------------------------------------------------------------------------------------
@dataclass
class ZooInfo:
    """The contents of ``zoo.json``.

    Args:
        network_spec: every network's spec, all sizes set.
        target_names: the target columns (float32, or int64 for class labels).
        metadata_columns: the per-network metadata columns.
        splits: rows per split, e.g. ``{"train": 800, "val": 200}``.
        provenance: where the zoo came from (see the module docstring).
        format_version: the version of this format the zoo was written in.
    """

    network_spec: NetworkSpec
    target_names: tuple[str, ...]
    metadata_columns: tuple[str, ...] = ()
    splits: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.target_names = tuple(self.target_names)
        self.metadata_columns = tuple(self.metadata_columns)
        try:
            self.network_spec.get_num_params()
        except ValueError:
            raise ValueError(
                f"a zoo's network_spec must give every size, got {self.network_spec}; build it with "
                "NetworkSpec.from_shapes(...) or network_spec_from_wsfeat(..., set_all_dims=True)."
            ) from None
        names = [*self.array_columns, *self.target_names, *self.metadata_columns]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise ValueError(
                f"column names {clashes} are used twice; w<i>/b<i> name the arrays, so give targets and "
                "metadata other, distinct names."
            )
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown splits {sorted(unknown)}; a zoo has splits among {SPLITS}.")

    @property
    def array_columns(self) -> list[str]:
        """``["w0", "b0", "w1", "b1", ...]``."""
        return [c for i in range(len(self.network_spec)) for c in (weight_column(i), bias_column(i))]

    def array_features(self) -> dict[str, datasets.List]:
        """The Hugging Face feature of each array column (fixed-length float32 lists)."""
        spec = self.network_spec
        feats = {}
        for i, (w, b) in enumerate(zip(spec.weight_spec, spec.bias_spec)):
            feats[weight_column(i)] = datasets.List(datasets.Value("float32"), length=math.prod(w.shape))
            feats[bias_column(i)] = datasets.List(datasets.Value("float32"), length=math.prod(b.shape))
        return feats

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "network_spec": self.network_spec.to_dict(),
            "target_names": list(self.target_names),
            "metadata_columns": list(self.metadata_columns),
            "splits": dict(self.splits),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = INFO_FILE) -> ZooInfo:
        """Inverse of :meth:`to_dict`; ``where`` (the file) prefixes error messages."""
        if data.get("format") != FORMAT_NAME:
            raise ValueError(f"{where}: not an nfn-lab zoo description (its 'format' is not {FORMAT_NAME!r}).")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{where}: format_version {version!r} is not supported by this nfn-lab (it reads up to "
                f"{FORMAT_VERSION}); upgrade nfn-lab."
            )
        try:
            return cls(
                network_spec=NetworkSpec.from_dict(data["network_spec"]),
                target_names=data["target_names"],
                metadata_columns=data.get("metadata_columns", ()),
                splits=dict(data.get("splits", {})),
                provenance=dict(data.get("provenance", {})),
                format_version=version,
            )
        except KeyError as err:
            raise ValueError(f"{where}: missing field {err}.") from None
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


# --- where a zoo is ------------------------------------------------------------------------------------
def locate_zoo(path_or_hub_id: str | os.PathLike) -> tuple[Path | None, str | None]:
    """``(local folder, None)`` or ``(None, Hub id)``: where a zoo named by a path or Hub id is.

    Raises:
        FileNotFoundError: neither an existing folder nor a Hub id.
        NotADirectoryError: a file.
    """
    text = os.fspath(path_or_hub_id)
    if text.startswith(HUB_PREFIX):
        return None, text[len(HUB_PREFIX) :]
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is a file; a zoo is a folder holding {INFO_FILE}.")
        return path, None
    if isinstance(path_or_hub_id, str) and _HUB_ID.fullmatch(text) and not text.startswith("."):
        return None, text
    raise FileNotFoundError(
        f"no zoo at {text}: no such folder (a Hugging Face Hub dataset is named 'owner/name' or "
        f"'{HUB_PREFIX}owner/name')."
    )


def zoo_layout(root: str | os.PathLike) -> str:
    """``"arrow"`` or ``"parquet"``: which layout the local zoo folder ``root`` has."""
    root = Path(root)
    if (root / "dataset_dict.json").is_file():
        return "arrow"
    if any((root / "data").glob("*.parquet")):
        return "parquet"
    raise FileNotFoundError(
        f"{root} holds no zoo data: expected dataset_dict.json (Arrow layout) or data/<split>-*.parquet "
        "(Parquet layout)."
    )


def read_zoo_info(path_or_hub_id: str | os.PathLike) -> ZooInfo:
    """Reads ``zoo.json`` of a local zoo folder or a Hub dataset (no weights are read).

    Raises:
        FileNotFoundError: if there is no zoo (or no ``zoo.json``) there.
        ValueError: if ``zoo.json`` is malformed or from a newer format version.
    """
    root, hub_id = locate_zoo(path_or_hub_id)
    if root is not None:
        path = root / INFO_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no {INFO_FILE} in {root}: not an nfn-lab zoo (write one with ZooWriter or `nfn-lab zoo convert`)."
            )
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(hub_id, INFO_FILE, repo_type="dataset"))
        except Exception as err:  # offline, missing repo or file: all mean "no zoo here"
            raise FileNotFoundError(
                f"{hub_id!r} is neither a local folder nor a reachable Hugging Face Hub dataset with a "
                f"{INFO_FILE} ({type(err).__name__}: {err})."
            ) from err
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from None
    return ZooInfo.from_dict(data, where=str(path))


def open_zoo(
    path_or_hub_id: str | os.PathLike,
    split: str,
    streaming: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """One split of a zoo as a Hugging Face dataset.

    For fast batched reads use ``ds.with_format("numpy")[indices]`` and
    :func:`batch_to_tensors` (several times faster than ``with_format("torch")``).

    Args:
        path_or_hub_id: a local zoo folder (Arrow or Parquet layout) or a Hub dataset id.
        split: ``"train"``, ``"val"`` or ``"test"``.
        streaming: return an ``IterableDataset`` that reads as it goes (nothing is
            downloaded or converted up front).
        cache_dir: where ``datasets`` caches Parquet data converted to Arrow (not used for
            the Arrow layout, which is memory-mapped in place).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; a zoo has splits among {SPLITS}.")
    root, hub_id = locate_zoo(path_or_hub_id)
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    if root is None:
        return datasets.load_dataset(hub_id, split=split, streaming=streaming, cache_dir=cache)
    if zoo_layout(root) == "arrow":
        if not (root / split / "state.json").is_file():
            present = sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())
            raise ValueError(f"the zoo {root} has no {split!r} split; it has {present}.")
        table = datasets.load_from_disk(os.fspath(root / split))
        return table.to_iterable_dataset(num_shards=max(1, min(len(table), STREAM_SHARDS))) if streaming else table
    files = sorted((root / "data").glob(f"{split}-*.parquet"))
    if not files:
        present = sorted({p.name.split("-")[0] for p in (root / "data").glob("*.parquet")})
        raise ValueError(f"the zoo {root} has no {split!r} split (no data/{split}-*.parquet); it has {present}.")
    return datasets.load_dataset(
        "parquet", data_files={split: [os.fspath(f) for f in files]}, split=split, streaming=streaming, cache_dir=cache
    )


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


# --- atomic output folders ------------------------------------------------------------------------------
def check_destination(root: str | os.PathLike, overwrite: bool) -> None:
    """Raises unless ``root`` may receive a new zoo: missing, empty, or (``overwrite``) an existing zoo.

    Raises:
        FileExistsError: ``root`` is a file, or a non-empty folder and ``overwrite`` is False,
            or a non-empty folder that is not a zoo (no ``zoo.json``).
    """
    root = Path(root).expanduser()
    if not root.exists():
        return
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is a file; choose a folder path for the zoo.")
    if not any(root.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{root} exists and is not empty; pass overwrite=True (CLI: --overwrite) to replace it (the old "
            "contents are removed only once the new zoo is complete) or choose another path."
        )
    if not (root / INFO_FILE).is_file():
        raise FileExistsError(
            f"refusing to replace {root}: it is not empty and not an nfn-lab zoo (no {INFO_FILE}); remove it "
            "yourself or choose another path."
        )


class StagedDirectory:
    """A folder assembled beside its destination and renamed into place only when complete.

    Files go under :attr:`path` (inside a hidden sibling ``.<name>.partial-*``);
    :meth:`commit` moves it to ``root`` (replacing an old zoo only then), :meth:`abort`
    deletes it. :attr:`scratch` is a work folder deleted with it.

    Args:
        root: the destination folder.
        overwrite: allow replacing an existing zoo at ``root`` (see :func:`check_destination`).
    """

    def __init__(self, root: str | os.PathLike, overwrite: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        self.overwrite = overwrite
        check_destination(self.root, overwrite)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.partial-", dir=self.root.parent))
        self.path = self._tmp / "zoo"
        self.scratch = self._tmp / "scratch"
        self.path.mkdir()
        self.scratch.mkdir()

    def commit(self) -> None:
        """Moves the finished folder to ``root``; an old zoo there is deleted afterwards."""
        check_destination(self.root, self.overwrite)  # again: something may have appeared meanwhile
        if self.root.exists():
            os.replace(self.root, self._tmp / "previous")  # same filesystem: atomic renames
        os.replace(self.path, self.root)
        shutil.rmtree(self._tmp)

    def abort(self) -> None:
        """Deletes everything written so far; ``root`` is untouched."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"StagedDirectory(root={str(self.root)!r}, staging={str(self._tmp)!r})"


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Hides ``datasets``' own progress bars (we show ours)."""
    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.utils.enable_progress_bars()


# --- writing --------------------------------------------------------------------------------------------
def _library_versions() -> dict[str, str]:
    import nfn_lab

    return {
        "nfn_lab": nfn_lab.__version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "datasets": datasets.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
    }


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


def _write_parquet_split(table: datasets.Dataset, data_dir: Path, split: str) -> None:
    num_shards = max(1, math.ceil(table.data.nbytes / MAX_SHARD_BYTES))
    data_dir.mkdir(parents=True, exist_ok=True)
    for i in range(num_shards):
        shard = table.shard(num_shards, i, contiguous=True)
        shard.to_parquet(os.fspath(data_dir / f"{split}-{i:05d}-of-{num_shards:05d}.parquet"))


def _write_metadata(folder: Path, info: ZooInfo, layout: str) -> None:
    (folder / CARD_FILE).write_text(dataset_card(info, layout))
    (folder / INFO_FILE).write_text(json.dumps(info.to_dict(), indent=2) + "\n")  # last: marks the zoo complete


class ZooWriter:
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
        provenance = dict(provenance or {})
        provenance.setdefault("command", shlex.join(sys.argv))
        provenance["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        provenance["library_versions"] = _library_versions()
        provenance = json.loads(json.dumps(provenance, default=str))  # plain JSON values (paths -> strings)
        self.info = ZooInfo(network_spec, tuple(target_names), tuple(metadata_columns), {}, provenance)
        self.write_parquet = write_parquet
        self.chunk_size = chunk_size
        self._staged = StagedDirectory(root, overwrite)
        self._schema: pa.Schema | None = None
        self._features: datasets.Features | None = None
        self._buffers: dict[str, list[pa.RecordBatch]] = {}
        self._buffered: dict[str, int] = {}
        self._streams: dict[str, tuple[pa.NativeFile, pa.ipc.RecordBatchStreamWriter]] = {}
        self._done = False

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
        if self._done:
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
                **self.info.array_features(),
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

    def _close_streams(self) -> None:
        for sink, writer in self._streams.values():
            writer.close()
            sink.close()
        self._streams.clear()

    # --- finishing ----------------------------------------------------------------------------------------
    def close(self) -> Path:
        """Assembles the zoo and moves it to :attr:`root`; returns that path.

        Raises:
            ValueError: if no network was added (nothing is written).
        """
        if self._done:
            return self.root
        try:
            if not self.info.splits:
                raise ValueError(f"no networks were added to the zoo for {self.root}; nothing was written.")
            for split in list(self._buffers):
                self._flush(split)
            self._close_streams()
            info = datasets.DatasetInfo(features=self._features)
            tables = {
                split: datasets.Dataset.from_file(os.fspath(self._staged.scratch / f"{split}.arrow"), info=info)
                for split in SPLITS
                if split in self.info.splits
            }
            with _quiet_datasets():
                if self.write_parquet:
                    for split, table in tables.items():
                        _write_parquet_split(table, self._staged.path / "data", split)
                else:
                    datasets.DatasetDict(tables).save_to_disk(os.fspath(self._staged.path))
            del tables
            _write_metadata(self._staged.path, self.info, "parquet" if self.write_parquet else "arrow")
            self._staged.commit()
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.root

    def abort(self) -> None:
        """Discards everything written; :attr:`root` is left as it was."""
        try:
            self._close_streams()
        finally:
            self._staged.abort()
            self._done = True

    def __enter__(self) -> ZooWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

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
        with _quiet_datasets():
            for split in info.splits:
                _write_parquet_split(open_zoo(src, split), staged.path / "data", split)
        _write_metadata(staged.path, info, "parquet")
        staged.commit()
    except BaseException:
        staged.abort()
        raise
    return staged.root


# --- dataset card ---------------------------------------------------------------------------------------
def _size_category(rows: int) -> str:
    bounds = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"), (10**7, "1M<n<10M")]
    return next((label for bound, label in bounds if rows < bound), "n>10M")


def dataset_card(info: ZooInfo, layout: str) -> str:
    """The ``README.md`` of a zoo: YAML front matter (Hub metadata) and a description.

    Args:
        info: the zoo's description.
        layout: ``"arrow"`` or ``"parquet"`` (the latter lists each split's files for the Hub).
    """
    front: dict[str, Any] = {
        "pretty_name": f"nfn-lab model zoo ({len(info.network_spec)}-layer networks)",
        "tags": ["weight-space-learning", "model-zoo", "nfn-lab"],
        "size_categories": [_size_category(sum(info.splits.values()))],
    }
    if layout == "parquet":
        front["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in info.splits],
            }
        ]
    spec = info.network_spec
    rows = [
        f"| `{weight_column(i)}`, `{bias_column(i)}` | {i} | {tuple(w.shape)} | {tuple(b.shape)} |"
        for i, (w, b) in enumerate(zip(spec.weight_spec, spec.bias_spec))
    ]
    splits = ", ".join(f"{s}: {n:,}" for s, n in info.splits.items())
    provenance = yaml.safe_dump(info.provenance, sort_keys=False).rstrip()
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {front['pretty_name']}",
        "",
        f"A model zoo in nfn-lab's format (version {info.format_version}): one row per network checkpoint, "
        f"{spec.get_num_params():,} parameters each. Splits: {splits}.",
        "",
        "## Columns",
        "",
        "Weights and biases in PyTorch layout `(n_out, n_in, *filter)` / `(n_out,)`, flattened row-major into "
        "fixed-length float32 lists:",
        "",
        "| columns | layer | weight shape | bias shape |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Targets: {', '.join(f'`{t}`' for t in info.target_names) or 'none'}.",
        f"Metadata: {', '.join(f'`{m}`' for m in info.metadata_columns) or 'none'}.",
        "",
        "## Loading",
        "",
        "```python",
        "from datamodules.arrow_zoo import ArrowZooDataModule",
        'dm = ArrowZooDataModule("<this folder or owner/name>", batch_size=32)',
        "```",
        "",
        "## Provenance",
        "",
        "```yaml",
        provenance,
        "```",
        "",
    ]
    return "\n".join(lines)
