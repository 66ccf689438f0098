"""EditINRTask: learn a weight-space edit of SIRENs so that their images undergo an image edit.

For a batch of SIRENs the task renders the images they encode (all at once with
``torch.func``; :func:`nfn_lab.siren.render`), applies the image edit to get the target,
predicts an update ``delta = backbone(weights)``, renders ``weights + delta`` and
minimizes the pixel MSE. The weights must reach the task unnormalized (render needs the
real network); use the backbone's own ``normalize=True`` instead of the DataModule's.

Edits, on images in ``[0, 1]`` (single channel or RGB, ``(B, C, S, S)``):
``dilate``/``erode``: 3x3 grey-scale morphology (max/min filter); ``gradient``: dilate -
erode; ``contrast``: ``0.5 + 1.5 (x - 0.5)`` clipped to ``[0, 1]``; ``blur``: 5x5 Gaussian,
sigma 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanSquaredError, MetricCollection

from nfn_lab.siren import SirenVariant, render
from nfn_lab.tasks.base import BackboneFactory, BaseTask, Batch
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["EDITS", "EditINRTask", "apply_edit"]

Edit = Literal["dilate", "erode", "gradient", "contrast", "blur"]
EDITS: tuple[str, ...] = ("dilate", "erode", "gradient", "contrast", "blur")
_OUTPUT_RANGE = {"nfn": (-1.0, 1.0), "dwsnets": (0.0, 1.0)}  # image convention of each SIREN variant


def _gaussian_kernel(channels: int, size: int = 5, sigma: float = 1.0, like: Tensor | None = None) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    k2 = torch.outer(g, g) / g.sum() ** 2
    k2 = k2.to(like) if like is not None else k2.float()
    return k2.expand(channels, 1, size, size)


def apply_edit(images01: Tensor, edit: Edit) -> Tensor:
    """An image edit on ``(B, C, S, S)`` images in ``[0, 1]``."""
    if edit == "dilate":
        return F.max_pool2d(images01, 3, stride=1, padding=1)
    if edit == "erode":
        return -F.max_pool2d(-images01, 3, stride=1, padding=1)
    if edit == "gradient":
        return apply_edit(images01, "dilate") - apply_edit(images01, "erode")
    if edit == "contrast":
        return (0.5 + 1.5 * (images01 - 0.5)).clamp(0, 1)
    if edit == "blur":
        c = images01.shape[1]
        return F.conv2d(F.pad(images01, (2, 2, 2, 2), mode="replicate"), _gaussian_kernel(c, like=images01), groups=c)
    raise ValueError(f"unknown edit {edit!r}; use one of {EDITS}.")


class _ScaledMSE(MeanSquaredError):
    """MSE times a constant: the same error in another image convention."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def compute(self) -> Tensor:
        return super().compute() * self.scale


class EditINRTask(BaseTask):
    """Weight-space editing of SIRENs.

    Args:
        network_spec, backbone, lr, weight_decay, warmup_steps: see :class:`BaseTask`; the
            backbone maps weights to a same-shaped update (EquivariantNFN, NFT with an
            equivariant head, FlatMLP with ``out_features=None``).
        edit: the image edit to learn.
        variant: the SIREN variant of the zoo (``"nfn"``: images in [-1, 1]; ``"dwsnets"``: [0, 1]).
        image_size: side of the rendered images (28 for MNIST, 32 for CIFAR-10).
        num_logged_images: how many originals/targets/edits to save as an image grid per validation.

    Metrics: ``mse`` in the zoo's own convention, ``mse_pm1`` in [-1, 1] and ``mse_01`` in [0, 1].
    """

    monitor = "val/mse"
    metric_names = ("mse", "mse_pm1", "mse_01")
    mode = "min"

    def __init__(
        self,
        network_spec: NetworkSpec | None,
        backbone: BackboneFactory,
        edit: Edit = "dilate",
        variant: SirenVariant = "nfn",
        image_size: int = 28,
        num_logged_images: int = 8,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
    ) -> None:
        if edit not in EDITS:
            raise ValueError(f"unknown edit {edit!r}; use one of {EDITS}.")
        if variant not in _OUTPUT_RANGE:
            raise ValueError(f"unknown SIREN variant {variant!r}; use one of {sorted(_OUTPUT_RANGE)}.")
        self.edit, self.variant, self.image_size = edit, variant, image_size
        self.num_logged_images = num_logged_images
        super().__init__(network_spec, backbone, lr, weight_decay, warmup_steps)

    def configure_losses(self) -> None:
        self.criterion = torch.nn.MSELoss()

    def configure_metrics(self) -> None:
        lo, hi = _OUTPUT_RANGE[self.variant]
        width = hi - lo  # mse in [a, b] = mse in [0, 1] * (b - a)^2
        metrics = MetricCollection(
            {"mse": MeanSquaredError(), "mse_pm1": _ScaledMSE(4.0 / width**2), "mse_01": _ScaledMSE(1.0 / width**2)}
        )
        self.set_metrics(metrics)

    def _to01(self, images: Tensor) -> Tensor:
        lo, hi = _OUTPUT_RANGE[self.variant]
        return (images - lo) / (hi - lo)

    def _from01(self, images: Tensor) -> Tensor:
        lo, hi = _OUTPUT_RANGE[self.variant]
        return images * (hi - lo) + lo

    def edit_images(self, wsfeat: WeightSpaceFeatures) -> tuple[Tensor, Tensor, Tensor]:
        """``(original, target, edited)`` images ``(B, C, S, S)`` of a batch, in the zoo's convention."""
        with torch.no_grad():
            original = render(wsfeat, self.variant, self.image_size)
            target = self._from01(apply_edit(self._to01(original), self.edit))
        edited = render(wsfeat + self(wsfeat), self.variant, self.image_size)
        return original, target, edited

    def compute(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        _, target, edited = self.edit_images(batch[0])
        return self.criterion(edited, target), edited.detach().flatten(), target.flatten()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if batch_idx == 0 and self.num_logged_images > 0:
            log_dir = Path(self.trainer.log_dir or ".")  # every rank: log_dir is a collective call under DDP
            if self.trainer.is_global_zero:
                self._save_grid(batch[0], log_dir)

    def _save_grid(self, wsfeat: WeightSpaceFeatures, log_dir: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = min(self.num_logged_images, wsfeat.batch_size)
        with torch.no_grad():
            rows = [self._to01(t[:n]).clamp(0, 1).cpu() for t in self.edit_images(wsfeat.map(lambda x: x[:n]))]
        fig, axes = plt.subplots(3, n, figsize=(1.2 * n, 3.8), squeeze=False)
        for r, (name, images) in enumerate(zip(("original", "target", "edited"), rows)):
            for c in range(n):
                img = images[c].permute(1, 2, 0).squeeze(-1).numpy()
                axes[r][c].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
                axes[r][c].axis("off")
            axes[r][0].set_title(name, fontsize=8, loc="left")
        fig.tight_layout()
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / f"edits_epoch{self.current_epoch:03d}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        log_image = getattr(self.logger, "log_image", None)
        if callable(log_image):
            log_image(key="val/edits", images=[str(path)])
        return path
