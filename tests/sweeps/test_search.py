"""The Optuna side of a sweep: distributions, samplers, pruner, storage, study resumption, the objective."""

import math
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from nfn_lab.sweeps.search import (
    SweepObjective,
    finished_trials,
    make_pruner,
    make_sampler,
    open_storage,
    open_study,
    retry_failed,
    sample_configurations,
    suggest,
    trials_to_run,
)
from nfn_lab.sweeps.spec import load_sweep
from tests.sweeps.helpers import HIDDEN, LR, write_base, write_fake_sweep, write_sweep


@pytest.fixture
def base_config(tmp_path):
    return write_base(tmp_path)


@pytest.mark.parametrize(
    ("entry", "distribution", "value"),
    [
        ({"values": [1, "a", None]}, CategoricalDistribution([1, "a", None]), None),
        ({"values": [[16, 16], {"k": 1}]}, CategoricalDistribution(["[16, 16]", '{"k": 1}']), None),  # JSON text
        ({"min": 2, "max": 5}, IntDistribution(2, 5), None),
        ({"min": 0.5, "max": 1.5}, FloatDistribution(0.5, 1.5), None),
        (
            {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},
            FloatDistribution(0.0, 1.0, step=0.25),
            None,
        ),
        ({"distribution": "q_uniform", "min": 8, "max": 64, "q": 8}, IntDistribution(8, 64, step=8), None),
        ({"distribution": "log_uniform_values", "min": 1e-4, "max": 1.0}, FloatDistribution(1e-4, 1.0, log=True), None),
        (
            {"distribution": "log_uniform", "min": 0.0, "max": 2.0},  # exponents: the same distribution of values
            FloatDistribution(1.0, math.exp(2.0), log=True),
            None,
        ),
        ({"value": [1, 2]}, None, [1, 2]),  # fixed: not sampled
    ],
)
def test_each_distribution_maps_to_optuna(tmp_path, base_config, entry, distribution, value):
    spec = load_sweep(write_sweep(tmp_path, base_config, method="random", parameters={"a.b": entry}))
    trial = optuna.create_study().ask()
    drawn = suggest(trial, spec.parameters[0])
    if distribution is None:
        assert drawn == value and trial.distributions == {}
    else:
        assert trial.distributions == {"a.b": distribution} and distribution._contains(
            distribution.to_internal_repr(drawn)
        )


@pytest.mark.parametrize(
    ("method", "sampler"),
    [
        ("grid", optuna.samplers.GridSampler),
        ("random", optuna.samplers.RandomSampler),
        ("bayes", optuna.samplers.TPESampler),
    ],
)
def test_methods_map_to_samplers(tmp_path, base_config, method, sampler):
    spec = load_sweep(write_sweep(tmp_path, base_config, method=method))
    assert type(make_sampler(spec, seed=0)) is sampler
    assert isinstance(make_pruner(spec), optuna.pruners.NopPruner)


def test_hyperband_maps_to_optunas_pruner(tmp_path, base_config):
    entry = {"type": "hyperband", "min_iter": 2, "max_iter": 18, "eta": 3}
    pruner = make_pruner(load_sweep(write_sweep(tmp_path, base_config, early_terminate=entry)))
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (2, 18, 3)


def test_grid_visits_every_combination_once(tmp_path, base_config):
    spec = load_sweep(
        write_sweep(tmp_path, base_config, parameters={LR: {"values": [0.1, 0.01]}, HIDDEN: {"min": 1, "max": 3}})
    )
    points = sample_configurations(spec, trials_to_run(spec, 0, None), seed=0)
    assert len(points) == 6 and sorted((p[LR], p[HIDDEN]) for p in points) == [
        (lr, h) for lr in (0.01, 0.1) for h in (1, 2, 3)
    ]


def test_random_draws_follow_the_seed(tmp_path, base_config):
    parameters = {LR: {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}, HIDDEN: {"values": [8, 16]}}
    spec = load_sweep(write_sweep(tmp_path, base_config, method="random", parameters=parameters))
    first, again, other = (sample_configurations(spec, 5, seed) for seed in (3, 3, 4))
    assert first == again and first != other and all(1e-4 <= p[LR] <= 1e-1 for p in first)


def test_trials_to_run_counts_finished_trials(tmp_path, base_config):
    grid = load_sweep(write_sweep(tmp_path, base_config))  # 6 combinations
    assert trials_to_run(grid, 0, None) == 6 and trials_to_run(grid, 4, None) == 2 and trials_to_run(grid, 4, 1) == 1
    capped = load_sweep(write_sweep(tmp_path, base_config, method="random", run_cap=3))
    assert trials_to_run(capped, 0, 10) == 3 and trials_to_run(capped, 3, 10) == 0
    endless = load_sweep(write_sweep(tmp_path, base_config, method="bayes"))
    assert trials_to_run(endless, 7, 2) == 2
    with pytest.raises(ValueError, match="needs `run_cap` in the file or --count"):
        trials_to_run(endless, 0, None)


@pytest.mark.parametrize("location", [None, "study.db", "sqlite:///{tmp}/url.db", "other.log"])
def test_storages_keep_the_study(tmp_path, base_config, monkeypatch, location):
    monkeypatch.chdir(tmp_path)
    location = location and location.format(tmp=tmp_path)
    spec = load_sweep(write_sweep(tmp_path, base_config))
    study = open_study(spec, open_storage(location, tmp_path / "sw"))
    study.tell(study.ask(), 0.5)
    again = open_study(spec, open_storage(location, tmp_path / "sw"))  # a rerun, or another machine
    assert len(finished_trials(again)) == 1 and again.study_name == "sweep"
    changed = load_sweep(write_sweep(tmp_path, base_config, method="random"))
    with pytest.raises(ValueError, match="made from another version of"):
        open_study(changed, open_storage(location, tmp_path / "sw"))


def test_a_bad_storage_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="--storage nosuchdb://x cannot be opened") as info:
        open_storage("nosuchdb://x", tmp_path)
    assert "\n" not in str(info.value)


def test_failed_trials_are_queued_again_once(tmp_path, base_config):
    spec = load_sweep(write_sweep(tmp_path, base_config))
    study = open_study(spec, open_storage(None, tmp_path))
    trial = study.ask()
    params = {LR: suggest(trial, spec.parameters[0]), HIDDEN: suggest(trial, spec.parameters[1])}
    study.tell(trial, state=TrialState.FAIL)
    assert retry_failed(study) == 1 and retry_failed(study) == 0
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert queued.system_attrs["fixed_params"] == params and queued.user_attrs == {"retry_of": 0}


def test_objective_reports_each_epoch_and_stops_a_pruned_trial(tmp_path):
    spec = load_sweep(write_fake_sweep(tmp_path, fixed_args={"trainer.max_time": 60}))
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.5))
    objective = SweepObjective(spec, tmp_path / "sw")
    start = time.monotonic()
    study.enqueue_trial({LR: 0.2})  # val/loss 0.2, 0.4, 0.6: above 0.5 at epoch 3
    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED and trial.intermediate_values == {1: 0.2, 2: 0.4, 3: pytest.approx(0.6)}
    assert time.monotonic() - start < 30  # terminated, not left to sleep its 60 s
    assert trial.user_attrs["returncode"] != 0 and objective.failed == 0


def test_objective_value_is_the_best_epoch_and_failures_are_nan(tmp_path):
    spec = load_sweep(write_fake_sweep(tmp_path, parameters={LR: {"values": [0.1, 2.0]}}))
    study = optuna.create_study()
    objective = SweepObjective(spec, tmp_path / "sw")
    study.enqueue_trial({LR: 0.1})
    study.enqueue_trial({LR: 2.0})  # the fake run exits 3
    study.optimize(objective, n_trials=2)
    done, failed = study.trials
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx(0.1)  # min of 0.1, 0.2, 0.3
    assert done.user_attrs["overrides"] == {LR: 0.1} and "training" in (tmp_path / "sw/logs/trial-0000.log").read_text()
    assert failed.state == TrialState.FAIL and failed.user_attrs["returncode"] == 3 and objective.failed == 1
