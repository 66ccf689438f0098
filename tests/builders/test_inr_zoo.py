"""The INR zoo builder: image sources, fitting, and whole builds (deterministic, resumable, renderable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.arrow_zoo import batch_to_tensors
from nfn_lab.builders import inr_zoo
from nfn_lab.builders.inr_zoo import ImageSet, INRZooConfig, build_inr_zoo, init_sirens, load_images, psnr
from nfn_lab.data.arrow_container import open_zoo
from nfn_lab.data.card import read_zoo_info
from nfn_lab.siren import Siren, render
from nfn_lab.weightspace import WeightSpaceFeatures

CONFIG = INRZooConfig(augmented_copies=1, steps=60, lr=1e-3, seed=2, chunk_size=8)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> ImageSet:
    full = load_images("digits")
    return ImageSet(full.images[:20], full.labels[:20], "digits[:20]", full.class_names)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet) -> Path:
    torch.set_num_threads(1)
    return build_inr_zoo(tmp_path_factory.mktemp("inr") / "zoo", CONFIG, digits, progress=False)


def _read(root: Path) -> dict[str, dict[str, np.ndarray]]:
    return {split: open_zoo(root, split).with_format("numpy")[:] for split in read_zoo_info(root).splits}


def _features(root: Path, split: str) -> tuple[WeightSpaceFeatures, dict[str, torch.Tensor], dict[str, np.ndarray]]:
    info = read_zoo_info(root)
    batch = open_zoo(root, split).with_format("numpy")[:]
    weights, biases, targets = batch_to_tensors(batch, info, info.target_names)
    return WeightSpaceFeatures([w.unsqueeze(1) for w in weights], [b.unsqueeze(1) for b in biases]), targets, batch


# --- image sources ------------------------------------------------------------------------------------


def test_digits_keep_their_8x8_pixels_unless_resized() -> None:
    images = load_images("digits")
    assert images.images.shape == (1797, 1, 8, 8) and images.labels[:10].tolist() == list(range(10))
    assert images.images.min() == 0 and images.images.max() == 1
    assert load_images("digits", size=28).images.shape == (1797, 1, 28, 28)


def test_image_folder_with_one_subfolder_per_label(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    pixels = {}
    for label in ("3", "10"):
        (tmp_path / label).mkdir()
        for k in range(2):
            array = rng.integers(0, 256, (6, 6), dtype=np.uint8)
            image.fromarray(array, mode="L").save(tmp_path / label / f"{k}.png")
            pixels[(int(label), k)] = array
    loaded = load_images(tmp_path)
    assert loaded.images.shape == (4, 1, 6, 6) and loaded.labels.tolist() == [3, 3, 10, 10]  # numeric folder names
    np.testing.assert_allclose(loaded.images[2, 0].numpy(), pixels[(10, 0)] / 255, atol=1e-6)
    assert load_images(tmp_path, size=4).images.shape == (4, 1, 4, 4)

    image.fromarray(np.zeros((6, 6), dtype=np.uint8)).save(tmp_path / "stray.png")
    with pytest.raises(ValueError, match=r"one subfolder per label.*stray.png"):
        load_images(tmp_path)
    (tmp_path / "stray.png").unlink()
    image.fromarray(np.zeros((5, 7), dtype=np.uint8)).save(tmp_path / "3" / "wide.png")
    with pytest.raises(ValueError, match=r"not all square of one size.*--size"):
        load_images(tmp_path)
    (tmp_path / "3" / "wide.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"wide.png: not a readable image"):
        load_images(tmp_path)


def test_tensor_file(tmp_path: Path) -> None:
    path = tmp_path / "images.pt"
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    torch.save({"images": images, "labels": torch.arange(5)}, path)
    loaded = load_images(path)
    torch.testing.assert_close(loaded.images, images.float() / 255)
    assert loaded.labels.tolist() == [0, 1, 2, 3, 4]
    torch.save({"images": torch.rand(5, 2, 4, 4), "labels": torch.arange(5)}, path)
    with pytest.raises(ValueError, match=r"images.pt: images must be a tensor \(N, C, H, W\) with C = 1 or 3"):
        load_images(path)
    torch.save((torch.rand(5, 1, 4, 4) * 3, torch.arange(5)), path)
    with pytest.raises(ValueError, match="uint8 \\(0-255\\) or finite floats in \\[0, 1\\]"):
        load_images(path)
    with pytest.raises(ValueError, match="no such file or folder"):
        load_images(tmp_path / "missing.pt")


# --- whole builds ---------------------------------------------------------------------------------------


def test_rows_splits_and_augmented_copies(zoo: Path, digits: ImageSet) -> None:
    columns = _read(zoo)
    base = {split: set(c["image_index"][c["copy"] == 0].tolist()) for split, c in columns.items()}
    assert sorted(i for ids in base.values() for i in ids) == list(
        range(len(digits))
    )  # each image once in the base set
    train = columns["train"]
    assert sorted(train["image_index"][train["copy"] == 1].tolist()) == sorted(base["train"])  # copies of train images
    assert all((c["copy"] == 0).all() for split, c in columns.items() if split != "train")
    for c in columns.values():
        np.testing.assert_array_equal(c["label"], digits.labels[c["image_index"]].numpy())
    provenance = read_zoo_info(zoo).provenance
    assert provenance["variant"] == "nfn" and provenance["image_size"] == 8 and provenance["images"]["count"] == 20
    assert not (zoo.parent / "zoo.work").exists()


def test_rendered_sirens_reproduce_their_images(zoo: Path, digits: ImageSet) -> None:
    wsfeat, targets, batch = _features(zoo, "train")
    rendered = render(wsfeat, "nfn", size=8)  # (N, 1, 8, 8) in [-1, 1]
    images = digits.images[batch["image_index"]] * 2 - 1
    recomputed = psnr(rendered, images, "nfn")
    torch.testing.assert_close(recomputed, targets["psnr"], atol=1e-2, rtol=1e-3)
    assert recomputed.min() > 30  # dB: a close fit after 60 steps
    copies = torch.from_numpy(batch["copy"])
    assert not torch.equal(wsfeat.weights[1][copies == 0][0], wsfeat.weights[1][copies == 1][0])  # another init


def test_dwsnets_variant_renders_images_in_0_1(tmp_path: Path, digits: ImageSet) -> None:
    few = ImageSet(digits.images[:4], digits.labels[:4], "digits[:4]", digits.class_names)
    config = INRZooConfig(variant="dwsnets", steps=150, lr=3e-3, split_fractions=(1, 0, 0))
    out = build_inr_zoo(tmp_path / "zoo", config, few, progress=False)
    assert read_zoo_info(out).provenance["variant"] == "dwsnets" and list(read_zoo_info(out).splits) == ["train"]
    wsfeat, targets, batch = _features(out, "train")
    error = (render(wsfeat, "dwsnets", size=8) - few.images[batch["image_index"]]).abs()
    assert error.max() < 0.1 and targets["psnr"].min() > 25


def test_same_seed_same_zoo_and_resume_after_a_crash(zoo: Path, digits: ImageSet, tmp_path: Path, record_calls) -> None:
    record_calls(inr_zoo, "fit_chunk", crash_on=3)
    out = tmp_path / "zoo"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_inr_zoo(out, CONFIG, digits, progress=False)
    assert not out.exists() and len(list((tmp_path / "zoo.work").glob("chunk-*.pt"))) == 2

    calls = record_calls(inr_zoo, "fit_chunk")
    build_inr_zoo(out, CONFIG, digits, progress=False)
    num_chunks = -(-(len(digits) + sum(1 for c in _read(zoo)["train"]["copy"] if c == 1)) // CONFIG.chunk_size)
    assert len(calls) == num_chunks - 2
    first, resumed = _read(zoo), _read(out)
    for split in first:
        for name in ("w0", "b0", "w2", "b2", "psnr", "label", "image_index", "copy"):
            np.testing.assert_array_equal(first[split][name], resumed[split][name])


def test_another_seed_gives_other_sirens(zoo: Path, digits: ImageSet, tmp_path: Path) -> None:
    few = ImageSet(digits.images[:2], digits.labels[:2], "digits[:2]", digits.class_names)
    a = build_inr_zoo(tmp_path / "a", INRZooConfig(steps=0, seed=0, split_fractions=(1, 0, 0)), few, progress=False)
    b = build_inr_zoo(tmp_path / "b", INRZooConfig(steps=0, seed=1, split_fractions=(1, 0, 0)), few, progress=False)
    assert not np.array_equal(_read(a)["train"]["w1"], _read(b)["train"]["w1"])


def test_refuses_a_non_empty_output_unless_overwrite(tmp_path: Path, digits: ImageSet) -> None:
    few = ImageSet(digits.images[:2], digits.labels[:2], "digits[:2]", digits.class_names)
    config = INRZooConfig(steps=0, split_fractions=(1, 0, 0))
    out = build_inr_zoo(tmp_path / "zoo", config, few, progress=False)
    with pytest.raises(FileExistsError, match=r"not empty.*overwrite"):
        build_inr_zoo(out, config, few, progress=False)
    more = ImageSet(digits.images[:3], digits.labels[:3], "digits[:3]", digits.class_names)
    build_inr_zoo(out, config, more, overwrite=True, progress=False)
    assert read_zoo_info(out).splits == {"train": 3}


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown SIREN variant 'siren'"):
        INRZooConfig(variant="siren")
    with pytest.raises(ValueError, match="augmented_copies and steps must be >= 0"):
        INRZooConfig(augmented_copies=-1)


@pytest.mark.parametrize("variant", ["nfn", "dwsnets"])
def test_init_sirens_are_the_modules_own_initialization(variant: str) -> None:
    seeds = [3, 17, 3]
    stacked = init_sirens(variant, 3, seeds)
    before = torch.random.get_rng_state()
    for k, seed in enumerate(seeds):
        torch.manual_seed(seed)
        for got, want in zip(stacked, Siren(variant, out_features=3).state_dict().values(), strict=True):
            assert torch.equal(got[k], want)
    assert torch.equal(stacked[0][0], stacked[0][2])
    torch.random.set_rng_state(before)
