"""``nfn-lab sweep FILE``: a hyperparameter sweep in the W&B sweep format, with Optuna offline or W&B online.

The sweep file is described in :mod:`nfn_lab.sweeps.spec`; every trial is a normal
``nfn-lab fit`` run written under ``<sweep dir>/runs/<trial>/version_N``, its output in
``<sweep dir>/logs/``. Backends:

- ``local`` (what ``auto`` picks offline or without a W&B login): an Optuna study
  (:mod:`nfn_lab.sweeps.search`: grid, random or TPE for bayes, Hyperband pruning for
  ``early_terminate``), ``--workers`` trials at a time. The study is kept in ``--storage``
  (default: a journal file in the sweep folder), so the same command resumes an interrupted
  sweep, and several machines given one shared storage run trials of one study.
- ``wandb``: W&B's controller picks the trials and ``wandb.agent`` runs them here
  (:mod:`nfn_lab.sweeps.online`).

Either way the sweep ends with a table of the trials, best first, printed and written as
``results.csv`` and ``results.md`` in the sweep folder (default ``sweeps/<file stem>``).
A bad sweep file or option is one line on stderr (exit status 2) before any trial starts.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
import yaml

from nfn_lab.sweeps.online import BACKENDS, choose_backend, run_wandb
from nfn_lab.sweeps.report import RESULTS_CSV, RESULTS_MD, results_table, study_records, write_results
from nfn_lab.sweeps.search import (
    SweepObjective,
    finished_trials,
    open_storage,
    open_study,
    retry_failed,
    sample_configurations,
    trials_to_run,
)
from nfn_lab.sweeps.spec import SweepSpec, load_sweep

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfn-lab sweep",
        description="Run a hyperparameter sweep (W&B sweep format): with W&B agents when online, Optuna otherwise.",
    )
    parser.add_argument("file", type=Path, help="the sweep YAML (see experiments/sweeps/)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default): wandb when logged in and online, else local",
    )
    parser.add_argument("--workers", type=int, default=1, help="trials run at the same time (local; default 1)")
    parser.add_argument(
        "--storage",
        default=None,
        help="the Optuna study (local): an SQLite file (x.db), an RDB URL (postgresql://...) or a journal file; "
        "default <sweep dir>/study.journal. Share it to run one study from several machines.",
    )
    parser.add_argument("--count", type=int, default=None, help="run at most this many trials now")
    parser.add_argument(
        "--sweep-dir", type=Path, default=None, help="study, logs, runs and results (default: sweeps/<file stem>)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the local sampler (default 0)")
    parser.add_argument("--dry-run", action="store_true", help="print the first trials (local) or the W&B config only")
    return parser


def _dry_run(spec: SweepSpec, backend: str, args: argparse.Namespace, sweep_dir: Path) -> None:
    """Prints W&B's sweep configuration, or the commands of the first trials of a new local study."""
    if backend == "wandb":
        print(yaml.safe_dump(spec.to_wandb(), sort_keys=False), end="")
        return
    configurations = sample_configurations(spec, trials_to_run(spec, 0, args.count), args.seed)
    for number, overrides in enumerate(configurations):
        command = spec.command_for(overrides, f"trial-{number:04d}", sweep_dir / "runs")
        print(f"$ {shlex.join(command)}")


def _run_local(spec: SweepSpec, args: argparse.Namespace, sweep_dir: Path) -> tuple[list[dict[str, Any]], bool]:
    """Resumes or starts the Optuna study and runs this call's trials; returns every trial's record and
    whether a trial of this call failed."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is printed here
    study = open_study(spec, open_storage(args.storage, sweep_dir), args.seed)
    retries = retry_failed(study)
    finished = len(finished_trials(study))
    n_trials = trials_to_run(spec, finished, args.count)
    print(
        f"{finished} trials finished, {retries} failed ones queued again; "
        f"{n_trials} to run now on {args.workers} worker(s)"
    )
    objective = SweepObjective(spec, sweep_dir)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        objective.interrupt.set()  # the workers' trials stop too (their children may not have had the signal)
        raise KeyboardInterrupt

    handlers = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if n_trials:
            study.optimize(objective, n_trials=n_trials, n_jobs=args.workers)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return study_records(study), objective.failed > 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``nfn-lab sweep`` with ``argv`` (default ``sys.argv[1:]``, without the ``sweep`` word).

    Returns:
        0 when every trial run now finished, 1 if any failed, 2 for a bad sweep file or
        option, 130 when interrupted (rerun the same command to continue).
    """
    args = _parser().parse_args(argv)
    for option in ("count", "workers"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            print(f"nfn-lab sweep: error: --{option} must be at least 1.", file=sys.stderr)
            return 2
    try:
        spec = load_sweep(args.file)
        dry_wandb = args.dry_run and args.backend == "wandb"  # printing W&B's config needs no login
        backend, why = ("wandb", "--backend wandb --dry-run") if dry_wandb else choose_backend(args.backend)
        sweep_dir = args.sweep_dir or Path("sweeps") / spec.path.stem
        print(f"sweep {spec.name}: {spec.method} search, backend {backend} ({why}), folder {sweep_dir}")
        if args.dry_run:
            _dry_run(spec, backend, args, sweep_dir)
            return 0
        if backend == "wandb":
            records = run_wandb(spec, sweep_dir, args.count)
            failed = any(r["status"] == "failed" for r in records)
        else:
            records, failed = _run_local(spec, args, sweep_dir)
    except ValueError as err:
        print(f"nfn-lab sweep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to go on (trials cut short run again).", file=sys.stderr)
        return 130
    if records:
        rows = results_table(records, spec.parameter_names, spec.goal)
        print(write_results(sweep_dir, rows, spec.metric, spec.parameter_names), end="")
        print(f"(also in {sweep_dir / RESULTS_CSV} and {RESULTS_MD})")
    return 1 if failed else 0
