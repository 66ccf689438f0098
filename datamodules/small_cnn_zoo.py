"""The Small CNN Zoo (Unterthiner et al. 2020, "Predicting Neural Network Accuracy from Weights").

The format (docs/formats.md, "Small CNN Zoo"): one folder per
dataset (``mnist``, ``fashion_mnist``, ``cifar10``, ``svhn_cropped``) holding

- ``weights.npy``: float32 ``(rows, 4970)``, one flattened Keras checkpoint per row;
- ``metrics.csv.gz``: one row per weights row, same order; columns include the run's
  ``config.*`` hyperparameters, ``modeldir`` (the run), ``step`` (the checkpoint's epoch:
  0, 1, 2, 3, 20, 40, 60, 80, 86) and ``test_accuracy``, ``test_loss``,
  ``train_accuracy``, ``train_loss``;
- ``layout.csv``: one row per Keras variable, addressed by the columns ``varname``
  (``sequential/conv2d/kernel:0``), ``start_idx``, ``end_idx`` and ``shape`` (text such
  as ``"(3, 3, 1, 16)"``); other columns are ignored.

Each layer stores its bias before its kernel, in Keras order: a convolution kernel is
``(*filter, n_in, n_out)`` and becomes PyTorch's ``(n_out, n_in, *filter)``; a dense
kernel ``(n_in, n_out)`` is transposed. The network spec comes from ``layout.csv`` alone,
so any number of Dense/Conv1D/2D/3D layers is read (for the public zoos: three
``Conv2D(16, 3x3, stride 2)``, global average pooling, ``Dense(10)``).

Splits follow the NFN paper (Zhou et al. 2023): rows are reordered by an index CSV read
without a header (the public file's first line is a stray ``"0"``, so row 0 appears
twice, as in the paper), the chosen checkpoint step is kept, rows with NaN/inf weights
are dropped, and the remaining ``n`` rows are renumbered; rows ``int(0.5 n):`` are the
test split, and the first half is shuffled with ``random.Random(0)`` and cut at 80 % into
train and val. Without an index CSV the same rule applies to the file's own row order.

Rows are read with positioned reads (``os.preadv``) into a buffer per batch, never by
loading or mapping the whole array, so memory stays constant whatever the zoo's size
(a memory map would keep every page it touched resident; see
``benchmarks/README.md``). :meth:`SmallCNNZooDataset.read_batch` reads a
batch without per-network objects; ``__getitems__`` builds the DataLoader's items from it.
Finding the non-finite rows takes one chunked pass over ``weights.npy``; its result is
cached beside the zoo (or in ``$NFN_LAB_CACHE`` if the folder is read-only).

:class:`SmallCNNZooWriter` writes networks of Dense/Conv layers in this layout (what
``nfn-lab zoo build cnn --small-cnn-zoo-layout`` writes), atomically.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import math
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from einops import rearrange
from torch import Tensor

from nfn_lab.data.cache import atomic_write, digest, zoo_cache_path
from nfn_lab.data.staging import StagedDirectory, StagedWriter
from nfn_lab.data.zoo import Transform, ZooDataModule, ZooDataset
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = [
    "KerasLayer",
    "SmallCNNZooDataModule",
    "SmallCNNZooDataset",
    "SmallCNNZooWriter",
    "network_spec_from_layout",
    "nfn_split",
    "read_layout",
]

FINAL_STEP = 86  # the epoch of the trained checkpoint
WEIGHTS, METRICS, LAYOUT = "weights.npy", "metrics.csv.gz", "layout.csv"
LAYOUT_COLUMNS = ("varname", "start_idx", "end_idx", "shape")
SPLITS = ("train", "val", "test")
_FOLDER_HINT = (
    f"a Small CNN Zoo folder (e.g. mnist/ from the dataset's .tar.xz) holds {WEIGHTS} (one flattened network "
    f"per row), {METRICS} (one row of metrics per weights row) and {LAYOUT} (where each Keras variable sits "
    "in a row)"
)
_SCAN_ROWS = 2048  # rows per chunk of the non-finite scan (about 40 MB for the public zoos)

Step = int | str | None


# --- layout.csv -> layers and network spec ---------------------------------------------------------


@dataclass(frozen=True)
class KerasLayer:
    """Where one Dense/Conv layer's bias and kernel sit in a flattened row.

    Attributes:
        name: the Keras layer, e.g. ``"sequential/conv2d"``.
        bias: columns of the bias ``(n_out,)``.
        kernel: columns of the kernel.
        kernel_shape: the Keras kernel shape ``(*filter, n_in, n_out)``.
    """

    name: str
    bias: slice
    kernel: slice
    kernel_shape: tuple[int, ...]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The PyTorch weight shape ``(n_out, n_in, *filter)``."""
        *filt, n_in, n_out = self.kernel_shape
        return (n_out, n_in, *filt)

    def columns(self) -> np.ndarray:
        """The row's columns in nfn-lab order: the weight ``(n_out, n_in, *filter)`` row-major, then the bias."""
        kernel = np.arange(self.kernel.start, self.kernel.stop).reshape(self.kernel_shape)  # (*filter, n_in, n_out)
        n = kernel.ndim
        weight = kernel.transpose(n - 1, n - 2, *range(n - 2))  # (n_out, n_in, *filter)
        return np.concatenate([weight.ravel(), np.arange(self.bias.start, self.bias.stop)])


def _parse_shape(text: Any, where: str) -> tuple[int, ...]:
    try:
        shape = ast.literal_eval(str(text).strip())
    except (ValueError, SyntaxError):
        shape = None
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(
            f"{where}: cannot parse shape {text!r}; expected a tuple of positive sizes like '(3, 3, 1, 16)'."
        )
    return tuple(shape)


def _layer_and_kind(varname: str, where: str) -> tuple[str, str]:
    """``"sequential/conv2d/kernel:0"`` -> ``("sequential/conv2d", "kernel")``."""
    layer, _, leaf = varname.rpartition("/")
    kind = leaf.split(":")[0]
    if kind not in ("kernel", "bias") or not layer:
        raise ValueError(
            f"{where}: variable {varname!r} is not a layer's kernel or bias ('<layer>/kernel:0', '<layer>/bias:0'); "
            "this loader reads zoos of Dense and Conv1D/2D/3D layers with biases only."
        )
    return layer, kind


def read_layout(path: str | os.PathLike, num_columns: int | None = None) -> list[KerasLayer]:
    """The layers of a ``layout.csv``, in the order their variables appear in a row.

    Args:
        path: the ``layout.csv`` file.
        num_columns: the number of columns of ``weights.npy``, which the variables must
            tile exactly; None checks only that they tile ``0:end`` without gaps.

    Raises:
        ValueError: naming the file and row, for missing columns, unparseable shapes,
            ``end_idx - start_idx`` other than the shape's size, gaps or overlaps between
            variables, a total other than ``num_columns``, variables that are not a
            kernel or bias, or a layer without its bias or kernel.
    """
    path = Path(path)
    frame = pd.read_csv(path)
    missing = [c for c in LAYOUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing columns {missing}; found {list(frame.columns)}. A layout.csv needs "
            f"{', '.join(LAYOUT_COLUMNS)} (one row per Keras variable)."
        )
    if frame.empty:
        raise ValueError(f"{path} lists no variables.")
    for column in ("start_idx", "end_idx"):
        if not pd.api.types.is_integer_dtype(frame[column]):
            raise ValueError(f"{path}: column {column!r} must hold integer column indices, got {frame[column].dtype}.")
    variables: dict[str, dict[str, tuple[slice, tuple[int, ...]]]] = {}
    end = 0
    for i, row in frame.sort_values("start_idx", kind="stable").iterrows():
        where = f"{path} line {i + 2} ({row['varname']})"  # line 1 is the header
        start, stop = int(row["start_idx"]), int(row["end_idx"])
        shape = _parse_shape(row["shape"], where)
        if stop - start != math.prod(shape):
            raise ValueError(
                f"{where}: columns {start}:{stop} hold {stop - start} values but shape {shape} has {math.prod(shape)}."
            )
        if start != end:
            gap = "a gap" if start > end else "an overlap"
            raise ValueError(
                f"{where}: starts at column {start} but the previous variable ends at {end} ({gap}); the variables "
                "must tile a row exactly."
            )
        end = stop
        layer, kind = _layer_and_kind(str(row["varname"]), where)
        if kind in variables.setdefault(layer, {}):
            raise ValueError(f"{where}: layer {layer!r} has a second {kind}.")
        variables[layer][kind] = (slice(start, stop), shape)
    if num_columns is not None and end != num_columns:
        raise ValueError(
            f"{path}: the variables cover columns 0:{end} but {WEIGHTS} rows have {num_columns} columns; the layout "
            "does not belong to these weights."
        )
    return [_keras_layer(path, name, parts) for name, parts in variables.items()]


def _keras_layer(path: Path, name: str, parts: dict[str, tuple[slice, tuple[int, ...]]]) -> KerasLayer:
    if set(parts) != {"kernel", "bias"}:
        (kind,) = parts
        raise ValueError(f"{path}: layer {name!r} has a {kind} but no {'bias' if kind == 'kernel' else 'kernel'}.")
    (bias, bias_shape), (kernel, kernel_shape) = parts["bias"], parts["kernel"]
    if not 2 <= len(kernel_shape) <= 5:
        raise ValueError(
            f"{path}: layer {name!r} has kernel shape {kernel_shape}; expected (n_in, n_out) for Dense or "
            "(*filter, n_in, n_out) with 1-3 filter axes for Conv1D/2D/3D."
        )
    if bias_shape != kernel_shape[-1:]:
        raise ValueError(
            f"{path}: layer {name!r} has bias shape {bias_shape} but its kernel {kernel_shape} has "
            f"{kernel_shape[-1]} outputs."
        )
    return KerasLayer(name, bias, kernel, kernel_shape)


def _spec_of(layers: Sequence[KerasLayer], path: Path) -> NetworkSpec:
    try:
        return NetworkSpec.from_shapes([layer.weight_shape for layer in layers])
    except ValueError as err:
        raise ValueError(f"{path}: the layers do not form one feedforward network: {err}") from None


def network_spec_from_layout(path: str | os.PathLike) -> NetworkSpec:
    """The zoo's network spec from its ``layout.csv`` alone (no weights read).

    Raises:
        ValueError: see :func:`read_layout`; also for layers that do not chain (a layer's
            inputs differ from the previous layer's outputs).
    """
    return _spec_of(read_layout(path), Path(path))


# --- weights.npy: positioned row reads ---------------------------------------------------------------


class _RowReader:
    """Reads rows of a 2-D C-order ``.npy`` file with positioned reads.

    No memory map is kept (mapped pages would count towards the process's resident memory
    and grow with every row touched), and positioned reads share no file offset, so a
    reader inherited by forked DataLoader workers stays correct.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None  # opened on the first read
        try:
            header = np.load(path, mmap_mode="r")  # parses the header; no data is read
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"{path}: not a readable .npy array ({err}); re-extract the zoo's archive.") from None
        if header.ndim != 2 or not np.issubdtype(header.dtype, np.floating) or not header.flags.c_contiguous:
            raise ValueError(
                f"{path}: expected a 2-D C-order float array (rows, columns), got shape {header.shape}, dtype "
                f"{header.dtype}{'' if header.flags.c_contiguous else ', Fortran order'}."
            )
        self.num_rows, self.num_columns = header.shape
        self.dtype = header.dtype
        self.offset = header.offset

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}  # reopened lazily in the unpickled copy

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def _fileno(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def _read_into(self, out: np.ndarray, first_row: int) -> None:
        view = out.data.cast("B")
        offset = self.offset + first_row * self.num_columns * self.dtype.itemsize
        done = 0
        while done < len(view):
            got = os.preadv(self._fileno(), [view[done:]], offset + done)
            if got == 0:
                raise ValueError(f"{self.path}: file ends early (truncated download?); re-extract the zoo's archive.")
            done += got

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``(B,)`` in any order, repeats allowed -> ``(B, columns)`` in that order.

        The file is read in ascending row order, each distinct row once, straight into its place.
        """
        out = np.empty((len(rows), self.num_columns), dtype=self.dtype)
        order = np.argsort(rows, kind="stable")
        previous, first = -1, 0
        for position, row in zip(order.tolist(), rows[order].tolist()):
            if row == previous:
                out[position] = out[first]
            else:
                self._read_into(out[position], row)
                previous, first = row, position
        return out

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, rows)`` blocks of up to ``size`` rows, in order, reusing one buffer."""
        buffer = np.empty((size, self.num_columns), dtype=self.dtype)
        for start in range(0, self.num_rows, size):
            block = buffer[: min(size, self.num_rows - start)]
            self._read_into(block, start)
            yield start, block


def _nonfinite_rows(reader: _RowReader) -> np.ndarray:
    """Rows of ``weights.npy`` holding NaN/inf: one chunked pass, cached beside the file."""
    stat = reader.path.stat()
    key = f"{reader.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    cache = zoo_cache_path(reader.path.parent, f"nonfinite-{digest([key])}.json")
    try:
        data = json.loads(cache.read_text())
        if data["key"] == key:
            return np.asarray(data["rows"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, stale or corrupt: recompute
    bad = [start + np.flatnonzero(~np.isfinite(block).all(axis=1)) for start, block in reader.chunks(_SCAN_ROWS)]
    rows = np.concatenate([np.empty(0, dtype=np.int64), *bad])
    atomic_write(cache, lambda tmp: tmp.write_text(json.dumps({"key": key, "rows": rows.tolist()})))
    return rows


# --- metrics, step selection and the NFN split ----------------------------------------------------


def _read_metrics(path: Path, targets: Sequence[str], step: Step, num_rows: int) -> tuple[pd.DataFrame, list[str]]:
    """The columns needed for ``targets`` and ``step``, and the names of all columns."""
    try:
        available = list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: not a readable gzip CSV ({err}); re-extract the zoo's archive.") from None
    unknown = [t for t in targets if t not in available]
    if unknown:
        raise ValueError(f"unknown target column(s) {unknown} in {path}; available: {available}.")
    needed = (["step"] if step is not None else []) + (["modeldir"] if step == "last" else [])
    missing = [c for c in needed if c not in available]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} needed to select checkpoints (step={step!r}).")
    frame = pd.read_csv(path, usecols=list(dict.fromkeys([*needed, *targets])))
    if len(frame) != num_rows:
        raise ValueError(
            f"{path} has {len(frame)} rows but {WEIGHTS} has {num_rows}; the files must correspond row by row "
            "(files from different zoos or an interrupted extraction?)."
        )
    for t in targets:
        if not pd.api.types.is_numeric_dtype(frame[t]):
            raise ValueError(
                f"target column {t!r} of {path} is not numeric (dtype {frame[t].dtype}); pick a metric column."
            )
    return frame, available


def _read_order(path: Path, num_rows: int) -> np.ndarray:
    """Row indices from a one-column CSV read with no header (a stray first line is kept)."""
    if not path.is_file():
        raise ValueError(f"index CSV {path} does not exist; pass the split-index file (one row index per line).")
    try:
        order = pd.read_csv(path, header=None).to_numpy().ravel()
    except (ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"{path}: not a CSV of row indices ({err}).") from None
    if not np.issubdtype(order.dtype, np.integer):
        raise ValueError(f"{path}: expected integer row indices, one per line; got values of dtype {order.dtype}.")
    bad = np.flatnonzero((order < 0) | (order >= num_rows))
    if bad.size:
        raise ValueError(
            f"{path} line {bad[0] + 1}: row index {order[bad[0]]} is outside 0..{num_rows - 1} of {WEIGHTS}."
        )
    return order.astype(np.int64)


def _step_mask(metrics: pd.DataFrame, step: Step, path: Path) -> np.ndarray:
    """Per file row, whether it is the chosen checkpoint."""
    if step is None:
        return np.ones(len(metrics), dtype=bool)
    steps = metrics["step"].to_numpy()
    if step == "last":
        return steps == metrics.groupby("modeldir")["step"].transform("max").to_numpy()
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise ValueError(f"step must be an int (an epoch such as {FINAL_STEP}), 'last' or None (all), got {step!r}.")
    mask = steps == step
    if not mask.any():
        raise ValueError(f"no checkpoint with step {step} in {path}; its steps are {sorted(set(steps.tolist()))}.")
    return mask


def nfn_split(n: int) -> dict[str, list[int]]:
    """The NFN paper's split of ``n`` rows: the last half is test; the first half, shuffled
    with ``random.Random(0)``, is 80 % train and 20 % val.

    Returns:
        positions ``0..n-1`` per split (train and val in shuffled order).
    """
    test_start = int(0.5 * n)
    trainval = list(range(test_start))
    random.Random(0).shuffle(trainval)
    val_start = int(0.8 * len(trainval))
    return {"train": trainval[:val_start], "val": trainval[val_start:], "test": list(range(test_start, n))}


def _zoo_file(root: Path, name: str) -> Path:
    path = root / name
    if not path.is_file():
        found = sorted(p.name for p in root.iterdir())[:20] if root.is_dir() else None
        where = f"the folder holds {found}" if found is not None else "the folder does not exist"
        raise ValueError(f"{root}: missing {name}; {_FOLDER_HINT}, but {where}.")
    return path


# --- Dataset and DataModule -----------------------------------------------------------------------


class SmallCNNZooDataset(ZooDataset):
    """One split of a Small CNN Zoo folder: one checkpoint per item.

    Args:
        root: the zoo's folder (``weights.npy``, ``metrics.csv.gz``, ``layout.csv``).
        split: ``"train"``, ``"val"``, ``"test"`` (see the module docstring), or None for
            every selected row in order, unsplit.
        target: the metrics column(s) returned as targets.
        step: the checkpoint epoch to keep (default the trained one, 86), ``"last"`` (each
            run's last checkpoint, for runs that stopped early) or None (all checkpoints).
        index_csv: the NFN paper's row-order file; None keeps the file's order.
        drop_nonfinite: leave rows with NaN/inf weights out (one cached pass over the file);
            with False, reading such a row raises a ValueError.
        transform: applied to each network's features.

    Attributes:
        rows: ``(len(self),)`` the ``weights.npy`` row of each item.
        targets: target name -> ``(len(self),)`` float32.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "train",
        target: str | Sequence[str] = "test_accuracy",
        step: Step = FINAL_STEP,
        index_csv: str | os.PathLike | None = None,
        drop_nonfinite: bool = True,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform)
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS} or None (all rows).")
        self.root = Path(root).expanduser()
        self.split = split
        self.target_names = [target] if isinstance(target, str) else list(target)
        self._reader = _RowReader(_zoo_file(self.root, WEIGHTS))
        self.layers = read_layout(_zoo_file(self.root, LAYOUT), self._reader.num_columns)
        self._network_spec = _spec_of(self.layers, self.root / LAYOUT)
        self._columns = torch.from_numpy(np.concatenate([layer.columns() for layer in self.layers]))
        self._sizes = [n for layer in self.layers for n in (math.prod(layer.kernel_shape), layer.kernel_shape[-1])]
        self._check_finite = not drop_nonfinite  # otherwise every selected row was checked once
        self._metrics_path = _zoo_file(self.root, METRICS)
        metrics, self._metrics_columns = _read_metrics(
            self._metrics_path, self.target_names, step, self._reader.num_rows
        )
        self._metadata: pd.DataFrame | None = None  # read_metadata's table, loaded on first use

        keep = _step_mask(metrics, step, self._metrics_path)
        if drop_nonfinite:
            keep[_nonfinite_rows(self._reader)] = False
        order = np.arange(len(keep)) if index_csv is None else _read_order(Path(index_csv), len(keep))
        selected = order[keep[order]]  # renumbered: position -> file row
        if split is None:
            self.rows = selected
        else:
            self.rows = selected[np.asarray(nfn_split(len(selected))[split], dtype=np.int64)]
        self.targets = {
            name: torch.from_numpy(metrics[name].to_numpy(np.float32)[self.rows]) for name in self.target_names
        }

    @property
    def network_spec(self) -> NetworkSpec:
        return self._network_spec

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def metadata_columns(self) -> tuple[str, ...]:
        """The ``metrics.csv.gz`` columns other than the targets (``config.*``, ``modeldir``, ``step``, ...)."""
        return tuple(c for c in self._metrics_columns if c not in self.target_names)

    def _positions(self, indices: Sequence[int]) -> np.ndarray:
        index = np.asarray(indices, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"network indices {list(indices)} out of range for a zoo split of {len(self)} networks.")
        return index

    def read_batch(self, indices: Sequence[int]) -> tuple[list[Tensor], list[Tensor], dict[str, Tensor]]:
        """Networks ``indices`` in one read, without per-network objects and without the transform.

        Returns:
            weights ``(B, n_out, n_in, *filter)`` and biases ``(B, n_out)`` per layer (views of
            one buffer), and targets ``{name: (B,)}``.

        Raises:
            IndexError: for an index outside the split.
            ValueError: naming the ``weights.npy`` row, for NaN/inf weights (only possible
                with ``drop_nonfinite=False``).
        """
        index = self._positions(indices)
        rows = self.rows[index]
        block = self._reader.read(rows)  # (B, columns), Keras order
        if self._check_finite:
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                bad = int(np.argmin(finite))
                raise ValueError(
                    f"{self._reader.path} row {rows[bad]}: {int((~np.isfinite(block[bad])).sum())} NaN/inf values "
                    "(a diverged training run); construct the dataset with drop_nonfinite=True to leave such rows out."
                )
        block = block.astype(np.float32, copy=False)  # a no-op for the public float32 files
        flat = torch.from_numpy(block).index_select(1, self._columns)  # (B, params): W(1), b(1), W(2), ...
        parts = flat.split(self._sizes, dim=1)
        weights = [part.view(-1, *layer.weight_shape) for part, layer in zip(parts[0::2], self.layers)]
        position = torch.from_numpy(index)
        return weights, list(parts[1::2]), {name: values[position] for name, values in self.targets.items()}

    def read(self, index: int) -> tuple[list[Tensor], list[Tensor], dict[str, Tensor]]:
        weights, biases, targets = self.read_batch([index])
        return [w[0] for w in weights], [b[0] for b in biases], {name: t[0] for name, t in targets.items()}

    def read_metadata(self, indices: Sequence[int]) -> dict[str, list]:
        """The :attr:`metadata_columns` of networks ``indices``, one list per column.

        ``metrics.csv.gz`` is read in full on the first call only (``nfn-lab zoo convert`` keeps
        these columns), so plain loading never holds it.
        """
        index = self._positions(indices)
        if self._metadata is None:
            metrics = pd.read_csv(self._metrics_path, usecols=list(self.metadata_columns))
            self._metadata = metrics.iloc[self.rows].reset_index(drop=True)
        return {column: self._metadata[column].iloc[index].tolist() for column in self.metadata_columns}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, networks={len(self)}, "
            f"targets={self.target_names})"
        )


class SmallCNNZooDataModule(ZooDataModule):
    """A Small CNN Zoo folder as train/val/test loaders (see :class:`SmallCNNZooDataset`).

    Args:
        root: the zoo's folder.
        target, step, index_csv, drop_nonfinite: see :class:`SmallCNNZooDataset`.
        **kwargs: :class:`~nfn_lab.data.zoo.ZooDataModule` options (``batch_size``,
            ``normalize``, ``augment``, ...).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        target: str | list[str] = "test_accuracy",
        step: int | str | None = FINAL_STEP,
        index_csv: str | os.PathLike | None = None,
        drop_nonfinite: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.target, self.step, self.index_csv, self.drop_nonfinite = target, step, index_csv, drop_nonfinite

    def make_dataset(self, split: str, transform: Transform | None) -> SmallCNNZooDataset:
        return SmallCNNZooDataset(
            self.root, split, self.target, self.step, self.index_csv, self.drop_nonfinite, transform=transform
        )

    def read_network_spec(self) -> NetworkSpec:
        return network_spec_from_layout(_zoo_file(self.root, LAYOUT))

    def stats_key(self) -> str:
        return f"{super().stats_key()}:step={self.step}:index={self.index_csv}:finite={self.drop_nonfinite}"

    @classmethod
    def detect(cls, root: str | os.PathLike) -> bool:
        """Whether ``root`` holds ``weights.npy``, ``metrics.csv.gz`` and ``layout.csv``."""
        return all((Path(root) / name).is_file() for name in (WEIGHTS, METRICS, LAYOUT))

    @classmethod
    def describe(cls, root: str | os.PathLike) -> dict[str, Any]:
        """Spec, checkpoints, runs, steps, split sizes (default arguments) and metric columns of ``root``."""
        datamodule = cls(root)
        metrics_path = _zoo_file(datamodule.root, METRICS)
        runs = pd.read_csv(metrics_path, usecols=["modeldir", "step"])
        columns = pd.read_csv(metrics_path, nrows=0).columns
        return {
            "format": cls.__name__,
            "network_spec": datamodule.network_spec,
            "num_checkpoints": len(runs),
            "num_networks": int(runs["modeldir"].nunique()),
            "steps": sorted(int(s) for s in runs["step"].unique()),
            "splits": {split: len(datamodule.make_dataset(split, None)) for split in datamodule.splits},
            "targets": [c for c in columns if not c.startswith("config.") and c not in ("modeldir", "step")],
        }


# --- writing ------------------------------------------------------------------------------------------

_KERAS_KINDS = {2: "dense", 3: "conv1d", 4: "conv2d", 5: "conv3d"}  # by the weight's axes (all a spec allows)


def _keras_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """PyTorch ``(n_out, n_in, *filter)`` -> Keras ``(*filter, n_in, n_out)``; biases unchanged."""
    return shape if len(shape) == 1 else (*shape[2:], shape[1], shape[0])


def _keras_variables(spec: NetworkSpec) -> list[tuple[str, int, int, tuple[int, ...]]]:
    """``(varname, start_idx, end_idx, keras_shape)`` per variable: per layer the bias, then the kernel.

    Layers are named as Keras names them in a ``Sequential`` (``sequential/conv2d``,
    ``sequential/conv2d_1``, ..., ``sequential/dense``).
    """
    variables, start, seen = [], 0, dict.fromkeys(_KERAS_KINDS.values(), 0)
    for weight, bias in zip(spec.weight_spec, spec.bias_spec):
        kind = _KERAS_KINDS[len(weight.shape)]
        layer = f"sequential/{kind}" + (f"_{seen[kind]}" if seen[kind] else "")
        seen[kind] += 1
        for leaf, shape in (("bias", tuple(bias.shape)), ("kernel", _keras_shape(tuple(weight.shape)))):
            variables.append((f"{layer}/{leaf}:0", start, start + math.prod(shape), shape))
            start += math.prod(shape)
    return variables


def _keras_rows(wsfeat: WeightSpaceFeatures) -> np.ndarray:
    """``weights[i]: (R, 1, n_out, n_in, *filter)``, ``biases[i]: (R, 1, n_out)`` -> Keras rows ``(R, columns)``."""
    parts = []
    for weight, bias in wsfeat:
        kernel = rearrange(weight[:, 0], "r o i ... -> r ... i o")  # Keras kernel (R, *filter, n_in, n_out)
        parts += [bias[:, 0], kernel.flatten(1)]  # bias first, as in Keras's variable order
    return torch.cat(parts, dim=1).detach().cpu().numpy().astype(np.float32)


class SmallCNNZooWriter(StagedWriter):
    """Writes ``weights.npy``, ``layout.csv`` and ``metrics.csv.gz`` of a Small CNN Zoo folder, atomically.

    Rows go straight into ``weights.npy`` (a memory-mapped file of ``num_rows`` rows) and
    ``metrics.csv.gz`` as they are added; :meth:`close` renames the folder into place (see
    :mod:`nfn_lab.data.staging`). The same rows give byte-identical files. Use as a context
    manager: an exception inside the ``with`` block discards everything.

    Args:
        folder: the folder to create (missing or empty).
        network_spec: the networks' spec, all sizes set; Dense and Conv1D/2D/3D layers.
        num_rows: the checkpoints that will be added (the rows of ``weights.npy``).

    Raises:
        FileExistsError: ``folder`` is not empty.
    """

    def __init__(self, folder: str | os.PathLike, network_spec: NetworkSpec, num_rows: int) -> None:
        self.network_spec, self.num_rows, self.rows_written = network_spec, num_rows, 0
        self._variables = _keras_variables(network_spec)
        self._staged = StagedDirectory(folder)
        try:
            self._write_layout()
            shape = (num_rows, self._variables[-1][2])
            self._weights = np.lib.format.open_memmap(self._staged.path / WEIGHTS, "w+", np.float32, shape)
            # mtime=0: the same rows give byte-identical files.
            self._text = io.TextIOWrapper(gzip.GzipFile(self._staged.path / METRICS, "wb", mtime=0), newline="")
        except BaseException:
            self._staged.abort()
            raise
        self._metrics: csv.DictWriter | None = None

    @property
    def folder(self) -> Path:
        return self._staged.root

    def _write_layout(self) -> None:
        with open(self._staged.path / LAYOUT, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["varname", "start_idx", "end_idx", "size", "shape"])
            for name, start, end, shape in self._variables:
                writer.writerow([name, start, end, end - start, str(shape)])

    def add(self, wsfeat: WeightSpaceFeatures, metrics: Sequence[Mapping[str, Any]]) -> None:
        """Appends ``R`` checkpoints: ``weights[i]: (R, 1, n_out, n_in, *filter)``, ``biases[i]: (R, 1, n_out)``.

        Args:
            wsfeat: the networks in PyTorch layout.
            metrics: one ``metrics.csv.gz`` record per network, the same keys each time
                (e.g. ``config.*`` hyperparameters, ``modeldir``, ``step``, ``test_accuracy``).

        Raises:
            ValueError: on a shape mismatch, a record count other than ``R``, other keys than
                the first record's, or more rows than ``num_rows``.
        """
        self.network_spec.check_features(wsfeat, channels=1, where="SmallCNNZooWriter.add")
        num = wsfeat.batch_size
        if len(metrics) != num:
            raise ValueError(f"got {len(metrics)} metrics records for {num} networks; give one per network.")
        if self.rows_written + num > self.num_rows:
            raise ValueError(f"adding {num} rows would exceed the {self.num_rows} rows this writer was opened for.")
        if num == 0:
            return
        if self._metrics is None:
            self._metrics = csv.DictWriter(self._text, fieldnames=list(metrics[0]))
            self._metrics.writeheader()
        expected = list(self._metrics.fieldnames)
        wrong = next((list(record) for record in metrics if list(record) != expected), None)
        if wrong is not None:
            raise ValueError(f"a metrics record has keys {wrong}; every record needs {expected}.")
        self._weights[self.rows_written : self.rows_written + num] = _keras_rows(wsfeat)
        self._metrics.writerows(metrics)
        self.rows_written += num

    def _finish(self) -> None:
        """Closes the files in the staging folder (``close()`` then renames it into place).

        Raises:
            ValueError: fewer rows were added than ``num_rows`` (nothing is written).
        """
        if self.rows_written != self.num_rows:
            raise ValueError(
                f"{self.rows_written} rows were added but the writer was opened for {self.num_rows}; nothing "
                "was written."
            )
        self._release()
        self._weights.flush()

    def _release(self) -> None:
        if not self._text.closed:
            self._text.close()  # closes the gzip stream too

    def __repr__(self) -> str:
        return f"SmallCNNZooWriter(folder={str(self.folder)!r}, rows={self.rows_written}/{self.num_rows})"
