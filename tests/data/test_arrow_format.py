"""nfn-lab's Arrow/Parquet zoo format: exact round trips, atomic writes, clear errors."""

import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

from nfn_lab.data import arrow_format
from nfn_lab.data.arrow_format import (
    ZooInfo,
    ZooWriter,
    batch_to_tensors,
    open_zoo,
    read_zoo_info,
    to_parquet,
    zoo_layout,
)
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures
from tests.data.arrow_zoo.generate import (
    METADATA,
    TARGETS,
    GeneratedArrowZoo,
    generate,
    make_split,
    write_parquet_by_hand,
)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> GeneratedArrowZoo:
    return generate(tmp_path_factory.mktemp("arrow") / "zoo")


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


def test_zoo_json_describes_the_zoo(zoo) -> None:
    info = read_zoo_info(zoo.root)
    assert info.network_spec == zoo.network_spec
    assert info.target_names == TARGETS and info.metadata_columns == METADATA
    assert info.splits == {"train": 12, "val": 4, "test": 6}
    provenance = info.provenance
    assert provenance["builder"] == "tests.data.arrow_zoo.generate" and provenance["seed"] == 0
    assert {"created", "command", "library_versions"} <= set(provenance)
    assert provenance["library_versions"]["datasets"] == datasets.__version__


def test_array_columns_are_fixed_size_float32_lists(zoo) -> None:
    table = open_zoo(zoo.root, "train")
    for i, (w, b) in enumerate(zip(zoo.network_spec.weight_spec, zoo.network_spec.bias_spec)):
        for name, shape in ((f"w{i}", w.shape), (f"b{i}", b.shape)):
            assert table.features[name] == datasets.List(datasets.Value("float32"), length=int(np.prod(shape)))
            assert pa.types.is_fixed_size_list(table.data.schema.field(name).type)
    assert table.features["test_accuracy"] == datasets.Value("float32")
    assert table.features["step"] == datasets.Value("int64")


def test_dataset_card_front_matter_and_text(zoo, tmp_path) -> None:
    card = (zoo.root / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert "model-zoo" in meta["tags"] and meta["size_categories"] == ["n<1K"]
    assert "configs" not in meta  # the Arrow layout has no Parquet data files to list
    assert "`w2`, `b2`" in body and "`test_loss`" in body and "`network_id`" in body
    out = to_parquet(zoo.root, tmp_path / "hub")
    meta = yaml.safe_load((out / "README.md").read_text().split("---\n", 2)[1])
    files = {c["split"]: c["path"] for c in meta["configs"][0]["data_files"]}
    assert files == {s: f"data/{s}-*.parquet" for s in ("train", "val", "test")}


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


def test_parquet_folder_written_by_another_tool(zoo, tmp_path) -> None:
    root = write_parquet_by_hand(tmp_path / "by_hand", zoo)
    assert_same_as_written(root, zoo, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("layout", ["arrow", "parquet"])
def test_streaming_gives_the_same_rows(zoo, tmp_path, layout) -> None:
    root = zoo.root if layout == "arrow" else to_parquet(zoo.root, tmp_path / "p")
    info = read_zoo_info(root)
    rows = list(open_zoo(root, "val", streaming=True).with_format("numpy"))
    batch = {name: np.stack([row[name] for row in rows]) for name in info.array_columns + list(TARGETS)}
    weights, _, targets = batch_to_tensors(batch, info, TARGETS)
    assert torch.equal(weights[1], zoo.features["val"].weights[1][:, 0])
    assert torch.equal(targets["test_loss"], zoo.targets["val"]["test_loss"])


# --- atomic writes and overwrite ----------------------------------------------------------------------------
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

    monkeypatch.setattr(arrow_format, "_write_metadata", fail)
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


# --- bad input ------------------------------------------------------------------------------------------------
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
        with pytest.raises(ValueError, match="target 'label' holds integers .* got torch.float32"):
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


def test_readers_explain_what_is_missing(zoo, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no zoo at .*no such folder"):
        read_zoo_info(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no zoo.json in"):
        read_zoo_info(tmp_path / "empty")
    (tmp_path / "empty" / "zoo.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_zoo_info(tmp_path / "empty")
    newer = {**read_zoo_info(zoo.root).to_dict(), "format_version": 99}
    (tmp_path / "empty" / "zoo.json").write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        read_zoo_info(tmp_path / "empty")
    small = generate(tmp_path / "small", sizes={"train": 2, "val": 2})
    with pytest.raises(ValueError, match=r"no 'test' split; it has \['train', 'val'\]"):
        open_zoo(small.root, "test")


def test_batch_to_tensors_checks_row_lengths(zoo) -> None:
    info = read_zoo_info(zoo.root)
    wrong = ZooInfo(NetworkSpec.from_shapes([(4, 3, 2, 2), (5, 4, 2, 3), (4, 5)]), TARGETS)
    batch = open_zoo(zoo.root, "val").with_format("numpy")[[0, 1]]
    assert batch_to_tensors(batch, info, TARGETS)[0][0].shape == (2, 4, 3, 2, 3)
    with pytest.raises(ValueError, match=r"column w0 holds rows of shape \(72,\).*\(4, 3, 2, 2\)"):
        batch_to_tensors(batch, wrong, TARGETS)
