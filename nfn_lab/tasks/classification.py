"""ClassifyINRTask: classify implicit neural representations (or any network) from their weights."""

from __future__ import annotations

from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from nfn_lab.tasks.base import BackboneFactory, BaseTask, Batch
from nfn_lab.weightspace import NetworkSpec

__all__ = ["ClassifyINRTask"]


class ClassifyINRTask(BaseTask):
    """Cross-entropy classification; accuracy as the metric.

    Args:
        network_spec, backbone, lr, weight_decay, warmup_steps: see :class:`BaseTask`
            (the backbone must output ``num_classes`` logits).
        num_classes: number of classes.
        target: the targets-dict key holding the integer label.
        label_smoothing: cross-entropy label smoothing.
    """

    monitor = "val/accuracy"
    metric_names = ("accuracy",)
    mode = "max"

    def __init__(
        self,
        network_spec: NetworkSpec | None,
        backbone: BackboneFactory,
        num_classes: int = 10,
        target: str = "label",
        label_smoothing: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
    ) -> None:
        self.num_classes, self.target, self.label_smoothing = num_classes, target, label_smoothing
        super().__init__(network_spec, backbone, lr, weight_decay, warmup_steps)

    def configure_losses(self) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)

    def configure_metrics(self) -> None:
        metrics = MetricCollection({"accuracy": MulticlassAccuracy(self.num_classes, average="micro")})
        self.set_metrics(metrics)

    def compute(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        wsfeat, targets = batch
        y = self.select_target(targets, self.target).long()
        logits = self(wsfeat)
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"the backbone outputs {logits.shape[-1]} logits but num_classes={self.num_classes}; "
                "set the backbone's out_features to num_classes."
            )
        return self.criterion(logits, y), logits.detach(), y
