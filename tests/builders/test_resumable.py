"""The work folder of a resumable build: chunks saved atomically, reruns skip them, configs must match."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nfn_lab.builders._resumable import ChunkStore, FinishedChunks, derive_seed, run_chunks


def test_derive_seed_is_deterministic_and_key_sensitive() -> None:
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert len({derive_seed(0, 1, 2), derive_seed(0, 2, 1), derive_seed(1, 1, 2), derive_seed(0, 1)}) == 4
    assert 0 <= derive_seed(5) < 2**64


def test_chunks_are_saved_beside_the_output_and_read_back(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "zoo", {"seed": 0})
    assert store.dir == tmp_path / "zoo.work"
    assert not store.done(0)
    store.save(0, {"x": torch.arange(6.0).view(2, 3)})
    assert store.done(0) and not store.done(1)
    assert sorted(p.name for p in store.dir.iterdir()) == ["build.json", "chunk-00000.pt"]  # no temporary file left
    assert torch.equal(store.load(0)["x"], torch.arange(6.0).view(2, 3))
    store.remove()
    assert not store.dir.exists()


def test_a_work_folder_of_another_configuration_is_refused_or_discarded(tmp_path: Path) -> None:
    ChunkStore(tmp_path / "zoo", {"seed": 0, "steps": [0, 1]}).save(0, {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"another configuration \(differing: steps\)"):
        ChunkStore(tmp_path / "zoo", {"seed": 0, "steps": [0, 2]})
    same = ChunkStore(tmp_path / "zoo", {"seed": 0, "steps": (0, 1)})  # tuples are stored as lists: same config
    assert same.done(0)
    fresh = ChunkStore(tmp_path / "zoo", {"seed": 0, "steps": [0, 2]}, overwrite=True)
    assert not fresh.done(0)


def test_run_chunks_computes_only_missing_chunks(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "zoo", {"seed": 0})
    store.save(1, {"x": torch.tensor([10.0, 11.0])})
    computed = []

    def compute(index: int, advance) -> dict[str, torch.Tensor]:
        computed.append(index)
        advance(0.5)
        return {"x": torch.tensor([2.0 * index, 2.0 * index + 1])}

    run_chunks(store, [2, 2, 2], compute, desc="test", progress=False)
    assert computed == [0, 2]
    finished = FinishedChunks(store, [[0, 1], [2, 3], [4, 5]])
    assert finished.gather("x", [5, 0, 2]).tolist() == [5.0, 0.0, 10.0]
