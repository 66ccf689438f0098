"""The W&B backend without the network: when it is chosen, and ``wandb.sweep``/``wandb.agent`` mocked."""

import os
import sys
import types

import pytest
import yaml

from nfn_lab.sweeps.online import choose_backend, run_wandb
from nfn_lab.sweeps.spec import load_sweep
from tests.sweeps.helpers import LR, write_fake_sweep


@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch):
    """No API key in the environment or netrc."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path / "netrc"


def test_backend_is_local_offline_or_without_an_api_key(monkeypatch, no_wandb_login):
    assert choose_backend("auto") == ("local", "no W&B API key: set WANDB_API_KEY or run `wandb login`")
    no_wandb_login.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert choose_backend("auto")[0] == "wandb"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert choose_backend("auto") == ("local", "WANDB_MODE=offline")
    with pytest.raises(ValueError, match="--backend wandb cannot sync: WANDB_MODE=offline"):
        choose_backend("wandb")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # the key is for another host
    assert choose_backend("auto")[0] == "local"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert choose_backend("auto")[0] == "wandb" and choose_backend("local")[0] == "local"


class FakeWandb(types.ModuleType):
    """``wandb.sweep``/``wandb.agent`` without the network: the agent hands out ``configs`` as W&B's does."""

    def __init__(self, tmp_path, configs):
        super().__init__("wandb")
        self.tmp_path, self.configs, self.sweeps, self.agents, self.failed = tmp_path, configs, [], [], []

    def sweep(self, config, project=None, entity=None):
        self.sweeps.append({"config": config, "project": project, "entity": entity})
        return f"sweep{len(self.sweeps)}"

    def agent(self, sweep_id, function=None, entity=None, project=None, count=None):
        self.agents.append({"sweep_id": sweep_id, "project": project, "entity": entity, "count": count})
        for i, config in enumerate(self.configs[:count]):
            path = self.tmp_path / f"config-{i}.yaml"
            path.write_text(yaml.safe_dump({"wandb_version": 1, **{k: {"value": v} for k, v in config.items()}}))
            os.environ.update(WANDB_SWEEP_PARAM_PATH=str(path), WANDB_RUN_ID=f"run{i}", WANDB_SWEEP_ID=sweep_id)
            try:
                function()
            except RuntimeError:
                self.failed.append(f"run{i}")  # W&B marks the run failed and goes on
            finally:
                for name in ("WANDB_SWEEP_PARAM_PATH", "WANDB_RUN_ID", "WANDB_SWEEP_ID"):
                    os.environ.pop(name)


def test_agent_runs_the_trials_wandb_picks(tmp_path, monkeypatch):
    spec = load_sweep(write_fake_sweep(tmp_path, method="bayes", run_cap=10, parameters={LR: {"values": [0.1, 2.0]}}))
    fake = FakeWandb(tmp_path, [{LR: 0.1}, {LR: 2.0}])
    monkeypatch.setitem(sys.modules, "wandb", fake)
    records = run_wandb(spec, tmp_path / "sw", count=2)

    (created,) = fake.sweeps
    assert created["project"] == "nfn-lab" and created["config"] == spec.to_wandb()
    assert fake.agents == [{"sweep_id": "sweep1", "project": "nfn-lab", "entity": None, "count": 2}]
    assert [(r["trial"], r["status"], r["value"]) for r in records] == [
        ("trial-run0", "done", pytest.approx(0.1)),
        ("trial-run1", "failed", None),
    ]
    assert fake.failed == ["run1"]
    log = (tmp_path / "sw" / "logs" / "trial-run0.log").read_text()
    assert f"--run_name=trial-run0 --trainer.default_root_dir={tmp_path / 'sw' / 'runs'} --wandb=online" in log

    run_wandb(spec, tmp_path / "sw", count=1)  # a rerun joins the same sweep
    assert len(fake.sweeps) == 1 and fake.agents[-1]["sweep_id"] == "sweep1"
