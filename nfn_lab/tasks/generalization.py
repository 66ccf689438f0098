"""PredictGeneralizationTask: predict a network's test accuracy (or any scalar) from its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MetricCollection
from torchmetrics.regression import KendallRankCorrCoef, R2Score

from nfn_lab.tasks.base import BackboneFactory, BaseTask, Batch
from nfn_lab.weightspace import NetworkSpec

__all__ = ["PredictGeneralizationTask"]


class PredictGeneralizationTask(BaseTask):
    """Regression of a scalar target; Kendall's tau, R^2 and L1 as metrics.

    Args:
        network_spec, backbone, lr, weight_decay, warmup_steps: see :class:`BaseTask`.
        target: the targets-dict key to predict (a zoo's metrics column, e.g. ``test_accuracy``).
        loss: ``"bce"`` on a sigmoid output in (0, 1) (the NFN paper, for accuracies) or ``"mse"``.

    The test epoch saves a predicted-vs-actual scatter plot (``scatter_test.png`` in the
    logger's folder) and logs it as an image where the logger supports one (W&B).
    """

    monitor = "val/kendall_tau"
    metric_names = ("kendall_tau", "r2", "l1")
    mode = "max"

    def __init__(
        self,
        network_spec: NetworkSpec | None,
        backbone: BackboneFactory,
        target: str = "test_accuracy",
        loss: Literal["bce", "mse"] = "bce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
    ) -> None:
        if loss not in ("bce", "mse"):
            raise ValueError(f"unknown loss {loss!r}; use 'bce' (sigmoid outputs in (0, 1)) or 'mse'.")
        self.target, self.loss_kind = target, loss
        super().__init__(network_spec, backbone, lr, weight_decay, warmup_steps)
        self._test_points: list[tuple[Tensor, Tensor]] = []

    def configure_losses(self) -> None:
        self.criterion = nn.BCELoss() if self.loss_kind == "bce" else nn.MSELoss()

    def configure_metrics(self) -> None:
        metrics = MetricCollection({"kendall_tau": KendallRankCorrCoef(), "r2": R2Score(), "l1": MeanAbsoluteError()})
        self.set_metrics(metrics)

    def compute(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        wsfeat, targets = batch
        y = self.select_target(targets, self.target).float()
        pred = self(wsfeat).view(-1).float()  # float32 also under bf16/fp16 autocast
        if self.loss_kind == "bce" and ((pred < 0) | (pred > 1)).any():
            raise ValueError(
                "loss='bce' needs outputs in [0, 1]: build the backbone with sigmoid=True or use loss='mse'."
            )
        # CUDA autocast refuses BCELoss (not autocast-safe): the loss runs outside it, in float32.
        with torch.autocast(device_type=pred.device.type, enabled=False):
            loss = self.criterion(pred, y)
        return loss, pred.detach(), y

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        preds, targets = self._eval_step(batch, "test")
        self._test_points.append((preds.cpu(), targets.cpu()))

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        log_dir = Path(self.trainer.log_dir or ".")  # every rank: log_dir is a collective call under DDP
        points = _gather_objects(self._test_points)
        if points and self.trainer.is_global_zero:
            preds, targets = (torch.cat(t) for t in zip(*points))
            self.scatter_path = self._save_scatter(preds, targets, log_dir)
        self._test_points = []

    def _save_scatter(self, preds: Tensor, targets: Tensor, log_dir: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        log_dir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(targets.numpy(), preds.numpy(), s=6, alpha=0.6)
        lo, hi = float(min(targets.min(), preds.min())), float(max(targets.max(), preds.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel(f"actual {self.target}")
        ax.set_ylabel(f"predicted {self.target}")
        ax.set_title(type(self.model).__name__)
        fig.tight_layout()
        path = log_dir / "scatter_test.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        log_image = getattr(self.logger, "log_image", None)
        if callable(log_image):
            log_image(key="test/scatter", images=[str(path)])
        return path


def _gather_objects(items: list) -> list:
    """Concatenates a per-rank list across DDP processes (shards may differ in length)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return items
    gathered: list[list] = [[] for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]
