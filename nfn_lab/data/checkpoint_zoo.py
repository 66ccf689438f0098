"""Zoos stored as one ``torch.save``'d state dict per network (the INR zoos), with an array cache.

Reading such a zoo costs one ``torch.load`` per network. :class:`CheckpointZooDataModule`
can instead convert the zoo once into an **array cache**: a float32 ``.npy`` file of shape
``(networks, parameters)`` beside the zoo (in ``<root>/.nfn_lab_cache/``, or in
:func:`~nfn_lab.data.cache.default_cache_dir` if the zoo is read-only), one row per
checkpoint with its arrays flattened in the order ``W(1), b(1), W(2), b(2), ...``
(:meth:`WeightSpaceFeatures.flatten`). It is memory-mapped, so a batch is one
fancy-indexed read whatever the zoo's size. The cache is built by
:meth:`CheckpointZooDataModule.prepare_data` (or on first use) through the same checked
reader as the per-file path, so a bad checkpoint fails the build with the same error;
its file name holds a digest of the zoo's file list, so adding or removing checkpoints
starts a new cache. Checkpoints rewritten in place under the same names are not
detected: rebuild with ``open_array_cache(rebuild=True)`` or delete the cache folder.
"""

from __future__ import annotations

import math
import os
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from nfn_lab.data.cache import atomic_write, digest, zoo_cache_path
from nfn_lab.data.zoo import Targets, Transform, ZooDataModule, ZooDataset, check_finite
from nfn_lab.weightspace import NetworkSpec, collate

__all__ = [
    "ArrayCache",
    "CheckpointLayout",
    "CheckpointZooDataModule",
    "CheckpointZooDataset",
    "load_checkpoint",
]


def load_checkpoint(path: str | os.PathLike) -> Mapping[str, Any]:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with errors naming the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found; check the zoo's root folder.") from None
    except Exception as err:  # torch raises many types for truncated/garbled zips and pickles
        detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise ValueError(
            f"{path}: cannot read this checkpoint ({detail}); the file is corrupt or not a "
            "torch.save'd state dict. Re-download or regenerate it, or remove it from the zoo."
        ) from err
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors).")
    return obj


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join("*" if s == -1 else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


@dataclass(frozen=True)
class CheckpointLayout:
    """Which state-dict keys hold each layer of a zoo's networks, and their shapes.

    Args:
        keys: per layer, ``(weight_key, bias_key)``; weights are ``(n_out, n_in, *filter)``.
        network_spec: the expected shapes; ``-1`` marks a size read from the zoo's first
            checkpoint (:meth:`resolve`), e.g. the number of image channels.
    """

    keys: tuple[tuple[str, str], ...]
    network_spec: NetworkSpec

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple((str(w), str(b)) for w, b in self.keys))
        if len(self.keys) != len(self.network_spec):
            raise ValueError(f"{len(self.keys)} layers of keys but a network_spec of {len(self.network_spec)} layers.")

    @cached_property
    def expected(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """``(key, shape)`` of every array, in the order ``W(1), b(1), W(2), b(2), ...``."""
        pairs = zip(self.keys, self.network_spec.weight_spec, self.network_spec.bias_spec)
        return tuple(item for (wk, bk), ws, bs in pairs for item in ((wk, ws.shape), (bk, bs.shape)))

    def read(self, path: str | os.PathLike) -> tuple[list[Tensor], list[Tensor]]:
        """Weights ``(n_out, n_in, *filter)`` and biases ``(n_out,)`` of one checkpoint, as float32.

        Raises:
            FileNotFoundError: if the file is missing.
            ValueError: naming the file, for a corrupt file, a missing key, a key whose
                shape differs from the layout's, an unexpected parameter key (another
                architecture), or NaN/inf values.
        """
        state = load_checkpoint(path)
        known = {key for key, _ in self.expected}
        arrays = []
        for key, shape in self.expected:
            if key not in state:
                raise ValueError(
                    f"{path}: missing key {key!r}; this zoo's checkpoints hold {sorted(known)}, the file holds "
                    f"{sorted(state)}."
                )
            value = state[key]
            ok = isinstance(value, Tensor) and value.dim() == len(shape)
            if not ok or any(e != -1 and a != e for a, e in zip(value.shape, shape)):
                actual = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"{path}: {key!r} has shape {actual} but this zoo expects {_shape_text(shape)}.")
            arrays.append(value.to(torch.float32))
        extra = sorted(k for k, v in state.items() if k not in known and isinstance(v, Tensor) and v.dim() > 0)
        if extra:
            raise ValueError(f"{path}: unexpected parameters {extra}; the network is not of this zoo's architecture.")
        if not np.isfinite(np.concatenate([a.numpy().ravel() for a in arrays])).all():  # one cheap check, then the key
            for (key, _), value in zip(self.expected, arrays):
                check_finite([value], f"{path}: {key!r}")
        return arrays[0::2], arrays[1::2]

    def resolve(self, path: str | os.PathLike) -> CheckpointLayout:
        """This layout with every free (``-1``) size set from the checkpoint at ``path``."""
        weights, biases = self.read(path)
        spec = NetworkSpec.from_shapes([w.shape for w in weights], [b.shape for b in biases])
        return CheckpointLayout(self.keys, spec)


class ArrayCache:
    """A zoo's networks as rows of a memory-mapped float32 ``(N, P)`` ``.npy`` file.

    Args:
        path: the ``.npy`` file.
        network_spec: the networks' spec, every size set; ``P`` is its parameter count.
        num_networks: ``N``, checked against the file.
    """

    def __init__(self, path: Path, network_spec: NetworkSpec, num_networks: int) -> None:
        self.path = Path(path)
        self.network_spec = network_spec
        self.num_networks = num_networks
        self._sizes = [  # entries of W(1), b(1), W(2), b(2), ...
            math.prod(spec.shape) for pair in zip(network_spec.weight_spec, network_spec.bias_spec) for spec in pair
        ]
        self._array: np.ndarray | None = None  # opened lazily, per process

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            array = np.load(self.path, mmap_mode="r")
            expected = (self.num_networks, sum(self._sizes))
            if array.shape != expected or array.dtype != np.float32:
                raise ValueError(
                    f"{self.path}: array cache has shape {array.shape} and dtype {array.dtype} but the zoo needs "
                    f"{expected} float32; delete the file to rebuild it."
                )
            self._array = array
        return self._array

    def __getstate__(self) -> dict:  # DataLoader workers reopen the memory map instead of copying it
        return {**self.__dict__, "_array": None}

    def read_rows(self, rows: np.ndarray) -> Tensor:
        """The flat parameters ``(b, P)`` of networks ``rows``: one read for the whole batch."""
        return torch.from_numpy(self.array[np.asarray(rows, dtype=np.int64)])

    def unflatten(self, flat: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(b, P)`` rows -> weights ``(b, n_out, n_in, *filter)`` and biases ``(b, n_out)`` (views)."""
        parts = torch.split(flat, self._sizes, dim=1)
        spec = self.network_spec
        weights = [p.reshape(-1, *s.shape) for p, s in zip(parts[0::2], spec.weight_spec)]
        biases = [p.reshape(-1, *s.shape) for p, s in zip(parts[1::2], spec.bias_spec)]
        return weights, biases

    @classmethod
    def build(
        cls,
        path: Path,
        files: Sequence[str],
        layout: CheckpointLayout,
        num_workers: int = 0,
        progress: bool = True,
    ) -> ArrayCache:
        """Reads every checkpoint once (checked by ``layout``) and writes the cache atomically."""
        reader = CheckpointZooDataset(files, np.arange(len(files)), {}, layout)
        loader = DataLoader(reader, batch_size=256, num_workers=num_workers, collate_fn=collate)
        shape = (len(files), layout.network_spec.get_num_params())

        def write(tmp: Path) -> None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            start = 0
            for feats, _ in tqdm(loader, desc=f"array cache {path.name}", disable=not progress, leave=False):
                flat = feats.flatten()[:, 0]  # (b, P)
                out[start : start + len(flat)] = flat.numpy()
                start += len(flat)
            out.flush()
            del out

        atomic_write(path, write)
        return cls(path, layout.network_spec, len(files))

    def __repr__(self) -> str:
        return f"ArrayCache({str(self.path)!r}, networks={self.num_networks}, params={sum(self._sizes)})"


class CheckpointZooDataset(ZooDataset):
    """The networks ``files[rows[i]]`` of a checkpoint zoo, with their targets.

    Args:
        files: every checkpoint of the zoo (paths), in the zoo's fixed order.
        rows: ``(len,)`` positions in ``files`` of this dataset's networks.
        targets: name -> ``(len,)`` tensor, aligned with ``rows``.
        layout: keys and (resolved) shapes of the checkpoints.
        transform: see :class:`ZooDataset`.
        cache: read rows from this :class:`ArrayCache` (whose rows are ``files``)
            instead of loading each file.
    """

    def __init__(
        self,
        files: Sequence[str],
        rows: np.ndarray,
        targets: Mapping[str, Tensor],
        layout: CheckpointLayout,
        transform: Transform | None = None,
        cache: ArrayCache | None = None,
    ) -> None:
        super().__init__(transform)
        self.files = files
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = dict(targets)
        for name, values in self.targets.items():
            if len(values) != len(self.rows):
                raise ValueError(f"target {name!r} has {len(values)} values for {len(self.rows)} networks.")
        self.layout = layout
        self.cache = cache

    @property
    def network_spec(self) -> NetworkSpec:
        return self.layout.network_spec

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, index: int) -> str:
        """The checkpoint file of network ``index``."""
        return str(self.files[int(self.rows[index])])

    def _targets(self, index: int) -> Targets:
        return {name: values[index] for name, values in self.targets.items()}

    def read(self, index: int) -> tuple[list[Tensor], list[Tensor], Targets]:
        if self.cache is None:
            weights, biases = self.layout.read(self.path(index))
        else:
            ws, bs = self.cache.unflatten(self.cache.read_rows(self.rows[[index]]))
            weights, biases = [w[0] for w in ws], [b[0] for b in bs]
        return weights, biases, self._targets(index)

    def read_batch(self, indices: Sequence[int]) -> tuple[list[Tensor], list[Tensor], Targets]:
        """With an array cache, one read for the whole batch; otherwise one file per network."""
        if self.cache is None:
            return super().read_batch(indices)
        for index in indices:
            self._check_index(index)
        weights, biases = self.cache.unflatten(self.cache.read_rows(self.rows[list(indices)]))
        targets = {name: torch.as_tensor(values)[list(indices)] for name, values in self.targets.items()}
        return list(weights), list(biases), targets

    def __repr__(self) -> str:
        source = repr(self.cache) if self.cache is not None else "one file per network"
        return f"{type(self).__name__}(networks={len(self)}, targets={sorted(self.targets)}, {source})"


class CheckpointZooDataModule(ZooDataModule):
    """A zoo of one checkpoint file per network.

    Subclasses set :attr:`layout` and implement :meth:`files` and :meth:`split_rows`.

    Args:
        root: the zoo's folder.
        array_cache: read batches from a memory-mapped array cache built once beside the
            zoo (see the module docstring) instead of one ``torch.load`` per network.
        **kwargs: the other arguments of :class:`ZooDataModule`.
    """

    layout: CheckpointLayout

    def __init__(self, root: str | os.PathLike, array_cache: bool = False, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.array_cache = array_cache
        self._resolved_layout: CheckpointLayout | None = None
        self._cache: ArrayCache | None = None

    @abstractmethod
    def files(self) -> Sequence[str]:
        """Every checkpoint of the zoo (all splits), in a fixed order: the rows of the array cache."""

    @abstractmethod
    def split_rows(self, split: str) -> tuple[np.ndarray, dict[str, Tensor]]:
        """Positions in :meth:`files` of the networks of ``split``, and their targets.

        Raises:
            ValueError: if the split is empty, saying why.
        """

    def resolved_layout(self) -> CheckpointLayout:
        """:attr:`layout` with its free sizes read from the zoo's first checkpoint."""
        if self._resolved_layout is None:
            self._resolved_layout = self.layout.resolve(self.files()[0])
        return self._resolved_layout

    def read_network_spec(self) -> NetworkSpec:
        return self.resolved_layout().network_spec

    def open_array_cache(self, rebuild: bool = False) -> ArrayCache:
        """The zoo's array cache, built first if it does not exist (or if ``rebuild``)."""
        if self._cache is None or rebuild:
            files, layout = self.files(), self.resolved_layout()
            key = digest([str(self.root.resolve()), repr(layout), *map(str, files)])
            path = zoo_cache_path(self.root, f"arrays-{type(self).__name__}-{key}.npy")
            if rebuild or not path.exists():
                ArrayCache.build(path, files, layout, num_workers=self.num_workers)
            self._cache = ArrayCache(path, layout.network_spec, len(files))
        return self._cache

    def prepare_data(self) -> None:
        """Builds the array cache once (Lightning calls this on one process per node)."""
        if self.array_cache:
            self.open_array_cache()

    def make_dataset(self, split: str, transform: Transform | None) -> CheckpointZooDataset:
        rows, targets = self.split_rows(split)
        cache = self.open_array_cache() if self.array_cache else None
        return CheckpointZooDataset(self.files(), rows, targets, self.resolved_layout(), transform, cache)

    def stats_key(self) -> str:
        files = self.files()
        rows, _ = self.split_rows("train")
        return f"{super().stats_key()}:{digest(str(files[r]) for r in rows)}"
