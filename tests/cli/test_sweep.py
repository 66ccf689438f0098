"""``nfn-lab sweep``: sweep files, search spaces, the resumable local runner, the W&B path (mocked), one real sweep."""

import csv
import math
import os
import statistics
import sys
import types
from pathlib import Path

import pytest
import yaml

from nfn_lab.cli import sweep
from nfn_lab.cli.sweep import choose_backend, grid_points, load_sweep, random_points
from nfn_lab.cli.sweep_runner import (
    Ledger,
    SubprocessTrial,
    best_metric,
    cli_args,
    cli_value,
    results_table,
    run_local,
    run_wandb,
    write_results,
)
from tests.data.small_cnn_zoo.generate import generate

LR, HIDDEN = "model.init_args.lr", "model.init_args.backbone.init_args.hidden"
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT_SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


@pytest.fixture
def base_config(tmp_path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text("trainer:\n  max_epochs: 1\n")
    return path


def write_sweep(tmp_path: Path, base: Path, /, **entries) -> Path:
    """A valid grid sweep over ``base``, with ``entries`` replacing or (as None) removing keys."""
    content = {
        "method": "grid",
        "metric": {"name": "val/kendall_tau", "goal": "maximize"},
        "base_config": str(base),
        "parameters": {LR: {"values": [0.1, 0.01]}, HIDDEN: {"values": [8, 16, 32]}},
        **entries,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in content.items() if v is not None}, sort_keys=False))
    return path


# --- the sweep file -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"method": "hyperband"}, "`method` must be one of"),
        ({"metric": None}, "needs `metric: {name"),
        ({"metric": {"name": "val/loss", "goal": "lower"}}, "metric.goal must be one of"),
        ({"parameters": {LR: {"min": 0.1}}}, "neither `values`, `value` nor `min`/`max`"),
        ({"parameters": {LR: {"distribution": "uniform", "min": 0.1}}}, r"needs \['max'\]"),
        ({"parameters": {LR: {"distribution": "zipf", "min": 1, "max": 2}}}, "unknown distribution 'zipf'"),
        ({"parameters": {LR: {"distribution": "uniform", "min": "1e-4", "max": 0.1}}}, "write 1.0e-4"),
        ({"parameters": {LR: {"distribution": "log_uniform_values", "min": 0.0, "max": 0.1}}}, "needs min > 0"),
        ({"parameters": {LR: {"min": 0.5, "max": 0.1}}}, "min 0.5 is above max 0.1"),
        ({"parameters": {LR: {"values": [1, 2], "probabilities": [0.5]}}}, "`probabilities` must be one"),
        ({"parameters": {LR: {"distribution": "uniform", "min": 0.0, "max": 1.0, "values": [1]}}}, "also has"),
        ({"parameters": {"model lr": {"values": [1]}}}, "not a dotted LightningCLI key"),
        ({"parameters": {"trainer.default_root_dir": {"values": ["a"]}}}, "set by the sweep"),
        ({"parameters": {}}, "at least one CLI key"),
        ({"base_config": "no/such/config.yaml"}, "base_config no/such/config.yaml not found"),
        ({"base_config": None}, "`base_config` is missing"),
        ({"fixed_args": {LR: 0.1}}, "both swept"),
        ({"fixed_args": {"run_name": "x"}}, "set by the sweep"),
        ({"run_cap": 0}, "`run_cap` must be a positive integer"),
        ({"command": ["${interpreter}", "train.py"]}, r"must contain \$\{args\}"),
        ({"command": ["${interpreter}", "${args_json}"]}, "macros supported"),
        ({"early_stop": True}, r"unknown keys \['early_stop'\]"),
    ],
)
def test_invalid_sweep_files_are_rejected_clearly(tmp_path, base_config, entries, message):
    path = write_sweep(tmp_path, base_config, **entries)
    with pytest.raises(ValueError, match=message) as info:
        load_sweep(path)
    assert str(path) in str(info.value)  # every error names the file


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_sweep(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("method: [grid\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_sweep(tmp_path / "bad.yaml")


def test_parse_infers_distributions_as_wandb_does(tmp_path, base_config):
    parameters = {
        "a.b": {"values": [1, 2]},
        "a.c": {"value": "x"},
        "a.d": {"min": 1, "max": 4},
        "a.e": {"min": 0.5, "max": 1.0},
        "a.f": {"distribution": "q_log_uniform_values", "min": 8, "max": 256, "q": 8},
    }
    spec = load_sweep(write_sweep(tmp_path, base_config, parameters=parameters, fixed_args={"trainer.max_epochs": 2}))
    assert [(p.name, p.distribution) for p in spec.parameters] == [
        ("a.b", "categorical"), ("a.c", "constant"), ("a.d", "int_uniform"), ("a.e", "uniform"),
        ("a.f", "q_log_uniform_values"),
    ]  # fmt: skip
    assert spec.base_args() == [f"--config={base_config}", "--trainer.max_epochs=2"]
    assert spec.name == "sweep"


# --- search spaces --------------------------------------------------------------------------------------


def test_grid_expands_every_combination_in_order_and_respects_run_cap(tmp_path, base_config):
    spec = load_sweep(write_sweep(tmp_path, base_config))
    points = grid_points(spec.parameters)
    assert points == [{LR: lr, HIDDEN: h} for lr in (0.1, 0.01) for h in (8, 16, 32)]
    capped = load_sweep(write_sweep(tmp_path, base_config, run_cap=4)).configurations()
    assert capped == points[:4]
    int_grid = load_sweep(write_sweep(tmp_path, base_config, parameters={HIDDEN: {"min": 2, "max": 4}}))
    assert int_grid.configurations() == [{HIDDEN: 2}, {HIDDEN: 3}, {HIDDEN: 4}]


def test_grid_refuses_continuous_distributions(tmp_path, base_config):
    spec = load_sweep(write_sweep(tmp_path, base_config, parameters={LR: {"min": 0.001, "max": 0.1}}))
    with pytest.raises(ValueError, match="grid search needs a finite set of values"):
        spec.configurations()


def test_random_search_is_deterministic_from_the_seed(tmp_path, base_config):
    parameters = {LR: {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}, HIDDEN: {"values": [8, 16]}}
    spec = load_sweep(write_sweep(tmp_path, base_config, method="random", parameters=parameters, run_cap=6))
    first, again, other = spec.configurations(seed=3), spec.configurations(seed=3), spec.configurations(seed=4)
    assert len(first) == 6 and first == again
    assert first != other
    with pytest.raises(ValueError, match="needs `run_cap`"):
        load_sweep(write_sweep(tmp_path, base_config, method="random", parameters=parameters)).configurations()


def draws(tmp_path, base_config, entry, n=2000):
    spec = load_sweep(write_sweep(tmp_path, base_config, method="random", parameters={"x.y": entry}))
    stream = random_points(spec.parameters, seed=0)
    return [next(stream)["x.y"] for _ in range(n)]


def test_random_distributions_stay_in_range(tmp_path, base_config):
    uniform = draws(tmp_path, base_config, {"distribution": "uniform", "min": -2.0, "max": 3.0})
    assert all(-2.0 <= v <= 3.0 for v in uniform) and max(uniform) - min(uniform) > 4.5
    ints = draws(tmp_path, base_config, {"min": 2, "max": 5})
    assert all(isinstance(v, int) for v in ints) and set(ints) == {2, 3, 4, 5}  # both bounds included
    quantized = draws(tmp_path, base_config, {"distribution": "q_uniform", "min": 0.0, "max": 10.0, "q": 2.5})
    assert set(quantized) <= {0.0, 2.5, 5.0, 7.5, 10.0} and len(set(quantized)) == 5
    exponents = draws(tmp_path, base_config, {"distribution": "log_uniform", "min": 0.0, "max": 2.0})
    assert all(1.0 <= v <= math.exp(2.0) for v in exponents)
    weighted = draws(tmp_path, base_config, {"values": ["a", "b", "c"], "probabilities": [0.2, 0.8, 0.0]})
    assert "c" not in weighted and 0.7 < weighted.count("b") / len(weighted) < 0.9


def test_log_uniform_values_is_uniform_in_log_space(tmp_path, base_config):
    values = draws(tmp_path, base_config, {"distribution": "log_uniform_values", "min": 1e-4, "max": 1.0})
    assert all(1e-4 <= v <= 1.0 for v in values)
    logs = [math.log10(v) for v in values]
    # uniform on [-4, 0] in log10: each decade holds about a quarter (a uniform in value would put ~90 % in the last)
    per_decade = [sum(-4 + k <= x < -3 + k for x in logs) / len(logs) for k in range(4)]
    assert all(0.2 < share < 0.3 for share in per_decade), per_decade
    assert abs(statistics.median(logs) + 2) < 0.15


def test_values_reach_the_cli_as_yaml():
    assert cli_value(1e-05) == "1.0e-05" and yaml.safe_load(cli_value(1e-05)) == 1e-05  # YAML reads 1e-05 as a string
    assert cli_value(0.01) == "0.01" and cli_value(16) == "16" and cli_value(True) == "true"
    assert yaml.safe_load(cli_value([16, 16, 5])) == [16, 16, 5]
    assert cli_value("relu") == "relu" and cli_value(None) == "null"


def test_trial_ids_and_commands(tmp_path, base_config):
    spec = load_sweep(write_sweep(tmp_path, base_config))
    a, b = spec.trial({LR: 0.1, HIDDEN: 8}, tmp_path / "runs"), spec.trial({HIDDEN: 8, LR: 0.1}, tmp_path / "runs")
    assert a.trial_id == b.trial_id  # a hash of the content, not of the order
    assert spec.trial({LR: 0.01, HIDDEN: 8}, tmp_path).trial_id != a.trial_id
    refixed = load_sweep(write_sweep(tmp_path, base_config, fixed_args={"trainer.max_epochs": 3}))
    assert refixed.trial({LR: 0.1, HIDDEN: 8}, tmp_path).trial_id != a.trial_id  # other shared args: another trial
    assert a.command == [
        sys.executable, "-m", "nfn_lab", "fit", f"--config={base_config}", f"--{LR}=0.1", f"--{HIDDEN}=8",
        f"--run_name={a.trial_id}", f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    custom = load_sweep(write_sweep(tmp_path, base_config, program="train.py"))
    assert custom.trial({LR: 0.1}, tmp_path).command[:3] == [sys.executable, "train.py", f"--config={base_config}"]


# --- the local runner: ledger, resumption, failures ------------------------------------------------


class StubTrials:
    """A trial function that records its calls, fails the given trials and interrupts after ``stop_after`` calls."""

    def __init__(self, fail=(), stop_after=None):
        self.calls, self.fail, self.stop_after = [], set(fail), stop_after

    def __call__(self, trial):
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(trial.overrides)
        failed = (trial.overrides[LR], trial.overrides[HIDDEN]) in self.fail
        return {
            "trial_id": trial.trial_id, "overrides": trial.overrides, "status": "failed" if failed else "done",
            "value": None if failed else trial.overrides[HIDDEN] * trial.overrides[LR], "metric": "val/kendall_tau",
            "returncode": 1 if failed else 0, "duration_s": 0.0, "log": "x.log",
        }  # fmt: skip


def test_interrupted_sweep_resumes_with_only_the_remaining_trials(tmp_path, base_config):
    spec = load_sweep(write_sweep(tmp_path, base_config))
    first = StubTrials(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_local(spec, tmp_path / "sw", first)
    assert len(Ledger(tmp_path / "sw" / "trials.jsonl").records()) == 2
    second = StubTrials()
    run_local(spec, tmp_path / "sw", second)
    everything = grid_points(spec.parameters)
    assert second.calls == everything[2:] and first.calls + second.calls == everything
    third = StubTrials()
    assert run_local(spec, tmp_path / "sw", third) == [] and third.calls == []


def test_count_limits_the_trials_of_one_call(tmp_path, base_config):
    spec = load_sweep(write_sweep(tmp_path, base_config))
    stub = StubTrials()
    run_local(spec, tmp_path / "sw", stub, count=4)
    run_local(spec, tmp_path / "sw", stub, count=4)
    assert stub.calls == grid_points(spec.parameters)  # 4, then the remaining 2


def test_random_sweep_with_count_only_continues_the_same_sequence(tmp_path, base_config):
    parameters = {LR: {"min": 0.001, "max": 0.1}, HIDDEN: {"min": 1, "max": 1000}}
    spec = load_sweep(write_sweep(tmp_path, base_config, method="random", parameters=parameters))
    stub = StubTrials()
    run_local(spec, tmp_path / "sw", stub, count=2, seed=7)
    run_local(spec, tmp_path / "sw", stub, count=3, seed=7)
    assert stub.calls == spec.configurations(seed=7, total=5)


def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, base_config):
    spec = load_sweep(write_sweep(tmp_path, base_config))
    stub = StubTrials(fail={(0.1, 16)})
    run_local(spec, tmp_path / "sw", stub)
    records = Ledger(tmp_path / "sw" / "trials.jsonl").records()
    assert len(stub.calls) == 6 and [r["status"] for r in records.values()].count("failed") == 1
    again = StubTrials()
    run_local(spec, tmp_path / "sw", again)
    assert again.calls == []  # failed trials are finished too...
    run_local(spec, tmp_path / "sw", again, retry_failed=True)
    assert again.calls == [{LR: 0.1, HIDDEN: 16}]  # ...unless asked to retry them
    assert all(r["status"] == "done" for r in Ledger(tmp_path / "sw" / "trials.jsonl").records().values())


def test_bayes_runs_as_random_locally_with_a_warning(tmp_path, base_config):
    spec = load_sweep(write_sweep(tmp_path, base_config, method="bayes", run_cap=3))
    stub = StubTrials()
    with pytest.warns(UserWarning, match="bayes search needs W&B"):
        run_local(spec, tmp_path / "sw", stub)
    assert stub.calls == load_sweep(write_sweep(tmp_path, base_config, method="random", run_cap=3)).configurations()


def test_ledger_keeps_every_record_and_names_a_corrupt_line(tmp_path):
    ledger = Ledger(tmp_path / "trials.jsonl")
    ledger.append({"trial_id": "a", "status": "failed"})
    ledger.append({"trial_id": "b", "status": "done"})
    ledger.append({"trial_id": "a", "status": "done"})
    assert {k: r["status"] for k, r in ledger.records().items()} == {"a": "done", "b": "done"}
    assert list(tmp_path.iterdir()) == [ledger.path]  # no temporary file left behind
    ledger.path.write_text(ledger.path.read_text() + '{"trial_id": "c", "sta\n')
    with pytest.raises(ValueError, match="line 4 is not JSON"):
        ledger.records()


# --- one trial in a subprocess, metrics and the results table ----------------------------------------

FAKE_RUN = """
import pathlib, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
run = pathlib.Path(args["trainer.default_root_dir"]) / args["run_name"] / "version_0"
run.mkdir(parents=True)
lr = float(args["model.init_args.lr"])
(run / "metrics.csv").write_text(f"epoch,step,train/loss,val/loss\\n0,1,{lr},\\n0,1,,{3 * lr}\\n1,3,,{2 * lr}\\n")
print("trained", flush=True)
sys.exit(0 if lr < 1 else 3)
"""


def test_subprocess_trial_reads_the_best_metric_and_records_failures(tmp_path, base_config):
    command = ["${interpreter}", "-c", FAKE_RUN, "${args}"]
    metric = {"name": "val/loss", "goal": "minimize"}
    spec = load_sweep(write_sweep(tmp_path, base_config, command=command, metric=metric))
    run_trial = SubprocessTrial(spec.metric, spec.goal, tmp_path / "logs")
    done = run_trial(spec.trial({LR: 0.5, HIDDEN: 8}, tmp_path / "runs"))
    assert done["status"] == "done" and done["value"] == pytest.approx(1.0)  # min of 1.5, 1.0
    assert done["run_dir"] == str(tmp_path / "runs" / done["trial_id"] / "version_0")
    assert "trained" in Path(done["log"]).read_text()
    failed = run_trial(spec.trial({LR: 2.0, HIDDEN: 8}, tmp_path / "runs"))
    assert failed["status"] == "failed" and failed["returncode"] == 3 and "trained" in failed["error"]


def test_best_metric_by_goal_and_missing_columns(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,val/acc,train/loss\n0,1,0.5,\n0,1,,0.3\n1,2,0.7,\n2,3,0.6,\n")
    assert best_metric(path, "val/acc", "maximize") == (0.7, None)
    assert best_metric(path, "val/acc", "minimize") == (0.5, None)
    value, why = best_metric(path, "val/kendall_tau", "maximize")
    assert value is None and "val/acc" in why  # lists the columns there are
    assert best_metric(tmp_path / "none.csv", "val/acc", "maximize")[0] is None


@pytest.mark.parametrize(
    ("goal", "order"), [("maximize", ["c", "a", "b", "d", "e"]), ("minimize", ["b", "a", "c", "d", "e"])]
)
def test_results_table_is_sorted_by_the_goal(tmp_path, goal, order):
    records = [
        {"trial_id": "a", "status": "done", "value": 0.5, "overrides": {LR: 0.1}},
        {"trial_id": "d", "status": "done", "value": None, "overrides": {LR: 0.2}},
        {"trial_id": "b", "status": "done", "value": 0.25, "overrides": {LR: 0.3}},
        {"trial_id": "e", "status": "failed", "value": None, "overrides": {LR: 0.4}},
        {"trial_id": "c", "status": "done", "value": 0.75, "overrides": {LR: 0.5}},
    ]
    rows = results_table(records, [LR], goal)
    assert [r["trial"] for r in rows] == order and [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    markdown = write_results(tmp_path, rows, "val/acc", [LR])
    assert markdown.splitlines()[0] == "| rank | trial | status | val/acc | lr |"
    assert [line.split(" | ")[1] for line in markdown.splitlines()[2:]] == order
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    by_id = {r["trial_id"]: r for r in records}
    assert [r["trial"] for r in table] == order and table[0][LR] == repr(by_id[order[0]]["overrides"][LR])
    assert (tmp_path / "results.md").read_text() == markdown


# --- backends -----------------------------------------------------------------------------------------


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
        self.tmp_path, self.configs, self.sweeps, self.agents = tmp_path, configs, [], []

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
                pass  # W&B marks the run failed and goes on
            finally:
                for name in ("WANDB_SWEEP_PARAM_PATH", "WANDB_RUN_ID", "WANDB_SWEEP_ID"):
                    os.environ.pop(name)


def test_online_path_translates_the_sweep_for_wandb(tmp_path, base_config, monkeypatch):
    path = write_sweep(tmp_path, base_config, method="bayes", fixed_args={"trainer.max_epochs": 5}, run_cap=10)
    spec = load_sweep(path)
    fake = FakeWandb(tmp_path, [{LR: 0.01, HIDDEN: 16}, {LR: 0.1, HIDDEN: 8}])
    monkeypatch.setitem(sys.modules, "wandb", fake)
    stub = StubTrials(fail={(0.1, 8)})
    seen = []
    run_wandb(spec, tmp_path / "sw", lambda trial: seen.append(trial) or stub(trial), count=2)

    (created,) = fake.sweeps
    assert created["project"] == "nfn-lab" and created["entity"] is None
    config = created["config"]
    assert config["method"] == "bayes" and config["metric"] == {"name": "val/kendall_tau", "goal": "maximize"}
    assert config["parameters"] == yaml.safe_load(path.read_text())["parameters"] and config["run_cap"] == 10
    assert "base_config" not in config and "fixed_args" not in config
    assert config["command"] == [
        "${env}", "${interpreter}", "-m", "nfn_lab", "fit", f"--config={base_config}", "--trainer.max_epochs=5",
        "--wandb=online", "${args}",
    ]  # fmt: skip
    assert fake.agents == [{"sweep_id": "sweep1", "project": "nfn-lab", "entity": None, "count": 2}]
    assert stub.calls == [{LR: 0.01, HIDDEN: 16}, {LR: 0.1, HIDDEN: 8}]
    assert all(t.command[-1] == "--wandb=online" for t in seen)
    statuses = [r["status"] for r in Ledger(tmp_path / "sw" / "trials.jsonl").records().values()]
    assert statuses == ["done", "failed"]

    run_wandb(spec, tmp_path / "sw", stub, count=1)  # a rerun joins the same sweep
    assert len(fake.sweeps) == 1 and fake.agents[-1]["sweep_id"] == "sweep1"


def test_main_dry_run_and_errors(tmp_path, base_config, capsys, monkeypatch, no_wandb_login):
    path = write_sweep(tmp_path, base_config)
    assert sweep.main([str(path), "--sweep-dir", str(tmp_path / "sw"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "backend local (no W&B API key" in out and out.count(" -m nfn_lab fit --config=") == 6
    assert not (tmp_path / "sw").exists()
    assert sweep.main([str(path), "--backend", "wandb", "--dry-run"]) == 0  # W&B's config, printed without a login
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed[printed.index("\n") + 1 :]) == load_sweep(path).to_wandb()
    assert sweep.main([str(path), "--backend", "wandb"]) == 2
    assert "cannot sync" in capsys.readouterr().err
    assert sweep.main([str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


# --- one real sweep ----------------------------------------------------------------------------------


@pytest.mark.slow  # two real training runs in subprocesses: about 30 s
def test_real_local_sweep_of_two_trials(tmp_path, monkeypatch, capsys, no_wandb_login):
    generate(tmp_path / "zoo", num_networks=24)
    config = {
        "model": {
            "class_path": "nfn_lab.tasks.PredictGeneralizationTask",
            "init_args": {
                "backbone": {"class_path": "nfn_lab.models.StatNN", "init_args": {"hidden": 16, "sigmoid": True}}
            },
        },
        "data": {
            "class_path": "datamodules.small_cnn_zoo.SmallCNNZooDataModule",
            "init_args": {"root": str(tmp_path / "zoo"), "batch_size": 4},
        },
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(config))
    fixed = {"wandb": "disabled", "trainer.max_epochs": 1, "trainer.limit_train_batches": 1}
    path = write_sweep(tmp_path, tmp_path / "base.yaml", parameters={LR: {"values": [0.01, 0.001]}}, fixed_args=fixed)
    monkeypatch.chdir(tmp_path)
    assert sweep.main([str(path), "--sweep-dir", "sw"]) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "sw" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["done", "done"] and {float(r[LR]) for r in rows} == {0.01, 0.001}
    values = [float(r["val/kendall_tau"]) for r in rows]
    assert values == sorted(values, reverse=True) and all(-1 <= v <= 1 for v in values)
    for row in rows:
        run_dir = tmp_path / row["run_dir"]
        assert (run_dir / "metrics.csv").is_file() and row["trial"] in out
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_args"]["lr"] == float(row[LR])
    assert sweep.main([str(path), "--sweep-dir", "sw"]) == 0  # everything recorded: nothing runs again
    assert "0 to run now" in capsys.readouterr().out


# --- the sweeps of experiments/sweeps ----------------------------------------------------------------


def test_experiments_ship_sweeps():
    assert len(EXPERIMENT_SWEEPS) >= 2


@pytest.mark.parametrize("path", EXPERIMENT_SWEEPS, ids=lambda p: p.name)
def test_experiment_sweep_keys_reach_the_cli(path, monkeypatch, capsys):
    """The file is valid and the real CLI parser puts a trial's values at the swept keys (no data needed)."""
    from nfn_lab.cli.train import run

    monkeypatch.chdir(REPO)  # base_config paths are relative to the repository root
    spec = load_sweep(path.relative_to(REPO))
    overrides = spec.configurations(seed=0)[-1]
    monkeypatch.setattr(sys, "argv", ["nfn-lab"])
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", *spec.base_args(), *cli_args(overrides), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for key, value in overrides.items():
        node = printed
        for part in key.split("."):
            node = node[part]
        assert node == value, key
