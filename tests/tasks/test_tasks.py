"""The Lightning tasks train, evaluate, log their metrics and artifacts, on small in-memory zoos."""

import functools

import lightning as L
import pytest
import torch
from torch import nn

from nfn_lab.conversion import module_to_wsfeat
from nfn_lab.data import TensorZooDataModule
from nfn_lab.models import EquivariantNFN, FlatMLP, InvariantNFN, StatNN
from nfn_lab.siren import Siren
from nfn_lab.tasks import ClassifyINRTask, EditINRTask, PredictGeneralizationTask
from nfn_lab.tasks.editing import EDITS, apply_edit


def _trainer(tmp_path, **kwargs):
    defaults = dict(
        max_epochs=1,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(default_root_dir=tmp_path, **{**defaults, **kwargs})


@pytest.fixture
def mlp_zoo():
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)) for _ in range(40)]
    feats = module_to_wsfeat(models).detach()
    # A target the weights determine: the mean of the first layer's weights, squashed to (0, 1).
    y = torch.sigmoid(8 * feats.weights[0].mean(dim=(1, 2, 3)))
    labels = (feats.biases[1][:, 0, 0] > 0).long()
    return feats, {"test_accuracy": y, "label": labels}


@pytest.mark.parametrize(
    "backbone",
    [
        functools.partial(InvariantNFN, hidden_channels=(8, 8), head_hidden=32, sigmoid=True),
        functools.partial(StatNN, hidden=32, sigmoid=True),
    ],
)
def test_predict_generalization_learns_and_reports(tmp_path, mlp_zoo, backbone):
    feats, targets = mlp_zoo
    dm = TensorZooDataModule(feats, targets, split_sizes=(24, 7, 9), batch_size=8, root=tmp_path)
    task = PredictGeneralizationTask(dm.network_spec, backbone, lr=3e-3)
    trainer = _trainer(tmp_path, max_epochs=15)
    before = trainer.validate(task, datamodule=dm, verbose=False)[0]["val/loss"]
    trainer.fit(task, datamodule=dm)
    result = trainer.test(task, datamodule=dm, verbose=False)[0]
    assert set(result) >= {"test/kendall_tau", "test/r2", "test/l1", "test/loss"}
    after = trainer.validate(task, datamodule=dm, verbose=False)[0]["val/loss"]
    assert after < before
    assert task.scatter_path.exists()


def test_bce_needs_probabilities(tmp_path, mlp_zoo):
    feats, targets = mlp_zoo
    dm = TensorZooDataModule(feats, targets, split_sizes=(24, 7, 9), batch_size=8, root=tmp_path)
    task = PredictGeneralizationTask(dm.network_spec, functools.partial(StatNN, hidden=8, sigmoid=False))
    with torch.no_grad():
        task.model.head[-1].bias.fill_(5.0)  # outputs far outside [0, 1]
    with pytest.raises(ValueError, match="sigmoid=True"):
        _trainer(tmp_path, max_epochs=1).fit(task, datamodule=dm)


def test_unknown_target_lists_available(tmp_path, mlp_zoo):
    feats, targets = mlp_zoo
    dm = TensorZooDataModule(feats, targets, split_sizes=(24, 7, 9), batch_size=8, root=tmp_path)
    task = PredictGeneralizationTask(dm.network_spec, functools.partial(StatNN, hidden=8, sigmoid=True), target="acc")
    with pytest.raises(KeyError, match="label"):
        _trainer(tmp_path).fit(task, datamodule=dm)


def test_classify(tmp_path, mlp_zoo):
    feats, targets = mlp_zoo
    dm = TensorZooDataModule(feats, targets, split_sizes=(24, 7, 9), batch_size=8, root=tmp_path)
    backbone = functools.partial(InvariantNFN, hidden_channels=(8,), head_hidden=16, out_features=2, mode="NP")
    task = ClassifyINRTask(dm.network_spec, backbone, num_classes=2, lr=3e-3)
    trainer = _trainer(tmp_path, max_epochs=10)
    trainer.fit(task, datamodule=dm)
    acc = trainer.test(task, datamodule=dm, verbose=False)[0]["test/accuracy"]
    assert 0.0 <= acc <= 1.0
    wrong = ClassifyINRTask(dm.network_spec, backbone, num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        _trainer(tmp_path).fit(wrong, datamodule=dm)


def test_normalizing_backbone_gets_training_stats(tmp_path, mlp_zoo):
    feats, targets = mlp_zoo
    dm = TensorZooDataModule(feats, targets, split_sizes=(24, 7, 9), batch_size=8, root=tmp_path)
    task = PredictGeneralizationTask(dm.network_spec, functools.partial(StatNN, hidden=8, sigmoid=True, normalize=True))
    _trainer(tmp_path, max_epochs=1).fit(task, datamodule=dm)
    assert bool(task.model.input_norm.initialized)
    torch.testing.assert_close(task.model.input_norm.weight_mean[0], feats.weights[0][:24].mean().reshape(1))


@pytest.mark.parametrize("edit", EDITS)
def test_edits_on_known_images(edit):
    img = torch.zeros(1, 1, 7, 7)
    img[0, 0, 3, 3] = 1.0
    out = apply_edit(img, edit)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    expected_on = {"dilate": 9, "erode": 0, "gradient": 9}
    if edit in expected_on:
        assert int((out > 0.5).sum()) == expected_on[edit]
    if edit == "blur":
        assert out.sum().item() == pytest.approx(1.0, abs=1e-5) and out.max() < 0.5


def _siren_zoo(n: int):
    torch.manual_seed(0)
    return module_to_wsfeat(
        [Siren("nfn", out_features=1, hidden_features=8, hidden_layers=1) for _ in range(n)]
    ).detach()


@pytest.mark.parametrize(
    "backbone",
    [
        functools.partial(EquivariantNFN, hidden_channels=8, hidden_layers=2, input_encoding=None),
        functools.partial(FlatMLP, hidden=32, out_features=None),
    ],
)
def test_edit_inr_trains_and_saves_image_grid(tmp_path, backbone):
    feats = _siren_zoo(12)
    dm = TensorZooDataModule(feats, {"label": torch.zeros(12)}, split_sizes=(8, 4, 0), batch_size=4, root=tmp_path)
    task = EditINRTask(dm.network_spec, backbone, edit="dilate", image_size=8, num_logged_images=3, lr=1e-3)
    trainer = _trainer(tmp_path, max_epochs=2)
    trainer.fit(task, datamodule=dm)
    metrics = trainer.validate(task, datamodule=dm, verbose=False)[0]
    assert metrics["val/mse_pm1"] == pytest.approx(metrics["val/mse"], rel=1e-5)  # nfn SIRENs live in [-1, 1]
    assert metrics["val/mse_01"] == pytest.approx(metrics["val/mse"] / 4, rel=1e-5)
    assert list(tmp_path.rglob("edits_epoch*.png"))


def test_edit_task_rejects_unknown_edit(mlp_zoo):
    with pytest.raises(ValueError, match="unknown edit"):
        EditINRTask(None, functools.partial(StatNN), edit="sharpen")
