"""The Arrow container: where a zoo is, its layouts, and reading its splits (independently of nfn-lab's writer)."""

import numpy as np
import pytest
import torch

from datamodules.arrow_zoo import batch_to_tensors, to_parquet
from nfn_lab.data.arrow_container import locate_zoo, open_zoo, zoo_layout
from nfn_lab.data.card import read_zoo_info
from tests.data.arrow_zoo.generate import TARGETS, GeneratedArrowZoo, generate, write_parquet_by_hand


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> GeneratedArrowZoo:
    return generate(tmp_path_factory.mktemp("arrow") / "zoo")


def test_parquet_folder_written_by_another_tool(zoo, tmp_path) -> None:
    root = write_parquet_by_hand(tmp_path / "by_hand", zoo)
    assert zoo_layout(root) == "parquet"
    info = read_zoo_info(root)
    for split, feats in zoo.features.items():
        table = open_zoo(root, split, cache_dir=tmp_path / "cache")
        weights, biases, targets = batch_to_tensors(table.with_format("numpy")[:], info, TARGETS)
        assert all(
            torch.equal(got, want[:, 0]) for got, want in zip([*weights, *biases], [*feats.weights, *feats.biases])
        )
        assert all(torch.equal(targets[name], want) for name, want in zoo.targets[split].items())
        assert all(table[name] == want for name, want in zoo.metadata[split].items())


@pytest.mark.parametrize("layout", ["arrow", "parquet"])
def test_streaming_gives_the_same_rows(zoo, tmp_path, layout) -> None:
    root = zoo.root if layout == "arrow" else to_parquet(zoo.root, tmp_path / "p")
    info = read_zoo_info(root)
    rows = list(open_zoo(root, "val", streaming=True).with_format("numpy"))
    batch = {name: np.stack([row[name] for row in rows]) for name in info.array_columns + list(TARGETS)}
    weights, _, targets = batch_to_tensors(batch, info, TARGETS)
    assert torch.equal(weights[1], zoo.features["val"].weights[1][:, 0])
    assert torch.equal(targets["test_loss"], zoo.targets["val"]["test_loss"])


def test_where_a_zoo_is(zoo, tmp_path) -> None:
    assert locate_zoo(zoo.root) == (zoo.root, None)
    assert locate_zoo("owner/name") == (None, "owner/name")
    assert locate_zoo("hf://datasets/owner/name") == (None, "owner/name")
    with pytest.raises(FileNotFoundError, match=r"no zoo at .*no such folder"):
        locate_zoo(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match=r"is a file; a zoo is a folder holding zoo.json"):
        locate_zoo(tmp_path / "file")
    with pytest.raises(FileNotFoundError, match="holds no zoo data"):
        zoo_layout(tmp_path)


def test_open_zoo_names_the_missing_split(tmp_path) -> None:
    small = generate(tmp_path / "small", sizes={"train": 2, "val": 2})
    with pytest.raises(ValueError, match=r"no 'test' split; it has \['train', 'val'\]"):
        open_zoo(small.root, "test")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        open_zoo(small.root, "dev")
