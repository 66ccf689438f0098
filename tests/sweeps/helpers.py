"""Sweep files for the sweep tests: a valid grid sweep with keys replaced or removed."""

from __future__ import annotations

from pathlib import Path

import yaml

LR, HIDDEN = "model.init_args.lr", "model.init_args.backbone.init_args.hidden"
TASK = {"class_path": "nfn_lab.tasks.PredictGeneralizationTask"}  # logs val/loss, val/kendall_tau, val/r2, val/l1


def write_base(folder: Path, **content) -> Path:
    """A base config: ``content`` (default: one epoch of the generalization task)."""
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(content or {"model": TASK, "trainer": {"max_epochs": 1}}))
    return path


def write_sweep(folder: Path, base: Path, /, **entries) -> Path:
    """A valid grid sweep over ``base``, with ``entries`` replacing or (as None) removing keys."""
    content = {
        "method": "grid",
        "metric": {"name": "val/kendall_tau", "goal": "maximize"},
        "base_config": str(base),
        "parameters": {LR: {"values": [0.1, 0.01]}, HIDDEN: {"values": [8, 16, 32]}},
        **entries,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in content.items() if v is not None}, sort_keys=False))
    return path


FAKE_FIT = """
import json, os, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
lr = float(args["model.init_args.lr"])
print("training", flush=True)
if lr > 1:
    sys.exit(3)
with open(os.environ["NFN_LAB_SWEEP_REPORT"], "a") as f:
    for step in range(1, 4):
        f.write(json.dumps({"step": step, "metrics": {"val/loss": lr * step, "train/loss": 1.0}}) + "\\n")
        f.flush()
        time.sleep(0.05)
time.sleep(float(args.get("trainer.max_time", 0)))
"""
"""A stand-in for ``nfn-lab fit`` (no torch): reports val/loss = lr * epoch for 3 epochs, then sleeps
``--trainer.max_time`` seconds; exits 3 when lr > 1."""


def write_fake_sweep(folder: Path, /, **entries) -> Path:
    """A sweep whose trials run :data:`FAKE_FIT`, ranked by val/loss (minimize)."""
    command = ["${interpreter}", "-c", FAKE_FIT, "${args}"]
    base = write_base(folder, trainer={"max_epochs": 3})
    entries = {
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {LR: {"values": [0.1, 0.2]}},
        **entries,
    }
    return write_sweep(folder, base, command=command, **entries)
