"""`nfn-lab fit|validate|test` through LightningCLI: config links, saved configs, checkpoints, exact resume, loggers."""

from pathlib import Path

import pytest
import torch
import yaml

from nfn_lab.cli import main
from nfn_lab.cli.train import run
from nfn_lab.layers import IOSinusoidalEncoding
from nfn_lab.models.blocks import IOEncoding
from tests.data.small_cnn_zoo.generate import generate

CONFIG = """
seed_everything: 0
wandb: disabled
trainer:
  max_epochs: 2
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
model:
  class_path: nfn_lab.tasks.PredictGeneralizationTask
  init_args:
    lr: 3.0e-3
    backbone:
      class_path: nfn_lab.models.InvariantNFN
      init_args: {hidden_channels: [4, 4], head_hidden: 16, sigmoid: true}
data:
  class_path: datamodules.small_cnn_zoo.SmallCNNZooDataModule
  init_args: {root: ROOT, batch_size: 4}
"""


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    generate(root, num_networks=24)
    return root


@pytest.fixture
def config(tmp_path, zoo):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("ROOT", str(zoo)))
    return path


def _fit(config, root, *extra):
    return run(
        ["fit", "--config", str(config), "--trainer.default_root_dir", str(root), "--test_after_fit", "false", *extra]
    )


def test_fit_saves_config_and_checkpoints(config, tmp_path):
    cli = _fit(config, tmp_path / "runs", "--run_name", "hnp")
    log_dir = Path(cli.trainer.log_dir)
    assert log_dir.parent.name == "hnp"
    saved = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert saved["model"]["init_args"]["backbone"]["init_args"]["hidden_channels"] == [4, 4]
    ckpt = cli.trainer.checkpoint_callback
    assert Path(ckpt.best_model_path).name.startswith("best-") and Path(ckpt.last_model_path).name == "last.ckpt"
    assert ckpt.monitor == "val/kendall_tau" and ckpt.mode == "max"
    assert (log_dir / "metrics.csv").read_text().count("\n") > 1
    # The saved config reruns the experiment as it is.
    rerun = run(["validate", "--config", str(log_dir / "config.yaml"), "--ckpt_path", ckpt.last_model_path])
    assert "val/loss" in rerun.trainer.callback_metrics


def test_configured_callbacks_are_kept_beside_the_checkpoint(config, tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    cli = _fit(
        config,
        tmp_path / "runs",
        "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        "--trainer.callbacks.monitor=val/loss",
    )
    assert any(isinstance(c, EarlyStopping) and c.monitor == "val/loss" for c in cli.trainer.callbacks)
    assert any(isinstance(c, ModelCheckpoint) and c.monitor == "val/kendall_tau" for c in cli.trainer.callbacks)


def test_fit_tests_the_best_checkpoint(config, tmp_path):
    cli = _fit(config, tmp_path / "runs", "--test_after_fit", "true")
    assert {"test/kendall_tau", "test/r2", "test/l1", "test/loss"} <= set(cli.test_results[0])


def test_resume_continues_exactly(config, tmp_path):
    straight = _fit(config, tmp_path / "a")
    first = _fit(config, tmp_path / "b", "--trainer.max_epochs", "1")
    resumed = _fit(config, tmp_path / "c", "--ckpt_path", first.trainer.checkpoint_callback.last_model_path)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_entry_point_runs_test_command(config, tmp_path):
    assert main(["test", "--config", str(config), "--trainer.default_root_dir", str(tmp_path)]) == 0


def test_config_typo_is_reported(config, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _fit(config, tmp_path, "--model.init_args.lrr", "0.1")
    assert "lrr" in capsys.readouterr().err


def test_wandb_offline_logs_locally(config, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = _fit(config, tmp_path / "runs", "--wandb", "offline", "--trainer.max_epochs", "1")
    loggers = {type(lg).__name__ for lg in cli.trainer.loggers}
    assert loggers == {"CSVLogger", "WandbLogger"}
    assert list((tmp_path / "runs" / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize(
    "value, expected",
    [("true", IOEncoding()), ("{max_freq: 8, num_bands: 3, enc_layers: false}", IOEncoding(8, 3, False))],
)
def test_io_encoding_options_from_the_command_line(config, tmp_path, value, expected):
    cli = _fit(
        config,
        tmp_path / "runs",
        "--trainer.fast_dev_run",
        "true",
        "--model.init_args.backbone.init_args.mode",
        "NP",
        "--model.init_args.backbone.init_args.io_encoding",
        value,
    )
    (encoding,) = [m for m in cli.model.modules() if isinstance(m, IOSinusoidalEncoding)]
    assert (encoding.max_freq, encoding.num_bands, encoding.enc_layers) == (
        expected.max_freq,
        expected.num_bands,
        expected.enc_layers,
    )
