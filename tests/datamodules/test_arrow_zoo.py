"""nfn-lab's Arrow zoo format: the writer (exact round trips, atomic writes, clear errors) and the
readers (ArrowZooDataset / ArrowZooStream / ArrowZooDataModule) on generated zoos."""

from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch

import datamodules.arrow_zoo as arrow_zoo
from datamodules.arrow_zoo import (
    ArrowZooDataModule,
    ArrowZooDataset,
    ArrowZooStream,
    ZooWriter,
    batch_to_tensors,
    to_parquet,
)
from nfn_lab.data.arrow_container import open_zoo, zoo_layout
from nfn_lab.data.card import ZooInfo, read_zoo_info
from nfn_lab.data.zoo import ZooDataModule
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures
from tests.data.arrow_zoo.generate import METADATA, TARGETS, GeneratedArrowZoo, generate, make_split


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
    ((feats, _),) = list(datamodule.val_dataloader())
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


# --- the writer: round trips --------------------------------------------------------------------------------
def _read_all(path, split, info, cache_dir=None):
    table = open_zoo(path, split, cache_dir=cache_dir)
    batch = table.with_format("numpy")[list(range(len(table)))]
    return batch_to_tensors(batch, info, info.target_names), table


def assert_same_as_written(path, zoo: GeneratedArrowZoo, cache_dir=None) -> None:
    info = read_zoo_info(path)
    for split, feats in zoo.features.items():
        (weights, biases, targets), table = _read_all(path, split, info, cache_dir)
        for got, want in zip([*weights, *biases], [*feats.weights, *feats.biases]):
            assert torch.equal(got, want[:, 0])  # (N, ...) without the channel axis
        for name, want in zoo.targets[split].items():
            assert torch.equal(targets[name], want)
        for name, want in zoo.metadata[split].items():
            assert table[name] == want


def test_round_trip_is_exact(zoo) -> None:
    assert zoo_layout(zoo.root) == "arrow"
    assert_same_as_written(zoo.root, zoo)


def test_array_columns_are_fixed_size_float32_lists(zoo) -> None:
    table = open_zoo(zoo.root, "train")
    for i, (w, b) in enumerate(zip(zoo.network_spec.weight_spec, zoo.network_spec.bias_spec)):
        for name, shape in ((f"w{i}", w.shape), (f"b{i}", b.shape)):
            assert table.features[name] == datasets.List(datasets.Value("float32"), length=int(np.prod(shape)))
            assert pa.types.is_fixed_size_list(table.data.schema.field(name).type)
    assert table.features["test_accuracy"] == datasets.Value("float32")
    assert table.features["step"] == datasets.Value("int64")


def test_parquet_layouts_read_back_exactly(zoo, tmp_path) -> None:
    written = generate(tmp_path / "written", write_parquet=True)
    assert zoo_layout(written.root) == "parquet"
    assert sorted(p.name for p in (written.root / "data").iterdir()) == [
        f"{s}-00000-of-00001.parquet" for s in ("test", "train", "val")
    ]
    assert_same_as_written(written.root, written, cache_dir=tmp_path / "cache")
    converted = to_parquet(zoo.root, tmp_path / "converted")
    assert read_zoo_info(converted) == read_zoo_info(zoo.root)
    assert_same_as_written(converted, zoo, cache_dir=tmp_path / "cache")


# --- the writer: atomic writes and overwrite -----------------------------------------------------------------
def _writer(root, **kwargs) -> tuple[ZooWriter, tuple]:
    feats, targets, metadata = make_split("train", 4, seed=7)
    spec = NetworkSpec.from_shapes([tuple(w.shape[2:]) for w in feats.weights])
    writer = ZooWriter(root, spec, TARGETS, {"builder": "test"}, METADATA, chunk_size=2, **kwargs)
    return writer, (feats, targets, metadata)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_exception_mid_write_leaves_nothing(tmp_path) -> None:
    root = tmp_path / "zoo"
    with pytest.raises(RuntimeError, match="simulated"):
        writer, batch = _writer(root)
        with writer:
            writer.add("train", *batch)
            writer.add("val", *batch)
            raise RuntimeError("simulated crash")
    assert list(tmp_path.iterdir()) == []


def test_unfinished_write_never_looks_like_a_zoo(tmp_path) -> None:
    root = tmp_path / "zoo"
    writer, batch = _writer(root)
    for _ in range(3):  # past chunk_size: data is on disk
        writer.add("train", *batch)
    assert not root.exists()
    (partial,) = tmp_path.iterdir()  # as left by a killed process
    assert partial.name.startswith(".zoo.partial-")
    assert not list(partial.rglob("zoo.json"))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_failure_while_finishing_keeps_the_old_zoo(zoo, tmp_path, monkeypatch) -> None:
    root = generate(tmp_path / "zoo", sizes={"train": 3}).root
    before = _snapshot(root)
    writer, batch = _writer(root, overwrite=True)
    writer.add("test", *batch)

    def fail(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(arrow_zoo, "write_description", fail)
    with pytest.raises(OSError, match="simulated"):
        writer.close()
    assert _snapshot(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo"]


def test_refuses_a_non_empty_destination(tmp_path) -> None:
    root = tmp_path / "zoo"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        _writer(root)
    with pytest.raises(FileExistsError, match="not an nfn-lab zoo"):  # overwrite never deletes other data
        _writer(root, overwrite=True)
    assert (root / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo"]


def test_overwrite_replaces_a_zoo_only_when_complete(tmp_path) -> None:
    root = generate(tmp_path / "zoo", sizes={"train": 3, "val": 2}).root
    writer, batch = _writer(root, overwrite=True)
    writer.add("test", *batch)
    assert read_zoo_info(root).splits == {"train": 3, "val": 2}  # untouched until close
    writer.close()
    assert read_zoo_info(root).splits == {"test": 4}
    assert not (root / "train").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo"]


def test_empty_destination_folder_is_used(tmp_path) -> None:
    root = tmp_path / "zoo"
    root.mkdir()
    writer, batch = _writer(root)
    writer.add("val", *batch)
    writer.close()
    assert read_zoo_info(root).splits == {"val": 4}


# --- the writer: bad input ----------------------------------------------------------------------------------
def test_add_rejects_bad_batches(tmp_path) -> None:
    writer, (feats, targets, metadata) = _writer(tmp_path / "zoo")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        writer.add("dev", feats, targets, metadata)
    with pytest.raises(ValueError, match="layer 1 weight has shape"):
        narrow = WeightSpaceFeatures([*feats.weights[:1], feats.weights[1][..., :2], *feats.weights[2:]], feats.biases)
        writer.add("train", narrow, targets, metadata)
    bad = feats.clone()
    bad.weights[2][3, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"split 'train', network 3 \(row 3 of this batch\): array w2 has NaN/inf"):
        writer.add("train", bad, targets, metadata)
    with pytest.raises(ValueError, match=r"missing \['test_loss'\]"):
        writer.add("train", feats, {"test_accuracy": targets["test_accuracy"]}, metadata)
    with pytest.raises(ValueError, match=r"target 'test_loss' has shape \(3,\); expected \(4,\)"):
        writer.add("train", feats, {**targets, "test_loss": targets["test_loss"][:3]}, metadata)
    with pytest.raises(ValueError, match="metadata 'step' has 1 values; expected 4"):
        writer.add("train", feats, targets, {**metadata, "step": [0]})
    writer.add("train", feats, targets, metadata)
    with pytest.raises(ValueError, match="metadata 'step' in split 'val': values are not int64"):
        writer.add("val", feats, targets, {**metadata, "step": ["a", "b", "c", "d"]})
    writer.abort()


def test_integer_targets_stay_class_labels(tmp_path) -> None:
    feats, targets, _ = make_split("train", 4, seed=3)
    spec = NetworkSpec.from_shapes([tuple(w.shape[2:]) for w in feats.weights])
    labels = torch.tensor([3, 0, 9, 3])
    with ZooWriter(tmp_path / "zoo", spec, ["label", "test_loss"]) as writer:
        writer.add("train", feats, {"label": labels, "test_loss": targets["test_loss"].double()})
        with pytest.raises(ValueError, match=r"target 'label' holds integers .* got torch.float32"):
            writer.add("val", feats, {"label": labels.float(), "test_loss": targets["test_loss"]})
    info = read_zoo_info(tmp_path / "zoo")
    (_, _, got), table = _read_all(tmp_path / "zoo", "train", info)
    assert table.features["label"] == datasets.Value("int64") and got["label"].dtype == torch.int64
    assert torch.equal(got["label"], labels)
    assert got["test_loss"].dtype == torch.float32 and torch.equal(got["test_loss"], targets["test_loss"])


def test_writer_rejects_bad_setup(tmp_path) -> None:
    free = NetworkSpec.from_shapes([(-1, 3), (2, -1)])
    with pytest.raises(ValueError, match="must give every size"):
        ZooWriter(tmp_path / "a", free, ["y"])
    spec = NetworkSpec.from_shapes([(4, 3), (2, 4)])
    with pytest.raises(ValueError, match=r"\['w0'\] are used twice"):
        ZooWriter(tmp_path / "b", spec, ["w0"])
    writer = ZooWriter(tmp_path / "c", spec, ["y"])
    with pytest.raises(ValueError, match="no networks were added"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_batch_to_tensors_checks_row_lengths(zoo) -> None:
    info = read_zoo_info(zoo.root)
    wrong = ZooInfo(NetworkSpec.from_shapes([(4, 3, 2, 2), (5, 4, 2, 3), (4, 5)]), TARGETS)
    batch = open_zoo(zoo.root, "val").with_format("numpy")[[0, 1]]
    assert batch_to_tensors(batch, info, TARGETS)[0][0].shape == (2, 4, 3, 2, 3)
    with pytest.raises(ValueError, match=r"column w0 holds rows of shape \(72,\).*\(4, 3, 2, 2\)"):
        batch_to_tensors(batch, wrong, TARGETS)
