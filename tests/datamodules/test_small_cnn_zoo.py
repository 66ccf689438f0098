"""The Small CNN Zoo loader, on zoos of real CNNs written in the exact public format."""

from __future__ import annotations

import ast
import os
import pickle
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from datamodules import small_cnn_zoo
from datamodules.small_cnn_zoo import (
    SmallCNNZooDataModule,
    SmallCNNZooDataset,
    SmallCNNZooWriter,
    network_spec_from_layout,
    nfn_split,
)
from nfn_lab.conversion import module_to_wsfeat, network_spec_from_module, wsfeat_to_modules
from nfn_lab.data import Normalize, RandomHiddenPermutation, RandomPositiveScale
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures, collate
from tests.data.small_cnn_zoo.generate import (
    GeneratedZoo,
    generate,
    keras_layout,
    keras_row,
    small_cnn,
    write_rows,
)

CNN_SPEC = NetworkSpec.from_shapes([(16, 1, 3, 3), (16, 16, 3, 3), (16, 16, 3, 3), (10, 16)])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> GeneratedZoo:
    return generate(tmp_path_factory.mktemp("small_cnn_zoo"), num_networks=24)


@pytest.fixture
def zoo_copy(zoo, tmp_path) -> Path:
    """A private copy of the zoo files to break."""
    return Path(shutil.copytree(zoo.root, tmp_path / "zoo", ignore=shutil.ignore_patterns(".nfn_lab_cache")))


def _finite_rows(zoo: GeneratedZoo, steps=None) -> list[int]:
    rows = [r for r in range(len(zoo.modules)) if r not in zoo.nonfinite]
    return [r for r in rows if steps is None or zoo.metrics.step[r] in steps]


def _assert_same_network(feats, module: nn.Module) -> None:
    expected = module_to_wsfeat(module)  # (1, 1, ...)
    for got, want in zip([*feats.weights, *feats.biases], [*expected.weights, *expected.biases]):
        assert torch.equal(got, want[0])


def _edit_layout(root: Path, edit) -> None:
    """Rewrites ``layout.csv`` with ``edit(frame)`` (which may change ``frame`` in place or return a new one)."""
    layout = pd.read_csv(root / "layout.csv")
    changed = edit(layout)
    (layout if changed is None else changed).to_csv(root / "layout.csv", index=False)


# --- reading the format exactly ---------------------------------------------------------------------


def test_generated_layout_is_the_public_table(zoo):
    layout = pd.read_csv(zoo.root / "layout.csv")
    assert layout.values.tolist() == [
        ["sequential/conv2d/bias:0", 0, 16, "(16,)"],
        ["sequential/conv2d/kernel:0", 16, 160, "(3, 3, 1, 16)"],
        ["sequential/conv2d_1/bias:0", 160, 176, "(16,)"],
        ["sequential/conv2d_1/kernel:0", 176, 2480, "(3, 3, 16, 16)"],
        ["sequential/conv2d_2/bias:0", 2480, 2496, "(16,)"],
        ["sequential/conv2d_2/kernel:0", 2496, 4800, "(3, 3, 16, 16)"],
        ["sequential/dense/bias:0", 4800, 4810, "(10,)"],
        ["sequential/dense/kernel:0", 4810, 4970, "(16, 10)"],
    ]
    assert np.load(zoo.root / "weights.npy", mmap_mode="r").shape == (len(zoo.modules), 4970)


def test_reads_back_every_network_exactly(zoo):
    ds = SmallCNNZooDataset(zoo.root, split=None, step=None, target=["test_accuracy", "train_loss"])
    assert ds.rows.tolist() == _finite_rows(zoo)
    assert ds.network_spec == CNN_SPEC
    feats, targets = collate(ds.__getitems__(list(range(len(ds)))))
    expected = module_to_wsfeat([zoo.modules[r] for r in ds.rows])
    for got, want in zip([*feats.weights, *feats.biases], [*expected.weights, *expected.biases]):
        assert torch.equal(got, want)
    for name in ("test_accuracy", "train_loss"):
        assert torch.equal(targets[name], torch.tensor(zoo.metrics[name][ds.rows].to_numpy(), dtype=torch.float32))
    _assert_same_network(ds[7][0], zoo.modules[ds.rows[7]])  # one item on its own


def _keras_forward(row: np.ndarray, layout: pd.DataFrame, x: np.ndarray, activation: str) -> np.ndarray:
    """The zoo's CNN in Keras conventions (NHWC, kernels (kh, kw, in, out)), straight from a file row."""
    arrays = {v.varname: row[v.start_idx : v.end_idx].reshape(ast.literal_eval(v.shape)) for v in layout.itertuples()}
    act = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0))
    for name in ("conv2d", "conv2d_1", "conv2d_2"):
        windows = sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]  # (N, H', W', C, 3, 3), valid, stride 2
        kernel = arrays[f"sequential/{name}/kernel:0"]
        x = act(np.einsum("nhwcij,ijco->nhwo", windows, kernel) + arrays[f"sequential/{name}/bias:0"])
    pooled = x.mean(axis=(1, 2))  # (N, 16)
    return pooled @ arrays["sequential/dense/kernel:0"] + arrays["sequential/dense/bias:0"]


def test_networks_compute_what_their_keras_rows_compute(zoo):
    weights = np.load(zoo.root / "weights.npy").astype(np.float64)
    layout = pd.read_csv(zoo.root / "layout.csv")
    ds = SmallCNNZooDataset(zoo.root, split=None)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 16, 16, 1))  # NHWC greyscale in [-1, 1]
    for i in range(4):
        feats, _ = ds[i]
        activation = zoo.metrics["config.activation"][ds.rows[i]]
        (module,) = wsfeat_to_modules(collate([feats]).to(torch.float64), small_cnn(activation).double())
        got = module.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
        np.testing.assert_allclose(got, _keras_forward(weights[ds.rows[i]], layout, x, activation), rtol=1e-10)


def test_network_spec_comes_from_layout_alone(zoo_copy):
    (zoo_copy / "weights.npy").unlink()
    (zoo_copy / "metrics.csv.gz").unlink()
    assert network_spec_from_layout(zoo_copy / "layout.csv") == CNN_SPEC
    assert SmallCNNZooDataModule(zoo_copy).network_spec == CNN_SPEC


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Conv1d(2, 3, 4), nn.Tanh(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(3, 2)),
        lambda: nn.Sequential(
            nn.Conv3d(1, 3, 2),
            nn.ReLU(),
            nn.Conv3d(3, 4, (1, 2, 3)),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(4, 5),
            nn.ReLU(),
            nn.Linear(5, 2),
        ),
    ],
    ids=["conv1d", "conv3d+mlp"],
)
def test_reads_any_chain_of_dense_and_conv_layers(tmp_path, make):
    modules = [make() for _ in range(4)]
    write_rows(tmp_path / "weights.npy", [np.stack([keras_row(m) for m in modules])], 4, keras_row(modules[0]).size)
    keras_layout(modules[0]).to_csv(tmp_path / "layout.csv", index=False)
    pd.DataFrame({"step": 86, "test_accuracy": np.linspace(0, 1, 4)}).to_csv(tmp_path / "metrics.csv.gz", index=False)
    ds = SmallCNNZooDataset(tmp_path, split=None)
    shapes = [tuple(w.shape[2:]) for w in module_to_wsfeat(modules[0]).weights]
    assert ds.network_spec == NetworkSpec.from_shapes(shapes)
    for i in range(4):
        _assert_same_network(ds[i][0], modules[i])


# --- selection and splits --------------------------------------------------------------------------


def test_split_reproduces_the_nfn_rule_with_the_index_csv(zoo):
    """Reorder by the index CSV (stray "0" line included), keep step 86, drop NaN rows, split."""
    order = [0, *zoo.order.tolist()]
    selected = [r for r in order if zoo.metrics.step[r] == 86 and r not in zoo.nonfinite]
    half = int(0.5 * len(selected))
    trainval = list(range(half))
    random.Random(0).shuffle(trainval)
    cut = int(0.8 * half)
    expected = {
        "train": [selected[p] for p in trainval[:cut]],
        "val": [selected[p] for p in trainval[cut:]],
        "test": selected[half:],
    }
    for split, rows in expected.items():
        ds = SmallCNNZooDataset(zoo.root, split, index_csv=zoo.index_csv)
        assert ds.rows.tolist() == rows
        assert SmallCNNZooDataset(zoo.root, split, index_csv=zoo.index_csv).rows.tolist() == rows  # deterministic


@pytest.mark.parametrize("with_index", [False, True])
def test_splits_partition_the_selected_rows(zoo, with_index):
    index_csv = zoo.index_csv if with_index else None
    splits = {s: SmallCNNZooDataset(zoo.root, s, index_csv=index_csv).rows.tolist() for s in ("train", "val", "test")}
    everything = SmallCNNZooDataset(zoo.root, None, index_csv=index_csv).rows.tolist()
    assert Counter(everything) == Counter(splits["train"] + splits["val"] + splits["test"])
    assert sorted(set(everything)) == _finite_rows(zoo, steps={86})
    n = len(everything)
    half = int(0.5 * n)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [int(0.8 * half), half - int(0.8 * half), n - half]
    if not with_index:  # natural order: the test split is the last half of the file's rows
        assert splits["test"] == everything[int(0.5 * n) :] and everything == sorted(everything)


def test_nfn_split_is_a_seeded_partition():
    split = nfn_split(101)
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(101))
    assert (len(split["train"]), len(split["val"]), split["test"][0]) == (40, 10, 50)
    assert split == nfn_split(101) and split["train"] != sorted(split["train"])


def test_row_zero_appears_twice_with_the_index_csv(zoo):
    step0 = int(zoo.metrics.step[0])
    with_index = SmallCNNZooDataset(zoo.root, None, step=step0, index_csv=zoo.index_csv).rows.tolist()
    plain = SmallCNNZooDataset(zoo.root, None, step=step0).rows.tolist()
    assert with_index.count(0) == 2 and with_index[0] == 0 and plain.count(0) == 1
    splits = [SmallCNNZooDataset(zoo.root, s, step=step0, index_csv=zoo.index_csv) for s in ("train", "val", "test")]
    assert sum(ds.rows.tolist().count(0) for ds in splits) == 2


def test_nonfinite_rows_are_dropped_with_a_cached_scan(zoo, zoo_copy, monkeypatch):
    rows = SmallCNNZooDataset(zoo_copy, None, step=None).rows.tolist()
    assert zoo.nonfinite and not set(zoo.nonfinite) & set(rows)
    assert list((zoo_copy / ".nfn_lab_cache").glob("nonfinite-*.json"))

    def no_scan(self, size):
        raise AssertionError("weights.npy was scanned again")

    monkeypatch.setattr(small_cnn_zoo._RowReader, "chunks", no_scan)
    assert SmallCNNZooDataset(zoo_copy, None, step=None).rows.tolist() == rows  # from the cache
    os.utime(zoo_copy / "weights.npy", ns=(1, 1))  # a changed file invalidates the cache
    with pytest.raises(AssertionError, match="scanned again"):
        SmallCNNZooDataset(zoo_copy, None, step=None)


def test_reading_a_nonfinite_row_directly_names_it(zoo):
    ds = SmallCNNZooDataset(zoo.root, None, step=None, drop_nonfinite=False)
    bad = ds.rows.tolist().index(zoo.nonfinite[-1])
    message = rf"weights.npy row {zoo.nonfinite[-1]}: 1 NaN/inf values.*drop_nonfinite=True"
    with pytest.raises(ValueError, match=message):
        ds[bad]
    with pytest.raises(ValueError, match="NaN/inf"):
        ds.__getitems__([0, bad])


def test_step_selection(zoo):
    last = SmallCNNZooDataset(zoo.root, None, step="last", drop_nonfinite=False)
    runs = zoo.metrics.modeldir[last.rows]
    assert sorted(runs) == sorted(set(zoo.metrics.modeldir))  # one checkpoint per run
    steps = dict(zip(runs, zoo.metrics.step[last.rows]))
    assert steps.pop(zoo.crashed) == 60 and set(steps.values()) == {86}
    assert SmallCNNZooDataset(zoo.root, None, step=20).rows.tolist() == _finite_rows(zoo, steps={20})
    with pytest.raises(ValueError, match=r"no checkpoint with step 5 .*\[0, 1, 2, 3, 20, 40, 60, 80, 86\]"):
        SmallCNNZooDataset(zoo.root, step=5)
    with pytest.raises(ValueError, match="step must be an int"):
        SmallCNNZooDataset(zoo.root, step="first")


def test_targets_are_any_metrics_columns(zoo):
    ds = SmallCNNZooDataset(zoo.root, "val", target=["train_accuracy", "config.learning_rate"])
    _, targets = ds[1]
    assert list(targets) == ["train_accuracy", "config.learning_rate"]
    row = ds.rows[1]
    assert targets["config.learning_rate"].item() == pytest.approx(zoo.metrics["config.learning_rate"][row], rel=1e-6)
    with pytest.raises(ValueError, match=r"unknown target column\(s\) \['accuracy'\].*available: \[.*'test_accuracy'"):
        SmallCNNZooDataset(zoo.root, target="accuracy")
    with pytest.raises(ValueError, match=r"'config.activation' .* is not numeric"):
        SmallCNNZooDataset(zoo.root, target="config.activation")


# --- batched reads and loaders -------------------------------------------------------------------


def test_batched_reads_equal_item_reads(zoo):
    stats = [torch.full((1,), 0.5)] * 4
    ds = SmallCNNZooDataset(zoo.root, "train", index_csv=zoo.index_csv, transform=Normalize(stats, stats, stats, stats))
    indices = [5, 2, 5, 0, len(ds) - 1]
    for (feats, targets), i in zip(ds.__getitems__(indices), indices):
        one, one_targets = ds[i]
        assert all(torch.equal(a, b) for a, b in zip([*feats.weights, *feats.biases], [*one.weights, *one.biases]))
        assert targets == one_targets
    with pytest.raises(IndexError, match="out of range"):
        ds.__getitems__([0, len(ds)])


def test_read_batch_equals_collated_items(zoo):
    ds = SmallCNNZooDataset(zoo.root, "test", target=["test_accuracy", "test_loss"])
    indices = [3, 0, 3, len(ds) - 1]
    weights, biases, targets = ds.read_batch(indices)
    want, want_targets = collate([ds[i] for i in indices])
    for got, expected in zip([*weights, *biases], [*want.weights, *want.biases]):
        assert torch.equal(got.unsqueeze(1), expected)
    assert targets.keys() == want_targets.keys() and all(torch.equal(targets[k], want_targets[k]) for k in targets)


def test_metadata_columns_are_the_other_metrics_columns(zoo):
    ds = SmallCNNZooDataset(zoo.root, "val", target="test_loss")
    assert ds.metadata_columns == tuple(c for c in zoo.metrics.columns if c != "test_loss")
    metadata = ds.read_metadata([1, 0])
    expected = zoo.metrics.iloc[ds.rows[[1, 0]]]
    assert {c: metadata[c] for c in ("modeldir", "step", "config.optimizer")} == {
        c: expected[c].tolist() for c in ("modeldir", "step", "config.optimizer")
    }


def test_format_detection_and_description(zoo, zoo_copy):
    assert SmallCNNZooDataModule.detect(zoo.root)
    described = SmallCNNZooDataModule.describe(zoo.root)
    assert described["network_spec"] == CNN_SPEC and described["num_checkpoints"] == len(zoo.modules)
    assert described["num_networks"] == 24 and described["steps"] == [0, 1, 2, 3, 20, 40, 60, 80, 86]
    assert described["splits"] == {s: len(SmallCNNZooDataset(zoo.root, s)) for s in ("train", "val", "test")}
    assert described["targets"] == ["test_accuracy", "test_loss", "train_accuracy", "train_loss"]
    (zoo_copy / "layout.csv").unlink()
    assert not SmallCNNZooDataModule.detect(zoo_copy)


def test_dataset_survives_pickling(zoo):
    ds = SmallCNNZooDataset(zoo.root, "test")
    ds[0]  # opens the file
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3][0].weights[1], ds[3][0].weights[1])


def test_loaders_batch_every_split(zoo):
    dm = SmallCNNZooDataModule(zoo.root, index_csv=zoo.index_csv, batch_size=4, eval_batch_size=5, normalize=True)
    dm.setup("fit")
    dm.setup("test")
    loaders = {"train": dm.train_dataloader(), "val": dm.val_dataloader(), "test": dm.test_dataloader()}
    for split, loader in loaders.items():
        batches = list(loader)
        expected = len(SmallCNNZooDataset(zoo.root, split, index_csv=zoo.index_csv))
        assert sum(b[0].batch_size for b in batches) == expected
        feats, targets = batches[0]
        CNN_SPEC.check_features(feats, channels=1)
        assert targets["test_accuracy"].shape == (feats.batch_size,)
    train = torch.cat([b[0].weights[1].flatten() for b in dm.train_dataloader()])
    assert abs(train.mean().item()) < 1e-4 and train.std().item() == pytest.approx(1, abs=1e-3)  # normalized
    assert list((zoo.root / ".nfn_lab_cache").glob("stats-*.json"))


def test_augmentations_keep_each_relu_network_function(tmp_path):
    zoo = generate(tmp_path, num_networks=10, activations=("relu",))
    augment = [RandomHiddenPermutation(), RandomPositiveScale()]
    dm = SmallCNNZooDataModule(zoo.root, batch_size=64, augment=augment)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    for split in ("train", "val"):
        augmented = dm.split_dataset(split)
        plain = SmallCNNZooDataset(zoo.root, split)
        for i in range(len(plain)):
            feats, raw = augmented[i][0], plain[i][0]
            (module,) = wsfeat_to_modules(collate([feats]), small_cnn())
            (reference,) = wsfeat_to_modules(collate([raw]), small_cnn())
            torch.testing.assert_close(module.eval()(x), reference.eval()(x), rtol=1e-4, atol=1e-5)
            assert torch.equal(feats.weights[1], raw.weights[1]) == (split == "val")  # only train is augmented
    feats, _ = next(iter(dm.train_dataloader()))
    assert feats.batch_size == len(dm.split_dataset("train"))


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["weights.npy", "metrics.csv.gz", "layout.csv"])
def test_missing_file_is_named_with_the_expected_contents(zoo_copy, name):
    (zoo_copy / name).unlink()
    message = rf"missing {name}; a Small CNN Zoo folder .* holds weights.npy .*but the folder holds \["
    with pytest.raises(ValueError, match=message):
        SmallCNNZooDataset(zoo_copy)


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=r"missing weights.npy.*the folder does not exist"):
        SmallCNNZooDataModule(tmp_path / "nowhere").make_dataset("train", None)


def _short(f):  # the dense kernel's row is gone
    return f.drop(index=7)


def _gap(f):
    f.loc[2, ["start_idx", "end_idx"]] = [161, 177]


def _wrong_size(f):
    f.loc[1, "shape"] = "(3, 3, 1, 8)"


def _shape_text(f):
    f.loc[7, "shape"] = "(16; 10)"


def _not_a_layer(f):
    f.loc[6, "varname"] = "sequential/bn/gamma:0"


def _no_chain(f):  # same size, but 144 inputs after a layer of 16 outputs
    f.loc[3, "shape"] = "(1, 1, 144, 16)"


def _no_column(f):
    return f.drop(columns="end_idx")


@pytest.mark.parametrize(
    "edit, message",
    [
        (_short, "cover columns 0:4810 but weights.npy rows have 4970 columns"),
        (_gap, r"line 4 \(sequential/conv2d_1/bias:0\): starts at column 161 but the previous variable ends at 160"),
        (_wrong_size, r"hold 144 values but shape \(3, 3, 1, 8\) has 72"),
        (_shape_text, r"line 9 \(sequential/dense/kernel:0\): cannot parse shape '\(16; 10\)'"),
        (_not_a_layer, "'sequential/bn/gamma:0' is not a layer's kernel or bias"),
        (_no_chain, "do not form one feedforward network: layer 1: weight expects 144 input neurons"),
        (_no_column, r"missing columns \['end_idx'\]"),
    ],
    ids=["short", "gap", "size", "shape-text", "not-a-layer", "no-chain", "column"],
)
def test_layout_that_does_not_tile_the_weights(zoo_copy, edit, message):
    _edit_layout(zoo_copy, edit)
    with pytest.raises(ValueError, match=message):
        SmallCNNZooDataset(zoo_copy)


def test_layout_columns_are_addressed_by_name(zoo_copy, zoo):
    reordered = ["shape", "varname", "end_idx", "start_idx", "size"]
    _edit_layout(zoo_copy, lambda f: f.assign(size=f.end_idx - f.start_idx)[reordered])
    ds = SmallCNNZooDataset(zoo_copy, None)
    _assert_same_network(ds[0][0], zoo.modules[ds.rows[0]])


def test_metrics_rows_must_match_weights_rows(zoo_copy, zoo):
    zoo.metrics.iloc[:-1].to_csv(zoo_copy / "metrics.csv.gz", index=False)
    n = len(zoo.modules)
    with pytest.raises(ValueError, match=rf"metrics.csv.gz has {n - 1} rows but weights.npy has {n}"):
        SmallCNNZooDataset(zoo_copy)


def test_truncated_weights_file(zoo_copy):
    data = (zoo_copy / "weights.npy").read_bytes()
    (zoo_copy / "weights.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"weights.npy: not a readable .npy array"):
        SmallCNNZooDataset(zoo_copy)


def test_bad_index_csv(zoo, tmp_path):
    bad = tmp_path / "idx.csv"
    bad.write_text("0\n3\n999\n")
    with pytest.raises(ValueError, match=r"idx.csv line 3: row index 999 is outside"):
        SmallCNNZooDataset(zoo.root, index_csv=bad)
    with pytest.raises(ValueError, match="does not exist"):
        SmallCNNZooDataset(zoo.root, index_csv=tmp_path / "absent.csv")


# --- the writer ---------------------------------------------------------------------------------


def _rows(feats: WeightSpaceFeatures, rows: slice) -> WeightSpaceFeatures:
    return WeightSpaceFeatures([w[rows] for w in feats.weights], [b[rows] for b in feats.biases])


def _records(num: int, first: int = 0) -> list[dict]:
    return [
        {"config.seed": first + i, "modeldir": f"run_{first + i}", "step": 86, "test_accuracy": (first + i) / 10}
        for i in range(num)
    ]


def test_writer_round_trip_through_the_reader(tmp_path) -> None:
    modules = [small_cnn() for _ in range(5)]
    feats = module_to_wsfeat(modules)  # (5, 1, ...)
    spec = network_spec_from_module(small_cnn())
    with SmallCNNZooWriter(tmp_path / "zoo", spec, num_rows=5) as writer:
        writer.add(_rows(feats, slice(0, 3)), _records(3))
        writer.add(_rows(feats, slice(3, 5)), _records(2, first=3))
    folder = tmp_path / "zoo"
    pd.testing.assert_frame_equal(pd.read_csv(folder / "layout.csv").drop(columns="size"), keras_layout(modules[0]))
    np.testing.assert_array_equal(np.load(folder / "weights.npy"), np.stack([keras_row(m) for m in modules]))
    assert pd.read_csv(folder / "metrics.csv.gz").to_dict("records") == _records(5)
    dataset = SmallCNNZooDataset(folder, split=None)
    for i in range(5):
        got, targets = dataset[i]
        assert all(
            torch.equal(a, b)
            for a, b in zip([*got.weights, *got.biases], [w[i] for w in feats.weights] + [b[i] for b in feats.biases])
        )
        assert targets["test_accuracy"].item() == pytest.approx(i / 10)


def test_writer_files_are_byte_identical_for_the_same_rows(tmp_path) -> None:
    feats = module_to_wsfeat([small_cnn() for _ in range(2)])
    spec = network_spec_from_module(small_cnn())
    for name in ("a", "b"):
        with SmallCNNZooWriter(tmp_path / name, spec, num_rows=2) as writer:
            writer.add(feats, _records(2))
    for file in ("weights.npy", "layout.csv", "metrics.csv.gz"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_writer_closed_inside_its_block_is_closed_once(tmp_path) -> None:
    feats = module_to_wsfeat([small_cnn() for _ in range(2)])
    spec = network_spec_from_module(small_cnn())
    with SmallCNNZooWriter(tmp_path / "zoo", spec, num_rows=2) as writer:
        writer.add(feats, _records(2))
        assert writer.close() == (tmp_path / "zoo").absolute()
    assert writer.close() == (tmp_path / "zoo").absolute()  # the block's exit and this call publish nothing twice
    assert np.load(tmp_path / "zoo" / "weights.npy").shape[0] == 2


def test_writer_rejects_bad_input_and_writes_nothing(tmp_path) -> None:
    feats = module_to_wsfeat([small_cnn() for _ in range(2)])
    spec = network_spec_from_module(small_cnn())
    writer = SmallCNNZooWriter(tmp_path / "zoo", spec, num_rows=3)
    with pytest.raises(ValueError, match="got 1 metrics records for 2 networks"):
        writer.add(feats, _records(1))
    writer.add(feats, _records(2))
    with pytest.raises(ValueError, match="a metrics record has keys"):
        writer.add(_rows(feats, slice(0, 1)), [{"step": 0}])
    with pytest.raises(ValueError, match="would exceed the 3 rows"):
        writer.add(feats, _records(2))
    with pytest.raises(ValueError, match="2 rows were added but the writer was opened for 3"):
        writer.close()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        SmallCNNZooWriter(tmp_path / "full", spec, num_rows=1)
