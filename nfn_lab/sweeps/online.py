"""The W&B backend: the sweep file goes to W&B's controller, ``wandb.agent`` runs its trials here.

``auto`` picks this backend when wandb is installed, an API key is configured and
``WANDB_MODE`` is not offline/disabled. The sweep is created with ``wandb.sweep`` (its id
kept in the sweep folder, so a rerun joins the same sweep, as does ``wandb agent SWEEP_ID``
on another machine) and each configuration W&B's controller picks runs as a subprocess
trial (:func:`nfn_lab.sweeps.trial.run_trial`) logging to its W&B run.
"""

from __future__ import annotations

import importlib.util
import json
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from nfn_lab.sweeps.spec import SweepSpec, best_value
from nfn_lab.sweeps.trial import latest_version, run_trial

__all__ = ["BACKENDS", "agent_overrides", "choose_backend", "run_wandb", "wandb_api_key"]

BACKENDS = ("auto", "wandb", "local")
DEFAULT_PROJECT = "nfn-lab"  # the project the CLI's WandbLogger logs to
WANDB_STATE = "wandb_sweep.json"


def wandb_api_key() -> str | None:
    """The W&B API key from ``WANDB_API_KEY`` or the netrc entry ``wandb login`` writes (no network)."""
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).netloc
    file = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        auth = netrc.netrc(file).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return auth[2] if auth else None


def choose_backend(requested: str = "auto") -> tuple[str, str]:
    """``("wandb" | "local", why)`` for ``--backend requested``.

    Raises:
        ValueError: ``requested`` is ``wandb`` but W&B cannot sync, or it is unknown.
    """
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; use one of {BACKENDS}.")
    if requested == "local":
        return "local", "--backend local"
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        why = f"WANDB_MODE={mode}"
    elif importlib.util.find_spec("wandb") is None:
        why = "wandb is not installed"
    elif not wandb_api_key():
        why = "no W&B API key: set WANDB_API_KEY or run `wandb login`"
    else:
        return "wandb", "wandb is installed and logged in"
    if requested == "wandb":
        raise ValueError(f"--backend wandb cannot sync: {why}. Use --backend local to run the sweep offline.")
    return "local", why


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


def run_wandb(spec: SweepSpec, sweep_dir: Path, count: int | None = None) -> list[dict[str, Any]]:
    """Creates (or joins) the W&B sweep and runs ``wandb.agent`` on it in this process.

    Each configuration the agent receives runs as a trial with ``--wandb=online``; the trial
    inherits the agent's ``WANDB_RUN_ID``/``WANDB_SWEEP_ID``, so its WandbLogger logs into the
    sweep's run. A failed trial is reported to the agent as a failed run.

    Args:
        spec: the sweep.
        sweep_dir: the sweep's id file, and the trials' logs and run folders.
        count: trials this agent runs (None: until W&B's controller stops, e.g. at ``run_cap``).

    Returns:
        one record per trial this agent ran, for :func:`nfn_lab.sweeps.report.results_table`.
    """
    import wandb

    project, entity = spec.raw.get("project", DEFAULT_PROJECT), spec.raw.get("entity")
    sweep_id = _sweep_id(sweep_dir, spec.to_wandb(), project, entity)
    records: list[dict[str, Any]] = []

    def agent_trial() -> None:
        overrides = agent_overrides(spec)
        name = f"trial-{os.environ.get('WANDB_RUN_ID', len(records))}"
        print(f"[{name}] start {json.dumps(overrides)}", flush=True)
        command = spec.command_for(overrides, name, sweep_dir / "runs", "--wandb=online")
        outcome = run_trial(command, spec.metric, sweep_dir / "logs" / f"{name}.log")
        ok = outcome.returncode == 0 and bool(outcome.values)
        best = best_value(outcome.values, spec.goal)
        records.append({
            "trial": name, "status": "done" if ok else "failed", "value": best, "epochs": len(outcome.values),
            "overrides": overrides, "run_dir": str(latest_version(sweep_dir / "runs" / name) or ""),
        })  # fmt: skip
        print(f"[{name}] {'done' if ok else 'FAILED'} ({spec.metric}={best})", flush=True)
        if not ok:
            raise RuntimeError(f"trial {name} failed; see {outcome.log}:\n{outcome.log_tail()}")

    wandb.agent(sweep_id, function=agent_trial, project=project, entity=entity, count=count)
    return records
