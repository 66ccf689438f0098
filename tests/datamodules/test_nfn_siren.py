"""NFN SIREN zoos: exact read-back of generated files, splits, rendering, loaders and errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import datamodules.nfn_siren as nfn_siren
from datamodules.nfn_siren import NFNSirenDataModule
from nfn_lab.conversion import network_spec_from_module
from nfn_lab.data import RandomSignFlip
from nfn_lab.siren import Siren, make_coordinates, render
from nfn_lab.weightspace import collate
from tests.data.digits import digit_images
from tests.data.nfn_siren.generate import generate

NUM_IMAGES, AUG_COPIES, SPLITS = 12, 2, (8, 10)  # train idx 0-7, val 8-9, test 10-11
BASE_FOLDER = re.compile(r"randinit_smaller_(\d)s")
ANY_FOLDER = re.compile(r"randinit_smaller(?:_aug(\d+))?_(\d)s")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> tuple[Path, dict[Path, dict[str, torch.Tensor]]]:
    root = tmp_path_factory.mktemp("nfn_siren")
    return root, generate(root, num_images=NUM_IMAGES, aug_copies=AUG_COPIES)


@pytest.fixture
def zoo_copy(zoo, tmp_path) -> Path:
    """A private copy of the zoo (without caches) that a test may damage."""
    shutil.copytree(zoo[0], tmp_path / "zoo", ignore=shutil.ignore_patterns(".nfn_lab_cache"))
    return tmp_path / "zoo"


def module(root: Path, **kwargs) -> NFNSirenDataModule:
    return NFNSirenDataModule(root, split_points=SPLITS, batch_size=5, **kwargs)


def parse(path: str) -> tuple[int | None, int, int]:
    """``(copy or None, label, idx)`` of a zoo file, from its path."""
    match = ANY_FOLDER.fullmatch(Path(path).parent.name)
    copy = None if match.group(1) is None else int(match.group(1))
    return copy, int(match.group(2)), int(Path(path).stem[3:])


def expected_split(written, split: str, aug_copies: int = AUG_COPIES) -> set[str]:
    out = set()
    for path in written:
        copy, _, idx = parse(str(path))
        if (
            (split == "train" and idx < SPLITS[0] and (copy is None or copy < aug_copies))
            or (split == "val" and copy is None and SPLITS[0] <= idx < SPLITS[1])
            or (split == "test" and copy is None and idx >= SPLITS[1])
        ):
            out.add(str(path))
    return out


@pytest.mark.parametrize("array_cache", [False, True])
def test_items_equal_the_saved_state_dicts(zoo, array_cache):
    root, written = zoo
    dm = module(root, array_cache=array_cache)
    dm.prepare_data()
    keys = [k for pair in dm.layout.keys for k in pair]
    _, labels = digit_images(NUM_IMAGES)
    for split in dm.splits:
        ds = dm.split_dataset(split)
        assert {ds.path(i) for i in range(len(ds))} == expected_split(written, split)
        for i in range(len(ds)):
            feats, targets = ds[i]
            saved = written[Path(ds.path(i))]
            arrays = [t for pair in feats for t in pair]
            for key, array in zip(keys, arrays):
                assert array.shape == (1, *saved[key].shape)
                assert torch.equal(array[0], saved[key]), (ds.path(i), key)
            assert targets["label"].dtype == torch.int64
            assert targets["label"].item() == labels[parse(ds.path(i))[2]].item() == parse(ds.path(i))[1]


def test_array_cache_batches_equal_per_file_items(zoo):
    root, _ = zoo
    plain, cached = module(root).split_dataset("train"), module(root, array_cache=True).split_dataset("train")
    order = [7, 0, 23, 3, 3]
    batch = cached.__getitems__(order)
    for index, (feats, targets) in zip(order, batch):
        ref, ref_targets = plain[index]
        assert all(torch.equal(a, b) for a, b in zip([*feats.weights, *feats.biases], [*ref.weights, *ref.biases]))
        assert targets == ref_targets
    with pytest.raises(IndexError, match="out of range"):
        cached.__getitems__([0, len(cached)])


def test_array_cache_is_built_once_beside_the_zoo(zoo, monkeypatch):
    root, _ = zoo
    path = module(root, array_cache=True).open_array_cache().path
    assert path.parent == root / ".nfn_lab_cache" and path.suffix == ".npy"
    built = path.stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("the array cache was rebuilt")

    monkeypatch.setattr("nfn_lab.data.checkpoint_zoo.ArrayCache.build", no_build)
    assert module(root, array_cache=True).open_array_cache().path == path
    assert path.stat().st_mtime_ns == built
    assert not list(path.parent.glob("*.tmp*"))


def test_network_spec_is_the_nfn_siren(zoo):
    dm = module(zoo[0])
    assert dm.network_spec == network_spec_from_module(Siren("nfn"))
    assert dm.image_size == 28 and dm.siren_variant == "nfn"
    assert [k for pair in dm.layout.keys for k in pair] == list(Siren("nfn").state_dict())


def test_rgb_zoo_has_three_output_channels_and_renders(tmp_path):
    written = generate(tmp_path, num_images=3, aug_copies=0, channels=3, steps=1)
    dm = NFNSirenDataModule(tmp_path, split_points=(1, 2), batch_size=3)
    assert dm.network_spec == network_spec_from_module(Siren("nfn", out_features=3))
    assert dm.image_size == 32
    feats, _ = next(iter(dm.val_dataloader()))
    siren = Siren("nfn", out_features=3)
    siren.load_state_dict(written[Path(dm.split_dataset("val").path(0))])
    expected = siren(make_coordinates(32, "ij")).reshape(32, 32, 3).permute(2, 0, 1)
    torch.testing.assert_close(render(feats, "nfn", 32)[0], expected)


def ij_grid(size: int = 28) -> torch.Tensor:
    """The NFN reference's coordinates: ``(S, S, 2)``, pixel ``[i, j]`` at ``(t[i], t[j])``."""
    t = torch.linspace(-1, 1, size)
    return torch.stack(torch.meshgrid(t, t, indexing="ij"), dim=-1)


def reference_image(state_dict: dict[str, torch.Tensor], size: int = 28) -> torch.Tensor:
    """The NFN reference's rendering, written out: sine layers with omega0 = 30, linear output."""
    coords = ij_grid(size).reshape(-1, 2)
    h = torch.sin(30 * (coords @ state_dict["net.0.linear.weight"].T + state_dict["net.0.linear.bias"]))
    h = torch.sin(30 * (h @ state_dict["net.1.linear.weight"].T + state_dict["net.1.linear.bias"]))
    out = h @ state_dict["net.2.weight"].T + state_dict["net.2.bias"]
    return out.reshape(size, size, -1).permute(2, 0, 1)


def test_render_matches_the_reference_and_the_state_dicts_own_siren(zoo):
    root, written = zoo
    dm = module(root)
    ds = dm.split_dataset("train")
    feats, _ = collate([ds[i] for i in range(len(ds))])
    images = render(feats, dm.siren_variant, dm.image_size)
    assert images.shape == (len(ds), 1, 28, 28)
    for i in range(len(ds)):
        saved = written[Path(ds.path(i))]
        torch.testing.assert_close(images[i], reference_image(saved), atol=1e-5, rtol=1e-5)
        siren = Siren("nfn")
        siren.load_state_dict(saved)
        own = siren(ij_grid()).permute(2, 0, 1)  # (28, 28, 1) -> (1, 28, 28)
        torch.testing.assert_close(images[i], own, atol=1e-5, rtol=1e-5)


def test_sign_flips_change_weights_but_not_the_rendered_images(zoo):
    dm = module(zoo[0], augment=[RandomSignFlip(torch.Generator().manual_seed(0))])
    flipped_ds, plain_ds = dm.split_dataset("train"), module(zoo[0]).split_dataset("train")
    flipped, _ = collate([flipped_ds[i] for i in range(6)])
    plain, _ = collate([plain_ds[i] for i in range(6)])
    assert not torch.equal(flipped.weights[0], plain.weights[0])
    torch.testing.assert_close(render(flipped, "nfn"), render(plain, "nfn"), atol=1e-5, rtol=1e-5)


def test_normalized_training_batches_have_zero_mean_unit_std(zoo):
    dm = module(zoo[0], normalize=True)
    dm.setup("fit")
    batches = [feats for feats, _ in dm.train_dataloader()]
    assert sum(f.batch_size for f in batches) == SPLITS[0] * (1 + AUG_COPIES)
    for layer in range(3):
        w = torch.cat([f.weights[layer] for f in batches])
        assert abs(w.mean().item()) < 1e-4 and abs(w.std(correction=0).item() - 1) < 1e-3


def test_base_splits_never_read_augmented_copies(zoo):
    dm = module(zoo[0])
    for split in ("val", "test"):
        ds = dm.split_dataset(split)
        assert len(ds) == 2
        assert all(BASE_FOLDER.fullmatch(Path(ds.path(i)).parent.name) for i in range(len(ds)))
    train = dm.split_dataset("train")
    copies = [parse(train.path(i))[0] for i in range(len(train))]
    assert copies.count(None) == 8 and copies.count(0) == 8 and copies.count(1) == 8


@pytest.mark.parametrize("aug_copies, size", [(0, 8), (1, 16), (None, 24)])
def test_aug_copies_selects_the_augmented_folders(zoo, aug_copies, size):
    ds = module(zoo[0], aug_copies=aug_copies).split_dataset("train")
    assert len(ds) == size
    assert {ds.path(i) for i in range(len(ds))} == expected_split(zoo[1], "train", size // 8 - 1)


def test_split_points_move_the_boundaries(zoo):
    dm = NFNSirenDataModule(zoo[0], split_points=(4, 11), aug_copies=0)
    assert [len(dm.split_dataset(s)) for s in dm.splits] == [4, 7, 1]
    with pytest.raises(ValueError, match="split_points"):
        NFNSirenDataModule(zoo[0], split_points=(5, 4))


def test_the_index_is_cached_and_rescanned_when_a_folder_changes(zoo_copy, monkeypatch):
    assert len(module(zoo_copy).split_dataset("test")) == 2
    assert list((zoo_copy / ".nfn_lab_cache").glob("nfn-siren-index-*.npz"))
    scans = []
    real_scan = nfn_siren._scan
    monkeypatch.setattr(nfn_siren, "_scan", lambda folders: scans.append(1) or real_scan(folders))
    assert len(module(zoo_copy).split_dataset("test")) == 2 and not scans  # from the cache
    shutil.copy(zoo_copy / "randinit_smaller_1s/net11.pth", zoo_copy / "randinit_smaller_1s/net12.pth")
    assert len(module(zoo_copy).split_dataset("test")) == 3 and scans == [1]


# --- errors -------------------------------------------------------------------------------------


def test_unparseable_label_folder_is_named(zoo_copy):
    (zoo_copy / "randinit_smaller_12s").mkdir()
    with pytest.raises(ValueError, match=r"randinit_smaller_12s.*'randinit_smaller_<digit>s'"):
        module(zoo_copy).split_dataset("train")


def test_root_without_zoo_folders(tmp_path):
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match=r"no 'randinit_smaller_<digit>s' folders.*other"):
        module(tmp_path).split_dataset("train")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        module(tmp_path / "missing").split_dataset("train")


def test_empty_split_says_which_and_why(zoo):
    with pytest.raises(ValueError, match=r"'val' split .* is empty.*100 <= idx < 200"):
        NFNSirenDataModule(zoo[0], split_points=(100, 200)).split_dataset("val")


def test_duplicate_image_in_one_set_names_both_files(zoo_copy):
    shutil.copy(zoo_copy / "randinit_smaller_3s/net3.pth", zoo_copy / "randinit_smaller_5s/net3.pth")
    with pytest.raises(ValueError, match=r"randinit_smaller_3s/net3.pth and .*randinit_smaller_5s/net3.pth"):
        module(zoo_copy).split_dataset("train")


def test_unexpected_checkpoint_name(zoo_copy):
    (zoo_copy / "randinit_smaller_3s/model.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"model.pth: unexpected checkpoint name.*net<idx>.pth"):
        module(zoo_copy).split_dataset("train")


def _index_of(ds, path: Path) -> int:
    return next(i for i in range(len(ds)) if ds.path(i) == str(path))


@pytest.mark.parametrize("array_cache", [False, True])
def test_corrupt_checkpoint_is_named(zoo_copy, array_cache):
    bad = zoo_copy / "randinit_smaller_aug1_4s/net4.pth"
    bad.write_bytes(bad.read_bytes()[:100])
    dm = module(zoo_copy, array_cache=array_cache)
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad))}: cannot read this checkpoint"):
        dm.prepare_data()
        ds = dm.split_dataset("train")
        ds[_index_of(ds, bad)]
    assert not list((zoo_copy / ".nfn_lab_cache").glob("arrays-*"))  # no half-written cache


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda sd: sd.pop("net.2.bias"), r"missing key 'net.2.bias'"),
        (
            lambda sd: sd.update({"net.1.linear.weight": torch.zeros(16, 32)}),
            r"'net.1.linear.weight' has shape \(16, 32\) but this zoo expects \(32, 32\)",
        ),
        (lambda sd: sd["net.1.linear.bias"].__setitem__(3, float("nan")), r"non-finite"),
        (lambda sd: sd.update({"net.3.weight": torch.zeros(1, 1)}), r"unexpected parameters \['net.3.weight'\]"),
    ],
    ids=["missing-key", "wrong-shape", "nan", "extra-layer"],
)
def test_bad_state_dict_names_file_and_problem(zoo_copy, damage, message):
    bad = zoo_copy / "randinit_smaller_7s/net7.pth"
    state_dict = torch.load(bad)
    damage(state_dict)
    torch.save(state_dict, bad)
    ds = module(zoo_copy).split_dataset("train")
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*" + message):
        ds[_index_of(ds, bad)]


def test_networks_that_disagree_in_output_channels(zoo_copy):
    bad = zoo_copy / "randinit_smaller_aug0_2s/net2.pth"
    state_dict = torch.load(bad)
    state_dict.update({"net.2.weight": torch.zeros(3, 32), "net.2.bias": torch.zeros(3)})
    torch.save(state_dict, bad)
    dm = module(zoo_copy)
    assert dm.network_spec.get_io() == (2, 1)  # from the first file
    ds = dm.split_dataset("train")
    with pytest.raises(ValueError, match=r"'net.2.weight' has shape \(3, 32\) but this zoo expects \(1, 32\)"):
        ds[_index_of(ds, bad)]


def test_missing_aug_copies(zoo):
    with pytest.raises(ValueError, match=r"aug_copies=3 but the zoo has augmented copies \[0, 1\]"):
        module(zoo[0], aug_copies=3).split_dataset("train")


def test_detect_and_describe(zoo, tmp_path):
    assert NFNSirenDataModule.detect(zoo[0]) and not NFNSirenDataModule.detect(tmp_path)
    info = NFNSirenDataModule.describe(zoo[0])  # default split points: everything is train
    assert info["splits"] == {"train": NUM_IMAGES * (1 + AUG_COPIES), "val": 0, "test": 0}
    assert info["augmented_copies"] == AUG_COPIES and info["network_spec"] == network_spec_from_module(Siren("nfn"))


def test_index_arrays_are_compact(zoo):
    index = module(zoo[0]).index
    assert index.copy.dtype == np.int16 and index.label.dtype == np.int8 and index.idx.dtype == np.int64
    assert len(index.idx) == NUM_IMAGES * (1 + AUG_COPIES)
