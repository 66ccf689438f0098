"""Checks that carried wheels plus what is installed satisfy every wheel's requirements.

Usage::

    python scripts/device/check_wheels.py [--site DIR] [--extra jsonargparse=signatures] WHEEL_DIR

For each ``*.whl`` in ``WHEEL_DIR`` it reads ``Requires-Dist`` from the wheel's METADATA,
evaluates the environment markers for *this* interpreter (run it with the Python that will
use the wheels), and looks each requirement up among the installed distributions (``--site``
first, then ``sys.path``). Extras named with ``--extra`` (default: ``jsonargparse=signatures``,
what LightningCLI needs) are checked too. Prints one line per unmet requirement and exits 1
if there is any; needs only ``packaging``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def wheel_requirements(wheel: Path) -> tuple[str, list[str]]:
    """The wheel's project name and its ``Requires-Dist`` lines."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Name:"))
    requires = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
    return name, requires


def installed_versions(paths: list[str]) -> dict[str, str]:
    """Canonical name -> version of every distribution on ``paths`` (the first found wins)."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=paths):
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", type=Path, help="folder of .whl files")
    parser.add_argument("--site", action="append", default=[], help="install target(s) searched first")
    parser.add_argument("--extra", action="append", default=None, help="PROJECT=EXTRA to check as well")
    args = parser.parse_args()
    extras: dict[str, set[str]] = {}
    for item in args.extra or ["jsonargparse=signatures"]:
        project, _, extra = item.partition("=")
        extras.setdefault(canonicalize_name(project), set()).add(extra)
    installed = installed_versions([*args.site, *sys.path])
    wheels = sorted(args.wheels.glob("*.whl"))
    if not wheels:
        print(f"check_wheels: no wheels in {args.wheels}", file=sys.stderr)
        return 1
    problems = []
    for wheel in wheels:
        project, requires = wheel_requirements(wheel)
        wanted = extras.get(canonicalize_name(project), set())
        for line in requires:
            req = Requirement(line)
            environments = [{"extra": e} for e in sorted(wanted)] + [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in environments):
                continue
            have = installed.get(canonicalize_name(req.name))
            if have is None:
                problems.append(f"{project}: needs {req} - not installed")
            elif req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{project}: needs {req} - found {req.name} {have}")
    for line in problems:
        print("check_wheels:", line)
    print(f"check_wheels: {len(wheels)} wheels, {len(problems)} unmet requirement(s) (Python {sys.version.split()[0]})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
