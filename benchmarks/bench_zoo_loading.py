"""Loading a Small CNN Zoo: our DataModule's loader vs the NFN repo's approach, speed and memory.

The reference approach is the one of the NFN repo's ``experiments/data_utils.py``
(AllanYangZhou/nfn), re-implemented here (not imported): the whole ``weights.npy`` loaded
into memory, reordered by the index CSV, filtered to step 86 and split; each item a tuple of
per-layer NumPy views plus a float read from the metrics table with ``.iloc``; batches
built by ``torch``'s default collate, then wrapped in :class:`WeightSpaceFeatures`. Ours:

- ``ours``: :class:`~datamodules.small_cnn_zoo.SmallCNNZooDataModule`'s loaders (one
  positioned read per batch in ``__getitems__``, per-network items, ``nfn_lab.collate``);
- ``batched``: the same datasets read a batch at a time with
  :meth:`~datamodules.small_cnn_zoo.SmallCNNZooDataset.read_batch` through a
  ``BatchSampler`` (no per-network items), the path a base ``ZooDataModule`` could take
  when a split has no per-network transforms.

All sides read the same generated files, with the same batch size, in one process with one
thread.

Two measurements:

1. samples/s over full training epochs, in interleaved rounds (alternating the order)
   on one zoo (default 3,000 runs x 9 checkpoints = 27,000 rows, 0.54 GB), and each
   side's setup time;
2. peak resident memory (``ru_maxrss``) of a fresh process that builds the loaders and
   iterates every split once: ours on a 270,000-row zoo (5.4 GB, the public size), first
   with the one-time non-finite scan and then from its cache; and every side on the
   throughput zoo. (The reference on 270,000 rows would hold the 5.4 GB array twice while
   reordering; ``--reference-on-big`` runs it anyway.)

The zoos are generated in chunks into a temporary folder and deleted afterwards::

    python -m benchmarks.bench_zoo_loading               # needs 6 GB of disk
    python -m benchmarks.bench_zoo_loading --quick       # small zoos, seconds
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from benchmarks import _report
from benchmarks._timing import loader_epoch, torch_threads
from datamodules.small_cnn_zoo import FINAL_STEP, SmallCNNZooDataModule, SmallCNNZooDataset, nfn_split
from nfn_lab.weightspace import WeightSpaceFeatures
from tests.data.small_cnn_zoo.generate import generate_synthetic

REPO = Path(__file__).resolve().parent.parent
INDEX_CSV = "split_indices.csv"


class ReferenceZoo(Dataset):
    """The NFN repo's approach: every row in memory, per-item tuples of NumPy views."""

    def __init__(self, root: Path, split: str, index_csv: Path) -> None:
        data = np.load(root / "weights.npy")  # the whole array
        order = pd.read_csv(index_csv, header=None).to_numpy().ravel()
        data = data[order]
        metrics = pd.read_csv(root / "metrics.csv.gz").iloc[order]
        final = (metrics["step"] == FINAL_STEP).to_numpy()
        data, metrics = data[final], metrics[final]
        if not np.isfinite(data).all():
            raise ValueError("the reference approach needs finite weights")
        positions = nfn_split(len(data))[split]
        data, self.metrics = data[positions], metrics.iloc[positions]
        self.weights, self.biases = [], []
        for _, var in pd.read_csv(root / "layout.csv").iterrows():
            array = data[:, var["start_idx"] : var["end_idx"]].reshape(len(data), *ast.literal_eval(var["shape"]))
            if var["varname"].endswith("kernel:0"):  # Keras (B, *filter, in, out) -> (B, out, in, *filter)
                n = array.ndim
                self.weights.append(array.transpose(0, n - 1, n - 2, *range(1, n - 2)))
            else:
                self.biases.append(array)

    def __len__(self) -> int:
        return len(self.weights[0])

    def __getitem__(self, i: int):
        weights = tuple(w[i][None] for w in self.weights)
        biases = tuple(b[i][None] for b in self.biases)
        return (weights, biases), self.metrics.iloc[i].test_accuracy.item()


def reference_loaders(root: Path, batch_size: int) -> dict[str, DataLoader]:
    gen = torch.Generator().manual_seed(0)
    datasets = {split: ReferenceZoo(root, split, root / INDEX_CSV) for split in ("train", "val", "test")}
    return {s: DataLoader(ds, batch_size, shuffle=s == "train", generator=gen) for s, ds in datasets.items()}


def our_loaders(root: Path, batch_size: int) -> dict[str, DataLoader]:
    dm = SmallCNNZooDataModule(root, index_csv=root / INDEX_CSV, batch_size=batch_size)
    dm.setup()
    return {"train": dm.train_dataloader(), "val": dm.val_dataloader(), "test": dm.test_dataloader()}


class _Batches(Dataset):
    """A dataset whose items are whole batches: a list of indices -> features ``(B, 1, ...)`` and targets."""

    def __init__(self, dataset: SmallCNNZooDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> tuple[WeightSpaceFeatures, dict]:
        weights, biases, targets = self.dataset.read_batch(indices)
        return WeightSpaceFeatures([w.unsqueeze(1) for w in weights], [b.unsqueeze(1) for b in biases]), targets


def _as_is(batch):
    return batch


def batched_loaders(root: Path, batch_size: int) -> dict[str, DataLoader]:
    """Our datasets read a batch at a time (``read_batch``), without per-network items."""
    dm = SmallCNNZooDataModule(root, index_csv=root / INDEX_CSV, batch_size=batch_size)
    dm.setup()
    gen = torch.Generator().manual_seed(0)
    loaders = {}
    for split in ("train", "val", "test"):
        dataset = dm.split_dataset(split)
        order = RandomSampler(dataset, generator=gen) if split == "train" else SequentialSampler(dataset)
        sampler = BatchSampler(order, batch_size, drop_last=False)
        loaders[split] = DataLoader(_Batches(dataset), sampler=sampler, batch_size=None, collate_fn=_as_is)
    return loaders


BUILDERS: dict[str, Callable[[Path, int], dict[str, DataLoader]]] = {
    "ref": reference_loaders,
    "ours": our_loaders,
    "batched": batched_loaders,
}
NAMES = {
    "ref": "reference approach",
    "ours": "SmallCNNZooDataModule loader",
    "batched": "SmallCNNZooDataset.read_batch",
}


# --- measurements ------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    """Peak resident memory of this process image (Linux ``VmHWM``; ``ru_maxrss`` elsewhere).

    ``ru_maxrss`` survives ``fork`` + ``exec`` on Linux, so a child started by a big parent
    would report the parent's peak; ``VmHWM`` starts afresh with the new program.
    """
    status = Path("/proc/self/status")
    if status.exists():
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def child(side: str, root: Path, batch_size: int) -> dict[str, float]:
    """Runs in a fresh process: build the loaders, iterate every split once, report peak RSS."""
    torch.set_num_threads(1)
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    loaders = BUILDERS[side](root, batch_size)
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    samples = sum(loader_epoch(loader, side) for loader in loaders.values())
    return {
        "baseline_mb": baseline,
        "peak_rss_mb": _peak_rss_mb(),
        "setup_s": setup_s,
        "samples": samples,
        "samples_per_s": samples / (time.perf_counter() - start),
    }


def run_child(side: str, root: Path, batch_size: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmarks.bench_zoo_loading", "--child", side, str(root)]
    cmd += ["--batch-size", str(batch_size)]
    out = subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _timed_epoch(loader: DataLoader, side: str) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one epoch."""
    wall, cpu = time.perf_counter(), time.process_time()
    loader_epoch(loader, side)
    return time.perf_counter() - wall, time.process_time() - cpu


def throughput(root: Path, batch_size: int, rounds: int) -> dict[str, dict[str, float]]:
    """Setup seconds and train-epoch samples/s of each side, over interleaved rounds.

    Rounds alternate which side goes first (ref, ours, ours, ref, ...). samples/s is reported
    per wall-clock second and per CPU second of the process: on a shared machine the CPU
    clock is the less noisy of the two.
    """
    with torch_threads(1):
        loaders, results = {}, {}
        for side, build in BUILDERS.items():
            start = time.perf_counter()
            loaders[side] = build(root, batch_size)["train"]
            results[side] = {
                "setup_s": time.perf_counter() - start,
                "samples": loader_epoch(loaders[side], side),
            }  # + warm-up
        times: dict[str, list[tuple[float, float]]] = {side: [] for side in BUILDERS}
        for r in range(rounds):
            for side in list(BUILDERS) if r % 2 == 0 else reversed(BUILDERS):
                times[side].append(_timed_epoch(loaders[side], side))
        for side, pairs in times.items():
            wall, cpu = zip(*pairs)
            results[side]["samples_per_s"] = results[side]["samples"] / statistics.median(wall)
            results[side]["samples_per_cpu_s"] = results[side]["samples"] / statistics.median(cpu)
        return results


def report(args: argparse.Namespace, speed: dict, memory: list[tuple[str, str, int, dict]]) -> str:
    ref = speed["ref"]
    lines = [
        f"Train split of a {args.networks * 9:,}-row zoo, batch size {args.batch_size}, 1 process, 1 thread, "
        f"median of {args.rounds} interleaved rounds of one epoch ({ref['samples']:,} networks); "
        f"torch {torch.__version__}.",
        "",
        "| side | setup s | samples/s (wall) | samples/s (CPU) | ratio to ref (wall) | ratio to ref (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for side, r in speed.items():
        wall, cpu = r["samples_per_s"] / ref["samples_per_s"], r["samples_per_cpu_s"] / ref["samples_per_cpu_s"]
        lines.append(
            f"| {NAMES[side]} | {r['setup_s']:.2f} | {r['samples_per_s']:,.0f} | {r['samples_per_cpu_s']:,.0f} | "
            f"{wall:.1f}x | {cpu:.1f}x |"
        )
    lines += [
        "",
        "Peak RSS of a fresh process that builds the loaders and iterates train, val and test once:",
        "",
        "| side | zoo rows | run | peak RSS MB | after imports MB | setup s | samples/s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for side, run, rows, r in memory:
        lines.append(
            f"| {NAMES[side]} | {rows:,} | {run} | {r['peak_rss_mb']:,.0f} | {r['baseline_mb']:,.0f} | "
            f"{r['setup_s']:.1f} | {r['samples_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", type=int, default=3000, help="runs in the throughput zoo (x 9 rows)")
    parser.add_argument("--big-networks", type=int, default=30000, help="runs in the memory zoo (x 9 rows)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the temporary zoos (local disk)")
    parser.add_argument("--reference-on-big", action="store_true", help="also measure the reference on the big zoo")
    parser.add_argument("--quick", action="store_true", help="small zoos and 2 rounds (a smoke test)")
    parser.add_argument("--out", type=Path, default=_report.OUT_DIR, help="reports folder (default benchmarks/out)")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.batch_size)))
        return ""
    if args.quick:
        args.networks, args.big_networks, args.rounds = 200, 600, 2

    tmp = Path(tempfile.mkdtemp(prefix="zoo_loading_", dir=args.dir))
    try:
        small, big = tmp / "small", tmp / "big"
        generate_synthetic(small, args.networks)
        speed = throughput(small, args.batch_size, args.rounds)
        memory = [(side, "", args.networks * 9, run_child(side, small, args.batch_size)) for side in BUILDERS]
        start = time.perf_counter()
        generate_synthetic(big, args.big_networks)
        seconds = time.perf_counter() - start
        print(f"generated the {args.big_networks * 9:,}-row zoo in {seconds:.0f} s", file=sys.stderr)
        memory.append(("ours", "first (scan)", args.big_networks * 9, run_child("ours", big, args.batch_size)))
        memory.append(("ours", "cached", args.big_networks * 9, run_child("ours", big, args.batch_size)))
        memory.append(("batched", "cached", args.big_networks * 9, run_child("batched", big, args.batch_size)))
        if args.reference_on_big:
            memory.append(("ref", "", args.big_networks * 9, run_child("ref", big, args.batch_size)))
    finally:
        shutil.rmtree(tmp)
    text = report(args, speed, memory)
    print(text)
    _report.write_markdown(args.out, "zoo_loading", text)
    return text


if __name__ == "__main__":
    main()
