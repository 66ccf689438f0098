"""Writes small zoos in nfn-lab's Arrow/Parquet format (see ``datamodules/arrow_zoo.py`` and docs/formats.md).

:func:`generate` writes a zoo through the reference writer
(:class:`~datamodules.arrow_zoo.ZooWriter`) and returns everything it wrote, so
tests can compare what the readers give back exactly. :func:`write_parquet_by_hand`
writes the Parquet layout with plain pyarrow and ``json``, as another tool would, to
test the readers independently of the writer.

Run ``python -m tests.data.arrow_zoo.generate OUT_DIR`` to write the small zoo.
"""

from __future__ import annotations

import argparse
import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from datamodules.arrow_zoo import ZooWriter
from nfn_lab.testing import example_features
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures, network_spec_from_wsfeat

SIZES = {"train": 12, "val": 4, "test": 6}
TARGETS = ("test_accuracy", "test_loss")
METADATA = ("network_id", "step", "activation")
CHECKPOINTS = 2  # rows per network_id


@dataclass
class GeneratedArrowZoo:
    """What :func:`generate` wrote: per split, features ``(N, 1, ...)``, targets ``(N,)`` and metadata lists."""

    root: Path
    network_spec: NetworkSpec
    features: dict[str, WeightSpaceFeatures]
    targets: dict[str, dict[str, Tensor]]
    metadata: dict[str, dict[str, list]]


def make_split(split: str, num: int, seed: int) -> tuple[WeightSpaceFeatures, dict[str, Tensor], dict[str, list]]:
    """Conv2d, Conv2d, Linear networks with distinct random targets and metadata."""
    feats = example_features("conv2d", num_layers=3, batch_size=num, seed=seed)  # (N, 1, ...)
    generator = torch.Generator().manual_seed(seed)
    targets = {name: torch.rand(num, generator=generator) for name in TARGETS}
    first = 1000 * seed
    metadata = {
        "network_id": [f"{split}-{first + i // CHECKPOINTS}" for i in range(num)],
        "step": [86 * (i % CHECKPOINTS) for i in range(num)],
        "activation": ["relu" if i % 3 else "tanh" for i in range(num)],
    }
    return feats, targets, metadata


def generate(
    root: str | Path,
    sizes: Mapping[str, int] = SIZES,
    write_parquet: bool = False,
    overwrite: bool = False,
    add_size: int = 5,
    chunk_size: int = 4,
    seed: int = 0,
) -> GeneratedArrowZoo:
    """Writes a zoo with ``sizes[split]`` rows per split, added ``add_size`` rows at a time."""
    data = {split: make_split(split, num, seed + k) for k, (split, num) in enumerate(sizes.items())}
    spec = network_spec_from_wsfeat(next(iter(data.values()))[0], set_all_dims=True)
    provenance = {"builder": "tests.data.arrow_zoo.generate", "seed": seed}
    with ZooWriter(root, spec, TARGETS, provenance, METADATA, overwrite, write_parquet, chunk_size) as writer:
        for split, (feats, targets, metadata) in data.items():
            for lo in range(0, sizes[split], add_size):
                rows = slice(lo, lo + add_size)
                writer.add(
                    split,
                    feats.map(operator.itemgetter(rows)),
                    {k: v[rows] for k, v in targets.items()},
                    {k: v[rows] for k, v in metadata.items()},
                )
    return GeneratedArrowZoo(
        Path(root),
        spec,
        {split: d[0] for split, d in data.items()},
        {split: d[1] for split, d in data.items()},
        {split: d[2] for split, d in data.items()},
    )


def write_parquet_by_hand(root: str | Path, zoo: GeneratedArrowZoo) -> Path:
    """Writes ``zoo``'s splits in the Parquet layout with pyarrow and json only (no nfn-lab writer)."""
    root = Path(root)
    (root / "data").mkdir(parents=True)
    for split, feats in zoo.features.items():
        columns: dict[str, pa.Array] = {}
        for i, (w, b) in enumerate(feats):
            for name, x in ((f"w{i}", w), (f"b{i}", b)):
                flat = x.reshape(len(x), -1).numpy()  # (N, prod(shape)), row-major
                columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
        columns.update({k: pa.array(v.numpy()) for k, v in zoo.targets[split].items()})
        columns.update({k: pa.array(v) for k, v in zoo.metadata[split].items()})
        pq.write_table(pa.table(columns), root / "data" / f"{split}-00000-of-00001.parquet")
    info = {
        "format": "nfn-lab-zoo",
        "format_version": 1,
        "network_spec": zoo.network_spec.to_dict(),
        "target_names": list(TARGETS),
        "metadata_columns": list(METADATA),
        "splits": {split: len(feats.weights[0]) for split, feats in zoo.features.items()},
        "provenance": {"tool": "pyarrow by hand"},
    }
    (root / "zoo.json").write_text(json.dumps(info))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--parquet", action="store_true", help="write the Parquet layout")
    args = parser.parse_args()
    zoo = generate(args.root, write_parquet=args.parquet)
    sizes = {split: len(feats.weights[0]) for split, feats in zoo.features.items()}
    print(f"wrote {zoo.root}: {sizes}")


if __name__ == "__main__":
    main()
