"""One trial: an ``nfn-lab fit`` run in a subprocess, its metric streamed back each epoch.

Why a subprocess and not :func:`nfn_lab.cli.train.run` in-process: every trial starts
from a clean interpreter (global seeds, torch thread and CUDA state, W&B's per-process
run), LightningCLI's ``SystemExit`` on a bad argument or a segfault/OOM kill stays inside
its trial instead of ending the sweep, parallel trials do not share the GIL, and the
command a trial ran is exactly the one a user can paste to rerun it.

How the metric reaches the sweep each epoch: the child appends one JSON line per
validation run to a report file (:mod:`nfn_lab.sweeps.reporting`, switched on by
``$NFN_LAB_SWEEP_REPORT``); :func:`run_trial`, in the parent, polls that file, hands each
complete line to ``on_report`` (which reports to Optuna and asks its pruner) and
terminates the child when ``on_report`` says stop. Chosen over the alternatives because
the child needs no Optuna, no storage credentials and no trial id (the study lives only in
the parent, whatever its storage); over tailing the CSVLogger's ``metrics.csv`` because
that file is buffered and rewritten, not appended line by line.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["REPORT_ENV", "TrialOutcome", "latest_version", "run_trial"]

REPORT_ENV = "NFN_LAB_SWEEP_REPORT"  # names the report file a trial's nfn-lab fit appends to

POLL_S = 0.5  # how often the report file is read
STOP_GRACE_S = 30.0  # how long a stopped trial may take to exit before it is killed
LOG_TAIL_LINES = 20


@dataclass
class TrialOutcome:
    """What a trial's run left.

    Attributes:
        returncode: the child's exit status (negative: killed by that signal).
        values: the metric of each validation run, in order (steps from 1).
        stopped: whether ``on_report`` or an interrupt stopped it (the child was terminated).
        interrupted: whether the interrupt stopped it.
        log: the child's stdout and stderr, the command on the first line.
    """

    returncode: int
    values: list[float] = field(default_factory=list)
    stopped: bool = False
    interrupted: bool = False
    log: Path = Path()

    def log_tail(self) -> str:
        """The last lines of the log, to show why a trial failed."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])


class _ReportReader:
    """The complete JSON lines appended to a report file since the last :meth:`read`."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a half-written last line waits for the next read
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def run_trial(
    command: Sequence[str],
    metric: str,
    log: Path,
    on_report: Callable[[int, float], bool] = lambda step, value: False,
    interrupt: threading.Event | None = None,
) -> TrialOutcome:
    """Runs ``command``, calling ``on_report(step, value)`` for each validation run's ``metric``.

    Args:
        command: the trial's command line.
        metric: the metric read from each report line (lines without it are skipped).
        log: where the child's output goes; the report file is ``log`` with suffix ``.jsonl``
            (emptied first, so a rerun of the same trial starts a new stream).
        on_report: returns True to stop the trial (its child is terminated, then killed
            after :data:`STOP_GRACE_S`); no later report is read.
        interrupt: when set (by another thread, e.g. the sweep's signal handler), the trial is
            stopped the same way; ``outcome.interrupted`` tells the two apart.
    """
    interrupt = interrupt or threading.Event()
    log.parent.mkdir(parents=True, exist_ok=True)
    report = log.with_suffix(".jsonl")
    report.write_text("")
    reader, outcome = _ReportReader(report), TrialOutcome(returncode=0, log=log)
    with open(log, "w") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        child_env = {**os.environ, REPORT_ENV: str(report)}
        child = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, env=child_env)
        try:
            while not outcome.stopped:
                finished = child.poll() is not None  # read once more after the exit: the last lines
                for line in reader.read():
                    if metric in line["metrics"]:
                        outcome.values.append(line["metrics"][metric])
                        if on_report(len(outcome.values), outcome.values[-1]):
                            outcome.stopped = True
                            break
                if finished:
                    break
                if interrupt.wait(POLL_S):
                    outcome.stopped = outcome.interrupted = True
            if outcome.stopped:
                child.terminate()
            try:
                outcome.returncode = child.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:  # a stopped child that ignores SIGTERM
                child.kill()
                outcome.returncode = child.wait()
        except BaseException:  # an interrupted sweep leaves no orphan trial behind
            child.kill()
            child.wait()
            raise
    return outcome


def latest_version(run_folder: Path) -> Path | None:
    """The newest ``run_folder/version_N`` (highest N) a trial's run wrote, or None if it made none."""
    versions = [p for p in run_folder.glob("version_*") if p.name.removeprefix("version_").isdigit()]
    return max(versions, key=lambda p: int(p.name.removeprefix("version_")), default=None)
