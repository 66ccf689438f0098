"""The sweep file: a W&B sweep configuration whose parameter names are LightningCLI keys.

Two keys are ours: ``base_config`` (the runs' YAML config, or a list of them) and optional
``fixed_args`` (more CLI keys, the same in every trial)::

    method: bayes                                 # grid | random | bayes
    metric: {name: val/kendall_tau, goal: maximize}
    base_config: experiments/digits/predict_gen_hnp.yaml
    fixed_args: {trainer.max_epochs: 50}
    parameters:
      model.init_args.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}
      model.init_args.backbone.init_args.hidden_channels: {values: [[16, 16, 5], [32, 32, 5]]}
    early_terminate: {type: hyperband, min_iter: 3, eta: 3}
    run_cap: 20                                   # at most this many finished trials

:func:`load_sweep` checks everything a trial needs before any trial starts: the keys, the
method, every distribution (only those the local engine, Optuna, can express: see
:data:`DISTRIBUTIONS`; the others are named with the fix), ``early_terminate``, and that
``metric.name`` is a validation metric the base config's task logs each epoch.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import yaml

__all__ = [
    "DISTRIBUTIONS",
    "METHODS",
    "Hyperband",
    "Parameter",
    "SweepSpec",
    "best_value",
    "cli_args",
    "cli_value",
    "load_sweep",
]

METHODS = ("grid", "random", "bayes")
_Default = TypeVar("_Default", float, None)
Goal = Literal["maximize", "minimize"]
GOALS = ("maximize", "minimize")
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

_KEYS = {  # the entry keys each distribution reads
    "constant": {"value"},
    "categorical": {"values"},
    "int_uniform": {"min", "max"},
    "uniform": {"min", "max"},
    "q_uniform": {"min", "max", "q"},
    "log_uniform": {"min", "max"},
    "log_uniform_values": {"min", "max"},
}
DISTRIBUTIONS = tuple(_KEYS)
"""The W&B distributions the sweep engine (Optuna) samples exactly."""
_INEXPRESSIBLE = {  # W&B distributions Optuna has no counterpart for -> the fix
    "normal": "use `uniform` over a range (Optuna has no normal distribution)",
    "log_normal": "use `log_uniform_values` over a range (Optuna has no log-normal distribution)",
    "beta": "use `uniform` over a range (Optuna has no beta distribution)",
    "q_normal": "use `q_uniform` over a range (Optuna has no normal distribution)",
    "q_log_normal": "list the values with `values: [...]` (Optuna has no log-normal distribution)",
    "q_beta": "use `q_uniform` over a range (Optuna has no beta distribution)",
    "q_log_uniform": "use `log_uniform` or list the values (Optuna samples a log scale or steps, not both)",
    "q_log_uniform_values": "use `log_uniform_values` or list the values (Optuna samples log scale or steps, not both)",
    "inv_log_uniform": "list the values with `values: [...]` (Optuna has no inverse log-uniform distribution)",
    "inv_log_uniform_values": "list the values with `values: [...]` (Optuna has no inverse log-uniform distribution)",
}
_HYPERBAND_KEYS = ("type", "min_iter", "max_iter", "s", "eta")


def best_value(values: Iterable[float], goal: str, default: _Default = None) -> float | _Default:  # type: ignore[assignment]
    """The best of ``values`` for ``goal`` (``maximize`` or ``minimize``), or ``default`` if there are none."""
    return (max if goal == "maximize" else min)(values, default=default)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


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


@dataclass(frozen=True)
class Hyperband:
    """``early_terminate: {type: hyperband, ...}``: stop trials whose metric lags, at epochs ``min_iter * eta^k``.

    Attributes:
        min_iter: the first epoch at which a trial can be stopped.
        max_iter: the epochs of a full trial (None: taken from the first trial that finishes).
        eta: the reduction factor (a third of the trials go on at each rung with ``eta: 3``).
    """

    min_iter: int
    max_iter: int | None
    eta: int


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


def _check_entry(name: str, distribution: str, entry: Mapping[str, Any]) -> None:
    if "probabilities" in entry:
        raise ValueError(
            f"parameter {name!r}: `probabilities` has no counterpart in the sweep engine (Optuna draws the values "
            "evenly); remove it, or repeat a value in `values` to weight it."
        )
    used = _KEYS[distribution]
    unused = set(entry) - used - {"distribution"}
    if unused:
        raise ValueError(
            f"parameter {name!r}: distribution {distribution!r} reads {sorted(used)} but the entry also has "
            f"{sorted(unused)}; remove them or pick the distribution that uses them."
        )
    missing = sorted(used - set(entry))
    if missing:
        raise ValueError(f"parameter {name!r}: distribution {distribution!r} needs {missing}.")
    for key in sorted(used - {"value", "values"}):
        if not _is_number(entry[key]):
            hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(entry[key], str) else ""
            raise ValueError(f"parameter {name!r}: `{key}` must be a number, got {entry[key]!r}{hint}.")
    if distribution == "categorical" and (not isinstance(entry["values"], list) or not entry["values"]):
        raise ValueError(f"parameter {name!r}: `values` must be a non-empty list, got {entry['values']!r}.")
    if "min" not in used:
        return
    low, high = entry["min"], entry["max"]
    if low > high:
        raise ValueError(f"parameter {name!r}: min {low} is above max {high}.")
    if distribution == "int_uniform" and not (isinstance(low, int) and isinstance(high, int)):
        raise ValueError(f"parameter {name!r}: int_uniform needs integer min and max, got {low!r}, {high!r}.")
    if distribution == "log_uniform_values" and low <= 0:
        raise ValueError(
            f"parameter {name!r}: log_uniform_values needs min > 0 (it samples log(min)..log(max)), got {low}; "
            "log_uniform takes the exponents instead."
        )
    if distribution == "q_uniform":
        q = entry["q"]
        if q <= 0 or not all(math.isclose(round(x / q) * q, x, abs_tol=1e-12) for x in (low, high)):
            raise ValueError(
                f"parameter {name!r}: q_uniform needs a positive `q` that divides min and max (Optuna steps from "
                f"min), got q={q!r}, min={low!r}, max={high!r}; make min and max multiples of q."
            )


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
    if distribution in _INEXPRESSIBLE:
        raise ValueError(
            f"parameter {name!r}: distribution {distribution!r} cannot be sampled by the sweep engine (Optuna); "
            f"{_INEXPRESSIBLE[distribution]}."
        )
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"parameter {name!r}: unknown distribution {distribution!r}; supported: {', '.join(DISTRIBUTIONS)}."
        )
    _check_entry(name, distribution, entry)
    return Parameter(name, distribution, dict(entry))


def _hyperband(raw: Mapping[str, Any]) -> Hyperband | None:
    entry = raw.get("early_terminate")
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or entry.get("type") != "hyperband":
        raise ValueError(
            f"early_terminate must be `{{type: hyperband, min_iter: N, eta: 3}}`, got {entry!r}; "
            "hyperband is the only early termination W&B defines."
        )
    unknown = sorted(set(entry) - set(_HYPERBAND_KEYS))
    if unknown:
        raise ValueError(
            f"early_terminate has {unknown}, which the sweep engine (Optuna's HyperbandPruner) cannot express; "
            f"remove them (it reads {', '.join(_HYPERBAND_KEYS)})."
        )
    for key in ("min_iter", "max_iter", "s", "eta"):
        value = entry.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"early_terminate.{key} must be a positive integer (epochs or a count), got {value!r}.")
    eta = entry.get("eta", 3)
    if eta < 2:
        raise ValueError(f"early_terminate.eta must be at least 2 (the reduction factor), got {eta}.")
    max_iter = entry.get("max_iter")
    if "min_iter" in entry:
        min_iter = entry["min_iter"]
    elif max_iter is not None:  # W&B: s brackets below max_iter, each eta times shorter
        min_iter = max(1, max_iter // eta ** entry.get("s", 1))
    else:
        raise ValueError("early_terminate needs `min_iter` (or `max_iter` with `s`): the first epoch to stop at.")
    if max_iter is not None and max_iter < min_iter:
        raise ValueError(f"early_terminate.max_iter {max_iter} is below min_iter {min_iter}.")
    return Hyperband(min_iter, max_iter, eta)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file (see the module docstring).

    Attributes:
        path: the file.
        method: ``grid``, ``random`` or ``bayes``.
        metric, goal: the validation metric trials are ranked by and ``maximize``/``minimize``.
        parameters: the swept keys, in file order.
        base_configs: ``--config`` files of every trial (paths as written, from the working directory).
        fixed_args: CLI keys set the same way in every trial.
        run_cap: the most finished trials the sweep runs (None: unbounded).
        hyperband: the ``early_terminate`` schedule, or None.
        command: the trial command template (W&B macros ``${interpreter}``, ``${args}``, ...).
        program: what ``${program}`` stands for, if given.
        raw: the file's content.
    """

    path: Path
    method: str
    metric: str
    goal: Goal
    parameters: tuple[Parameter, ...]
    base_configs: tuple[str, ...]
    fixed_args: dict[str, Any]
    run_cap: int | None
    hyperband: Hyperband | None
    command: tuple[str, ...]
    program: str | None
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        """The file's ``name`` or else its stem; also the name of the Optuna study."""
        return str(self.raw.get("name") or self.path.stem)

    @property
    def parameter_names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def base_args(self) -> list[str]:
        """``--config=...`` for each base config, then the fixed args: the part every trial shares."""
        return [f"--config={c}" for c in self.base_configs] + cli_args(self.fixed_args)

    def command_for(self, overrides: Mapping[str, Any], run_name: str, run_root: Path, *extra: str) -> list[str]:
        """The command line of one trial: the shared args, ``overrides``, its run name and folder, ``extra``."""
        args = [*self.base_args(), *cli_args(overrides), f"--run_name={run_name}"]
        args += [f"--trainer.default_root_dir={run_root}", *extra]
        values = {
            "${env}": [],  # W&B's /usr/bin/env: a no-op when no variables are assigned
            "${interpreter}": [sys.executable],
            "${program}": [self.program] if self.program else [],
            "${args}": args,
            "${args_no_hyphens}": [a.removeprefix("--") for a in args],
        }
        return [part for token in self.command for part in values.get(token, [token])]

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


def _metric(raw: Mapping[str, Any]) -> tuple[str, Goal]:
    metric = raw.get("metric")
    if not isinstance(metric, Mapping) or not isinstance(metric.get("name"), str) or not metric["name"]:
        raise ValueError(
            "the sweep needs `metric: {name: ..., goal: maximize|minimize}`, the validation metric trials are ranked "
            "by (usually the task's monitor, e.g. val/kendall_tau with goal maximize)."
        )
    goal = metric.get("goal")
    if goal not in GOALS:
        raise ValueError(f"metric.goal must be one of {GOALS}, got {goal!r}.")
    return metric["name"], cast(Goal, goal)


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


def _task_class(base_configs: Sequence[str], fixed: Mapping[str, Any]) -> Any:
    """The task class the trials train (``model.class_path`` of the last config that names one), or None."""
    class_path = fixed.get("model.class_path")
    for config in reversed(base_configs) if class_path is None else ():
        model = (yaml.safe_load(Path(config).read_text()) or {}).get("model")
        if isinstance(model, Mapping) and isinstance(model.get("class_path"), str):
            class_path = model["class_path"]
            break
    if not isinstance(class_path, str):
        return None  # e.g. the model in a nested config file: LightningCLI checks it when the trial starts
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module or "nfn_lab.tasks"), name)
    except (ImportError, AttributeError):
        raise ValueError(f"model.class_path {class_path!r} of the base config cannot be imported; fix it.") from None


def _check_metric_is_logged(metric: str, base_configs: Sequence[str], fixed: Mapping[str, Any]) -> None:
    task = _task_class(base_configs, fixed)
    logged = getattr(task, "validation_metrics", lambda: None)()
    if logged is not None and metric not in logged:
        raise ValueError(
            f"metric.name {metric!r} is not a validation metric {task.__name__} logs each epoch; use one of "
            f"{', '.join(sorted(logged))}."
        )


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Reads and validates a sweep file.

    Base config paths are resolved from the working directory, as ``nfn-lab fit --config`` does.

    Raises:
        ValueError: one line naming the file, the key and the fix: unknown keys or method, a
            missing metric or one the task does not log, a distribution that is malformed or
            that Optuna cannot express, a bad ``early_terminate``, a missing base config, ...
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {path} not found.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
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
        raise ValueError(f"`method` must be one of {', '.join(METHODS)} (W&B's methods), got {method!r}.")
    metric, goal = _metric(raw)
    entries = raw.get("parameters")
    if not isinstance(entries, dict) or not entries:
        raise ValueError(
            "`parameters` must map at least one CLI key to its values, e.g. "
            "{model.init_args.lr: {values: [0.001, 0.01]}}."
        )
    parameters = tuple(_parameter(name, entry) for name, entry in entries.items())
    if method == "grid":
        continuous = [p.name for p in parameters if p.distribution not in ("constant", "categorical", "int_uniform")]
        if continuous:
            raise ValueError(
                f"parameter {continuous[0]!r}: grid search needs a finite set of values; list them with "
                "`values: [...]` or use `method: random` or `bayes`."
            )
    hyperband = _hyperband(raw)
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
    _check_metric_is_logged(metric, base_configs, fixed)
    return SweepSpec(
        path, method, metric, goal, parameters, base_configs, fixed, run_cap, hyperband, _command(raw),
        raw.get("program"), raw,
    )  # fmt: skip
