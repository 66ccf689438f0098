"""Loading an NFN SIREN zoo: our DataModule's loaders vs the NFN repo's approach, samples/s.

The reference approach is the one of the NFN repo's ``experiments/data_utils.py``
(``SirenDataset``, AllanYangZhou/nfn), re-implemented here (not imported): a glob over
``<prefix>_*/*.pth`` mapping each image index to its path and label, then per item one
``torch.load`` of the SIREN's state dict, its arrays paired in key order with a channel
axis added; batches built by ``torch``'s default collate, then wrapped in
:class:`WeightSpaceFeatures`. Ours is :class:`~datamodules.nfn_siren.NFNSirenDataModule`'s
train loader, reading

- ``per file``: one checked ``torch.load`` per network (what the DataModule does by default);
- ``array cache``: batches fancy-indexed from the memory-mapped array cache that
  ``prepare_data()`` builds once beside the zoo (``array_cache=True``); the one-time build
  is timed separately, from a cold start (no cache).

All sides read the same generated zoo (default 2,000 SIRENs of the public architecture, the
base set only, all in the train split so that the reference's glob and ours see the same
files), with batch size 128, shuffled, ``num_workers=0``, one process, one thread; epochs
are timed in interleaved rounds. The files are in the OS page cache for every side (they
were just written), so the comparison is of CPU cost, not of disk reads::

    python -m benchmarks.bench_inr_loading             # 2,000 SIRENs, 7 rounds
    python -m benchmarks.bench_inr_loading --quick     # seconds
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks import _report
from benchmarks._timing import interleaved, loader_epoch, torch_threads
from datamodules.nfn_siren import NFNSirenDataModule
from nfn_lab.data.cache import CACHE_DIR_NAME
from tests.data.nfn_siren.generate import PREFIX, generate

SIDES = ("ref", "ours per file", "ours array cache")


class ReferenceSirenDataset(Dataset):
    """The NFN repo's approach: an index by glob and regex, one ``torch.load`` per item."""

    def __init__(self, root: Path, prefix: str, val_point: int) -> None:
        self.idx_to_path, self.idx_to_label = {}, {}
        for path in glob.glob(os.path.join(root, f"{prefix}_*/*.pth")):  # (also matches the aug folders)
            idx = int(re.search(r"net(\d+)\.pth", path).group(1))
            self.idx_to_path[idx] = path
            self.idx_to_label[idx] = int(re.search(r"_(\d)s", path).group(1))
        self.idcs = list(range(val_point))

    def __len__(self) -> int:
        return len(self.idcs)

    def __getitem__(self, i: int):
        state_dict = torch.load(self.idx_to_path[self.idcs[i]])
        arrays = [value[None] for value in state_dict.values()]  # keys in order W(1), b(1), W(2), b(2), ...
        return (arrays[0::2], arrays[1::2]), self.idx_to_label[self.idcs[i]]


def reference_loader(root: Path, num: int, batch_size: int) -> DataLoader:
    dataset = ReferenceSirenDataset(root, PREFIX, val_point=num)
    return DataLoader(dataset, batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))


def our_loader(root: Path, num: int, batch_size: int, array_cache: bool) -> DataLoader:
    dm = NFNSirenDataModule(root, split_points=(num, num), batch_size=batch_size, array_cache=array_cache)
    dm.prepare_data()
    return dm.train_dataloader()


def measure(root: Path, num: int, batch_size: int, rounds: int) -> dict[str, dict[str, float]]:
    """Setup seconds (first and cached), the array cache's build, and samples/s of every side."""
    results: dict[str, dict[str, float]] = {side: {} for side in SIDES}
    builders = {
        "ref": lambda: reference_loader(root, num, batch_size),
        "ours per file": lambda: our_loader(root, num, batch_size, array_cache=False),
        "ours array cache": lambda: our_loader(root, num, batch_size, array_cache=True),
    }
    loaders = {}
    for side, build in builders.items():  # the first build of ours scans the folders; of the cache, builds it
        start = time.perf_counter()
        loaders[side] = build()
        results[side]["first_setup_s"] = time.perf_counter() - start
        start = time.perf_counter()
        build()
        results[side]["setup_s"] = time.perf_counter() - start
        results[side]["samples"] = loader_epoch(loaders[side], side)  # also the warm-up
    steps = {side: (lambda side=side: loader_epoch(loaders[side], side)) for side in SIDES}
    for side, timing in interleaved(steps, rounds, dict.fromkeys(SIDES, 1), sync=lambda: None).items():
        results[side]["samples_per_s"] = results[side]["samples"] / timing.median
        results[side]["best_samples_per_s"] = results[side]["samples"] / timing.min
    return results


def report(args: argparse.Namespace, results: dict[str, dict[str, float]]) -> str:
    ref = results["ref"]
    names = {
        "ref": "reference approach (SirenDataset)",
        "ours per file": "NFNSirenDataModule",
        "ours array cache": "NFNSirenDataModule, array_cache=True",
    }
    lines = [
        f"{args.networks:,} SIREN files (train split), batch size {args.batch_size}, shuffled, num_workers=0, "
        f"1 process, 1 thread, {args.rounds} interleaved rounds of one epoch each; torch {torch.__version__}.",
        "",
        "| side | first setup s | setup s | samples/s (median) | samples/s (best) | vs reference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for side in SIDES:
        r = results[side]
        lines.append(
            f"| {names[side]} | {r['first_setup_s']:.2f} | {r['setup_s']:.2f} | {r['samples_per_s']:,.0f} | "
            f"{r['best_samples_per_s']:,.0f} | **{r['samples_per_s'] / ref['samples_per_s']:.1f}x** |"
        )
    lines += [
        "",
        "first setup: ours per file scans the folders and caches the index; the array cache side builds its cache "
        "(one checked torch.load per file, written once); setup: the same again, from the caches.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fit-steps", type=int, default=0, help="Adam steps per SIREN when generating (speed only)")
    parser.add_argument("--quick", action="store_true", help="300 networks, 3 rounds")
    parser.add_argument("--out", type=Path, default=_report.OUT_DIR, help="reports folder (default benchmarks/out)")
    args = parser.parse_args(argv)
    if args.quick:
        args.networks, args.rounds = 300, 3
    root = Path(tempfile.mkdtemp(prefix="bench_inr_"))
    try:
        with torch_threads(1):
            generate(root, num_images=args.networks, aug_copies=0, steps=args.fit_steps)
            shutil.rmtree(root / CACHE_DIR_NAME, ignore_errors=True)
            text = report(args, measure(root, args.networks, args.batch_size, args.rounds))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(text)
    _report.write_markdown(args.out, "inr_loading", text)
    return text


if __name__ == "__main__":
    main()
