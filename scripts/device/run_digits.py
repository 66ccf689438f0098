"""Builds both digits zoos and runs every digits result (experiments/digits/*.yaml) at once.

Run from the repository root (``scripts/device/run_digits.sh`` calls it after installing
the carried wheels)::

    python scripts/device/run_digits.py --out "$OUT"            # on a GPU machine
    python scripts/device/run_digits.py --out /tmp/o --smoke    # a CPU rehearsal, minutes

What it does:

1. Checks that the project's imports work (a clear error if a wheel is missing).
2. Builds ``data/digits_inr_zoo`` and, concurrently, ``data/digits_cnn_zoo`` with the
   documented commands (``nfn-lab zoo build inr|cnn DIR``) plus ``--device cuda``.
3. Starts every result file as its own process (``scripts/device/fit_one.py``) as soon as
   its zoo exists, up to ``--concurrency`` at once, on the ``gpu.yaml`` trainer preset
   (float32) with ``--wandb disabled``. Each run keeps its configured schedule
   (``max_steps``/``max_epochs``) but gets ``--trainer.max_time`` so that it stops in time
   for the global deadline (``--budget-s`` after ``--t0``); a run cut short says so
   (``stopped_early`` and the steps it reached), and is still tested on the best
   validation checkpoint.
4. Writes ``OUT/digits_results.json`` (rewritten after every finished run, so a killed
   command still leaves what finished) and ``OUT/digits_log_tail.txt`` (environment,
   zoo builds and the tail of every run's log).

Nothing here changes a result's hyperparameters except the validation interval of the
step-based runs (``--val-every-epochs``, to keep checkpoint writes of the 45M-parameter
classifiers cheap), which is recorded in the JSON with the exact command of every run.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "digits"
FIT_ONE = REPO / "scripts" / "device" / "fit_one.py"
# Table order of experiments/README.md, "Results on the offline digits zoos".
RESULTS = (
    "predict_gen_hnp",
    "predict_gen_np",
    "predict_gen_stat",
    "classify_hnp",
    "classify_np",
    "classify_mlp",
    "classify_mlp_aug",
    "classify_nft",
    "edit_dilate_hnp",
    "edit_dilate_np",
    "edit_dilate_pointwise",
    "edit_dilate_mlp",
)
MONITORS = {"predict_gen": "val/kendall_tau", "classify": "val/accuracy", "edit": "val/mse"}  # the tasks' `monitor`
METRICS = {task: monitor.replace("val/", "test/", 1) for task, monitor in MONITORS.items()}  # reported per result
# Slowest first within a zoo, so the big models get the most time.
LAUNCH_ORDER = (
    "classify_hnp",
    "classify_np",
    "classify_nft",
    "edit_dilate_hnp",
    "edit_dilate_np",
    "edit_dilate_pointwise",
    "classify_mlp_aug",
    "classify_mlp",
    "edit_dilate_mlp",
    "predict_gen_hnp",
    "predict_gen_np",
    "predict_gen_stat",
)
PACKAGES = (
    "torch",
    "lightning",
    "torchmetrics",
    "jsonargparse",
    "docstring_parser",
    "typeshed_client",
    "datasets",
    "huggingface_hub",
    "pyarrow",
    "pandas",
    "numpy",
    "fsspec",
    "dill",
    "multiprocess",
    "xxhash",
    "einops",
    "scikit-learn",
    "typing_extensions",
    "wandb",
)


def now() -> float:
    return time.time()


def log(message: str) -> None:
    """One line to stdout with the time since the start of the script."""
    print(f"[run_digits +{now() - START:6.1f}s] {message}", flush=True)


START = now()


@dataclass
class Job:
    """One subprocess: a zoo build or a fit."""

    name: str
    command: list[str]
    log_path: Path
    zoo: str | None = None  # the zoo a fit needs ("inr" / "cnn"); None for builds
    result_path: Path | None = None
    process: subprocess.Popen | None = None
    log_file: Any = None
    started: float | None = None
    ended: float | None = None
    returncode: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "w")  # noqa: SIM115 (open while the process runs; poll() closes it)
        self.log_file.write("$ " + " ".join(self.command) + "\n")
        self.log_file.flush()
        self.process = subprocess.Popen(
            self.command, cwd=REPO, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started = now()

    def poll(self) -> bool:
        """True once the process has ended (and records how)."""
        if self.process is None or self.returncode is not None:
            return self.returncode is not None
        code = self.process.poll()
        if code is None:
            return False
        self.returncode, self.ended = code, now()
        self.log_file.close()
        return True

    def kill(self) -> None:
        """Terminates the job's own process group (it was started in a new session)."""
        if self.process is None or self.poll():
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.poll()
        self.extra["killed_at_deadline"] = True


def versions() -> dict[str, str | None]:
    """Installed versions (from metadata: nothing is imported)."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def gpu_info() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi"
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        return subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f"nvidia-smi failed: {err}"


def check_imports(python: str, env: dict[str, str]) -> None:
    """Imports what the runs need in a subprocess; raises SystemExit with its error otherwise."""
    code = (
        "import datasets, jsonargparse, huggingface_hub, einops, lightning, torchmetrics, torch;"
        "import datamodules.arrow_zoo, nfn_lab.cli.train, nfn_lab.builders.inr_zoo, nfn_lab.builders.cnn_zoo;"
        "from lightning.pytorch.cli import _JSONARGPARSE_SIGNATURES_AVAILABLE as sig;"
        "assert sig, 'LightningCLI: ' + str(sig);"
        "print('imports ok; torch', torch.__version__, 'cuda', torch.version.cuda, 'datasets', datasets.__version__)"
    )
    done = subprocess.run([python, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the project does not import here:\n{done.stdout}\n{done.stderr[-3000:]}")
    log(done.stdout.strip())


def val_curve(log_dir: str | None, monitor: str | None) -> list[list[float]]:
    """``[[step, value], ...]`` of the monitored validation metric from the run's metrics.csv."""
    if not log_dir or not monitor:
        return []
    path = Path(log_dir) / "metrics.csv"
    if not path.is_file():
        return []
    curve = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            value = row.get(monitor)
            if value not in (None, ""):
                curve.append([int(float(row.get("step") or 0)), round(float(value), 5)])
    return curve


def tail(path: Path, lines: int) -> str:
    if not path.is_file():
        return "(no log)"
    text = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    return "\n".join(text[-lines:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="where digits_results.json and the log tail go")
    parser.add_argument("--work", type=Path, default=None, help="per-run JSON and logs (default: /tmp/digits_work)")
    parser.add_argument("--smoke", action="store_true", help="CPU rehearsal: tiny zoos, 2 steps, one run at a time")
    parser.add_argument("--t0", type=float, default=None, help="epoch seconds the budget counts from (default: now)")
    parser.add_argument("--budget-s", type=float, default=330.0, help="all runs end by t0 + this (default: 330)")
    parser.add_argument("--reserve-s", type=float, default=45.0, help="per run: start-up and test time (default 45)")
    parser.add_argument("--concurrency", type=int, default=None, help="runs at once (default: 12, smoke 1)")
    parser.add_argument("--val-every-epochs", type=int, default=10, help="validation interval of step-based runs")
    parser.add_argument("--device", default=None, help="zoo builds' --device (default: cuda, smoke cpu)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these results (names as in RESULTS)")
    args = parser.parse_args()

    global START
    START = args.t0 or START
    deadline = START + args.budget_s
    smoke = args.smoke
    device = args.device or ("cpu" if smoke else "cuda")
    concurrency = args.concurrency or (1 if smoke else 12)
    work = args.work or Path("/tmp/digits_work")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    python = sys.executable
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NFN_TORCH_THREADS="1",
        WANDB_MODE="disabled",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    zoo_root = Path("/tmp/nfn_smoke_zoos") if smoke else REPO / "data"
    zoos = {"inr": zoo_root / "digits_inr_zoo", "cnn": zoo_root / "digits_cnn_zoo"}
    runs_root = Path("/tmp/nfn_smoke_runs") if smoke else REPO / "runs"  # smoke runs stay out of runs/
    names = [n for n in LAUNCH_ORDER if args.only is None or n in args.only]
    unknown = sorted(set(args.only or ()) - set(RESULTS))
    if unknown:
        raise SystemExit(f"--only: unknown results {unknown}; choose from {list(RESULTS)}")

    summary: dict[str, Any] = {
        "what": "experiments/digits/*.yaml on the digits zoos; test metrics of the best validation checkpoint",
        "smoke": smoke,
        "host": platform.node(),
        "python": sys.version.split()[0],
        "gpu": gpu_info(),
        "versions": versions(),
        "budget_s": args.budget_s,
        "concurrency": concurrency,
        "val_every_epochs_step_based": args.val_every_epochs,
        "seed": 0,
        "zoos": {},
        "runs": {},
    }
    log(f"versions: {summary['versions']}")
    log(f"gpu: {summary['gpu']}")

    def write_summary() -> None:
        tmp = out / "digits_results.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1, default=str))
        tmp.replace(out / "digits_results.json")

    write_summary()
    check_imports(python, env)

    # --- zoo builds --------------------------------------------------------------------------------
    builds: dict[str, Job] = {}
    for kind, path in zoos.items():
        command = [python, "-m", "nfn_lab", "zoo", "build", kind, str(path), "--device", device, "--quiet"]
        if path.exists():
            command.append("--overwrite")
        if smoke:
            command += ["--steps", "30"] if kind == "inr" else ["--num-networks", "16", "--steps", "0,1"]
        if kind == "inr" and not any(n.startswith(("classify", "edit")) for n in names):
            continue
        if kind == "cnn" and not any(n.startswith("predict_gen") for n in names):
            continue
        builds[kind] = Job(f"build_{kind}", command, work / "logs" / f"build_{kind}.log")
        builds[kind].start(env)
        log(f"building {kind} zoo: {' '.join(command)}")
        if smoke:  # one process at a time on the CPU
            builds[kind].process.wait()

    # --- fits ----------------------------------------------------------------------------------------
    trainer_preset = "experiments/trainer/cpu.yaml" if smoke else "experiments/trainer/gpu.yaml"
    pending = [
        Job(
            name,
            [],
            work / "logs" / f"{name}.log",
            zoo="cnn" if name.startswith("predict_gen") else "inr",
            result_path=work / "results" / f"{name}.json",
        )
        for name in names
    ]
    running: list[Job] = []
    finished: list[Job] = []

    def fit_command(job: Job, max_time_s: int) -> list[str]:
        config = f"experiments/digits/{job.name}.yaml"
        command = [
            python,
            str(FIT_ONE),
            str(job.result_path),
            "--",
            "fit",
            "--config",
            config,
            "--trainer",
            trainer_preset,
            "--wandb",
            "disabled",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.max_time",
            f"00:00:{max_time_s // 60:02d}:{max_time_s % 60:02d}",
        ]
        if job.zoo == "inr":
            command += ["--trainer.check_val_every_n_epoch", str(args.val_every_epochs)]
        if smoke:
            command += ["--trainer.default_root_dir", str(runs_root)]
            command += [
                "--data.init_args.root",
                str(zoos[job.zoo]),
                "--trainer.limit_val_batches",
                "2",
                "--trainer.limit_test_batches",
                "2",
            ]
            command += (
                ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
                if job.zoo == "cnn"
                else [
                    "--trainer.max_steps",
                    "2",
                    "--trainer.check_val_every_n_epoch",
                    "1",
                    "--trainer.limit_train_batches",
                    "2",
                ]
            )
        return command

    def record(job: Job) -> None:
        entry: dict[str, Any] = {
            "command": " ".join(job.command[job.command.index("--") + 1 :]) if job.command else None,
            "returncode": job.returncode,
            **job.extra,
        }
        if job.started and job.ended:
            entry["process_wall_s"] = round(job.ended - job.started, 1)
        if job.result_path is not None and job.result_path.is_file():
            result = json.loads(job.result_path.read_text())
            result.pop("args", None)
            entry.update(result)
            entry["val_curve"] = val_curve(result.get("log_dir"), result.get("monitor"))
        elif job.returncode is not None or job.extra:
            entry.setdefault("status", "failed")
            # A killed run wrote no result file; its metrics.csv still shows how far it got.
            versions_dirs = sorted((runs_root / "digits" / job.name).glob("version_*"), key=lambda p: p.stat().st_mtime)
            if versions_dirs:
                entry["log_dir"] = str(versions_dirs[-1])
                entry["val_curve"] = val_curve(
                    entry["log_dir"], next(m for k, m in MONITORS.items() if job.name.startswith(k))
                )
        entry["log_tail"] = tail(job.log_path, 8)
        summary["runs"][job.name] = entry
        write_summary()

    def build_done(kind: str) -> bool | None:
        """True when built, False when the build failed, None while it runs."""
        job = builds.get(kind)
        if job is None:
            return False
        if not job.poll():
            return None
        if kind not in summary["zoos"]:
            summary["zoos"][kind] = {
                "command": " ".join(job.command[1:]),
                "returncode": job.returncode,
                "wall_s": round(job.ended - job.started, 1),
                "log_tail": tail(job.log_path, 5),
            }
            log(f"{kind} zoo build ended with code {job.returncode} after {job.ended - job.started:.0f}s")
            write_summary()
        return job.returncode == 0

    hard_deadline = deadline + 20
    while pending or running:
        for kind in builds:  # record build times as they end
            build_done(kind)
        for job in list(running):
            if job.poll():
                running.remove(job)
                finished.append(job)
                record(job)
                status = summary["runs"][job.name].get("status")
                log(
                    f"{job.name} ended (code {job.returncode}, {status}) after {job.ended - job.started:.0f}s: "
                    f"{summary['runs'][job.name].get('test')}"
                )
        for job in list(pending):
            if len(running) >= concurrency:
                break
            ready = build_done(job.zoo)
            if ready is None:
                continue
            pending.remove(job)
            if not ready:
                job.extra["skipped"] = f"the {job.zoo} zoo build failed"
                record(job)
                continue
            max_time = int(deadline - now() - args.reserve_s)
            if max_time < 20 and not smoke:
                job.extra["skipped"] = f"only {max_time + args.reserve_s:.0f}s left before the deadline"
                record(job)
                log(f"{job.name} skipped: no time left")
                continue
            max_time = max(max_time, 60) if smoke else max_time
            job.command = fit_command(job, max_time)
            job.start(env)
            running.append(job)
            job.extra["max_time_s"] = max_time
            log(f"started {job.name} (max_time {job.extra['max_time_s']}s): {' '.join(job.command[4:])}")
        if not smoke and now() > hard_deadline:
            for job in running:
                log(f"{job.name} still running at the hard deadline: killing it")
                job.kill()
                record(job)
            running.clear()
            for job in pending:
                job.extra["skipped"] = "not started before the deadline"
                record(job)
            pending.clear()
        time.sleep(0.5)
    for kind in builds:
        build_done(kind)

    # --- outputs -------------------------------------------------------------------------------------------
    table = {}
    for name in RESULTS:
        run = summary["runs"].get(name, {})
        tests = run.get("test") or [{}]
        metric = next(m for prefix, m in METRICS.items() if name.startswith(prefix))
        table[name] = {
            "metric": metric,
            "value": tests[0].get(metric),
            "status": run.get("status", "not run"),
            "steps": run.get("global_step"),
            "epochs": run.get("epochs_started"),
            "stopped_early": run.get("stopped_early"),
            "train_s": run.get("wall_s"),
        }
    summary["table"] = table
    summary["total_wall_s"] = round(now() - START, 1)
    write_summary()
    with open(out / "digits_log_tail.txt", "w") as handle:
        handle.write(json.dumps({k: summary[k] for k in ("python", "gpu", "versions")}, indent=1) + "\n")
        for job in [*builds.values(), *finished]:
            handle.write(f"\n===== {job.name} (code {job.returncode}) =====\n{tail(job.log_path, 60)}\n")
    log("table: " + json.dumps(table, indent=1))
    log(f"wrote {out / 'digits_results.json'} and {out / 'digits_log_tail.txt'}")


if __name__ == "__main__":
    main()
