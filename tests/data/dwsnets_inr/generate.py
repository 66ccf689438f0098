"""Writes small DWSNets INR zoos in the exact public layouts (see ``datamodules/dwsnets_inr.py``).

Real SIRENs (the ``"dwsnets"`` variant of :class:`nfn_lab.siren.Siren`: +0.5 output,
``'xy'`` coordinates, zero initial biases) are fit, a few Adam steps each and all at
once, to scikit-learn digits upsampled and padded to 28x28 in ``[0, 1]``::

    <root>/mnist-inrs/mnist_png_{training|testing}_<label>_<n>/checkpoints/model_final.pth
    <root>/mnist_splits.json         paths relative to <root> and absolute, labels as strings
    <root>/mnist_splits_moved.json   the same networks as absolute paths of another machine
    <root>/fmnist_inrs/{train,test}/model_<n>.pth   state dict plus an int "label"
    <root>/fmnist_splits.json        paths relative to <root>, int labels

Splits JSON: ``{"train": {"path": [...], "label": [...]}, "val": {...}, "test": {...}}``.
Run ``python -m tests.data.dwsnets_inr.generate OUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nfn_lab.conversion import wsfeat_to_state_dicts
from nfn_lab.siren import Siren, fit
from tests.data.digits import digit_images, one_thread

FOREIGN_ROOT = "/home/alice/dws/dataset"  # where the moved splits file says the zoo was


def _fit(num: int, steps: int, seed: int) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    images, labels = digit_images(num, size=28, low=0.0, high=1.0)
    with one_thread():
        fitted = fit(images, "dwsnets", steps=steps, lr=1e-3, seed=seed)
    state_dicts = wsfeat_to_state_dicts(fitted, Siren("dwsnets"))
    return [{k: v.clone() for k, v in sd.items()} for sd in state_dicts], labels  # own storage, not the batch's


def _write_splits(path: Path, splits: dict[str, list[tuple[str, int | str]]]) -> None:
    data = {split: {"path": [p for p, _ in rows], "label": [y for _, y in rows]} for split, rows in splits.items()}
    path.write_text(json.dumps(data))


def _three_splits(rows: list, num_train: int, num_val: int) -> dict[str, list]:
    first_val = num_train - num_val
    return {"train": rows[:first_val], "val": rows[first_val:num_train], "test": rows[num_train:]}


def generate_mnist(
    root: str | Path, num_train: int = 8, num_test: int = 4, num_val: int = 2, steps: int = 5, seed: int = 0
) -> dict[Path, dict[str, torch.Tensor]]:
    """The MNIST layout: ``num_train`` training INRs (the last ``num_val`` of them are val) and ``num_test``."""
    root = Path(root)
    state_dicts, labels = _fit(num_train + num_test, steps, seed)
    written, local, moved = {}, [], []
    for n, (state_dict, label) in enumerate(zip(state_dicts, labels.tolist())):
        kind = "training" if n < num_train else "testing"
        relative = f"mnist-inrs/mnist_png_{kind}_{label}_{n}/checkpoints/model_final.pth"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state_dict, path)
        written[path] = state_dict
        local.append((relative if n % 2 else str(path.absolute()), str(label)))  # both kinds of paths
        moved.append((f"{FOREIGN_ROOT}/{relative}", str(label)))
    _write_splits(root / "mnist_splits.json", _three_splits(local, num_train, num_val))
    _write_splits(root / "mnist_splits_moved.json", _three_splits(moved, num_train, num_val))
    return written


def generate_fmnist(
    root: str | Path, num_train: int = 8, num_test: int = 4, num_val: int = 2, steps: int = 5, seed: int = 1
) -> dict[Path, dict[str, torch.Tensor]]:
    """The FashionMNIST layout (digits stand in for clothes); the saved dicts hold an int ``"label"``."""
    root = Path(root)
    state_dicts, labels = _fit(num_train + num_test, steps, seed)
    written, rows = {}, []
    for n, (state_dict, label) in enumerate(zip(state_dicts, labels.tolist())):
        relative = f"fmnist_inrs/{'train' if n < num_train else 'test'}/model_{n}.pth"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**state_dict, "label": label}, path)
        written[path] = state_dict
        rows.append((relative, label))
    _write_splits(root / "fmnist_splits.json", _three_splits(rows, num_train, num_val))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    for name, generate in (("mnist", generate_mnist), ("fmnist", generate_fmnist)):
        written = generate(args.root, steps=args.steps)
        print(f"wrote {len(written)} {name} INRs under {args.root}")


if __name__ == "__main__":
    main()
