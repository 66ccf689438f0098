"""The callback that streams a trial's validation metrics, and its switch in ``nfn-lab fit``."""

import json
from types import SimpleNamespace

import torch

from nfn_lab.sweeps.reporting import ValidationReport, callbacks_from_env
from nfn_lab.sweeps.trial import REPORT_ENV


def trainer(sanity_checking=False, **metrics):
    values = {k: torch.tensor(v) for k, v in metrics.items()}
    return SimpleNamespace(sanity_checking=sanity_checking, is_global_zero=True, callback_metrics=values)


def test_one_line_per_validation_run_without_sanity_checks(tmp_path):
    report = ValidationReport(tmp_path / "r.jsonl")
    report.on_validation_end(trainer(sanity_checking=True, **{"val/loss": 9.0}), None)
    report.on_validation_end(trainer(**{"val/loss": 0.5, "train/loss": float("nan")}), None)
    report.on_validation_end(trainer(**{"val/loss": 0.25, "val/vector": [1.0, 2.0]}), None)
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "metrics": {"val/loss": 0.5}}, {"step": 2, "metrics": {"val/loss": 0.25}}]


def test_switched_on_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(REPORT_ENV, raising=False)
    assert callbacks_from_env() == []
    monkeypatch.setenv(REPORT_ENV, str(tmp_path / "r.jsonl"))
    (callback,) = callbacks_from_env()
    assert isinstance(callback, ValidationReport) and callback.path == tmp_path / "r.jsonl"
