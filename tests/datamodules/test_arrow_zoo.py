"""ArrowZooDataset / ArrowZooStream / ArrowZooDataModule on generated zoos."""

import pytest
import torch

import datamodules.arrow_zoo as arrow_zoo
from datamodules.arrow_zoo import ArrowZooDataModule, ArrowZooDataset, ArrowZooStream
from nfn_lab.data.arrow_format import open_zoo, read_zoo_info, to_parquet
from nfn_lab.data.zoo import ZooDataModule
from tests.data.arrow_zoo.generate import TARGETS, GeneratedArrowZoo, generate


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> GeneratedArrowZoo:
    return generate(tmp_path_factory.mktemp("arrow") / "zoo")


def _double(feats):
    return feats * 2.0


def assert_items_equal(a, b) -> None:
    (fa, ta), (fb, tb) = a, b
    assert all(torch.equal(x, y) for x, y in zip([*fa.weights, *fa.biases], [*fb.weights, *fb.biases]))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_items_are_the_written_networks(zoo) -> None:
    dataset = ArrowZooDataset(open_zoo(zoo.root, "test"), read_zoo_info(zoo.root))
    assert len(dataset) == 6 and dataset.network_spec == zoo.network_spec
    feats, targets = dataset[4]
    want = zoo.features["test"]
    assert all(torch.equal(w, v[4]) for w, v in zip(feats.weights, want.weights))  # (1, n_out, n_in, *filter)
    assert all(torch.equal(b, v[4]) for b, v in zip(feats.biases, want.biases))
    assert targets == {name: zoo.targets["test"][name][4] for name in TARGETS}
    assert targets["test_loss"].shape == ()
    with pytest.raises(IndexError, match="out of range"):
        dataset[6]


def test_batched_reads_equal_per_item_reads(zoo) -> None:
    dataset = ArrowZooDataset(open_zoo(zoo.root, "train"), read_zoo_info(zoo.root), "test_accuracy", _double)
    indices = [7, 0, 7, 11, 3]
    batch = dataset.__getitems__(indices)
    assert len(batch) == len(indices)
    for index, item in zip(indices, batch):
        assert_items_equal(item, dataset[index])
    assert list(batch[0][1]) == ["test_accuracy"]
    assert torch.equal(batch[0][0].weights[0], 2 * zoo.features["train"].weights[0][7])  # the transform ran
    with pytest.raises(IndexError, match="network index 12 out of range"):
        dataset.__getitems__([1, 12])


def test_metadata_of_rows(zoo) -> None:
    dataset = ArrowZooDataset(open_zoo(zoo.root, "val"), read_zoo_info(zoo.root))
    assert dataset.read_metadata([3, 1]) == {k: [v[3], v[1]] for k, v in zoo.metadata["val"].items()}


def test_unknown_target_is_named(zoo) -> None:
    message = r"unknown targets \['accuracy'\]; this zoo has \['test_accuracy', 'test_loss'\]"
    with pytest.raises(ValueError, match=message):
        ArrowZooDataset(open_zoo(zoo.root, "val"), read_zoo_info(zoo.root), "accuracy")


def test_network_spec_without_reading_weights(zoo, monkeypatch) -> None:
    def no_data(*args, **kwargs):
        raise AssertionError("weights were read")

    monkeypatch.setattr(arrow_zoo, "open_zoo", no_data)
    datamodule = ArrowZooDataModule(zoo.root)
    assert datamodule.network_spec == zoo.network_spec
    assert datamodule.splits == ("train", "val", "test")


def test_loaders_cover_each_split(zoo) -> None:
    datamodule = ArrowZooDataModule(zoo.root, target="test_loss", batch_size=5, eval_batch_size=4)
    datamodule.setup("fit")
    seen = torch.cat([targets["test_loss"] for _, targets in datamodule.train_dataloader()])
    assert torch.equal(seen.sort().values, zoo.targets["train"]["test_loss"].sort().values)
    ((feats, targets),) = list(datamodule.val_dataloader())
    assert feats.weights[2].shape == (4, 1, 4, 5)
    assert torch.equal(feats.weights[2], zoo.features["val"].weights[2])
    datamodule.setup("test")
    assert sum(len(t["test_loss"]) for _, t in datamodule.test_dataloader()) == 6


def test_zoo_with_fewer_splits(tmp_path) -> None:
    small = generate(tmp_path / "zoo", sizes={"train": 3, "val": 2})
    datamodule = ArrowZooDataModule(small.root, batch_size=2)
    assert datamodule.splits == ("train", "val")
    datamodule.setup()
    assert set(datamodule.datasets) == {"train", "val"}
    with pytest.raises(ValueError, match="unknown split 'test'"):
        datamodule.split_dataset("test")


def test_normalized_loader(zoo) -> None:
    datamodule = ArrowZooDataModule(zoo.root, batch_size=12, normalize=True)
    datamodule.setup("fit")
    feats, _ = next(iter(datamodule.train_dataloader()))
    mean = feats.weights[1].mean(dim=(0, 2, 3, 4, 5))
    std = feats.weights[1].std(dim=(0, 2, 3, 4, 5), unbiased=False)
    assert torch.allclose(mean, torch.zeros(1), atol=1e-5) and torch.allclose(std, torch.ones(1), atol=1e-4)


def test_parquet_zoo_through_the_datamodule(zoo, tmp_path) -> None:
    root = to_parquet(zoo.root, tmp_path / "hub")
    datamodule = ArrowZooDataModule(root, batch_size=6, cache_dir=tmp_path / "cache")
    datamodule.setup("test")
    ((feats, targets),) = list(datamodule.test_dataloader())
    assert torch.equal(feats.biases[0], zoo.features["test"].biases[0])
    assert torch.equal(targets["test_accuracy"], zoo.targets["test"]["test_accuracy"])


# --- streaming ---------------------------------------------------------------------------------------------
def test_streamed_evaluation_is_in_order(zoo) -> None:
    datamodule = ArrowZooDataModule(zoo.root, batch_size=3, streaming=True)
    datamodule.setup("fit")
    assert isinstance(datamodule.split_dataset("val"), ArrowZooStream)
    assert "streaming=True, splits={'train': 12, 'val': 4, 'test': 6}" in repr(datamodule)
    batches = list(datamodule.val_dataloader())
    assert [len(t["test_loss"]) for _, t in batches] == [3, 1]
    assert torch.equal(torch.cat([f.weights[0] for f, _ in batches]), zoo.features["val"].weights[0])


def test_streamed_training_reshuffles_every_epoch(zoo) -> None:
    datamodule = ArrowZooDataModule(zoo.root, target="test_accuracy", batch_size=5, streaming=True, shuffle_buffer=8)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    epochs = [torch.cat([t["test_accuracy"] for _, t in loader]) for _ in range(2)]
    written = zoo.targets["train"]["test_accuracy"]
    for seen in epochs:
        assert torch.equal(seen.sort().values, written.sort().values)  # every network once
    assert not torch.equal(epochs[0], written) and not torch.equal(epochs[0], epochs[1])


def test_stream_ranks_are_disjoint_and_complete(zoo) -> None:
    stream = ArrowZooStream(open_zoo(zoo.root, "train", streaming=True), read_zoo_info(zoo.root), "test_loss")
    parts = [[t["test_loss"] for _, t in stream.for_rank(rank, 3)] for rank in range(3)]
    seen = torch.stack([x for part in parts for x in part])
    assert torch.equal(seen.sort().values, zoo.targets["train"]["test_loss"].sort().values)


def test_stream_worker_sharding(zoo) -> None:
    datamodule = ArrowZooDataModule(zoo.root, batch_size=2, streaming=True, num_workers=2)
    datamodule.setup("test")
    seen = torch.cat([t["test_loss"] for _, t in datamodule.test_dataloader()])
    assert torch.equal(seen.sort().values, zoo.targets["test"]["test_loss"].sort().values)


# --- format discovery ------------------------------------------------------------------------------------
def test_detect_and_describe(zoo, tmp_path) -> None:
    assert ArrowZooDataModule.detect(zoo.root)
    assert not ArrowZooDataModule.detect(tmp_path)
    assert not ZooDataModule.detect(zoo.root)  # the base opts out
    described = ArrowZooDataModule.describe(zoo.root)
    assert described["splits"] == {"train": 12, "val": 4, "test": 6}
    assert described["num_checkpoints"] == 22 and described["num_networks"] == 6 + 2 + 3
    assert described["network_spec"] == zoo.network_spec and described["targets"] == list(TARGETS)


def test_where_keeps_matching_rows(zoo) -> None:
    dm = ArrowZooDataModule(zoo.root, where={"activation": "tanh"}, batch_size=4)
    dataset = dm.split_dataset("train")
    expected = [i for i, a in enumerate(zoo.metadata["train"]["activation"]) if a == "tanh"]
    assert 0 < len(dataset) == len(expected) < len(zoo.metadata["train"]["activation"])
    assert dataset.read_metadata(range(len(dataset)))["activation"] == ["tanh"] * len(expected)
    first = zoo.features["train"].weights[0][expected[0]]
    assert torch.equal(dataset[0][0].weights[0], first)
    with pytest.raises(ValueError, match="not metadata columns"):
        ArrowZooDataModule(zoo.root, where={"nope": 1}).split_dataset("train")
    with pytest.raises(ValueError, match="streaming"):
        ArrowZooDataModule(zoo.root, where={"activation": "tanh"}, streaming=True)
