"""BaseTask: the LightningModule every nfn-lab problem subclasses.

A task owns a backbone built from the DataModule's ``network_spec`` (linked by the CLI),
its loss and its metrics; subclasses fill in the hooks :meth:`configure_losses`,
:meth:`configure_metrics` and :meth:`compute` and state their contract in the class
attributes ``monitor`` and ``mode`` (used for best-checkpoint selection) and ``metric_names``
(the metrics it logs, which ``nfn-lab sweep`` checks a sweep's metric against).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["BackboneFactory", "BaseTask"]

BackboneFactory = Callable[[NetworkSpec], nn.Module]
Batch = tuple[WeightSpaceFeatures, dict[str, Tensor]]


class BaseTask(L.LightningModule, ABC):
    """Shared training loop, optimizer and logging.

    Args:
        network_spec: the zoo's weight space (required; the CLI links it from ``data.network_spec``).
        backbone: builds the backbone from the spec, e.g. ``functools.partial(InvariantNFN,
            hidden_channels=[16, 16, 5])``; in YAML a ``class_path`` with ``init_args``.
        lr: learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up from 0 (0 disables it).
    """

    monitor: str = "val/loss"
    mode: str = "min"
    metric_names: tuple[str, ...] | None = None  # the names configure_metrics sets (None: not declared)

    def __init__(
        self,
        network_spec: NetworkSpec | None,
        backbone: BackboneFactory,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        if network_spec is None:
            raise ValueError(
                "a task needs the zoo's network_spec: pass datamodule.network_spec (the nfn-lab CLI links it "
                "from the data config automatically)."
            )
        self.save_hyperparameters(ignore=["backbone"])
        self.network_spec = network_spec
        self.backbone_factory = backbone
        self.model = backbone(network_spec)
        self.configure_losses()
        self.configure_metrics()
        # The loss as a weighted mean metric: exact under DDP even when shards differ in size.
        self.eval_losses = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})

    # --- hooks for subclasses -----------------------------------------------------------------------
    @abstractmethod
    def configure_losses(self) -> None:
        """Sets ``self.criterion``."""

    @abstractmethod
    def configure_metrics(self) -> None:
        """Sets the metrics, usually with :meth:`set_metrics`."""

    @abstractmethod
    def compute(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, predictions, targets)`` of a batch; metrics are updated with the last two."""

    # --- shared machinery -------------------------------------------------------------------------------
    @classmethod
    def validation_metrics(cls) -> tuple[str, ...] | None:
        """What the task logs each validation epoch (``val/loss``, ``val/<name>``), or None if undeclared."""
        if cls.metric_names is None:
            return None
        return ("val/loss", *(f"val/{name}" for name in cls.metric_names))

    def set_metrics(self, metrics: MetricCollection) -> None:
        """Uses ``metrics`` for validation and test, logged as ``val/<name>`` and ``test/<name>``."""
        if self.metric_names is not None and set(metrics.keys()) != set(self.metric_names):
            raise TypeError(f"set {type(self).__name__}.metric_names to {tuple(metrics)}, the metrics it logs.")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    @staticmethod
    def select_target(targets: dict[str, Tensor], name: str) -> Tensor:
        """``targets[name]`` flattened to ``(B,)``, or a KeyError listing what the zoo provides."""
        if name not in targets:
            raise KeyError(f"target {name!r} not in the batch; the zoo provides {sorted(targets)}.")
        return targets[name].view(-1)

    def forward(self, wsfeat: WeightSpaceFeatures) -> Any:
        return self.model(wsfeat)

    def setup(self, stage: str) -> None:
        """Hands the training split's weight statistics to a backbone built with ``normalize=True``."""
        set_stats = getattr(self.model, "set_input_stats", None)
        input_norm = getattr(self.model, "input_norm", None)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        compute_stats = getattr(datamodule, "compute_weight_stats", None)
        if set_stats is not None and input_norm is not None and not bool(input_norm.initialized) and compute_stats:
            set_stats(compute_stats())

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, _, _ = self.compute(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch[0].batch_size)
        return loss

    def _metrics(self, prefix: str) -> MetricCollection:
        return self.val_metrics if prefix == "val" else self.test_metrics

    def _eval_loss(self, prefix: str) -> MeanMetric:
        return cast(MeanMetric, self.eval_losses[prefix])

    def _eval_step(self, batch: Batch, prefix: str) -> tuple[Tensor, Tensor]:
        loss, preds, targets = self.compute(batch)
        self._metrics(prefix).update(preds, targets)
        self._eval_loss(prefix).update(loss.detach(), weight=batch[0].batch_size)
        return preds, targets

    def _log_eval_epoch(self, prefix: str) -> None:
        results = {f"{prefix}/loss": self._eval_loss(prefix).compute()}
        for name, metric in self._metrics(prefix).items(keep_base=False, copy_state=False):
            try:
                results[name] = metric.compute()
            except ValueError as err:  # e.g. R^2 of a one-network split
                rank_zero_warn(f"{name} not logged: {err}")
        self.log_dict(results, prog_bar=prefix == "val")
        self._reset_eval(prefix)

    def _reset_eval(self, prefix: str) -> None:
        self._metrics(prefix).reset()
        self._eval_loss(prefix).reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    # Metric states are re-created at the start of every evaluation: a validate() call runs
    # under inference mode, and its inference tensors could not be updated in fit's no-grad loop.
    def on_validation_epoch_start(self) -> None:
        self._reset_eval("val")

    def on_test_epoch_start(self) -> None:
        self._reset_eval("test")

    def on_validation_epoch_end(self) -> None:
        self._log_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval_epoch("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> Any:
        return self(batch[0])

    def configure_optimizers(self) -> Any:
        hparams = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hparams["lr"], weight_decay=hparams["weight_decay"])
        warmup = hparams["warmup_steps"]
        if warmup <= 0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
