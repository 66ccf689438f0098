"""The sweep file: what is accepted, how distributions are read, and one-line errors for the rest."""

import sys

import pytest

from nfn_lab.sweeps.spec import Hyperband, cli_value, load_sweep
from tests.sweeps.helpers import HIDDEN, LR, write_base, write_sweep


@pytest.fixture
def base_config(tmp_path):
    return write_base(tmp_path)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"method": "hyperband"}, "`method` must be one of grid, random, bayes"),
        ({"metric": None}, "needs `metric: {name"),
        ({"metric": {"name": "val/loss", "goal": "lower"}}, "metric.goal must be one of"),
        ({"metric": {"name": "val/acc", "goal": "maximize"}}, "'val/acc' is not a validation metric Predict"),
        ({"metric": {"name": "test/kendall_tau", "goal": "maximize"}}, "use one of val/kendall_tau, val/l1, val/loss"),
        ({"parameters": {LR: {"min": 0.1}}}, "neither `values`, `value` nor `min`/`max`"),
        ({"parameters": {LR: {"distribution": "uniform", "min": 0.1}}}, r"needs \['max'\]"),
        ({"parameters": {LR: {"distribution": "zipf", "min": 1, "max": 2}}}, "unknown distribution 'zipf'"),
        ({"parameters": {LR: {"distribution": "normal", "mu": 0, "sigma": 1}}}, "cannot be sampled .* use `uniform`"),
        ({"parameters": {LR: {"distribution": "q_log_uniform_values", "min": 8, "max": 64, "q": 8}}}, "not both"),
        ({"parameters": {LR: {"values": [1, 2], "probabilities": [0.5, 0.5]}}}, "`probabilities` has no counterpart"),
        ({"parameters": {LR: {"distribution": "uniform", "min": "1e-4", "max": 0.1}}}, "write 1.0e-4"),
        ({"parameters": {LR: {"distribution": "log_uniform_values", "min": 0.0, "max": 0.1}}}, "needs min > 0"),
        ({"parameters": {LR: {"distribution": "q_uniform", "min": 1.0, "max": 2.0, "q": 0.3}}}, "multiples of q"),
        ({"parameters": {LR: {"min": 0.5, "max": 0.1}}}, "min 0.5 is above max 0.1"),
        ({"parameters": {LR: {"values": []}}}, "non-empty list"),
        ({"parameters": {LR: {"distribution": "uniform", "min": 0.0, "max": 1.0, "values": [1]}}}, "also has"),
        ({"parameters": {LR: {"min": 0.001, "max": 0.1}}}, "grid search needs a finite set of values"),
        ({"parameters": {"model lr": {"values": [1]}}}, "not a dotted LightningCLI key"),
        ({"parameters": {"trainer.default_root_dir": {"values": ["a"]}}}, "set by the sweep"),
        ({"parameters": {}}, "at least one CLI key"),
        ({"early_terminate": {"type": "envelope"}}, "early_terminate must be `{type: hyperband"),
        ({"early_terminate": {"type": "hyperband", "min_iter": 2, "strict": True}}, r"has \['strict'\]"),
        ({"early_terminate": {"type": "hyperband", "eta": 3}}, "needs `min_iter`"),
        ({"early_terminate": {"type": "hyperband", "min_iter": 0}}, "min_iter must be a positive integer"),
        ({"base_config": "no/such/config.yaml"}, "base_config no/such/config.yaml not found"),
        ({"base_config": None}, "`base_config` is missing"),
        ({"fixed_args": {LR: 0.1}}, "both swept"),
        ({"fixed_args": {"run_name": "x"}}, "set by the sweep"),
        ({"fixed_args": {"model.class_path": "nfn_lab.tasks.NoSuchTask"}}, "cannot be imported"),
        ({"run_cap": 0}, "`run_cap` must be a positive integer"),
        ({"command": ["${interpreter}", "train.py"]}, r"must contain \$\{args\}"),
        ({"command": ["${interpreter}", "${args_json}"]}, "macros supported"),
        ({"early_stop": True}, r"unknown keys \['early_stop'\]"),
    ],
)
def test_invalid_sweep_files_are_rejected_in_one_line(tmp_path, base_config, entries, message):
    path = write_sweep(tmp_path, base_config, **entries)
    with pytest.raises(ValueError, match=message) as info:
        load_sweep(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_sweep(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("method: [grid\n")
    with pytest.raises(ValueError, match="not valid YAML") as info:
        load_sweep(tmp_path / "bad.yaml")
    assert "\n" not in str(info.value)


def test_parse_infers_distributions_as_wandb_does(tmp_path, base_config):
    parameters = {
        "a.b": {"values": [1, 2]},
        "a.c": {"value": "x"},
        "a.d": {"min": 1, "max": 4},
        "a.e": {"min": 0.5, "max": 1.0},
        "a.f": {"distribution": "q_uniform", "min": 8, "max": 256, "q": 8},
    }
    path = write_sweep(
        tmp_path, base_config, method="random", parameters=parameters, fixed_args={"trainer.max_epochs": 2}
    )
    spec = load_sweep(path)
    assert [(p.name, p.distribution) for p in spec.parameters] == [
        ("a.b", "categorical"), ("a.c", "constant"), ("a.d", "int_uniform"), ("a.e", "uniform"), ("a.f", "q_uniform"),
    ]  # fmt: skip
    assert spec.base_args() == [f"--config={base_config}", "--trainer.max_epochs=2"]
    assert spec.name == "sweep" and spec.hyperband is None


def test_metric_check_needs_a_known_task(tmp_path):
    untyped = write_base(tmp_path, trainer={"max_epochs": 1})  # no model in the base config: nothing to check
    metric = {"name": "val/anything", "goal": "maximize"}
    assert load_sweep(write_sweep(tmp_path, untyped, metric=metric)).metric == "val/anything"
    short = write_base(tmp_path, model={"class_path": "ClassifyINRTask"})  # resolved in nfn_lab.tasks
    with pytest.raises(ValueError, match="use one of val/accuracy, val/loss"):
        load_sweep(write_sweep(tmp_path, short, metric=metric))


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"type": "hyperband", "min_iter": 2}, Hyperband(2, None, 3)),
        ({"type": "hyperband", "min_iter": 1, "max_iter": 27, "eta": 3}, Hyperband(1, 27, 3)),
        ({"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3}, Hyperband(3, 27, 3)),  # W&B: 27 / 3^2
    ],
)
def test_hyperband_schedule(tmp_path, base_config, entry, expected):
    assert load_sweep(write_sweep(tmp_path, base_config, early_terminate=entry)).hyperband == expected


def test_trial_commands(tmp_path, base_config):
    spec = load_sweep(write_sweep(tmp_path, base_config, fixed_args={"trainer.max_epochs": 3}))
    assert spec.command_for({LR: 0.1, HIDDEN: "[8, 8]"}, "trial-0001", tmp_path / "runs", "--wandb=online") == [
        sys.executable, "-m", "nfn_lab", "fit", f"--config={base_config}", "--trainer.max_epochs=3", f"--{LR}=0.1",
        f"--{HIDDEN}=[8, 8]", "--run_name=trial-0001", f"--trainer.default_root_dir={tmp_path / 'runs'}",
        "--wandb=online",
    ]  # fmt: skip
    custom = load_sweep(write_sweep(tmp_path, base_config, program="train.py"))
    assert custom.command_for({LR: 0.1}, "t", tmp_path)[:3] == [sys.executable, "train.py", f"--config={base_config}"]


def test_wandb_config_folds_the_base_into_the_command(tmp_path, base_config):
    path = write_sweep(tmp_path, base_config, method="bayes", fixed_args={"trainer.max_epochs": 5}, run_cap=10)
    config = load_sweep(path).to_wandb()
    assert config["method"] == "bayes" and config["run_cap"] == 10
    assert "base_config" not in config and "fixed_args" not in config
    assert config["command"] == [
        "${env}", "${interpreter}", "-m", "nfn_lab", "fit", f"--config={base_config}", "--trainer.max_epochs=5",
        "--wandb=online", "${args}",
    ]  # fmt: skip


def test_values_reach_the_cli_as_yaml():
    import yaml

    assert cli_value(1e-05) == "1.0e-05" and yaml.safe_load(cli_value(1e-05)) == 1e-05  # YAML reads 1e-05 as a string
    assert cli_value(0.01) == "0.01" and cli_value(16) == "16" and cli_value(True) == "true"
    assert yaml.safe_load(cli_value([16, 16, 5])) == [16, 16, 5]
    assert cli_value("relu") == "relu" and cli_value(None) == "null"
