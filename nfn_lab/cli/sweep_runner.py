"""Running a sweep: one CLI run per trial, a resumable ledger, the local and W&B loops, the results table.

A trial is a normal ``nfn-lab fit`` run, started in a subprocess. Why a subprocess and
not :func:`nfn_lab.cli.train.run` in-process: every trial starts from a clean
interpreter (global seeds, torch thread and CUDA state, W&B's per-process run, modules
cached by an earlier trial), LightningCLI's ``SystemExit`` on a bad argument or a
segfault/OOM kill stays inside its trial instead of ending the sweep, and the command a
trial ran is exactly the one a user can paste to rerun it. The price, a few seconds of
imports per trial, is small next to a training run.

Each finished trial (done or failed) is one JSON record in ``trials.jsonl`` of the sweep
folder; the whole file is rewritten to a temporary file and renamed over the old one, so
an interruption leaves either the old or the new ledger, never half a record. The local
loop (:func:`run_local`) skips the trials the ledger holds; the W&B loop (:func:`run_wandb`)
leaves that to W&B's controller, which hands out each configuration once per sweep.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SweepSpec = Any  # nfn_lab.cli.sweep.SweepSpec (not imported: sweep imports this module)

__all__ = [
    "LEDGER",
    "Ledger",
    "SubprocessTrial",
    "Trial",
    "TrialFunction",
    "agent_overrides",
    "best_metric",
    "cli_args",
    "cli_value",
    "latest_version",
    "results_table",
    "run_local",
    "run_wandb",
    "write_results",
]

LEDGER = "trials.jsonl"
RESULTS_CSV, RESULTS_MD = "results.csv", "results.md"
LOG_TAIL_LINES = 20
DEFAULT_PROJECT = "nfn-lab"  # the project the CLI's WandbLogger logs to
WANDB_STATE = "wandb_sweep.json"


def cli_value(value: Any) -> str:
    """A parameter value as LightningCLI reads it back: YAML/JSON text for anything but a string.

    Floats always keep a dot (``1e-05`` -> ``1.0e-05``), since YAML reads ``1e-05`` as a string.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    return json.dumps(value)


def cli_args(overrides: Mapping[str, Any]) -> list[str]:
    """``{"model.init_args.lr": 0.01}`` -> ``["--model.init_args.lr=0.01"]``, in the mapping's order."""
    return [f"--{key}={cli_value(value)}" for key, value in overrides.items()]


@dataclass(frozen=True)
class Trial:
    """One point of a sweep.

    Attributes:
        trial_id: deterministic name (a hash of the trial's arguments), also its run name.
        overrides: the swept parameters, dotted CLI key -> value.
        command: the full command line that runs it.
        run_root: the ``trainer.default_root_dir`` its run folder goes under.
    """

    trial_id: str
    overrides: dict[str, Any]
    command: list[str]
    run_root: Path


TrialFunction = Callable[[Trial], dict[str, Any]]
"""Runs a trial and returns its ledger record (see :class:`SubprocessTrial`)."""


def latest_version(run_root: Path, name: str) -> Path | None:
    """The newest ``run_root/name/version_N`` folder (highest N), or None if there is none."""
    versions = [p for p in (run_root / name).glob("version_*") if re.fullmatch(r"version_\d+", p.name)]
    return max(versions, key=lambda p: int(p.name.split("_")[1]), default=None)


def best_metric(metrics_csv: Path, name: str, goal: str) -> tuple[float | None, str | None]:
    """The best value of column ``name`` in a CSVLogger ``metrics.csv`` (max or min by ``goal``).

    Returns:
        ``(value, None)``, or ``(None, why)`` when the file or the column is missing or never finite.
    """
    if not metrics_csv.is_file():
        return None, f"no {metrics_csv} (the run logged nothing; fast_dev_run disables loggers)"
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    if name not in columns:
        return None, f"{metrics_csv} has no column {name!r}; its columns are {columns}"
    values = [float(row[name]) for row in rows if row[name] not in ("", None)]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None, f"{metrics_csv}: {name!r} has no finite value"
    return (max(values) if goal == "maximize" else min(values)), None


class Ledger:
    """The JSON-lines record of a sweep's finished trials, one object per line, keyed by ``trial_id``.

    Args:
        path: the ``trials.jsonl`` file (created on the first :meth:`append`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def records(self) -> dict[str, dict[str, Any]]:
        """Trial id -> its latest record, in the order trials were first recorded."""
        if not self.path.is_file():
            return {}
        records: dict[str, dict[str, Any]] = {}
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{self.path} line {number} is not JSON ({err}); the ledger was edited by hand? Fix or delete "
                    "that line (its trial then runs again)."
                ) from None
            records[record["trial_id"]] = record
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        """Adds ``record`` atomically: the new ledger is written beside the old one and renamed over it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = self.path.read_text() if self.path.is_file() else ""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(old + json.dumps(dict(record), sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class SubprocessTrial:
    """Runs a trial's command in a subprocess and reads its metric: a :data:`TrialFunction`.

    Args:
        metric: the metric column to read from the run's ``metrics.csv``.
        goal: ``"maximize"`` or ``"minimize"``.
        log_dir: each trial's stdout and stderr go to ``log_dir/<trial_id>.log``.
        env: extra environment variables for the trial (the parent's are inherited).
    """

    def __init__(self, metric: str, goal: str, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.metric, self.goal, self.log_dir, self.env = metric, goal, Path(log_dir), dict(env or {})

    def __call__(self, trial: Trial) -> dict[str, Any]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{trial.trial_id}.log"
        start = time.monotonic()
        with open(log, "w") as out:
            out.write(f"$ {shlex.join(trial.command)}\n")
            out.flush()
            returncode = subprocess.run(
                trial.command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            ).returncode
        record: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "overrides": trial.overrides,
            "command": trial.command,
            "returncode": returncode,
            "duration_s": round(time.monotonic() - start, 2),
            "log": str(log),
            "metric": self.metric,
        }
        run_dir = latest_version(trial.run_root, trial.trial_id)
        record["run_dir"] = str(run_dir) if run_dir is not None else None
        if returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            return {**record, "status": "failed", "value": None, "error": "\n".join(tail)}
        if run_dir is None:
            return {**record, "status": "done", "value": None, "error": f"no run folder under {trial.run_root}"}
        value, why = best_metric(run_dir / "metrics.csv", self.metric, self.goal)
        return {**record, "status": "done", "value": value, **({"error": why} if why else {})}


def _sort_key(record: Mapping[str, Any], goal: str) -> tuple[int, float]:
    value = record.get("value")
    if record.get("status") != "done" or value is None:
        return (1, 0.0)
    return (0, -value if goal == "maximize" else value)


def results_table(records: Iterable[Mapping[str, Any]], parameters: Sequence[str], goal: str) -> list[dict[str, Any]]:
    """One row per trial, best first by ``goal``; failed trials and trials without a value last.

    Returns:
        rows with ``rank``, ``trial``, ``status``, ``value``, one column per parameter and ``run_dir``.
    """
    ordered = sorted(records, key=lambda r: _sort_key(r, goal))  # stable: ties keep ledger order
    return [
        {
            "rank": rank,
            "trial": r["trial_id"],
            "status": r["status"],
            "value": r.get("value"),
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
    short = _short_names(parameters)
    titles = {"rank": "rank", "trial": "trial", "status": "status", "value": metric, **short}
    lines = ["| " + " | ".join(titles.values()) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(_cell(row[key]) for key in titles) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(sweep_dir: Path, rows: Sequence[Mapping[str, Any]], metric: str, parameters: Sequence[str]) -> str:
    """Writes ``results.csv`` (every column, full parameter keys) and ``results.md``; returns the markdown."""
    columns = ["rank", "trial", "status", "value", *parameters, "run_dir"]
    with open(sweep_dir / RESULTS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([metric if c == "value" else c for c in columns])
        writer.writerows([[_cell(row[c], short=False) for c in columns] for row in rows])
    text = markdown_table(rows, metric, parameters)
    (sweep_dir / RESULTS_MD).write_text(text)
    return text


# --- local and W&B sweeps ---------------------------------------------------------------------------


def _summary(record: Mapping[str, Any]) -> str:
    if record["status"] == "failed":
        return f"FAILED (exit {record['returncode']}): see {record['log']}"
    value = record.get("value")
    shown = f"{record['metric']}={value:.4g}" if value is not None else f"no {record['metric']} ({record.get('error')})"
    return f"done {shown} ({record['duration_s']} s)"


def _record(ledger: Ledger, trial_fn: TrialFunction, trial: Trial) -> dict[str, Any]:
    """Runs ``trial``, adds its record to the ledger and reports it."""
    record = trial_fn(trial)
    ledger.append(record)
    print(f"  {_summary(record)}", flush=True)
    if record["status"] == "failed":
        print(f"--- last lines of {record.get('log')} ---\n{record.get('error', '')}\n---", file=sys.stderr)
    return record


def run_local(
    spec: SweepSpec,
    sweep_dir: Path,
    trial_fn: TrialFunction,
    count: int | None = None,
    seed: int = 0,
    retry_failed: bool = False,
    dry_run: bool = False,
) -> list[Trial]:
    """Runs, one after another, the sweep's trials that the ledger does not hold yet.

    Args:
        spec: the sweep (grid or random; bayes runs as random, with a warning).
        sweep_dir: holds the ledger, logs, results and (under ``runs/``) the trials' run folders.
        trial_fn: runs a trial and returns its record (:class:`SubprocessTrial`).
        count: run at most this many new trials.
        seed: seeds random search.
        retry_failed: run trials recorded as failed again.
        dry_run: print the trials' commands instead of running them.

    Returns:
        the trials run (or, with ``dry_run``, that would run) by this call.
    """
    if spec.method == "bayes":
        warnings.warn(
            "bayes search needs W&B's controller; the local runner samples at random instead (as method: random).",
            UserWarning,
            stacklevel=2,
        )
    if spec.raw.get("early_terminate"):
        warnings.warn("early_terminate is left to W&B; the local runner runs every trial to the end.", stacklevel=2)
    ledger = Ledger(sweep_dir / LEDGER)
    recorded = ledger.records()
    total = len(recorded) + count if count is not None else None
    trials = [spec.trial(c, sweep_dir / "runs") for c in spec.configurations(seed, total)]
    todo = [
        t for t in trials
        if t.trial_id not in recorded or (retry_failed and recorded[t.trial_id]["status"] == "failed")
    ]  # fmt: skip
    pending = todo[:count] if count is not None else todo
    later = f", {len(todo) - len(pending)} left for a later call" if len(todo) > len(pending) else ""
    print(f"{len(trials)} trials: {len(trials) - len(todo)} recorded, {len(pending)} to run now{later}.")
    for i, trial in enumerate(pending, start=1):
        print(f"[{i}/{len(pending)}] {trial.trial_id} {json.dumps(trial.overrides)}", flush=True)
        if dry_run:
            print(f"  $ {shlex.join(trial.command)}")
        else:
            _record(ledger, trial_fn, trial)
    return pending


def agent_overrides(spec: SweepSpec) -> dict[str, Any]:
    """The configuration W&B's agent picked for the current trial, in the sweep's parameter order.

    The agent writes it to ``$WANDB_SWEEP_PARAM_PATH`` (``{key: {value: v}}``) before calling its
    function; the trial process's ``wandb.init`` reads the same file to join the sweep's run.

    Raises:
        RuntimeError: outside a ``wandb.agent`` function (no such file).
    """
    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not Path(path).is_file():
        raise RuntimeError("no $WANDB_SWEEP_PARAM_PATH file: this runs only inside a wandb.agent function.")
    entries = yaml.safe_load(Path(path).read_text()) or {}
    return {p.name: entries[p.name]["value"] for p in spec.parameters if p.name in entries}


def _sweep_id(sweep_dir: Path, config: dict[str, Any], project: str, entity: str | None) -> str:
    """The W&B sweep recorded in ``sweep_dir`` if its configuration is unchanged, else a new one."""
    import wandb

    state_file = sweep_dir / WANDB_STATE
    where = {"config": config, "project": project, "entity": entity}
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        if {k: state.get(k) for k in where} == where:
            print(f"joining W&B sweep {state['sweep_id']} (from {state_file})")
            return state["sweep_id"]
        print(f"the sweep changed since {state_file} was written: creating a new W&B sweep")
    sweep_id = wandb.sweep(config, project=project, entity=entity)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"sweep_id": sweep_id, **where}))
    return sweep_id


def run_wandb(
    spec: SweepSpec, sweep_dir: Path, trial_fn: TrialFunction, count: int | None = None, dry_run: bool = False
) -> None:
    """Creates (or joins) the W&B sweep and runs ``wandb.agent`` on it in this process.

    Each configuration the agent receives runs as a trial with ``--wandb=online``; the trial
    inherits the agent's ``WANDB_RUN_ID``/``WANDB_SWEEP_ID``, so its WandbLogger logs into the
    sweep's run. Trials are recorded in the ledger too; a failed one is reported to the agent
    as a failed run.

    Args:
        spec, sweep_dir, trial_fn: see :func:`run_local`.
        count: trials this agent runs (None: until W&B's controller stops, e.g. at ``run_cap``).
        dry_run: print the W&B sweep configuration instead of creating it.
    """
    config = spec.to_wandb()
    if dry_run:
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return
    import wandb

    project, entity = spec.raw.get("project", DEFAULT_PROJECT), spec.raw.get("entity")
    sweep_id = _sweep_id(sweep_dir, config, project, entity)
    ledger = Ledger(sweep_dir / LEDGER)

    def agent_trial() -> None:
        trial = spec.trial(agent_overrides(spec), sweep_dir / "runs", wandb_mode="online")
        print(f"{trial.trial_id} {json.dumps(trial.overrides)}", flush=True)
        if _record(ledger, trial_fn, trial)["status"] == "failed":
            raise RuntimeError(f"trial {trial.trial_id} failed; see its log in {sweep_dir / 'logs'}")

    wandb.agent(sweep_id, function=agent_trial, project=project, entity=entity, count=count)
