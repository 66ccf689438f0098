"""Writes Small CNN Zoo folders in the exact public format (see ``datamodules/small_cnn_zoo.py``).

:func:`generate` builds real PyTorch CNNs of the zoo's architecture (three
``Conv2d(16, 3x3, stride 2)`` without padding, global average pooling, ``Linear(16, 10)``),
converts their weights to Keras layouts (kernel ``(kh, kw, in, out)``, dense ``(in, out)``,
bias before kernel per layer) and writes one flattened checkpoint per row, with
``metrics.csv.gz`` (the public column names) and ``layout.csv``. It returns the modules,
so tests can compare what a loader reads back against them exactly.

:func:`generate_synthetic` streams a zoo of any size (random weights) in chunks, for
benchmarks. The writers (:func:`keras_layout`, :func:`keras_row`, :func:`write_rows`)
accept any chain of ``nn.Linear``/``nn.Conv1d/2d/3d`` layers.

Run ``python -m tests.data.small_cnn_zoo.generate OUT_DIR`` to write the small zoo.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

STEPS = (0, 1, 2, 3, 20, 40, 60, 80, 86)  # checkpoint epochs; 86 = trained
NUM_COLUMNS = 4970
CONSTANT_CONFIG = {  # the README's constant config.* columns
    "config.dataset": "mnist",
    "config.dnn_architecture": "cnn",
    "config.epochs": 86,
    "config.epochs_between_checkpoints": 20,
    "config.num_layers": 3,
    "config.num_units": 16,
    "config.random_seed": 42,
}
METRIC_COLUMNS = (  # the order of the public README's list
    "config.activation",
    "config.b_init",
    "config.dataset",
    "config.dnn_architecture",
    "config.dropout",
    "config.epochs",
    "config.epochs_between_checkpoints",
    "config.init_std",
    "config.l2reg",
    "config.learning_rate",
    "config.num_layers",
    "config.num_units",
    "config.optimizer",
    "config.random_seed",
    "config.train_fraction",
    "config.w_init",
    "modeldir",
    "step",
    "test_accuracy",
    "test_loss",
    "train_accuracy",
    "train_loss",
)
_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_KERAS_CLASS = {nn.Linear: "dense", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Conv3d: "conv3d"}


def small_cnn(activation: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    """The zoo's architecture: 3 x (Conv2d(16, 3x3, stride 2, no padding), activation, dropout), GAP, Linear(16, 10)."""
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    layers: list[nn.Module] = []
    for c_in in (1, 16, 16):
        layers += [nn.Conv2d(c_in, 16, 3, stride=2), act(), nn.Dropout(dropout)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


# --- Keras layouts -----------------------------------------------------------------------------


def _layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, _LAYER_TYPES)]


def _keras_names(module: nn.Module) -> list[str]:
    """Keras's automatic names: ``sequential/conv2d``, ``sequential/conv2d_1``, ..., ``sequential/dense``."""
    counts: dict[str, int] = {}
    names = []
    for layer in _layers(module):
        base = _KERAS_CLASS[type(layer)]
        n = counts[base] = counts.get(base, -1) + 1
        names.append(f"sequential/{base}" + (f"_{n}" if n else ""))
    return names


def _keras_arrays(module: nn.Module) -> list[tuple[str, np.ndarray]]:
    """``(varname, array)`` in file order: per layer the bias, then the kernel in Keras order."""
    out = []
    for name, layer in zip(_keras_names(module), _layers(module)):
        weight = layer.weight.detach()  # (out, in, *filter)
        kernel = weight.permute(*range(2, weight.dim()), 1, 0)  # (*filter, in, out)
        out.append((f"{name}/bias:0", layer.bias.detach().numpy()))
        out.append((f"{name}/kernel:0", kernel.numpy()))
    return out


def keras_layout(module: nn.Module) -> pd.DataFrame:
    """``layout.csv`` of ``module``'s architecture: ``varname, start_idx, end_idx, shape``."""
    rows, start = [], 0
    for varname, array in _keras_arrays(module):
        rows.append({"varname": varname, "start_idx": start, "end_idx": start + array.size, "shape": str(array.shape)})
        start += array.size
    return pd.DataFrame(rows, columns=["varname", "start_idx", "end_idx", "shape"])


def keras_row(module: nn.Module) -> np.ndarray:
    """``module``'s parameters as one flattened Keras checkpoint ``(num_params,)`` float32."""
    return np.concatenate([array.ravel() for _, array in _keras_arrays(module)]).astype(np.float32)


# --- writing files -------------------------------------------------------------------------------


def write_rows(path: Path, chunks: Iterable[np.ndarray], num_rows: int, num_columns: int) -> None:
    """Streams float32 row blocks into a ``.npy`` file of shape ``(num_rows, num_columns)``."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (num_rows, num_columns)}
    written = 0
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for chunk in chunks:
            f.write(np.ascontiguousarray(chunk, dtype="<f4").data)
            written += len(chunk)
    if written != num_rows:
        raise ValueError(f"wrote {written} rows to {path} but its header says {num_rows}.")


def write_index_csv(path: Path, order: np.ndarray) -> None:
    """The NFN paper's row-order file: a stray first line ``0``, then one row index per line."""
    path.write_text("0\n" + "".join(f"{i}\n" for i in order.tolist()))


def _run_configs(num_networks: int, activations: Sequence[str], rng: np.random.Generator) -> pd.DataFrame:
    """One row of ``config.*`` columns and a ``modeldir`` per run."""

    def pick(options: Sequence) -> np.ndarray:
        return rng.choice(np.asarray(options), size=num_networks)

    return pd.DataFrame(
        {
            "config.activation": pick(list(activations)),
            "config.b_init": pick(["zeros", "RandomNormal"]),
            "config.dropout": pick([0.0, 0.2, 0.45]),
            "config.init_std": np.round(10 ** rng.uniform(-3, -0.5, num_networks), 5),
            "config.l2reg": np.round(10 ** rng.uniform(-8, -2, num_networks), 9),
            "config.learning_rate": np.round(10 ** rng.uniform(-4, -2, num_networks), 6),
            "config.optimizer": pick(["adam", "sgd", "rmsprop"]),
            "config.train_fraction": pick([0.1, 0.25, 0.5, 1.0]),
            "config.w_init": pick(["he_normal", "glorot_normal", "orthogonal", "RandomNormal"]),
            **{k: [v] * num_networks for k, v in CONSTANT_CONFIG.items()},
            "modeldir": [f"cnn_zoo/mnist/{i:05d}" for i in range(num_networks)],
        }
    )


def _metrics(configs: pd.DataFrame, run: np.ndarray, step: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Per checkpoint row: its run's config, ``step`` and plausible accuracies and losses."""
    progress = np.sqrt(step / STEPS[-1])
    quality = rng.uniform(0.1, 1.0, len(configs))[run]
    test_accuracy = np.clip(0.1 + 0.85 * quality * progress + rng.normal(0, 0.01, len(run)), 0.05, 1.0)
    frame = configs.iloc[run].reset_index(drop=True)
    frame["step"] = step
    frame["test_accuracy"] = test_accuracy.round(4)
    frame["test_loss"] = (-np.log(test_accuracy)).round(4)
    frame["train_accuracy"] = np.clip(test_accuracy + rng.uniform(0, 0.05, len(run)), 0, 1).round(4)
    frame["train_loss"] = (-np.log(frame["train_accuracy"].to_numpy())).round(4)
    return frame[list(METRIC_COLUMNS)]


# --- the small zoo of real CNNs -------------------------------------------------------------------


@dataclass
class GeneratedZoo:
    """What :func:`generate` wrote.

    Attributes:
        root: the zoo folder.
        modules: one CNN per ``weights.npy`` row, in file order.
        metrics: the ``metrics.csv.gz`` table.
        index_csv: the row-order file (stray ``0`` first line, then a permutation of the rows).
        order: the permutation written after the stray line.
        nonfinite: rows with NaN/inf weights (a diverged run).
        crashed: the ``modeldir`` of the run that stopped before its last checkpoints.
    """

    root: Path
    modules: list[nn.Module]
    metrics: pd.DataFrame
    index_csv: Path
    order: np.ndarray
    nonfinite: list[int]
    crashed: str


def generate(
    root: str | Path, num_networks: int = 24, seed: int = 0, activations: Sequence[str] = ("relu", "tanh")
) -> GeneratedZoo:
    """Writes a zoo of ``num_networks`` runs x the 9 checkpoints (minus a crashed run's last two).

    Checkpoint ``s`` of a run is its initialization moved a fraction ``sqrt(s / 86)`` along a
    random direction. Run 1 crashed after step 60 (no rows for steps 80, 86); run 2 diverged
    (NaN/inf weights from step 60 on). Also writes ``split_indices.csv`` beside the files.
    """
    if num_networks < 3:
        raise ValueError("generate needs at least 3 runs (one crashes, one diverges).")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    configs = _run_configs(num_networks, activations, rng)
    modules, runs, steps, nonfinite = [], [], [], []
    for run, activation in enumerate(configs["config.activation"]):
        start, direction = small_cnn(activation), small_cnn(activation)
        for step in STEPS[:-2] if run == 1 else STEPS:
            module = small_cnn(activation, float(configs["config.dropout"][run])).eval()
            with torch.no_grad():
                for p, p0, d in zip(module.parameters(), start.parameters(), direction.parameters()):
                    p.copy_(p0 + math.sqrt(step / STEPS[-1]) * d)
                if run == 2 and step >= 60:  # diverged
                    module[3].weight.view(-1)[5] = float("inf") if step < 86 else float("nan")
            if run == 2 and step >= 60:
                nonfinite.append(len(modules))
            modules.append(module)
            runs.append(run)
            steps.append(step)
    metrics = _metrics(configs, np.asarray(runs), np.asarray(steps), rng)
    write_rows(root / "weights.npy", [np.stack([keras_row(m) for m in modules])], len(modules), NUM_COLUMNS)
    metrics.to_csv(root / "metrics.csv.gz", index=False, compression="gzip")
    keras_layout(modules[0]).to_csv(root / "layout.csv", index=False)
    order = rng.permutation(len(modules))
    write_index_csv(root / "split_indices.csv", order)
    return GeneratedZoo(root, modules, metrics, root / "split_indices.csv", order, nonfinite, configs["modeldir"][1])


# --- a zoo of any size for benchmarks ----------------------------------------------------------------


def generate_synthetic(root: str | Path, num_networks: int, seed: int = 0, chunk_rows: int = 4096) -> int:
    """Streams a zoo of ``num_networks`` x 9 rows of random weights, in ``chunk_rows`` blocks.

    Memory stays at one chunk (about ``chunk_rows * 20 kB``) plus the metrics table. Also
    writes ``split_indices.csv``. Returns the number of rows.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    num_rows = num_networks * len(STEPS)
    base = rng.standard_normal((chunk_rows, NUM_COLUMNS), dtype=np.float32)

    def chunks() -> Iterable[np.ndarray]:
        for start in range(0, num_rows, chunk_rows):
            n = min(chunk_rows, num_rows - start)
            yield base[:n] * np.float32(0.1 + start / num_rows)  # rows differ from chunk to chunk

    write_rows(root / "weights.npy", chunks(), num_rows, NUM_COLUMNS)
    runs = np.repeat(np.arange(num_networks), len(STEPS))
    steps = np.tile(np.asarray(STEPS), num_networks)
    configs = _run_configs(num_networks, ("relu", "tanh"), rng)
    _metrics(configs, runs, steps, rng).to_csv(root / "metrics.csv.gz", index=False, compression="gzip")
    keras_layout(small_cnn()).to_csv(root / "layout.csv", index=False)
    write_index_csv(root / "split_indices.csv", rng.permutation(num_rows))
    return num_rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="output folder")
    parser.add_argument("--networks", type=int, default=24, help="runs (x 9 checkpoints)")
    parser.add_argument("--synthetic", action="store_true", help="random weights, streamed (any size)")
    args = parser.parse_args(argv)
    if args.synthetic:
        generate_synthetic(args.root, args.networks)
    else:
        generate(args.root, args.networks)


if __name__ == "__main__":
    main()
