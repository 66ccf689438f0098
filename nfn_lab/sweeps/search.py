"""The local search: the sweep file's method, distributions and early termination as an Optuna study.

========================  =========================================================
W&B sweep file            Optuna
========================  =========================================================
``method: grid``          :class:`~optuna.samplers.GridSampler` (every combination once)
``method: random``        :class:`~optuna.samplers.RandomSampler`
``method: bayes``         :class:`~optuna.samplers.TPESampler` (``constant_liar``, for parallel workers)
``values``                ``suggest_categorical`` (lists and mappings as their JSON text)
``value``                 fixed: passed to every trial, not sampled
``int_uniform``           ``suggest_int(min, max)``
``uniform``, ``q_uniform``  ``suggest_float(min, max[, step=q])`` (int when min, max and q are)
``log_uniform_values``    ``suggest_float(min, max, log=True)``
``log_uniform``           ``suggest_float(e^min, e^max, log=True)`` (the same distribution)
``early_terminate``       :class:`~optuna.pruners.HyperbandPruner` (min_iter, max_iter, eta), fed
                          with the metric of every validation epoch
========================  =========================================================

The study lives in a storage (:func:`open_storage`): by default a journal file in the sweep
folder, so rerunning the command resumes the study (finished trials are not rerun; trials
that failed or were cut short by an interruption run again); an SQLite file or an RDB URL
lets several machines run trials of one study. ``run_cap`` and ``--count`` count finished
(complete or pruned) trials.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from nfn_lab.sweeps.spec import Parameter, SweepSpec, best_value
from nfn_lab.sweeps.trial import latest_version, run_trial

__all__ = [
    "SweepObjective",
    "finished_trials",
    "grid_space",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "open_study",
    "retry_failed",
    "sample_configurations",
    "suggest",
    "trials_to_run",
]

DEFAULT_STORAGE = "study.journal"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _choice(value: Any) -> Any:
    """A categorical value as Optuna stores it: None, bool, int, float and str as they are, the rest as JSON."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def _is_int(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def suggest(trial: optuna.Trial, parameter: Parameter) -> Any:
    """The trial's value of ``parameter``, drawn by the study's sampler (see the module's table)."""
    name, entry, kind = parameter.name, parameter.spec, parameter.distribution
    if kind == "constant":
        return entry["value"]
    if kind == "categorical":
        return trial.suggest_categorical(name, [_choice(v) for v in entry["values"]])
    if kind == "int_uniform":
        return trial.suggest_int(name, entry["min"], entry["max"])
    if kind == "q_uniform" and _is_int(entry["min"], entry["max"], entry["q"]):
        return trial.suggest_int(name, entry["min"], entry["max"], step=entry["q"])
    if kind == "q_uniform":
        return trial.suggest_float(name, entry["min"], entry["max"], step=entry["q"])
    if kind == "uniform":
        return trial.suggest_float(name, entry["min"], entry["max"])
    if kind == "log_uniform":  # min/max are natural-log exponents
        return trial.suggest_float(name, math.exp(entry["min"]), math.exp(entry["max"]), log=True)
    return trial.suggest_float(name, entry["min"], entry["max"], log=True)  # log_uniform_values


def _overrides(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    return {p.name: suggest(trial, p) for p in spec.parameters}


def grid_space(spec: SweepSpec) -> dict[str, list[Any]]:
    """The grid of a ``method: grid`` sweep: each sampled parameter's values (constants are not sampled)."""
    space = {}
    for p in spec.parameters:
        if p.distribution == "categorical":
            space[p.name] = [_choice(v) for v in p.spec["values"]]
        elif p.distribution == "int_uniform":
            space[p.name] = list(range(p.spec["min"], p.spec["max"] + 1))
    return space


def make_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of ``spec.method``, seeded (grid order is shuffled by the seed too)."""
    if spec.method == "grid":
        return optuna.samplers.GridSampler(grid_space(spec), seed=seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """HyperbandPruner for ``early_terminate`` (resources are validation epochs), else no pruning."""
    if spec.hyperband is None:
        return optuna.pruners.NopPruner()
    hb = spec.hyperband
    return optuna.pruners.HyperbandPruner(
        min_resource=hb.min_iter, max_resource=hb.max_iter or "auto", reduction_factor=hb.eta
    )


def open_storage(location: str | None, sweep_dir: Path) -> BaseStorage:
    """The study's storage: a journal file in ``sweep_dir`` by default.

    Args:
        location: ``None``; an RDB URL (``sqlite:///x.db``, ``postgresql://user@host/db``, ...);
            an SQLite file path (``*.db``, ``*.sqlite``, ``*.sqlite3``); or any other path, a
            journal file (safe to share between processes and, on a file system with working
            locks, machines).

    Raises:
        ValueError: the storage cannot be opened (one line with the fix).
    """
    if location is None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        location = str(sweep_dir / DEFAULT_STORAGE)
    try:
        if "://" in location:
            return RDBStorage(location)
        path = Path(location).expanduser().resolve()
        if path.suffix in SQLITE_SUFFIXES:
            return RDBStorage(f"sqlite:///{path}")
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as err:  # sqlalchemy's and the drivers' errors: a wrong URL, a missing driver, no server
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"--storage {location} cannot be opened ({reason}); give an SQLite file (sweep.db), an RDB URL "
            "(postgresql://user:password@host/db, with its driver installed) or a journal file path."
        ) from None


def _fingerprint(spec: SweepSpec) -> str:
    """What makes two runs of the command one study: the search and the shared trial arguments."""
    what = {
        "method": spec.method,
        "metric": spec.metric,
        "goal": spec.goal,
        "parameters": {p.name: p.spec for p in spec.parameters},
        "base_args": spec.base_args(),
    }
    return json.dumps(what, sort_keys=True, default=str)


def open_study(spec: SweepSpec, storage: BaseStorage, seed: int = 0) -> optuna.Study:
    """Creates the study ``spec.name`` in ``storage``, or loads it to resume or join it.

    Raises:
        ValueError: the storage holds a study of that name made from another sweep (another
            method, metric, parameters or shared arguments): resuming it would mix two searches.
    """
    study = optuna.create_study(
        storage=storage,
        study_name=spec.name,
        direction=spec.goal,
        sampler=make_sampler(spec, seed),
        pruner=make_pruner(spec),
        load_if_exists=True,
    )
    recorded, fingerprint = study.user_attrs.get("sweep"), _fingerprint(spec)
    if recorded is None:
        study.set_user_attr("sweep", fingerprint)
    elif recorded != fingerprint:
        raise ValueError(
            f"the storage's study {spec.name!r} was made from another version of {spec.path} (method, metric, "
            "parameters or base arguments differ); restore the file, or give another --sweep-dir or --storage."
        )
    return study


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials ``run_cap`` and ``--count`` count: complete or pruned."""
    return study.get_trials(deepcopy=False, states=FINISHED)


def trials_to_run(spec: SweepSpec, finished: int, count: int | None) -> int:
    """How many trials this call starts: ``--count``, at most what ``run_cap`` (or the grid) leaves.

    Args:
        spec: the sweep.
        finished: the study's finished trials (:func:`finished_trials`).
        count: ``--count`` (None: no limit of its own).

    Raises:
        ValueError: random or bayes search with neither ``run_cap`` nor ``--count``.
    """
    cap = spec.run_cap
    if spec.method == "grid":
        size = math.prod(len(values) for values in grid_space(spec).values())
        cap = size if cap is None else min(cap, size)
    if cap is None and count is None:
        raise ValueError(
            f"{spec.path}: {spec.method} search needs `run_cap` in the file or --count to know when to stop."
        )
    left = cap - finished if cap is not None else None
    return max(0, min(n for n in (left, count) if n is not None))


def retry_failed(study: optuna.Study) -> int:
    """Queues each failed trial (its run failed, or the sweep was interrupted) once more; returns how many."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    failed = [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]
    for t in failed:
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return len(failed)


def sample_configurations(spec: SweepSpec, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """The first ``n`` configurations the sampler picks before any result is known (``--dry-run``)."""
    study = optuna.create_study(direction=spec.goal, sampler=make_sampler(spec, seed))
    configurations: list[dict[str, Any]] = []

    def record(trial: optuna.Trial) -> float:
        configurations.append(_overrides(trial, spec))
        raise optuna.TrialPruned()  # no result; the grid moves on

    study.optimize(record, n_trials=n)
    return configurations


class SweepObjective:
    """The study's objective: runs a trial as a subprocess, reports its metric each epoch, prunes it.

    A trial's value is the best of its epochs' metric (by the goal), as the best checkpoint
    is. A trial whose run fails, or logs no metric, returns NaN: Optuna records it as failed
    (no traceback), the sweep goes on, and the next call of the command runs it again.

    Args:
        spec: the sweep.
        sweep_dir: trial logs go to ``logs/`` and run folders to ``runs/`` under it.
    """

    def __init__(self, spec: SweepSpec, sweep_dir: Path) -> None:
        self.spec, self.sweep_dir = spec, sweep_dir
        self.failed = 0
        self.interrupt = threading.Event()  # set: running trials stop and are recorded as failed (run again later)
        self._lock = threading.Lock()

    def __call__(self, trial: optuna.Trial) -> float:
        spec = self.spec
        overrides = _overrides(trial, spec)
        name = f"trial-{trial.number:04d}"
        command = spec.command_for(overrides, name, self.sweep_dir / "runs")
        log = self.sweep_dir / "logs" / f"{name}.log"
        trial.set_user_attr("overrides", overrides)
        print(f"[{name}] start {json.dumps(overrides)}", flush=True)

        def report(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        outcome = run_trial(command, spec.metric, log, report, self.interrupt)
        trial.set_user_attr("returncode", outcome.returncode)
        run_dir = latest_version(self.sweep_dir / "runs" / name)
        trial.set_user_attr("run_dir", str(run_dir) if run_dir else None)
        best = best_value(outcome.values, spec.goal, default=math.nan)
        if outcome.interrupted:
            print(
                f"[{name}] interrupted after {len(outcome.values)} epochs; it runs again on the next call", flush=True
            )
            return math.nan
        if outcome.stopped:
            print(f"[{name}] pruned after {len(outcome.values)} epochs ({spec.metric}={best:.4g})", flush=True)
            raise optuna.TrialPruned()
        if outcome.returncode != 0 or not outcome.values:
            why = f"exit {outcome.returncode}" if outcome.returncode else f"the run logged no {spec.metric}"
            with self._lock:
                self.failed += 1
            print(f"[{name}] FAILED ({why}); see {log}:\n{outcome.log_tail()}", flush=True)
            return math.nan
        print(f"[{name}] done after {len(outcome.values)} epochs, {spec.metric}={best:.4g}", flush=True)
        return best
