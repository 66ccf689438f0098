"""The results table of a sweep: one row per trial, best first, printed and written as CSV and markdown."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nfn_lab.sweeps.spec import best_value

__all__ = ["RESULTS_CSV", "RESULTS_MD", "markdown_table", "results_table", "study_records", "write_results"]

RESULTS_CSV, RESULTS_MD = "results.csv", "results.md"
STATUS = {TrialState.COMPLETE: "done", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
_ORDER = ("done", "pruned")  # then everything else, e.g. failed and running


def _record(trial: FrozenTrial, goal: str) -> dict[str, Any]:
    steps = trial.intermediate_values
    value = trial.value if trial.state == TrialState.COMPLETE else best_value(steps.values(), goal)
    return {
        "trial": f"trial-{trial.number:04d}",
        "status": STATUS.get(trial.state, trial.state.name.lower()),
        "value": value,
        "epochs": len(steps),
        "overrides": trial.user_attrs.get("overrides", trial.params),
        "run_dir": trial.user_attrs.get("run_dir"),
    }


def study_records(study: optuna.Study) -> list[dict[str, Any]]:
    """One record per started trial of ``study`` (queued ones left out), for :func:`results_table`.

    A pruned trial's value is the best metric it reached before it was stopped.
    """
    goal = "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
    return [_record(t, goal) for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]


def _sort_key(record: Mapping[str, Any], goal: str) -> tuple[int, float]:
    value, status = record.get("value"), record.get("status")
    if status not in _ORDER or value is None:
        return (len(_ORDER), 0.0)
    return (_ORDER.index(status), -value if goal == "maximize" else value)


def results_table(records: Iterable[Mapping[str, Any]], parameters: Sequence[str], goal: str) -> list[dict[str, Any]]:
    """One row per trial: complete ones best first by ``goal``, then pruned ones, then failed ones.

    Returns:
        rows with ``rank``, ``trial``, ``status``, ``value``, ``epochs``, one column per parameter and ``run_dir``.
    """
    ordered = sorted(records, key=lambda r: _sort_key(r, goal))  # stable: ties keep trial order
    return [
        {
            "rank": rank,
            "trial": r["trial"],
            "status": r["status"],
            "value": r.get("value"),
            "epochs": r.get("epochs"),
            **{p: r["overrides"].get(p) for p in parameters},
            "run_dir": r.get("run_dir"),
        }
        for rank, r in enumerate(ordered, start=1)
    ]


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """Dotted keys -> their last part where that is unambiguous (``model.init_args.lr`` -> ``lr``)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


def _cell(value: Any, short: bool = True) -> str:
    """A table cell: floats to 4 significant digits when ``short``, lists and bools as JSON."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if short else repr(value)
    return value if isinstance(value, str) else json.dumps(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], metric: str, parameters: Sequence[str]) -> str:
    """The table as GitHub markdown, ``value`` titled with the metric and parameters by short name."""
    titles = {"rank": "rank", "trial": "trial", "status": "status", "value": metric, "epochs": "epochs"}
    titles.update(_short_names(parameters))
    lines = ["| " + " | ".join(titles.values()) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(_cell(row[key]) for key in titles) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(sweep_dir: Path, rows: Sequence[Mapping[str, Any]], metric: str, parameters: Sequence[str]) -> str:
    """Writes ``results.csv`` (every column, full parameter keys) and ``results.md``; returns the markdown."""
    columns = ["rank", "trial", "status", "value", "epochs", *parameters, "run_dir"]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / RESULTS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([metric if c == "value" else c for c in columns])
        writer.writerows([[_cell(row[c], short=False) for c in columns] for row in rows])
    text = markdown_table(rows, metric, parameters)
    (sweep_dir / RESULTS_MD).write_text(text)
    return text
