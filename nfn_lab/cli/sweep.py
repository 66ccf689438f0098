"""``nfn-lab sweep FILE``: hyperparameter sweeps in the W&B sweep format, online or offline.

A sweep file is a W&B sweep configuration whose parameter names are LightningCLI keys,
plus two keys of ours: ``base_config`` (the runs' YAML config, or a list of them) and
optional ``fixed_args`` (more CLI keys, the same in every trial)::

    method: grid                                  # grid | random | bayes
    metric: {name: val/kendall_tau, goal: maximize}
    base_config: experiments/digits/predict_gen_hnp.yaml
    fixed_args: {trainer.max_epochs: 50}
    parameters:
      model.init_args.lr: {values: [0.001, 0.003]}
      model.init_args.backbone.init_args.hidden_channels: {values: [[16, 16, 5], [32, 32, 5]]}
    run_cap: 20                                   # at most this many trials

Every trial is a normal ``nfn-lab fit`` run (see :mod:`nfn_lab.cli.sweep_runner`) named by a
hash of its arguments and written under ``<sweep dir>/runs/<trial id>/version_N``.

Backends:

- ``wandb`` (what ``auto`` picks when wandb is installed, an API key is configured and
  ``WANDB_MODE`` is not offline/disabled): the sweep is created with ``wandb.sweep`` (its
  id kept in the sweep folder, so a rerun joins the same sweep) and ``wandb.agent`` runs
  trials with the configurations W&B's controller picks; each trial logs to its W&B run.
- ``local``: grid or random search from ``--seed`` (bayes falls back to random, with a
  warning). Finished trials are kept in the sweep folder's ledger and not rerun, so an
  interrupted sweep continues where it stopped when rerun with the same command.

Either way the sweep ends with a table of the trials, best first, printed and written as
``results.csv`` and ``results.md`` in the sweep folder (default ``sweeps/<file stem>``).

Usage: ``nfn-lab sweep FILE [--backend auto|wandb|local] [--count N] [--sweep-dir DIR]
[--seed S] [--retry-failed] [--dry-run]``; ``--dry-run`` prints the trial commands (local)
or the configuration sent to W&B.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import itertools
import json
import math
import netrc
import os
import random
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from nfn_lab.cli.sweep_runner import (
    LEDGER,
    Ledger,
    SubprocessTrial,
    Trial,
    cli_args,
    results_table,
    run_local,
    run_wandb,
    write_results,
)

__all__ = [
    "Parameter",
    "SweepSpec",
    "choose_backend",
    "grid_points",
    "load_sweep",
    "main",
    "random_points",
    "wandb_api_key",
]

METHODS = ("grid", "random", "bayes")
GOALS = ("maximize", "minimize")
BACKENDS = ("auto", "wandb", "local")
OUR_KEYS = ("base_config", "fixed_args")
WANDB_KEYS = (
    "program", "command", "method", "metric", "parameters", "run_cap", "early_terminate", "name", "description",
    "project", "entity",
)  # fmt: skip
RESERVED = ("config", "run_name", "trainer.default_root_dir")  # set by the sweep for every trial
DEFAULT_COMMAND = ("${env}", "${interpreter}", "-m", "nfn_lab", "fit", "${args}")
PROGRAM_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")  # W&B's default when `program` is set
ARG_MACROS = ("${args}", "${args_no_hyphens}")
MACROS = ("${env}", "${interpreter}", "${program}", *ARG_MACROS)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

# --- parameters and their distributions -------------------------------------------------------------


def _uniform(rng: random.Random, p: Mapping[str, Any]) -> float:
    return rng.uniform(p["min"], p["max"])


def _log_uniform_values(rng: random.Random, p: Mapping[str, Any]) -> float:
    value = math.exp(rng.uniform(math.log(p["min"]), math.log(p["max"])))
    return min(max(value, p["min"]), p["max"])  # exp(log(x)) may miss x by one ulp


_SAMPLERS: dict[str, Callable[[random.Random, Mapping[str, Any]], Any]] = {
    "constant": lambda rng, p: p["value"],
    "categorical": lambda rng, p: rng.choices(p["values"], weights=p.get("probabilities"))[0],
    "int_uniform": lambda rng, p: rng.randint(p["min"], p["max"]),
    "uniform": _uniform,
    "log_uniform": lambda rng, p: math.exp(_uniform(rng, p)),  # min/max are natural-log exponents
    "log_uniform_values": _log_uniform_values,
    "normal": lambda rng, p: rng.gauss(p.get("mu", 0.0), p.get("sigma", 1.0)),
    "log_normal": lambda rng, p: rng.lognormvariate(p.get("mu", 0.0), p.get("sigma", 1.0)),
    "beta": lambda rng, p: rng.betavariate(p.get("a", 1.0), p.get("b", 1.0)),
}
_KEYS = {  # keys each distribution reads (a q_ variant also reads "q")
    "constant": {"value"},
    "categorical": {"values", "probabilities"},
    "int_uniform": {"min", "max"},
    "uniform": {"min", "max"},
    "log_uniform": {"min", "max"},
    "log_uniform_values": {"min", "max"},
    "normal": {"mu", "sigma"},
    "log_normal": {"mu", "sigma"},
    "beta": {"a", "b"},
}
QUANTIZED = ("uniform", "log_uniform", "log_uniform_values", "normal", "log_normal", "beta")
DISTRIBUTIONS = (*_SAMPLERS, *(f"q_{name}" for name in QUANTIZED))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class Parameter:
    """One swept CLI key and its W&B search space.

    Attributes:
        name: the dotted LightningCLI key, e.g. ``model.init_args.lr``.
        distribution: one of :data:`DISTRIBUTIONS` (given, or inferred as W&B does).
        spec: the file's entry (``values``, ``min``/``max``, ``q``, ...).
    """

    name: str
    distribution: str
    spec: dict[str, Any]

    def sample(self, rng: random.Random) -> Any:
        """One value drawn with ``rng``; ``q_`` distributions round to multiples of ``q`` (int if ``q`` is)."""
        base = self.distribution.removeprefix("q_")
        value = _SAMPLERS[base](rng, self.spec)
        if base != self.distribution:
            q = self.spec.get("q", 1)
            value = round(value / q) * q
            value = int(value) if isinstance(q, int) else value
        return copy.deepcopy(value)  # list values must not alias the spec

    def grid_values(self) -> list[Any]:
        """The values a grid search visits, in file order."""
        if self.distribution == "constant":
            return [self.spec["value"]]
        if self.distribution == "categorical":
            return list(self.spec["values"])
        if self.distribution == "int_uniform":
            return list(range(self.spec["min"], self.spec["max"] + 1))
        raise ValueError(
            f"parameter {self.name!r}: grid search needs a finite set of values, but it has distribution "
            f"{self.distribution!r}; list them with `values: [...]` or use `method: random`."
        )


def _infer_distribution(name: str, entry: Mapping[str, Any]) -> str:
    """W&B's rule when ``distribution`` is left out: values, value, or min/max (int or float)."""
    if "values" in entry:
        return "categorical"
    if "value" in entry:
        return "constant"
    if "min" in entry and "max" in entry:
        integers = all(isinstance(entry[k], int) and _is_number(entry[k]) for k in ("min", "max"))
        return "int_uniform" if integers else "uniform"
    raise ValueError(
        f"parameter {name!r} has neither `values`, `value` nor `min`/`max` (got keys {sorted(entry)}); give e.g. "
        "`{values: [0.001, 0.01]}`, `{value: 0.01}` or `{distribution: log_uniform_values, min: 0.0001, max: 0.1}`."
    )


def _check_number(name: str, key: str, value: Any) -> None:
    if not _is_number(value):
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
        raise ValueError(f"parameter {name!r}: `{key}` must be a number, got {value!r}{hint}.")


def _check_entry(name: str, distribution: str, entry: Mapping[str, Any]) -> None:
    base = distribution.removeprefix("q_")
    used = _KEYS[base] | ({"q"} if base != distribution else set())
    unused = set(entry) - used - {"distribution"}
    if unused:
        raise ValueError(
            f"parameter {name!r}: distribution {distribution!r} reads {sorted(used)} but the entry also has "
            f"{sorted(unused)}; remove them or pick the distribution that uses them."
        )
    bounds = ["min", "max"] if "min" in _KEYS[base] else []
    required = {"constant": ["value"], "categorical": ["values"]}.get(base, bounds)
    missing = [k for k in required if k not in entry]
    if missing:
        raise ValueError(f"parameter {name!r}: distribution {distribution!r} needs {missing}.")
    for key in sorted((used - {"value", "values", "probabilities"}) & set(entry)):
        _check_number(name, key, entry[key])
    if base == "categorical":
        values = entry["values"]
        if not isinstance(values, list) or not values:
            raise ValueError(f"parameter {name!r}: `values` must be a non-empty list, got {values!r}.")
        probabilities = entry.get("probabilities")
        if probabilities is not None and (
            not isinstance(probabilities, list)
            or len(probabilities) != len(values)
            or not all(_is_number(p) and p >= 0 for p in probabilities)
            or not math.isclose(sum(probabilities), 1.0, abs_tol=1e-6)
        ):
            raise ValueError(
                f"parameter {name!r}: `probabilities` must be one non-negative number per value, summing to 1; got "
                f"{probabilities!r} for {len(values)} values."
            )
    if "min" in required:
        low, high = entry["min"], entry["max"]
        if low > high:
            raise ValueError(f"parameter {name!r}: min {low} is above max {high}.")
        if base == "int_uniform" and not (isinstance(low, int) and isinstance(high, int)):
            raise ValueError(f"parameter {name!r}: int_uniform needs integer min and max, got {low!r}, {high!r}.")
        if base == "log_uniform_values" and low <= 0:
            raise ValueError(
                f"parameter {name!r}: log_uniform_values needs min > 0 (it samples log(min)..log(max)), got {low}; "
                "log_uniform takes the exponents instead."
            )
    for key in ("sigma", "a", "b", "q"):
        if key in entry and entry[key] <= 0:
            raise ValueError(f"parameter {name!r}: `{key}` must be positive, got {entry[key]}.")


def _parameter(name: Any, entry: Any) -> Parameter:
    if not isinstance(name, str) or not _KEY.fullmatch(name):
        raise ValueError(f"parameter name {name!r} is not a dotted LightningCLI key such as 'model.init_args.lr'.")
    if name in RESERVED:
        raise ValueError(f"parameter {name!r} is set by the sweep for every trial; it cannot be swept.")
    if not isinstance(entry, Mapping):
        raise ValueError(f"parameter {name!r}: expected a mapping like `{{values: [...]}}`, got {entry!r}.")
    if "parameters" in entry:
        raise ValueError(
            f"parameter {name!r} has nested `parameters`; name each swept key in full instead, e.g. "
            f"'{name}.init_args.lr'."
        )
    distribution = entry.get("distribution") or _infer_distribution(name, entry)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"parameter {name!r}: unknown distribution {distribution!r}; supported: {', '.join(DISTRIBUTIONS)}."
        )
    _check_entry(name, distribution, entry)
    return Parameter(name, distribution, dict(entry))


def grid_points(parameters: Sequence[Parameter]) -> list[dict[str, Any]]:
    """Every combination of the parameters' grid values, the last parameter varying fastest."""
    names = [p.name for p in parameters]
    combos = itertools.product(*(p.grid_values() for p in parameters))
    return [dict(zip(names, copy.deepcopy(combo))) for combo in combos]


def random_points(parameters: Sequence[Parameter], seed: int) -> Iterator[dict[str, Any]]:
    """An endless, seed-determined sequence of random configurations."""
    rng = random.Random(seed)
    while True:
        yield {p.name: p.sample(rng) for p in parameters}


# --- the sweep file ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file (see the module docstring).

    Attributes:
        path: the file.
        method: ``grid``, ``random`` or ``bayes``.
        metric, goal: the metric column trials are ranked by and ``maximize``/``minimize``.
        parameters: the swept keys, in file order.
        base_configs: ``--config`` files of every trial (paths as written, from the working directory).
        fixed_args: CLI keys set the same way in every trial.
        run_cap: the most trials the sweep runs (None: unbounded).
        command: the trial command template (W&B macros ``${interpreter}``, ``${args}``, ...).
        program: what ``${program}`` stands for, if given.
        raw: the file's content.
    """

    path: Path
    method: str
    metric: str
    goal: str
    parameters: tuple[Parameter, ...]
    base_configs: tuple[str, ...]
    fixed_args: dict[str, Any]
    run_cap: int | None
    command: tuple[str, ...]
    program: str | None
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        """The file's ``name`` or else its stem."""
        return str(self.raw.get("name") or self.path.stem)

    @property
    def parameter_names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def base_args(self) -> list[str]:
        """``--config=...`` for each base config, then the fixed args: the part every trial shares."""
        return [f"--config={c}" for c in self.base_configs] + cli_args(self.fixed_args)

    def trial(self, overrides: Mapping[str, Any], run_root: Path, wandb_mode: str | None = None) -> Trial:
        """The trial of ``overrides``: its id hashes the shared arguments and the overrides.

        Args:
            overrides: swept key -> value.
            run_root: where the run folder goes (``--trainer.default_root_dir``).
            wandb_mode: passed as ``--wandb`` when given (the trials of a W&B sweep log ``online``).
        """
        overrides = dict(overrides)
        identity = json.dumps({"args": self.base_args(), "overrides": overrides}, sort_keys=True, default=str)
        trial_id = "trial-" + hashlib.sha256(identity.encode()).hexdigest()[:10]
        args = [*self.base_args(), *cli_args(overrides), f"--run_name={trial_id}"]
        args.append(f"--trainer.default_root_dir={run_root}")
        if wandb_mode is not None:
            args.append(f"--wandb={wandb_mode}")
        return Trial(trial_id, overrides, self._expand(args), Path(run_root))

    def configurations(self, seed: int = 0, total: int | None = None) -> list[dict[str, Any]]:
        """The configurations of a local sweep, without repeats: grid order, or ``seed``'s random draws.

        Args:
            seed: seeds random search.
            total: how many random draws when the file sets no ``run_cap``.

        Raises:
            ValueError: random search with neither ``run_cap`` nor ``total``.
        """
        if self.method == "grid":
            points = grid_points(self.parameters)[: self.run_cap]
        else:
            cap = self.run_cap if self.run_cap is not None else total
            if cap is None:
                raise ValueError(
                    f"{self.path}: random search needs `run_cap` in the file or --count to know when to stop."
                )
            points = list(itertools.islice(random_points(self.parameters, seed), cap))
        unique = {json.dumps(p, sort_keys=True, default=str): p for p in points}
        return list(unique.values())

    def to_wandb(self) -> dict[str, Any]:
        """The sweep as W&B's controller takes it: our keys dropped, the base config folded into ``command``.

        The command is the local trial command in W&B's macros, with ``--wandb=online``, so
        ``wandb agent SWEEP_ID`` on another machine runs the same trials.
        """
        config = {k: copy.deepcopy(v) for k, v in self.raw.items() if k not in (*OUR_KEYS, "project", "entity")}
        shared = [*self.base_args(), "--wandb=online"]
        prefixed = {"${args}": shared, "${args_no_hyphens}": [a.removeprefix("--") for a in shared]}
        config["command"] = [part for token in self.command for part in [*prefixed.get(token, []), token]]
        return config

    def _expand(self, args: list[str]) -> list[str]:
        values = {
            "${env}": [],  # W&B's /usr/bin/env: a no-op when no variables are assigned
            "${interpreter}": [sys.executable],
            "${program}": [self.program] if self.program else [],
            "${args}": args,
            "${args_no_hyphens}": [a.removeprefix("--") for a in args],
        }
        return [part for token in self.command for part in values.get(token, [token])]


def _strings(key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise ValueError(f"`{key}` must be a path or a non-empty list of paths/strings, got {value!r}.")
    return tuple(items)


def _command(raw: Mapping[str, Any]) -> tuple[str, ...]:
    program = raw.get("program")
    if program is not None and not isinstance(program, str):
        raise ValueError(f"`program` must be a script path, got {program!r}.")
    if "command" not in raw:
        return PROGRAM_COMMAND if program else DEFAULT_COMMAND
    command = _strings("command", raw["command"])
    unknown = [t for t in command if t.startswith("${") and t not in MACROS]
    if unknown:
        raise ValueError(f"`command` uses {unknown}; the macros supported here are {', '.join(MACROS)}.")
    if not any(t in ARG_MACROS for t in command):
        raise ValueError(
            "`command` must contain ${args} (or ${args_no_hyphens}): that is where a trial's arguments go."
        )
    if "${program}" in command and not program:
        raise ValueError("`command` uses ${program} but the file sets no `program`.")
    return command


def _metric(raw: Mapping[str, Any]) -> tuple[str, str]:
    metric = raw.get("metric")
    if not isinstance(metric, Mapping) or not isinstance(metric.get("name"), str) or not metric["name"]:
        raise ValueError(
            "the sweep needs `metric: {name: ..., goal: maximize|minimize}`, the logged metric trials are ranked by "
            "(usually the task's monitor, e.g. val/kendall_tau with goal maximize)."
        )
    goal = metric.get("goal")
    if goal not in GOALS:
        raise ValueError(f"metric.goal must be one of {GOALS}, got {goal!r}.")
    return metric["name"], goal


def _fixed_args(raw: Mapping[str, Any], parameters: Sequence[str]) -> dict[str, Any]:
    fixed = raw.get("fixed_args") or {}
    if not isinstance(fixed, Mapping):
        raise ValueError(f"`fixed_args` must map CLI keys to values, e.g. {{trainer.max_epochs: 50}}; got {fixed!r}.")
    for key in fixed:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"fixed_args key {key!r} is not a dotted LightningCLI key such as 'trainer.max_epochs'.")
        if key in RESERVED:
            raise ValueError(f"fixed_args key {key!r} is set by the sweep for every trial; remove it.")
        if key in parameters:
            raise ValueError(f"{key!r} is both swept (parameters) and fixed (fixed_args); keep one.")
    return dict(fixed)


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Reads and validates a sweep file.

    Base config paths are resolved from the working directory, as ``nfn-lab fit --config`` does.

    Raises:
        ValueError: naming the file and the problem: unknown keys or method, missing metric,
            parameters without values or distribution (or with bad bounds), a missing base config, ...
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {path} not found.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    try:
        return _parse(path, raw)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _parse(path: Path, raw: Any) -> SweepSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping of sweep keys, got {type(raw).__name__}.")
    unknown = sorted(set(raw) - set(WANDB_KEYS) - set(OUR_KEYS))
    if unknown:
        raise ValueError(f"unknown keys {unknown}; a sweep file has W&B's keys {WANDB_KEYS} and ours {OUR_KEYS}.")
    method = raw.get("method")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    metric, goal = _metric(raw)
    entries = raw.get("parameters")
    if not isinstance(entries, dict) or not entries:
        raise ValueError(
            "`parameters` must map at least one CLI key to its values, e.g. "
            "{model.init_args.lr: {values: [0.001, 0.01]}}."
        )
    parameters = tuple(_parameter(name, entry) for name, entry in entries.items())
    if "base_config" not in raw:
        raise ValueError("`base_config` is missing: the YAML config every trial starts from (or a list of them).")
    base_configs = _strings("base_config", raw["base_config"])
    for config in base_configs:
        if not Path(config).is_file():
            raise ValueError(
                f"base_config {config} not found (relative paths are read from the working directory, {Path.cwd()})."
            )
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 1):
        raise ValueError(f"`run_cap` must be a positive integer, got {run_cap!r}.")
    fixed = _fixed_args(raw, [p.name for p in parameters])
    return SweepSpec(
        path, method, metric, goal, parameters, base_configs, fixed, run_cap, _command(raw), raw.get("program"), raw
    )


# --- backends ---------------------------------------------------------------------------------------


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

    ``auto`` is ``wandb`` when it can sync: wandb installed, an API key configured, and
    ``WANDB_MODE`` neither offline nor disabled.

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


# --- the command ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfn-lab sweep",
        description="Run a hyperparameter sweep (W&B sweep format) with W&B agents when online, locally otherwise.",
    )
    parser.add_argument("file", type=Path, help="the sweep YAML (see experiments/sweeps/)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default): wandb when logged in and online, else local",
    )
    parser.add_argument("--count", type=int, default=None, help="run at most this many trials now")
    parser.add_argument(
        "--sweep-dir", type=Path, default=None, help="ledger, logs, runs and results (default: sweeps/<file stem>)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of local random search (default 0)")
    parser.add_argument("--retry-failed", action="store_true", help="run trials recorded as failed again (local)")
    parser.add_argument("--dry-run", action="store_true", help="print the trials (local) or the W&B sweep config only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``nfn-lab sweep`` with ``argv`` (default ``sys.argv[1:]``, without the ``sweep`` word).

    Returns:
        0 when every recorded trial finished, 1 if any failed, 2 for a bad sweep file or
        option, 130 when interrupted (rerun the same command to continue).
    """
    args = _parser().parse_args(argv)
    if args.count is not None and args.count < 1:
        print("nfn-lab sweep: error: --count must be at least 1.", file=sys.stderr)
        return 2
    try:
        spec = load_sweep(args.file)
        dry_wandb = args.dry_run and args.backend == "wandb"  # printing W&B's config needs no login
        backend, why = ("wandb", "--backend wandb --dry-run") if dry_wandb else choose_backend(args.backend)
    except ValueError as err:
        print(f"nfn-lab sweep: error: {err}", file=sys.stderr)
        return 2
    sweep_dir = args.sweep_dir or Path("sweeps") / spec.path.stem
    print(f"sweep {spec.name}: {spec.method} search, backend {backend} ({why}), folder {sweep_dir}")
    trial_fn = SubprocessTrial(spec.metric, spec.goal, sweep_dir / "logs")
    try:
        if backend == "wandb":
            run_wandb(spec, sweep_dir, trial_fn, args.count, args.dry_run)
        else:
            run_local(spec, sweep_dir, trial_fn, args.count, args.seed, args.retry_failed, args.dry_run)
    except ValueError as err:
        print(f"nfn-lab sweep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        ledger = sweep_dir / LEDGER
        print(f"\ninterrupted; finished trials are in {ledger}: rerun the same command to go on.", file=sys.stderr)
        return 130
    if args.dry_run:
        return 0
    records = list(Ledger(sweep_dir / LEDGER).records().values())
    if not records:
        return 0
    rows = results_table(records, spec.parameter_names, spec.goal)
    print(write_results(sweep_dir, rows, spec.metric, spec.parameter_names), end="")
    print(f"(also in {sweep_dir / 'results.csv'} and results.md)")
    return 1 if any(r["status"] == "failed" for r in records) else 0
