"""The DWSNets INR zoos (MNIST / FashionMNIST INRs of Navon et al. 2023) as a DataModule.

Used by DWSNets, neural graphs and ScaleGMN. Format (docs/formats.md, "DWSNets INR zoos"):

- MNIST: ``.../mnist_png_{training|testing}_<label>_<n>/checkpoints/model_final.pth``;
  FashionMNIST: ``fmnist_inrs/{train,test}/model_<n>.pth``, whose dict also holds an
  int ``"label"`` (ignored here: labels come from the splits file).
- a splits JSON ``{"train": {"path": [...], "label": [...]}, "val": {...}, "test": {...}}``
  (55,000 / 5,000 / 10,000 for MNIST); labels are ints or digit strings. Paths are
  absolute or relative to the data root. Absolute paths written on another machine are
  re-rooted: the longest trailing part of the path that exists under ``root`` is used,
  and the prefix it replaced is reused for the following paths.
- each file: ``seq.0.weight (32, 2)``, ``seq.0.bias (32,)``, ``seq.1.weight (32, 32)``,
  ``seq.1.bias (32,)``, ``seq.2.weight (1, 32)``, ``seq.2.bias (1,)``, in PyTorch's
  ``(out, in)`` layout (DWSNets' own loaders transpose to ``(in, out)``; nfn-lab keeps
  ``(out, in)``). These SIRENs add 0.5 to their output and use ``'xy'`` coordinates: the
  ``"dwsnets"`` variant of :class:`nfn_lab.siren.Siren` (render with
  :func:`nfn_lab.siren.render`).

Targets: ``{"label": int64}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nfn_lab.data.checkpoint_zoo import CheckpointLayout, CheckpointZooDataModule
from nfn_lab.weightspace import NetworkSpec

__all__ = ["DWSNetsINRDataModule", "PathResolver"]

SPLITS_GLOB = "*splits*.json"


class PathResolver:
    """Maps the paths of a splits file to files under ``root``.

    A relative path is taken relative to ``root``; a path that does not exist is
    re-rooted: its longest trailing part that exists under ``root`` is used, and the
    leading part it dropped is remembered and replaced the same way in later paths.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.moves: dict[tuple[str, ...], Path] = {}  # dropped leading parts -> root

    def __call__(self, raw: str, where: str) -> str:
        path = PurePath(raw)
        parts = path.parts
        for head, target in self.moves.items():
            if parts[: len(head)] == head:
                return str(target.joinpath(*parts[len(head) :]))
        direct = Path(path) if path.is_absolute() else self.root / path
        if direct.exists():
            return str(direct)
        for k in range(1, len(parts)):
            candidate = self.root.joinpath(*parts[k:])
            if candidate.exists():
                self.moves[parts[:k]] = self.root
                return str(candidate)
        raise FileNotFoundError(
            f"{where}: {raw!r} not found, neither as {str(direct)!r} nor with any trailing part of it under root "
            f"{str(self.root)!r}; set root to the folder that the splits file's paths are relative to."
        )


def _load_splits(path: Path, splits: Sequence[str]) -> dict[str, tuple[list[str], list[int]]]:
    """``split -> (paths, labels)`` of a DWSNets splits JSON, checked."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        found = sorted(p.name for p in path.parent.glob("*.json"))
        raise FileNotFoundError(f"splits file {str(path)!r} not found; JSON files there: {found}.") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from None
    out = {}
    for split in splits:
        entry = data.get(split) if isinstance(data, dict) else None
        if not isinstance(entry, dict) or not {"path", "label"} <= entry.keys():
            have = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"{path}: needs {split!r}: {{'path': [...], 'label': [...]}} for each of {list(splits)}; has {have}."
            )
        paths, labels = entry["path"], entry["label"]
        if len(paths) != len(labels):
            raise ValueError(f"{path}: {split!r} has {len(paths)} paths but {len(labels)} labels.")
        if not paths:
            raise ValueError(f"{path}: the {split!r} split is empty; every split needs at least one network.")
        try:
            out[split] = (list(paths), [int(label) for label in labels])
        except (TypeError, ValueError):
            bad = next(i for i, label in enumerate(labels) if not str(label).strip().lstrip("-").isdigit())
            raise ValueError(f"{path}: {split!r} label {bad} is {labels[bad]!r}, not an integer class.") from None
    return out


class DWSNetsINRDataModule(CheckpointZooDataModule):
    """A DWSNets INR zoo (see the module docstring for the format).

    Args:
        root: the data root that the splits file's relative paths start from.
        splits_file: the splits JSON (e.g. ``mnist_splits.json``); a relative path is
            taken relative to ``root``. Default: the one ``*splits*.json`` file in ``root``.
        array_cache: see :class:`~nfn_lab.data.checkpoint_zoo.CheckpointZooDataModule`.
        **kwargs: the other arguments of :class:`~nfn_lab.data.zoo.ZooDataModule`.
    """

    siren_variant = "dwsnets"  # for nfn_lab.siren.render
    image_size = 28
    layout = CheckpointLayout(
        keys=(("seq.0.weight", "seq.0.bias"), ("seq.1.weight", "seq.1.bias"), ("seq.2.weight", "seq.2.bias")),
        network_spec=NetworkSpec.from_shapes([(32, 2), (32, 32), (1, 32)]),
    )

    def __init__(
        self,
        root: str | os.PathLike,
        splits_file: str | os.PathLike | None = None,
        array_cache: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, array_cache=array_cache, **kwargs)
        self._splits_file = None if splits_file is None else self.root / Path(splits_file).expanduser()
        self._files: list[str] | None = None
        self._bounds: dict[str, tuple[int, int]] = {}
        self._labels = np.zeros(0, dtype=np.int64)

    @property
    def splits_file(self) -> Path:
        """The splits JSON: as given (relative to ``root``), else the one ``*splits*.json`` in ``root``."""
        if self._splits_file is None:
            found = sorted(self.root.glob(SPLITS_GLOB))
            if len(found) != 1:
                raise ValueError(
                    f"found {len(found)} splits files {[p.name for p in found]} in {str(self.root)!r}; pass "
                    "splits_file= with the one to use (e.g. 'mnist_splits.json')."
                )
            self._splits_file = found[0]
        return self._splits_file

    @classmethod
    def detect(cls, root: str | os.PathLike) -> bool:
        """Whether ``root`` holds a ``*splits*.json`` file."""
        return Path(root).is_dir() and any(Path(root).glob(SPLITS_GLOB))

    def _load(self) -> list[str]:
        if self._files is None:
            resolve = PathResolver(self.root)
            files: list[str] = []
            labels: list[int] = []
            for split, (paths, split_labels) in _load_splits(self.splits_file, self.splits).items():
                self._bounds[split] = (len(files), len(files) + len(paths))
                files += [resolve(p, f"{self.splits_file}: {split!r} path {i}") for i, p in enumerate(paths)]
                labels += split_labels
            self._labels = np.array(labels, dtype=np.int64)
            self._files = files
        return self._files

    def files(self) -> Sequence[str]:
        return self._load()

    def split_rows(self, split: str) -> tuple[np.ndarray, dict[str, Tensor]]:
        self._load()
        rows = np.arange(*self._bounds[split])
        return rows, {"label": torch.from_numpy(self._labels[rows])}
