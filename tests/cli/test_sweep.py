"""``nfn-lab sweep``: options and errors, resuming a local sweep, a real 2-worker Optuna study, the shipped sweeps."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from nfn_lab.cli import sweep
from nfn_lab.sweeps.report import RESULTS_CSV
from nfn_lab.sweeps.search import DEFAULT_STORAGE, sample_configurations
from nfn_lab.sweeps.spec import cli_value, load_sweep
from tests.data.small_cnn_zoo.generate import generate
from tests.sweeps.helpers import LR, TASK, write_base, write_fake_sweep, write_sweep

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT_SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")


def load_study(sweep_dir: Path, name: str = "sweep") -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / DEFAULT_STORAGE))
    )
    return optuna.load_study(study_name=name, storage=storage)


def read_results(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / RESULTS_CSV, newline="") as f:
        return list(csv.DictReader(f))


def test_dry_run_prints_trials_or_the_wandb_config(tmp_path, capsys, monkeypatch):
    path = write_sweep(tmp_path, write_base(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert sweep.main([str(path), "--sweep-dir", str(tmp_path / "sw"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "backend local (WANDB_MODE=offline)" in out and out.count(" -m nfn_lab fit --config=") == 6
    assert not (tmp_path / "sw").exists()
    assert sweep.main([str(path), "--backend", "wandb", "--dry-run"]) == 0  # W&B's config, printed without a login
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed[printed.index("\n") + 1 :]) == load_sweep(path).to_wandb()


@pytest.mark.parametrize(
    ("args", "entries", "message"),
    [
        ([], {"method": "hyperopt"}, "`method` must be one of grid, random, bayes"),
        ([], {"parameters": {LR: {"distribution": "beta", "a": 1, "b": 2}}}, "'beta' cannot be sampled"),
        ([], {"metric": {"name": "val/accuracy", "goal": "maximize"}}, "use one of val/kendall_tau"),
        (
            [],
            {"method": "random", "parameters": {LR: {"min": 0.1, "max": 1.0}}},
            "needs `run_cap` in the file or --count",
        ),
        (["--backend", "wandb"], {}, "--backend wandb cannot sync"),
        (["--storage", "nosuchdb://x"], {}, "--storage nosuchdb://x cannot be opened"),
        (["--workers", "0"], {}, "--workers must be at least 1"),
    ],
)
def test_bad_input_is_one_line_before_any_trial(tmp_path, capsys, offline, args, entries, message):
    path = write_sweep(tmp_path, write_base(tmp_path, model=TASK), **entries)
    assert sweep.main([str(path), "--sweep-dir", str(tmp_path / "sw"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "sw" / "logs").exists()  # no trial started
    assert sweep.main([str(tmp_path / "missing.yaml")]) == 2 and "not found" in capsys.readouterr().err


def test_local_sweep_resumes_and_runs_failed_trials_again(tmp_path, capsys, offline):
    path = write_fake_sweep(tmp_path, parameters={LR: {"values": [0.1, 2.0, 0.3]}})  # 2.0 fails
    sw = str(tmp_path / "sw")
    assert sweep.main([str(path), "--sweep-dir", sw, "--workers", "2"]) == 1
    out = capsys.readouterr().out
    trials = load_study(tmp_path / "sw").trials
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE", "FAIL"] and "FAILED (exit 3)" in out
    rows = [(r["status"], r[LR], r["val/loss"]) for r in read_results(tmp_path / "sw")]
    assert rows == [("done", "0.1", "0.1"), ("done", "0.3", "0.3"), ("failed", "2.0", "")]

    assert sweep.main([str(path), "--sweep-dir", sw]) == 1  # the failed one runs again, the others do not
    assert "2 trials finished, 1 failed ones queued again; 1 to run now" in capsys.readouterr().out
    (failed,) = [t for t in trials if t.state.name == "FAIL"]
    retried = load_study(tmp_path / "sw").trials[-1]
    assert retried.params == {LR: 2.0} and retried.user_attrs["retry_of"] == failed.number


def test_an_interrupted_sweep_stops_its_trials(tmp_path, offline):
    path = write_fake_sweep(tmp_path, fixed_args={"trainer.max_time": 60})  # trials that would take a minute
    command = [
        sys.executable,
        "-m",
        "nfn_lab",
        "sweep",
        str(path),
        "--sweep-dir",
        str(tmp_path / "sw"),
        "--workers",
        "2",
    ]
    sweep_process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    logs = [tmp_path / "sw" / "logs" / f"trial-000{i}.jsonl" for i in (0, 1)]
    while not all(log.is_file() and log.read_text().count("\n") == 3 for log in logs):  # both trials mid-run
        assert sweep_process.poll() is None, sweep_process.communicate()
        time.sleep(0.2)
    sweep_process.send_signal(signal.SIGINT)  # to the sweep only, as `kill -INT` does: its trials must stop too
    out, err = sweep_process.communicate(timeout=30)
    assert sweep_process.returncode == 130 and "rerun the same command" in err and "Traceback" not in err
    assert out.count("interrupted after") == 2
    assert [t.state.name for t in load_study(tmp_path / "sw").trials] == ["FAIL", "FAIL"]


def test_count_limits_one_call_and_a_rerun_goes_on(tmp_path, capsys, offline):
    path = write_fake_sweep(tmp_path, parameters={LR: {"values": [0.1, 0.2, 0.3]}})
    sw = str(tmp_path / "sw")
    assert sweep.main([str(path), "--sweep-dir", sw, "--count", "2"]) == 0
    assert sweep.main([str(path), "--sweep-dir", sw, "--count", "2"]) == 0
    assert "2 trials finished, 0 failed ones queued again; 1 to run now" in capsys.readouterr().out
    assert sorted(t.params[LR] for t in load_study(tmp_path / "sw").trials) == [0.1, 0.2, 0.3]  # each once


def test_real_two_worker_bayes_study_with_pruning_resumes(tmp_path, capsys, monkeypatch, offline):
    """Two real ``nfn-lab fit`` trials at once on a tiny zoo, Hyperband fed each epoch; a rerun runs nothing."""
    generate(tmp_path / "zoo", num_networks=12)
    statnn = {"hidden": 8, "sigmoid": True}
    config = {
        "model": {
            **TASK,
            "init_args": {"backbone": {"class_path": "nfn_lab.models.StatNN", "init_args": statnn}},
        },
        "data": {
            "class_path": "datamodules.small_cnn_zoo.SmallCNNZooDataModule",
            "init_args": {"root": str(tmp_path / "zoo"), "batch_size": 4},
        },
        "trainer": {
            "accelerator": "cpu", "max_epochs": 3, "limit_train_batches": 1, "enable_progress_bar": False,
            "enable_model_summary": False, "enable_checkpointing": False,
        },
        "wandb": "disabled",
        "test_after_fit": False,
    }  # fmt: skip
    base = write_base(tmp_path, **config)
    path = write_sweep(
        tmp_path, base, method="bayes", run_cap=2, metric={"name": "val/loss", "goal": "minimize"},
        parameters={LR: {"distribution": "log_uniform_values", "min": 1.0e-4, "max": 1.0e-1}},
        early_terminate={"type": "hyperband", "min_iter": 1, "max_iter": 3, "eta": 2},
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert sweep.main([str(path), "--sweep-dir", "sw", "--workers", "2"]) == 0
    first, second = load_study(tmp_path / "sw").trials
    assert first.datetime_start < second.datetime_complete and second.datetime_start < first.datetime_complete
    for trial in (first, second):
        assert trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        assert list(trial.intermediate_values) == [1, 2, 3][: len(trial.intermediate_values)]  # one per epoch
        assert len(trial.intermediate_values) == 3 or trial.state == optuna.trial.TrialState.PRUNED
        run_dir = tmp_path / trial.user_attrs["run_dir"]
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_args"]["lr"] == trial.params[LR]
    rows = read_results(tmp_path / "sw")
    assert sorted(r["trial"] for r in rows) == ["trial-0000", "trial-0001"]
    capsys.readouterr()
    assert sweep.main([str(path), "--sweep-dir", "sw", "--workers", "2"]) == 0  # everything finished: nothing runs
    assert "0 to run now" in capsys.readouterr().out and len(load_study(tmp_path / "sw").trials) == 2


# --- the sweeps of experiments/sweeps ----------------------------------------------------------------


def test_experiments_ship_sweeps():
    assert len(EXPERIMENT_SWEEPS) >= 2


@pytest.mark.parametrize("path", EXPERIMENT_SWEEPS, ids=lambda p: p.name)
def test_experiment_sweep_keys_reach_the_cli(path, monkeypatch, capsys):
    """The file is valid and the real CLI parser puts a trial's values at the swept keys (no data needed)."""
    from nfn_lab.cli.train import run

    monkeypatch.chdir(REPO)  # base_config paths are relative to the repository root
    spec = load_sweep(path.relative_to(REPO))
    (overrides,) = sample_configurations(spec, 1, seed=0)
    monkeypatch.setattr(sys, "argv", ["nfn-lab"])
    command = spec.command_for(overrides, "trial-0000", Path("runs"))
    with pytest.raises(SystemExit) as exit_info:
        run([*command[command.index("fit") :], "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for key, value in overrides.items():
        node = printed
        for part in key.split("."):
            node = node[part]
        assert node == yaml.safe_load(cli_value(value)), key
