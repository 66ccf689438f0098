"""The Arrow container of nfn-lab's zoo format: where a zoo's tables are and how they are read and written.

A zoo is a folder (or a Hugging Face Hub dataset) with a ``zoo.json`` (see
:mod:`nfn_lab.data.card`) and its rows in one of two layouts (see docs/formats.md).

**Arrow layout** (local training; memory-mapped on load, nothing is copied)::

    <root>/
      zoo.json, README.md
      dataset_dict.json    ┐
      train/  val/  test/  ┘ DatasetDict.save_to_disk(root); any subset of the three splits
        data-00000-of-00001.arrow, dataset_info.json, state.json

**Parquet layout** (the layout of a Hugging Face Hub dataset repository)::

    <root>/
      zoo.json, README.md  (the card's front matter maps each split to its files)
      data/<split>-00000-of-0000N.parquet

A Hub dataset in the Parquet layout is read by its id (``owner/name`` or
``hf://datasets/owner/name``) with ``load_dataset`` (optionally streaming).

**Columns** (one row = one network checkpoint): ``w0, b0, w1, b1, ...`` (:func:`weight_column`,
:func:`bias_column`), layer ``i``'s weight and bias in PyTorch layout (``(n_out, n_in, *filter)``
and ``(n_out,)``) flattened row-major into fixed-length float32 lists (Arrow ``FixedSizeList``);
one column per target (float32, or int64 for class labels); optional metadata columns.
The zoo's reader and writer are in ``datamodules/arrow_zoo.py``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets

from nfn_lab.data.staging import INFO_FILE

__all__ = [
    "HUB_PREFIX",
    "SPLITS",
    "bias_column",
    "locate_zoo",
    "open_zoo",
    "quiet_datasets",
    "weight_column",
    "write_parquet_split",
    "zoo_layout",
]

SPLITS = ("train", "val", "test")
HUB_PREFIX = "hf://datasets/"
MAX_SHARD_BYTES = 500 * 2**20  # the Hub's usual Parquet shard size
STREAM_SHARDS = 64  # shards of a local Arrow split when streamed: up to 64 workers x ranks share it
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def weight_column(layer: int) -> str:
    """The column of layer ``layer``'s weight: ``"w<layer>"``."""
    return f"w{layer}"


def bias_column(layer: int) -> str:
    """The column of layer ``layer``'s bias: ``"b<layer>"``."""
    return f"b{layer}"


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


def open_zoo(
    path_or_hub_id: str | os.PathLike,
    split: str,
    streaming: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """One split of a zoo as a Hugging Face dataset.

    For fast batched reads use ``ds.with_format("numpy")[indices]`` and
    :func:`datamodules.arrow_zoo.batch_to_tensors` (one array per column, where
    ``with_format("torch")`` builds a tensor per row).

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


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hides ``datasets``' own progress bars (we show ours)."""
    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.utils.enable_progress_bars()


def write_parquet_split(table: datasets.Dataset, data_dir: Path, split: str) -> None:
    """Writes ``table`` as ``data_dir/<split>-0000i-of-0000N.parquet`` shards of up to 500 MiB each."""
    num_shards = max(1, math.ceil(table.data.nbytes / MAX_SHARD_BYTES))
    data_dir.mkdir(parents=True, exist_ok=True)
    for i in range(num_shards):
        shard = table.shard(num_shards, i, contiguous=True)
        shard.to_parquet(os.fspath(data_dir / f"{split}-{i:05d}-of-{num_shards:05d}.parquet"))
