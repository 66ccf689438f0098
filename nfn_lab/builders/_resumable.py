"""Resumable builds: finished chunks of work saved atomically in a folder beside the output.

A build is split into chunks of networks whose results depend only on the build's
configuration and the chunk's own key (every random draw comes from a generator seeded with
:func:`derive_seed`), so a chunk computed again after an interruption is identical. Each
finished chunk is written to ``<output>.work/chunk-<index>.pt`` through a temporary file
and ``os.replace``: a chunk file either holds a whole chunk or does not exist. The work
folder also records the configuration (``build.json``); a rerun with another configuration
is refused instead of mixing chunks of two builds.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["Advance", "ChunkStore", "FinishedChunks", "derive_seed", "run_chunks"]

Advance = Callable[[float], None]
ComputeChunk = Callable[[int, Advance], dict[str, Tensor]]


def derive_seed(*keys: int) -> int:
    """A 64-bit seed determined by ``keys`` (e.g. build seed, stream, network id), well mixed."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0])


def _atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder, then renames it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _canonical(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, sort_keys=True))  # tuples -> lists, as stored in build.json


class ChunkStore:
    """The work folder ``<out>.work`` of a build: its configuration and finished chunks.

    Args:
        out: the build's output folder.
        config: everything that determines the chunks' contents (JSON-serializable).
        overwrite: discard a work folder left by a build of another configuration
            instead of refusing it.

    Raises:
        ValueError: if the work folder holds chunks of another configuration and not
            ``overwrite``; the message lists the differing keys.
    """

    def __init__(self, out: Path, config: dict[str, Any], overwrite: bool = False) -> None:
        self.dir = out.parent / f"{out.name}.work"
        self.config = _canonical(config)
        config_path = self.dir / "build.json"
        if config_path.exists():
            stored = json.loads(config_path.read_text())
            if stored != self.config:
                if not overwrite:
                    differing = sorted(k for k in {*stored, *self.config} if stored.get(k) != self.config.get(k))
                    raise ValueError(
                        f"{self.dir} holds chunks of an interrupted build with another configuration "
                        f"(differing: {', '.join(differing)}); rerun with that configuration to resume it, delete "
                        "the folder, or pass overwrite=True (--overwrite) to discard it."
                    )
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(config_path, json.dumps(self.config, indent=2, sort_keys=True))

    def __repr__(self) -> str:
        return f"ChunkStore({str(self.dir)!r})"

    def path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:05d}.pt"

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def save(self, index: int, arrays: dict[str, Tensor]) -> None:
        """Saves a finished chunk atomically (temporary file, then ``os.replace``)."""
        path = self.path(index)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save({k: v.detach().cpu().contiguous() for k, v in arrays.items()}, tmp)
        os.replace(tmp, path)

    def load(self, index: int) -> dict[str, Tensor]:
        """A finished chunk's arrays, memory-mapped (reading a zoo never loads every chunk at once)."""
        return torch.load(self.path(index), mmap=True, weights_only=True)

    def remove(self) -> None:
        """Deletes the work folder (after the output has been written)."""
        shutil.rmtree(self.dir, ignore_errors=True)


def run_chunks(
    store: ChunkStore,
    sizes: list[int],
    compute: ComputeChunk,
    desc: str,
    progress: bool = True,
) -> None:
    """Computes and saves every chunk not yet in ``store``, with one progress bar over networks.

    Args:
        store: where finished chunks go.
        sizes: networks per chunk, in chunk order.
        compute: ``compute(index, advance)`` returns chunk ``index``'s arrays; it calls
            ``advance(k)`` as it finishes the equivalent of ``k`` networks' work.
        desc: progress bar label.
        progress: show the bar (tqdm, on stderr).
    """
    done = [store.done(i) for i in range(len(sizes))]
    initial = sum(n for n, d in zip(sizes, done) if d)
    with tqdm(total=sum(sizes), initial=initial, desc=desc, unit="net", disable=not progress) as bar:
        for index, size in enumerate(sizes):
            if not done[index]:
                start = bar.n
                store.save(index, compute(index, _advancer(bar, size)))
                bar.update(start + size - bar.n)


def _advancer(bar: tqdm, size: int) -> Advance:
    """``advance(k)`` for one chunk of ``size`` networks: moves ``bar`` in whole networks, at most by ``size``."""
    start, work = bar.n, 0.0

    def advance(k: float) -> None:
        nonlocal work
        work += k
        bar.update(min(int(work), size) - (bar.n - start))

    return advance


class FinishedChunks:
    """The arrays of every finished chunk of a store, memory-mapped and addressed by item.

    Args:
        store: a store whose chunks are all done.
        chunks: the items (e.g. network ids) of each chunk, in the order its arrays hold them.
    """

    def __init__(self, store: ChunkStore, chunks: Sequence[Sequence[int]]) -> None:
        self.arrays = [store.load(i) for i in range(len(chunks))]
        self.where = {item: (c, pos) for c, items in enumerate(chunks) for pos, item in enumerate(items)}

    def gather(self, key: str, items: Sequence[int]) -> Tensor:
        """``arrays[key]`` of ``items``, stacked: ``(len(items), *shape)``."""
        return torch.stack([self.arrays[c][key][pos] for c, pos in (self.where[i] for i in items)])
