"""The per-epoch metric stream a sweep reads from its running trials.

When ``$NFN_LAB_SWEEP_REPORT`` names a file, ``nfn-lab fit`` adds :class:`ValidationReport`,
which appends one JSON line per validation run (sanity checks excluded)::

    {"step": 1, "metrics": {"val/loss": 0.12, "val/kendall_tau": 0.41, ...}}

``step`` counts validation runs from 1 (one per epoch unless ``val_check_interval`` says
otherwise): the resource Optuna's HyperbandPruner counts. Each line is written with one
``write`` and flushed, so a reader that takes only complete lines never sees half a record.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from nfn_lab.sweeps.trial import REPORT_ENV

__all__ = ["ValidationReport", "callbacks_from_env"]


class ValidationReport(Callback):
    """Appends the scalar metrics of every validation run to ``path`` as a JSON line.

    Args:
        path: the JSON-lines file (appended to; created if missing).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.step = 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # on_validation_end runs after the epoch's logged values reach callback_metrics (the
        # callbacks' on_validation_epoch_end runs before the module's, which logs them).
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self.step += 1
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": self.step, "metrics": metrics}) + "\n")
            f.flush()


def callbacks_from_env() -> list[Callback]:
    """``[ValidationReport($NFN_LAB_SWEEP_REPORT)]`` inside a sweep trial, else ``[]``."""
    path = os.environ.get(REPORT_ENV)
    return [ValidationReport(path)] if path else []
