"""Checkpoint zoos: checked reads, the array cache and atomic writes (the formats are tested in tests/datamodules)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch import nn

import nfn_lab.data.checkpoint_zoo as checkpoint_zoo
from nfn_lab.data.cache import atomic_write, zoo_cache_path
from nfn_lab.data.checkpoint_zoo import (
    ArrayCache,
    CheckpointLayout,
    CheckpointZooDataset,
    load_checkpoint,
)
from nfn_lab.weightspace import NetworkSpec

LAYOUT = CheckpointLayout((("0.weight", "0.bias"), ("2.weight", "2.bias")), NetworkSpec.from_shapes([(4, 3), (-1, 4)]))


@pytest.fixture
def files(tmp_path) -> list[str]:
    torch.manual_seed(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"net{i}.pt"
        torch.save(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).state_dict(), path)
        paths.append(str(path))
    return paths


def test_resolve_sets_free_sizes_from_a_checkpoint(files):
    assert LAYOUT.resolve(files[0]).network_spec == NetworkSpec.from_shapes([(4, 3), (2, 4)])
    with pytest.raises(ValueError, match="2 layers of keys but a network_spec of 1 layers"):
        CheckpointLayout(LAYOUT.keys, NetworkSpec.from_shapes([(4, 3)]))


def test_a_file_that_is_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list.pt: holds a list, not a state dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_array_cache_rows_and_pickling(files, tmp_path):
    layout = LAYOUT.resolve(files[0])
    cache = ArrayCache.build(tmp_path / "cache.npy", files, layout, progress=False)
    flat = cache.read_rows(np.array([3, 1]))
    weights, biases = cache.unflatten(flat)
    for k, row in enumerate([3, 1]):
        state = torch.load(files[row])
        assert torch.equal(weights[0][k], state["0.weight"]) and torch.equal(biases[1][k], state["2.bias"])
    copy = pickle.loads(pickle.dumps(cache))
    assert len(pickle.dumps(cache)) < 1000  # the memory map is reopened, not copied
    assert torch.equal(copy.read_rows(np.array([3, 1])), flat)
    with pytest.raises(ValueError, match=r"array cache has shape .* delete the file"):
        ArrayCache(tmp_path / "cache.npy", layout.network_spec, 6).read_rows(np.array([0]))


def test_dataset_rows_pick_files_and_targets_align(files):
    ds = CheckpointZooDataset(files, np.array([4, 0]), {"y": torch.tensor([1.0, 2.0])}, LAYOUT.resolve(files[0]))
    assert ds.path(0) == files[4] and ds[1][1] == {"y": torch.tensor(2.0)}
    with pytest.raises(ValueError, match="target 'y' has 3 values for 2 networks"):
        CheckpointZooDataset(files, np.array([4, 0]), {"y": torch.zeros(3)}, LAYOUT)


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    def fail(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "out.npy", fail)
    assert list(tmp_path.iterdir()) == []
    atomic_write(tmp_path / "out.npy", lambda tmp: tmp.write_text("done"))
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"] and (tmp_path / "out.npy").read_text() == "done"


def test_cache_goes_to_the_user_cache_when_the_zoo_is_read_only(tmp_path, monkeypatch):
    assert zoo_cache_path(tmp_path, "x.npy") == tmp_path / ".nfn_lab_cache" / "x.npy"
    monkeypatch.setenv("NFN_LAB_CACHE", str(tmp_path / "user"))
    monkeypatch.setattr(checkpoint_zoo.os, "access", lambda path, mode: False)
    assert zoo_cache_path(tmp_path, "x.npy") == tmp_path / "user" / "x.npy"
