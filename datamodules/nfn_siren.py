"""The NFN SIREN zoos (MNIST, FashionMNIST, CIFAR-10 INRs of Zhou et al. 2023) as a DataModule.

Format (docs/formats.md, "NFN SIREN zoos"):

- ``<root>/<prefix>_<label>s/net<idx>.pth``: the base set, one SIREN per image; ``<label>``
  is one digit, ``idx`` the image's position in the dataset's train set followed by its
  test set; ``prefix`` is ``randinit_smaller`` in the released zoos.
- ``<root>/<prefix>_aug<i>_<label>s/net<idx>.pth``: augmented copy ``i`` (another random
  initialization fit to the same image); 10 copies for MNIST/FashionMNIST, 20 for CIFAR-10.
- each file: a state dict ``net.0.linear.weight (32, 2)``, ``net.0.linear.bias (32,)``,
  ``net.1.linear.weight (32, 32)``, ``net.1.linear.bias (32,)``, ``net.2.weight (C, 32)``,
  ``net.2.bias (C,)`` with ``C = 1`` (grey) or ``3`` (CIFAR-10): the ``"nfn"`` variant of
  :class:`nfn_lab.siren.Siren` (render with :func:`nfn_lab.siren.render`).
- splits by ``idx``: train ``< 45,000 <=`` val ``< 50,000 <=`` test; train also holds the
  augmented copies, val and test only the base set. (The reference loader's base-set
  pattern ``<prefix>_*`` also matches the augmented folders; here the base set is exactly
  the ``<prefix>_<digit>s`` folders.)

The folders are scanned once; the index (copy, label, idx of every file) is cached in
``<root>/.nfn_lab_cache/`` and rescanned when a folder changes (its modification time).
Targets: ``{"label": int64}``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nfn_lab.data.cache import atomic_write, digest, zoo_cache_path
from nfn_lab.data.checkpoint_zoo import CheckpointLayout, CheckpointZooDataModule
from nfn_lab.weightspace import NetworkSpec

__all__ = ["NFNSirenDataModule", "NFNSirenIndex", "load_index"]

_FILE = re.compile(r"net(\d+)\.pth")
BASE = -1  # the copy number of the base set


@dataclass
class NFNSirenIndex:
    """Every checkpoint of an NFN SIREN zoo as parallel arrays, sorted by ``(copy, idx)``.

    Attributes:
        copy: ``(N,)`` int16: ``-1`` for the base set, ``i`` for augmented copy ``i``.
        label: ``(N,)`` int8 class label (from the folder name).
        idx: ``(N,)`` int64 image index (from the file name).
    """

    copy: np.ndarray
    label: np.ndarray
    idx: np.ndarray

    def path(self, root: Path, prefix: str, row: int) -> str:
        copy = int(self.copy[row])
        aug = "" if copy == BASE else f"_aug{copy}"
        return f"{root}/{prefix}{aug}_{int(self.label[row])}s/net{int(self.idx[row])}.pth"


class _IndexFiles(Sequence):
    """The paths of an index, built on access (no list of ~500,000 strings in memory)."""

    def __init__(self, root: Path, prefix: str, index: NFNSirenIndex) -> None:
        self.root, self.prefix, self.rows = root, prefix, index  # not .index: Sequence.index is a method

    def __len__(self) -> int:
        return len(self.rows.idx)

    def __getitem__(self, row: int) -> str:  # type: ignore[override]
        if not 0 <= row < len(self):
            raise IndexError(row)
        return self.rows.path(self.root, self.prefix, row)


def _label_folders(root: Path, prefix: str) -> list[tuple[os.DirEntry, int, int]]:
    """``(folder, copy, label)`` of every ``<prefix>_...`` folder under ``root``."""
    pattern = re.compile(rf"{re.escape(prefix)}(?:_aug(\d+))?_(\d)s")
    if not root.is_dir():
        raise FileNotFoundError(f"NFN SIREN zoo root {str(root)!r} is not a folder.")
    folders = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not (entry.is_dir() and entry.name.startswith(prefix + "_")):
            continue
        match = pattern.fullmatch(entry.name)
        if match is None:
            raise ValueError(
                f"{entry.path}: cannot parse a label from the folder name {entry.name!r}; NFN SIREN folders are "
                f"named '{prefix}_<digit>s' (base set) or '{prefix}_aug<i>_<digit>s' (augmented copy i), e.g. "
                f"'{prefix}_7s'. Rename or move the folder."
            )
        copy = BASE if match.group(1) is None else int(match.group(1))
        folders.append((entry, copy, int(match.group(2))))
    if not folders:
        found = sorted(e.name for e in os.scandir(root))[:10]
        raise ValueError(
            f"no '{prefix}_<digit>s' folders under {str(root)!r} (found {found}); point root at the folder that "
            "holds them, or set prefix."
        )
    return folders


def _scan(folders: list[tuple[os.DirEntry, int, int]]) -> NFNSirenIndex:
    copies, labels, idcs, paths = [], [], [], []
    for entry, copy, label in folders:
        for file in os.scandir(entry.path):
            match = _FILE.fullmatch(file.name)
            if match is None:
                if file.name.endswith(".pth"):
                    raise ValueError(f"{file.path}: unexpected checkpoint name; NFN SIREN files are 'net<idx>.pth'.")
                continue
            copies.append(copy)
            labels.append(label)
            idcs.append(int(match.group(1)))
            paths.append(file.path)
    if not paths:
        example = folders[0][0].path
        raise ValueError(f"no 'net<idx>.pth' file in any of the {len(folders)} label folders (e.g. {example}).")
    copy_arr, idx_arr = np.array(copies, dtype=np.int16), np.array(idcs, dtype=np.int64)
    order = np.lexsort((idx_arr, copy_arr))
    same = np.flatnonzero((np.diff(copy_arr[order]) == 0) & (np.diff(idx_arr[order]) == 0))
    if len(same):
        a, b = paths[order[same[0]]], paths[order[same[0] + 1]]
        raise ValueError(f"two checkpoints of one image in the same set: {a} and {b}; remove the misplaced one.")
    return NFNSirenIndex(copy_arr[order], np.array(labels, dtype=np.int8)[order], idx_arr[order])


def load_index(root: Path, prefix: str) -> NFNSirenIndex:
    """The zoo's index, from the cache beside it when no folder changed since it was written."""
    folders = _label_folders(root, prefix)
    key = digest([prefix] + [f"{e.name}:{e.stat().st_mtime_ns}" for e, _, _ in folders])
    path = zoo_cache_path(root, f"nfn-siren-index-{digest([str(root.resolve()), prefix])}.npz")
    if path.exists():
        with np.load(path) as cached:
            if str(cached["key"]) == key:
                return NFNSirenIndex(cached["copy"], cached["label"], cached["idx"])
    index = _scan(folders)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), copy=index.copy, label=index.label, idx=index.idx)

    atomic_write(path, write)
    return index


class NFNSirenDataModule(CheckpointZooDataModule):
    """An NFN SIREN zoo (see the module docstring for the format).

    Args:
        root: the folder holding the ``<prefix>_<label>s`` folders.
        prefix: the folders' common prefix.
        split_points: ``(val_start, test_start)``: images ``idx < val_start`` are train,
            ``val_start <= idx < test_start`` val, the rest test.
        aug_copies: augmented copies ``aug0 ... aug{n-1}`` added to train; ``None``: all
            found, ``0``: none.
        array_cache: see :class:`~nfn_lab.data.checkpoint_zoo.CheckpointZooDataModule`.
        **kwargs: the other arguments of :class:`~nfn_lab.data.zoo.ZooDataModule`.
    """

    siren_variant = "nfn"  # for nfn_lab.siren.render
    layout = CheckpointLayout(
        keys=(
            ("net.0.linear.weight", "net.0.linear.bias"),
            ("net.1.linear.weight", "net.1.linear.bias"),
            ("net.2.weight", "net.2.bias"),
        ),
        network_spec=NetworkSpec.from_shapes([(32, 2), (32, 32), (-1, 32)]),  # -1: C, from the first file
    )

    def __init__(
        self,
        root: str | os.PathLike,
        prefix: str = "randinit_smaller",
        split_points: tuple[int, int] = (45_000, 50_000),
        aug_copies: int | None = None,
        array_cache: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, array_cache=array_cache, **kwargs)
        val_start, test_start = split_points
        if not 0 <= val_start <= test_start:
            raise ValueError(f"split_points must satisfy 0 <= val_start <= test_start, got {split_points}.")
        if aug_copies is not None and aug_copies < 0:
            raise ValueError(f"aug_copies must be None (all), 0 (none) or positive, got {aug_copies}.")
        self.prefix = prefix
        self.split_points = (int(val_start), int(test_start))
        self.aug_copies = aug_copies
        self._index: NFNSirenIndex | None = None

    @property
    def index(self) -> NFNSirenIndex:
        if self._index is None:
            self._index = load_index(self.root, self.prefix)
        return self._index

    @property
    def image_size(self) -> int:
        """Side of the images the SIRENs were fit to: 32 for RGB (CIFAR-10), else 28."""
        return 32 if self.network_spec.get_io()[1] == 3 else 28

    def files(self) -> Sequence[str]:
        return _IndexFiles(self.root, self.prefix, self.index)

    def _train_copies(self) -> int:
        found = sorted(set(self.index.copy.tolist()) - {BASE})
        if self.aug_copies is None:
            return len(found)
        if found[: self.aug_copies] != list(range(self.aug_copies)):
            raise ValueError(
                f"aug_copies={self.aug_copies} but the zoo has augmented copies {found} under {str(self.root)!r} "
                f"(folders '{self.prefix}_aug<i>_<digit>s'); lower aug_copies or add the missing copies."
            )
        return self.aug_copies

    def _split_mask(self, split: str) -> tuple[np.ndarray, str]:
        """Which index rows belong to ``split``, and the rule in words."""
        copy, idx = self.index.copy, self.index.idx
        val_start, test_start = self.split_points
        if split == "train":
            return (copy < self._train_copies()) & (idx < val_start), f"idx < {val_start}"  # base set: copy -1
        if split == "val":
            return (copy == BASE) & (idx >= val_start) & (idx < test_start), f"{val_start} <= idx < {test_start}"
        return (copy == BASE) & (idx >= test_start), f"idx >= {test_start}"

    def split_rows(self, split: str) -> tuple[np.ndarray, dict[str, Tensor]]:
        mask, rule = self._split_mask(split)
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            raise ValueError(
                f"the {split!r} split of the NFN SIREN zoo {str(self.root)!r} is empty: no file "
                f"'{self.prefix}_<digit>s/net<idx>.pth' with {rule}; check root and split_points={self.split_points}."
            )
        return rows, {"label": torch.from_numpy(self.index.label[rows].astype(np.int64))}

    @classmethod
    def detect(cls, root: str | os.PathLike) -> bool:
        """Whether ``root`` holds ``randinit_smaller_<digit>s`` folders."""
        pattern = re.compile(r"randinit_smaller(?:_aug\d+)?_\ds")
        return Path(root).is_dir() and any(pattern.fullmatch(e.name) for e in os.scandir(os.fspath(root)) if e.is_dir())

    @classmethod
    def describe(cls, root: str | os.PathLike) -> dict[str, Any]:
        """Spec, split sizes (with the default split points), copies and targets of the zoo at ``root``."""
        dm = cls(root)
        return {
            "format": cls.__name__,
            "network_spec": dm.network_spec,
            "num_networks": len(dm.index.idx),
            "augmented_copies": dm._train_copies(),
            "splits": {split: int(dm._split_mask(split)[0].sum()) for split in dm.splits},
            "targets": ["label"],
        }
