"""pyproject.toml and environment.yml agree, and every lower bound says why it is there."""

from __future__ import annotations

import importlib.metadata
import re
import stat
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"

CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge names that differ from PyPI names
CONDA_ONLY = {"python", "pip"}  # the interpreter and installer, not dependencies


def _pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def _pyproject_requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    return [Requirement(s) for s in specs]


def _lower_bound(req: Requirement) -> Version | None:
    bounds = [Version(s.version) for s in req.specifier if s.operator == ">="]
    return max(bounds) if bounds else None


def _conda_requirements() -> list[Requirement]:
    """The environment's conda and pip entries as PEP 508 requirements, under their PyPI names."""
    reqs = []
    for entry in yaml.safe_load(ENVIRONMENT.read_text())["dependencies"]:
        if isinstance(entry, dict):  # the pip section
            reqs += [Requirement(s) for s in entry["pip"] if not s.startswith("-e")]
            continue
        name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", entry).groups()
        if name not in CONDA_ONLY:
            reqs.append(Requirement(CONDA_TO_PIP.get(name, name) + spec.replace(" ", "")))
    return reqs


def _by_name(reqs: list[Requirement]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in reqs}


def test_environment_names_the_same_packages_as_pyproject() -> None:
    assert sorted(_by_name(_conda_requirements())) == sorted(_by_name(_pyproject_requirements()))


@pytest.mark.parametrize("name", sorted(_by_name(_pyproject_requirements())))
def test_environment_has_the_same_lower_bound_and_extras(name: str) -> None:
    pip_req = _by_name(_pyproject_requirements())[name]
    conda_req = _by_name(_conda_requirements()).get(name)
    assert conda_req is not None, f"environment.yml lacks {name}"
    assert _lower_bound(conda_req) == _lower_bound(pip_req)
    assert conda_req.extras == pip_req.extras


@pytest.mark.parametrize("req", _pyproject_requirements(), ids=str)
def test_installed_versions_satisfy_the_bounds(req: Requirement) -> None:
    installed = importlib.metadata.version(req.name)
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} violates {req}"


def _bound_lines(text: str) -> list[str]:
    """Lines of pyproject.toml that state a lower bound or a pin (quoted requirements and requires-python)."""
    return [line.strip() for line in text.splitlines() if re.search(r'["\'][^"\']*(>=|==)', line)]


def test_bound_lines_are_found() -> None:
    lines = _bound_lines(PYPROJECT.read_text())
    # one line per dependency, the build requirement and requires-python
    assert len(lines) == len(_pyproject_requirements()) + 2


@pytest.mark.parametrize("line", _bound_lines(PYPROJECT.read_text()))
def test_every_lower_bound_says_why(line: str) -> None:
    _, sep, comment = line.partition("#")
    assert sep, f"no '# why' comment on: {line}"
    assert len(comment.split()) >= 3, f"the comment does not explain the bound: {line}"


def test_bound_check_rejects_an_unexplained_bound() -> None:
    for unexplained in ('  "torch>=2.2",\n', '  "ruff==0.1.0",\n'):
        (line,) = _bound_lines(unexplained)
        with pytest.raises(AssertionError):
            test_every_lower_bound_says_why(line)


def test_scripts_point_at_existing_functions() -> None:
    for target in _pyproject()["project"]["scripts"].values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))


def test_ci_script_runs_the_readme_test_command() -> None:
    ci = ROOT / ".ci" / "run"
    text = ci.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert ci.stat().st_mode & stat.S_IXUSR, ".ci/run must be executable"
    assert re.search(r"^make test$", text, re.M)  # the README's test command (checked below)


def _readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_python_examples() -> None:
    assert len(_readme_python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_readme_python_blocks())))
def test_readme_python_example_runs(index: int) -> None:
    exec(compile(_readme_python_blocks()[index], f"README.md python block {index}", "exec"), {})


def test_readme_gives_the_two_make_commands() -> None:
    commands = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert commands == ["make run", "make test"]
