"""DDP on CPU (2 processes, gloo, forked: a spawned child can abort in gloo teardown at exit): training runs,
and evaluation metrics on an odd-sized split equal the single-process metrics exactly (no sample repeated or
dropped)."""

import functools

import lightning as L
import pytest
import torch
from torch import nn

from nfn_lab.conversion import module_to_wsfeat
from nfn_lab.data import TensorZooDataModule
from nfn_lab.models import InvariantNFN
from nfn_lab.tasks import PredictGeneralizationTask


def _setup(root):
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)) for _ in range(32)]
    feats = module_to_wsfeat(models).detach()
    y = torch.sigmoid(4 * feats.weights[0].mean(dim=(1, 2, 3)) + 0.1 * torch.randn(32))
    # 13 validation and 11 test networks: odd, so a padding sampler would repeat one.
    dm = TensorZooDataModule(feats, {"test_accuracy": y}, split_sizes=(8, 13, 11), batch_size=4, root=root)
    backbone = functools.partial(InvariantNFN, hidden_channels=(4,), head_hidden=8, sigmoid=True)
    torch.manual_seed(1)
    return dm, PredictGeneralizationTask(dm.network_spec, backbone)


def _trainer(root, **kwargs):
    defaults = dict(
        default_root_dir=root,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
    )
    return L.Trainer(**{**defaults, **kwargs})


def test_ddp_metrics_equal_single_process(tmp_path):
    dm, task = _setup(tmp_path)
    single_val = _trainer(tmp_path).validate(task, datamodule=dm, verbose=False)[0]
    single_test = _trainer(tmp_path).test(task, datamodule=dm, verbose=False)[0]
    ddp = dict(devices=2, strategy="ddp_fork")
    multi_val = _trainer(tmp_path, **ddp).validate(task, datamodule=dm, verbose=False)[0]
    multi_test = _trainer(tmp_path, **ddp).test(task, datamodule=dm, verbose=False)[0]
    for single, multi in ((single_val, multi_val), (single_test, multi_test)):
        assert single.keys() == multi.keys()
        for key in single:
            # Equal up to float32 summation order (a padding sampler shifts R^2 and tau by far more).
            assert multi[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key


def test_ddp_training_runs(tmp_path):
    dm, task = _setup(tmp_path)
    before = [p.detach().clone() for p in task.parameters()]
    _trainer(tmp_path, devices=2, strategy="ddp_fork", max_epochs=2).fit(task, datamodule=dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters()))
