"""``nfn-lab fit|validate|test|predict``: LightningCLI over any task and any zoo.

The config is the constructor: ``model`` is any :class:`~nfn_lab.tasks.BaseTask` subclass
and ``data`` any :class:`~nfn_lab.data.ZooDataModule` subclass, named by class path (a
class in your own package works the same way), with the task's backbone a class path
too. The DataModule's ``network_spec`` is linked into the task. Every run gets:

- its resolved config saved beside its logs (``config.yaml``), so it can be rerun from its folder;
- a best checkpoint (by the task's ``monitor``/``mode``) and ``last.ckpt``;
- CSV logs, and W&B logs through Lightning's WandbLogger, offline by default
  (``--wandb online`` to sync, ``--wandb disabled`` to skip): nothing waits on the network;
- a fixed seed (``--seed_everything``, default 0); ``--ckpt_path`` resumes a fit exactly;
- after ``fit``, a test of the best checkpoint (``--test_after_fit false`` to skip);
- inside an ``nfn-lab sweep`` trial, its validation metrics streamed to the sweep each epoch
  (:mod:`nfn_lab.sweeps.reporting`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger

from nfn_lab.data.zoo import ZooDataModule
from nfn_lab.sweeps.reporting import callbacks_from_env
from nfn_lab.tasks.base import BaseTask

__all__ = ["NFNLabCLI", "run"]

WANDB_MODES = ("offline", "online", "disabled")


def default_loggers(save_dir: str, name: str, wandb_mode: str) -> list[Logger]:
    """CSV always; W&B unless disabled (offline unless asked to sync)."""
    loggers: list[Logger] = [CSVLogger(save_dir=save_dir, name=name)]
    if wandb_mode != "disabled":
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(save_dir=save_dir, project="nfn-lab", name=name, offline=wandb_mode == "offline"))
    return loggers


class NFNLabCLI(LightningCLI):
    """LightningCLI with nfn-lab's links, loggers and checkpoints (see the module docstring)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.network_spec", "model.init_args.network_spec", apply_on="instantiate")
        parser.add_argument(
            "--wandb",
            choices=WANDB_MODES,
            default="offline",
            help="W&B logging: offline (default), online or disabled.",
        )
        parser.add_argument("--run_name", type=str, default=None, help="Run folder name (default: the task's class).")
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="After fit, test the best checkpoint (default: true)."
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer_config = config["trainer"]
        name = config.get("run_name") or type(self.model).__name__
        if trainer_config.get("logger") in (None, True):
            kwargs["logger"] = default_loggers(trainer_config.get("default_root_dir") or "runs", name, config["wandb"])
        ours: list[Callback] = callbacks_from_env()  # inside a sweep trial
        if trainer_config.get("enable_checkpointing", True) is not False:
            ours.append(
                ModelCheckpoint(
                    monitor=self.model.monitor, mode=self.model.mode, save_last=True, filename="best-{epoch:03d}"
                )
            )
        if ours:  # kwargs["callbacks"] replaces trainer.callbacks of the config: keep those first
            configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
            kwargs["callbacks"] = [*(configured if isinstance(configured, list) else [configured]), *ours]
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """Tests the best checkpoint, so one command gives a result; stored in ``test_results``."""
        config = self.config[self.subcommand]
        fast_dev_run = getattr(self.trainer, "fast_dev_run", False)  # set by Trainer.__init__, not declared
        if config["test_after_fit"] and not fast_dev_run and self.datamodule is not None:
            callback = self.trainer.checkpoint_callback
            best = callback.best_model_path if isinstance(callback, ModelCheckpoint) else ""
            ckpt = best or None  # None: the final weights
            self.test_results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def run(args: Sequence[str] | None = None) -> NFNLabCLI:
    """Runs the CLI on ``args`` (default: ``sys.argv[1:]``), e.g. ``["fit", "--config", "x.yaml"]``."""
    return NFNLabCLI(
        BaseTask,
        ZooDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults={"default_root_dir": "runs"},
        save_config_kwargs={"overwrite": False},
        args=list(args) if args is not None else None,
    )
