"""DWSNets INR zoos: exact read-back, splits files and their paths, rendering, loaders and errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.dwsnets_inr import DWSNetsINRDataModule
from nfn_lab.conversion import network_spec_from_module
from nfn_lab.data import RandomSignFlip
from nfn_lab.siren import Siren, render
from nfn_lab.weightspace import collate
from tests.data.digits import digit_images
from tests.data.dwsnets_inr.generate import FOREIGN_ROOT, generate_fmnist, generate_mnist

SPLIT_SIZES = {"train": 6, "val": 2, "test": 4}
SPLITS_FILES = ("mnist_splits.json", "mnist_splits_moved.json", "fmnist_splits.json")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> tuple[Path, dict[Path, dict[str, torch.Tensor]]]:
    root = tmp_path_factory.mktemp("dwsnets")
    return root, {**generate_mnist(root), **generate_fmnist(root)}


@pytest.fixture
def zoo_copy(zoo, tmp_path) -> Path:
    """A private copy of the zoo (without caches) that a test may damage."""
    shutil.copytree(zoo[0], tmp_path / "zoo", ignore=shutil.ignore_patterns(".nfn_lab_cache"))
    return tmp_path / "zoo"


def module(root: Path, splits: str | None = "mnist_splits.json", **kwargs) -> DWSNetsINRDataModule:
    return DWSNetsINRDataModule(root, splits, batch_size=4, **kwargs)


def splits_entries(root: Path, splits: str) -> dict:
    return json.loads((root / splits).read_text())


@pytest.mark.parametrize("array_cache", [False, True])
@pytest.mark.parametrize("splits", SPLITS_FILES)
def test_items_equal_the_saved_state_dicts(zoo, splits, array_cache):
    root, written = zoo
    dm = module(root, splits, array_cache=array_cache)
    entries = splits_entries(root, splits)
    keys = [k for pair in dm.layout.keys for k in pair]
    for split, size in SPLIT_SIZES.items():
        ds = dm.split_dataset(split)
        assert len(ds) == size
        for i in range(size):
            path = Path(ds.path(i))
            assert path.is_relative_to(root) and path.name == Path(entries[split]["path"][i]).name
            feats, targets = ds[i]
            arrays = [t for pair in feats for t in pair]
            for key, array in zip(keys, arrays):
                assert torch.equal(array, written[path][key][None]), (path, key)
            assert targets["label"].dtype == torch.int64
            assert targets["label"].item() == int(entries[split]["label"][i])


def test_labels_match_the_images_and_the_fmnist_dicts(zoo):
    root, _ = zoo
    _, digit_labels = digit_images(12)
    for splits in SPLITS_FILES:
        dm = module(root, splits)
        labels = torch.cat([dm.split_dataset(s).targets["label"] for s in SPLIT_SIZES])
        assert torch.equal(labels, digit_labels)
    ds = module(root, "fmnist_splits.json").split_dataset("test")
    for i in range(len(ds)):
        assert torch.load(ds.path(i))["label"] == ds[i][1]["label"].item()


def test_paths_relative_absolute_and_from_another_machine(zoo):
    root, _ = zoo
    local = splits_entries(root, "mnist_splits.json")["train"]["path"]
    assert any(Path(p).is_absolute() for p in local) and not all(Path(p).is_absolute() for p in local)
    moved = splits_entries(root, "mnist_splits_moved.json")["train"]["path"]
    assert all(p.startswith(FOREIGN_ROOT) and not Path(p).exists() for p in moved)
    assert module(root).files() == module(root, "mnist_splits_moved.json").files()


def test_unresolvable_path_names_the_entry_and_root(zoo_copy):
    entries = splits_entries(zoo_copy, "mnist_splits_moved.json")
    entries["val"]["path"][1] = "/elsewhere/unrelated/model_final.pth"
    (zoo_copy / "broken.json").write_text(json.dumps(entries))
    with pytest.raises(FileNotFoundError, match=r"broken.json: 'val' path 1: '/elsewhere/unrelated/model_final.pth'"):
        module(zoo_copy, "broken.json").split_dataset("train")


def test_network_spec_is_the_dwsnets_siren(zoo):
    dm = module(zoo[0])
    assert dm.network_spec == network_spec_from_module(Siren("dwsnets"))
    assert dm.siren_variant == "dwsnets" and dm.image_size == 28
    assert [k for pair in dm.layout.keys for k in pair] == list(Siren("dwsnets").state_dict())


def reference_image(state_dict: dict[str, torch.Tensor], size: int = 28) -> torch.Tensor:
    """DWSNets' rendering, written out: NumPy ('xy') meshgrid coordinates, sine layers, +0.5, view/permute."""
    t = np.linspace(-1, 1, size)
    x, y = np.meshgrid(t, t)
    coords = torch.from_numpy(np.stack([x.flatten(), y.flatten()]).T).float()
    h = torch.sin(30 * (coords @ state_dict["seq.0.weight"].T + state_dict["seq.0.bias"]))
    h = torch.sin(30 * (h @ state_dict["seq.1.weight"].T + state_dict["seq.1.bias"]))
    out = h @ state_dict["seq.2.weight"].T + state_dict["seq.2.bias"] + 0.5
    return out.view(size, size, -1).permute(2, 0, 1)


def test_render_matches_dwsnets_and_the_state_dicts_own_siren(zoo):
    root, written = zoo
    dm = module(root)
    ds = dm.split_dataset("test")
    feats, _ = next(iter(dm.test_dataloader()))
    images = render(feats, dm.siren_variant, dm.image_size)
    assert images.shape == (4, 1, 28, 28)
    t = torch.linspace(-1, 1, 28)
    rows, cols = torch.meshgrid(t, t, indexing="ij")
    xy_grid = torch.stack([cols, rows], dim=-1)  # pixel [i, j] at (x = t[j], y = t[i])
    for i in range(len(ds)):
        saved = written[Path(ds.path(i))]
        torch.testing.assert_close(images[i], reference_image(saved), atol=1e-5, rtol=1e-5)
        siren = Siren("dwsnets")
        siren.load_state_dict(saved)
        torch.testing.assert_close(images[i], siren(xy_grid).permute(2, 0, 1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(images, render(feats, "nfn", 28), atol=1e-3)  # offset and coordinate order matter


def test_sign_flips_change_weights_but_not_the_rendered_images(zoo):
    root, _ = zoo
    flipped_ds = module(root, augment=[RandomSignFlip(torch.Generator().manual_seed(1))]).split_dataset("train")
    plain_ds = module(root).split_dataset("train")
    flipped, _ = collate([flipped_ds[i] for i in range(len(flipped_ds))])
    plain, _ = collate([plain_ds[i] for i in range(len(plain_ds))])
    assert not torch.equal(flipped.weights[1], plain.weights[1])
    torch.testing.assert_close(render(flipped, "dwsnets"), render(plain, "dwsnets"), atol=1e-5, rtol=1e-5)


def test_normalized_training_batches_have_zero_mean_unit_std(zoo):
    dm = module(zoo[0], "fmnist_splits.json", normalize=True, array_cache=True)
    dm.prepare_data()
    dm.setup("fit")
    batches = [feats for feats, _ in dm.train_dataloader()]
    assert sum(f.batch_size for f in batches) == SPLIT_SIZES["train"]
    for layer in range(3):
        w = torch.cat([f.weights[layer] for f in batches])
        assert abs(w.mean().item()) < 1e-4 and abs(w.std(correction=0).item() - 1) < 1e-3


def test_statistics_differ_per_splits_file(zoo):
    keys = {module(zoo[0], s).stats_key() for s in ("mnist_splits.json", "fmnist_splits.json")}
    assert len(keys) == 2


# --- errors -------------------------------------------------------------------------------------


def write_splits(root: Path, data) -> str:
    (root / "custom.json").write_text(json.dumps(data))
    return "custom.json"


def test_splits_file_missing_lists_the_json_files(zoo):
    with pytest.raises(FileNotFoundError, match=r"nope.json' not found; JSON files there: \['fmnist_splits.json'"):
        module(zoo[0], "nope.json").split_dataset("train")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("val"), r"needs 'val': \{'path': \[...\], 'label': \[...\]\}.*has \['test', 'train'\]"),
        (lambda d: d["test"]["label"].pop(), r"'test' has 4 paths but 3 labels"),
        (lambda d: d["val"].update(path=[], label=[]), r"the 'val' split is empty"),
        (lambda d: d["train"]["label"].__setitem__(2, "seven"), r"'train' label 2 is 'seven', not an integer class"),
    ],
    ids=["missing-split", "length-mismatch", "empty-split", "bad-label"],
)
def test_bad_splits_file(zoo, tmp_path, edit, message):
    data = splits_entries(zoo[0], "mnist_splits_moved.json")
    edit(data)
    shutil.copytree(zoo[0] / "mnist-inrs", tmp_path / "mnist-inrs")
    with pytest.raises(ValueError, match=message):
        module(tmp_path, write_splits(tmp_path, data)).split_dataset("train")


def test_invalid_json(tmp_path):
    (tmp_path / "splits.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"splits.json: not valid JSON"):
        module(tmp_path, "splits.json").split_dataset("train")


@pytest.mark.parametrize("array_cache", [False, True])
def test_corrupt_checkpoint_is_named(zoo_copy, array_cache):
    bad = zoo_copy / "fmnist_inrs/test/model_9.pth"
    bad.write_bytes(b"not a zip file at all")
    dm = module(zoo_copy, "fmnist_splits.json", array_cache=array_cache)
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad))}: cannot read this checkpoint"):
        dm.prepare_data()
        dm.split_dataset("test")[1]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda sd: sd.pop("seq.1.weight"), r"missing key 'seq.1.weight'"),
        (
            lambda sd: sd.update({"seq.2.weight": torch.zeros(32, 1)}),
            r"'seq.2.weight' has shape \(32, 1\) but this zoo expects \(1, 32\)",
        ),
        (lambda sd: sd["seq.2.weight"].__setitem__((0, 5), float("inf")), r"'seq.2.weight': array 0 has 1 non-finite"),
    ],
    ids=["missing-key", "transposed", "inf"],
)
def test_bad_state_dict_names_file_and_problem(zoo_copy, damage, message):
    bad = zoo_copy / "fmnist_inrs/train/model_3.pth"
    state_dict = torch.load(bad)
    damage(state_dict)
    torch.save(state_dict, bad)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*" + message):
        module(zoo_copy, "fmnist_splits.json").split_dataset("train")[3]


def test_missing_checkpoint_is_named(zoo_copy):
    gone = zoo_copy / "fmnist_inrs/train/model_2.pth"
    dm = module(zoo_copy, "fmnist_splits.json")
    dm.files()  # paths resolved while the file existed
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(gone))}: checkpoint not found"):
        dm.split_dataset("train")[2]


def test_the_only_splits_file_is_the_default(zoo, tmp_path):
    with pytest.raises(ValueError, match=r"found 3 splits files \['fmnist_splits.json', 'mnist_splits.json', 'mnist"):
        module(zoo[0], None).split_dataset("train")
    shutil.copytree(zoo[0] / "fmnist_inrs", tmp_path / "fmnist_inrs")
    shutil.copy(zoo[0] / "fmnist_splits.json", tmp_path)
    assert DWSNetsINRDataModule.detect(tmp_path) and not DWSNetsINRDataModule.detect(tmp_path / "fmnist_inrs")
    moved = [Path(f).relative_to(tmp_path) for f in module(tmp_path, None).files()]
    assert moved == [Path(f).relative_to(zoo[0]) for f in module(zoo[0], "fmnist_splits.json").files()]
    assert DWSNetsINRDataModule.describe(tmp_path)["splits"] == SPLIT_SIZES
