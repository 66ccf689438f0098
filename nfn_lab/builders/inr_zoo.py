"""A zoo of SIRENs, one fit to each image, in either public INR zoo's variant.

Every image gets a SIREN ``2 -> 32 -> 32 -> C`` of :mod:`nfn_lab.siren`'s ``"nfn"`` or
``"dwsnets"`` variant (initialization, output offset and coordinate order as in that zoo),
fit by full-batch Adam on the mean squared error over all pixels for ``steps`` steps.
The images are those the SIREN reproduces when rendered with
``nfn_lab.siren.render(features, variant, size)``: in [-1, 1] for ``"nfn"`` and [0, 1]
for ``"dwsnets"``, as in those zoos.

Images come from scikit-learn's bundled 8x8 digits (default: no download), a folder with
one subfolder per label (PNG/JPG/..., read with Pillow), or a ``.pt`` file holding
``{"images": (N, C, H, W), "labels": (N,)}``. By default the SIRENs fit the images at
their own resolution: 8x8 for the digits, where every pixel is data (``size=28`` upsamples
them bilinearly to the MNIST zoos' grid, at a far higher cost and with no new detail).

The defaults (300 full-batch Adam steps, learning rate 1e-3) fit the 8x8 digits exactly
with the ``"nfn"`` variant (PSNR at its 120 dB cap); the ``"dwsnets"`` variant, whose first
layer starts at low frequencies, fits them less closely in as many steps (each row's ``psnr``
target records how closely).

Splits are by image (a seeded shuffle, 80/10/10 by default); as in the NFN zoos,
``augmented_copies`` extra SIRENs from other random initializations are fit to each
training image and go to the train split only. Each row's targets are the image's
``label`` and the fit's ``psnr`` (dB, on [0, 1] pixel scale, peak 1); its metadata are
``image_index`` (the image's position in the source) and ``copy`` (0 for the base set).

Fitting is vectorized: a chunk of SIRENs is one batch of stacked parameters, evaluated and
differentiated by hand-written batched matrix products (:class:`nfn_lab.siren.StackedSirenFit`,
equal to autograd through :func:`nfn_lab.siren.render` up to float rounding) and updated by
one Adam (which is elementwise, so each SIREN's update is exactly its own). Each SIREN's
initialization is drawn from a generator keyed by ``(seed, image_index, copy)`` and the fit
has no other randomness, so the same configuration gives the same zoo, resumed or not.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.arrow_zoo import ZooWriter
from nfn_lab.builders._provenance import summarize
from nfn_lab.builders._resumable import Advance, ChunkStore, FinishedChunks, derive_seed, run_chunks
from nfn_lab.conversion import network_spec_from_module
from nfn_lab.data.arrow_container import SPLITS
from nfn_lab.data.staging import check_destination
from nfn_lab.siren import Siren, SirenVariant, StackedSirenFit
from nfn_lab.weightspace import WeightSpaceFeatures

__all__ = ["TARGETS", "INRZooConfig", "ImageSet", "build_inr_zoo", "load_images", "psnr"]

TARGETS = ("label", "psnr")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_STREAM_INIT, _STREAM_SPLIT = range(2)


# --- images -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSet:
    """Images to fit: ``images: (N, C, S, S)`` float32 in [0, 1], ``labels: (N,)`` int64.

    Attributes:
        source: where they came from (``"digits"``, a folder or a file), for the provenance.
        class_names: per label, the name it had in the source (folder names; digits: ``"0"``-``"9"``).
    """

    images: Tensor
    labels: Tensor
    source: str
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """A hash of the pixels and labels: a resumed build must fit the same images."""
        digest = hashlib.sha1(self.images.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()


def _digits() -> ImageSet:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    return ImageSet(images, torch.as_tensor(y, dtype=torch.int64), "digits", tuple(str(i) for i in range(10)))


def _tensor_file(path: Path) -> ImageSet:
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # any unpickling/zip error: the file is not what we need
        raise ValueError(f"{path}: cannot read it as a tensor file ({type(err).__name__}: {err}).") from None
    if isinstance(data, dict) and {"images", "labels"} <= set(data):
        images, labels = data["images"], data["labels"]
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    else:
        raise ValueError(
            f"{path}: expected a dict {{'images': (N, C, H, W), 'labels': (N,)}} or a tuple (images, labels), "
            f"got {type(data).__name__}."
        )
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{path}: images must be a tensor (N, C, H, W) with C = 1 or 3, got {shape}.")
    if not isinstance(labels, Tensor) or labels.shape != images.shape[:1] or labels.is_floating_point():
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{path}: labels must be an integer tensor ({images.shape[0]},), one per image, got {shape}.")
    if images.dtype == torch.uint8:
        images = images.float() / 255
    elif not images.is_floating_point() or not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError(f"{path}: images must be uint8 (0-255) or finite floats in [0, 1].")
    names = tuple(str(int(v)) for v in labels.unique())
    return ImageSet(images.float().contiguous(), labels.long(), str(path), names)


def _image_folder(root: Path, size: int | None) -> ImageSet:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"reading the images in {root} needs Pillow: pip install pillow.") from None
    strays = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if strays or not folders:
        seen = f"images directly in it ({', '.join(strays[:3])}...)" if strays else "no subfolders"
        raise ValueError(
            f"{root}: expected one subfolder per label (e.g. {root}/3/img001.png), found {seen}; move each image "
            "into the folder named after its label."
        )
    numeric = all(p.name.isdigit() for p in folders)  # folders 0..9 keep their numbers as labels
    files: list[Path] = []
    labels: list[int] = []
    for index, folder in enumerate(sorted(folders, key=lambda p: int(p.name) if numeric else p.name)):
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}); remove the folder or add images.")
        files += found
        labels += [int(folder.name) if numeric else index] * len(found)
    pictures = []
    for file in files:
        try:
            with Image.open(file) as picture:
                picture.load()
        except OSError as err:
            raise ValueError(f"{file}: not a readable image ({err}).") from None
        pictures.append(picture)
    mode = "L" if all(p.mode in ("1", "L", "LA", "I", "I;16", "F") for p in pictures) else "RGB"
    sizes = {p.size for p in pictures}
    if size is None:
        if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
            raise ValueError(
                f"{root}: the images are not all square of one size (found {sorted(sizes)[:4]}); pass a size "
                "(--size S) to resize them to S x S."
            )
        size = next(iter(sizes))[0]
    arrays = []
    for picture in pictures:
        picture = picture.convert(mode)
        if picture.size != (size, size):
            picture = picture.resize((size, size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(picture, dtype=np.float32).reshape(size, size, -1) / 255)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, S, S)
    names = tuple(p.name for p in sorted(folders, key=lambda p: int(p.name) if numeric else p.name))
    return ImageSet(images, torch.tensor(labels, dtype=torch.int64), str(root), names)


def load_images(source: str | os.PathLike = "digits", size: int | None = None) -> ImageSet:
    """The images of an INR zoo (see the module docstring), resized to ``size x size`` if given.

    Args:
        source: ``"digits"``, a folder with one subfolder per label, or a ``.pt`` file.
        size: the side the SIRENs fit; None keeps the images' own (square) size.

    Raises:
        ValueError: naming the file or folder, for a missing source, unreadable images,
            images that are not in label subfolders, or tensors of the wrong shape/range.
        ImportError: reading a folder without Pillow installed.
    """
    if os.fspath(source) == "digits":
        images = _digits()
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            images = _image_folder(path, size)
        elif path.is_file():
            images = _tensor_file(path)
        else:
            raise ValueError(
                f"{path}: no such file or folder; --images takes 'digits', a folder of label subfolders, or a .pt file."
            )
    if images.images.shape[-1] != images.images.shape[-2]:
        raise ValueError(
            f"{images.source}: images must be square, got {tuple(images.images.shape[-2:])}; pass a size to resize "
            "them."
        )
    if size is not None and images.images.shape[-1] != size:
        resized = F.interpolate(images.images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        images = ImageSet(resized, images.labels, images.source, images.class_names)
    return images


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class INRZooConfig:
    """Everything that determines an INR zoo besides its images (see the module docstring).

    Args:
        variant: ``"nfn"`` or ``"dwsnets"`` (:mod:`nfn_lab.siren`).
        augmented_copies: extra SIRENs per training image, from other initializations.
        steps: full-batch Adam steps per SIREN.
        lr: Adam's learning rate.
        seed: the build seed.
        chunk_size: SIRENs fit together (and saved together for resuming).
        split_fractions: fractions of the images in the train/val/test splits.
    """

    variant: SirenVariant = "nfn"
    augmented_copies: int = 0
    steps: int = 300
    lr: float = 1e-3
    seed: int = 0
    chunk_size: int = 256
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        if self.variant not in ("nfn", "dwsnets"):
            raise ValueError(f"unknown SIREN variant {self.variant!r}; use 'nfn' or 'dwsnets'.")
        if self.augmented_copies < 0 or self.steps < 0 or self.chunk_size < 1 or self.lr <= 0:
            raise ValueError("augmented_copies and steps must be >= 0, chunk_size and lr positive.")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or sum(self.split_fractions) <= 0:
            raise ValueError(
                f"split_fractions needs three non-negative train/val/test fractions, got {self.split_fractions}."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split_images(num_images: int, config: INRZooConfig) -> dict[str, np.ndarray]:
    """Image indices per split: a seeded shuffle cut by ``config.split_fractions``, each sorted."""
    order = np.random.default_rng(derive_seed(config.seed, _STREAM_SPLIT)).permutation(num_images)
    fractions = np.asarray(config.split_fractions) / sum(config.split_fractions)
    cuts = np.round(np.cumsum(fractions) * num_images).astype(int)
    return {split: np.sort(part) for split, part in zip(SPLITS, np.split(order, cuts[:-1]))}


def _work_items(splits: dict[str, np.ndarray], num_images: int, copies: int) -> list[tuple[int, int]]:
    """``(image_index, copy)`` of every SIREN: the base set, then each copy of the training images."""
    return [(i, 0) for i in range(num_images)] + [(int(i), c) for c in range(1, copies + 1) for i in splits["train"]]


# --- fitting ----------------------------------------------------------------------------------------


def psnr(rendered: Tensor, target: Tensor, variant: SirenVariant) -> Tensor:
    """PSNR in dB per image ``(N,)`` of ``(N, C, S, S)`` renderings, on [0, 1] pixel scale (peak 1).

    An exact fit (mean squared error below 1e-12) counts as 120 dB.
    """
    scale = 2.0 if variant == "nfn" else 1.0  # "nfn" images span [-1, 1]
    mse = ((rendered - target) / scale).square().flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def _targets(images: Tensor, variant: SirenVariant) -> Tensor:
    """Pixels in [0, 1] -> what the variant's SIRENs output: [-1, 1] for ``"nfn"``, [0, 1] for ``"dwsnets"``."""
    return images * 2 - 1 if variant == "nfn" else images


def init_sirens(variant: SirenVariant, channels: int, seeds: Sequence[int]) -> list[Tensor]:
    """Stacked initial parameters ``W(1), b(1), W(2), ...`` each ``(N, ...)``, one SIREN per seed.

    Each SIREN is :class:`nfn_lab.siren.Siren`'s own initialization drawn with the global
    (CPU) generator seeded by its seed, inside ``torch.random.fork_rng`` (the caller's random
    state is left untouched): the draws of ``Siren(variant, out_features=channels)``, made by
    redrawing one module (:meth:`~nfn_lab.siren.Siren.redraw`) rather than building one per seed.
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        siren = Siren(variant, out_features=channels)
        arrays = list(siren.state_dict().values())  # the parameters, in the order of the state dict
        stacked = [torch.empty(len(seeds), *array.shape) for array in arrays]
        for k, seed in enumerate(seeds):
            torch.default_generator.manual_seed(seed)
            siren.redraw()
            for out, array in zip(stacked, arrays):
                out[k] = array
    return stacked


def _features(params: Sequence[Tensor]) -> WeightSpaceFeatures:
    """Stacked ``(N, ...)`` arrays ``W(1), b(1), ...`` -> features ``(N, 1, ...)``."""
    return WeightSpaceFeatures([w.unsqueeze(1) for w in params[0::2]], [b.unsqueeze(1) for b in params[1::2]])


def fit_chunk(
    items: Sequence[tuple[int, int]],
    images: ImageSet,
    config: INRZooConfig,
    device: torch.device,
    advance: Advance = lambda k: None,
) -> dict[str, Tensor]:
    """Fits one SIREN per ``(image_index, copy)`` item, all at once.

    Returns:
        ``image_index, copy, label: (N,)``, ``param.<j>: (N, *shape)`` (``W(1), b(1), ...``)
        and ``psnr: (N,)``.
    """
    index = torch.tensor([i for i, _ in items])
    channels = images.images.shape[1]
    target = _targets(images.images[index], config.variant).to(device)  # (N, C, S, S)
    seeds = [derive_seed(config.seed, _STREAM_INIT, i, c) for i, c in items]
    initial = [p.to(device) for p in init_sirens(config.variant, channels, seeds)]
    fit = StackedSirenFit.to_images(initial, target, config.variant, config.lr)
    report_every = max(1, config.steps // 20)
    for step in range(config.steps):
        fit.step()
        if (step + 1) % report_every == 0:
            advance(len(items) * report_every / config.steps)
    params = [p.clone() for p in fit.params]
    fitted = psnr(fit.render_images(), target, config.variant)
    out = {
        "image_index": index,
        "copy": torch.tensor([c for _, c in items]),
        "label": images.labels[index],
        "psnr": fitted.cpu(),
    }
    out.update({f"param.{j}": p for j, p in enumerate(params)})
    return out


# --- the builder --------------------------------------------------------------------------------------

_WRITE_GROUP = 1024  # SIRENs handed to the writer at a time


def _provenance(images: ImageSet, config: INRZooConfig, psnrs: Tensor, command: str) -> dict[str, Any]:
    size = images.images.shape[-1]
    return {
        "builder": "nfn_lab.builders.inr_zoo",
        "command": command,
        "seed": config.seed,
        "variant": config.variant,
        "image_size": size,
        "config": config.to_dict(),
        "images": {
            "source": images.source,
            "count": len(images),
            "channels": int(images.images.shape[1]),
            "class_names": list(images.class_names),
            "sha1": images.fingerprint(),
        },
        "siren": f"nfn_lab.siren.Siren({config.variant!r}, out_features={images.images.shape[1]}): 2 -> 32 -> 32 -> C; "
        f"render with nfn_lab.siren.render(features, {config.variant!r}, size={size})",
        "fitting": f"full-batch Adam (lr {config.lr:g}) for {config.steps} steps on the mean squared error over "
        f"all {size}x{size} pixels; images in {'[-1, 1]' if config.variant == 'nfn' else '[0, 1]'}",
        "psnr_db": summarize(psnrs.numpy(), [0, 20, 30, 40, 50, 60, 80, 100, 120]),  # psnr() caps at 120 dB
    }


def build_inr_zoo(
    out: str | Path,
    config: INRZooConfig = INRZooConfig(),
    images: str | os.PathLike | ImageSet = "digits",
    size: int | None = None,
    *,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Fits the SIRENs (resuming from ``<out>.work`` after an interruption) and writes the zoo.

    Args:
        out: the zoo folder to create (nfn-lab's Arrow format); one row per SIREN.
        config: how to fit.
        images: ``"digits"``, a folder, a ``.pt`` file (see :func:`load_images`) or an :class:`ImageSet`.
        size: resize the images to ``size x size`` first (None: keep their size).
        overwrite: replace an existing zoo at ``out`` (and discard a work folder of
            another configuration).
        device: where to fit, e.g. ``"cuda"``.
        progress: show a progress bar.
        command: recorded in the provenance (the CLI passes its command line).

    Returns:
        the zoo folder.

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is False (checked first).
        ValueError: unreadable images (see :func:`load_images`), or a work folder of
            another configuration.
    """
    out = Path(out).expanduser()
    check_destination(out, overwrite)
    image_set = images if isinstance(images, ImageSet) else load_images(images, size)
    splits = _split_images(len(image_set), config)
    items = _work_items(splits, len(image_set), config.augmented_copies)
    chunks = [list(range(s, min(s + config.chunk_size, len(items)))) for s in range(0, len(items), config.chunk_size)]
    build = {
        "builder": "inr_zoo",
        **config.to_dict(),
        "images_sha1": image_set.fingerprint(),
        "image_size": image_set.images.shape[-1],
    }
    store = ChunkStore(out, build, overwrite=overwrite)
    torch_device = torch.device(device)

    def compute(index: int, advance: Advance) -> dict[str, Tensor]:
        return fit_chunk([items[i] for i in chunks[index]], image_set, config, torch_device, advance)

    run_chunks(store, [len(c) for c in chunks], compute, desc=f"fitting SIRENs for {out.name}", progress=progress)

    finished = FinishedChunks(store, chunks)
    psnrs = finished.gather("psnr", range(len(items)))
    position = {item: k for k, item in enumerate(items)}
    command = command or f"nfn_lab.builders.build_inr_zoo({str(out)!r}, {config!r}, images={image_set.source!r})"
    spec = network_spec_from_module(Siren(config.variant, out_features=image_set.images.shape[1]))
    num_arrays = 2 * len(spec)
    with ZooWriter(
        out, spec, TARGETS, _provenance(image_set, config, psnrs, command), ("image_index", "copy"), overwrite=overwrite
    ) as writer:
        for split, image_ids in splits.items():
            copies = range(config.augmented_copies + 1) if split == "train" else range(1)
            rows = [position[(int(i), c)] for c in copies for i in image_ids]  # base set first, then each copy
            if not rows:
                continue
            for start in range(0, len(rows), _WRITE_GROUP):
                group = rows[start : start + _WRITE_GROUP]
                wsfeat = _features([finished.gather(f"param.{j}", group) for j in range(num_arrays)])
                targets = {name: finished.gather(name, group).float() for name in TARGETS}
                metadata = {key: finished.gather(key, group).tolist() for key in ("image_index", "copy")}
                writer.add(split, wsfeat, targets, metadata)
    del finished
    store.remove()
    return out
