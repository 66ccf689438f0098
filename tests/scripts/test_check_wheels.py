"""scripts/device/check_wheels.py: the requirements of carried wheels against what is installed."""

import subprocess
import sys
import zipfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "device" / "check_wheels.py"


def _wheel(folder: Path, name: str, requires: list[str]) -> None:
    """A minimal wheel: only its METADATA, with ``Requires-Dist`` lines."""
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0", *(f"Requires-Dist: {r}" for r in requires)]
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{name}-1.0.dist-info/METADATA", "\n".join(lines) + "\n")


def _check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True, check=False)


def test_met_requirements_pass(tmp_path):
    _wheel(tmp_path, "alpha", ["packaging>=1", 'never-needed>=1; extra == "docs"'])
    result = _check(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "1 wheels, 0 unmet requirement(s)" in result.stdout  # the extra nobody asked for is skipped


def test_missing_and_too_old_requirements_are_named(tmp_path):
    _wheel(tmp_path, "alpha", ["no-such-package-nfn-lab>=1", "packaging>=999"])
    result = _check(tmp_path)
    assert result.returncode == 1
    assert "alpha: needs no-such-package-nfn-lab>=1 - not installed" in result.stdout
    assert "alpha: needs packaging>=999 - found packaging" in result.stdout
    assert "2 unmet requirement(s)" in result.stdout


def test_empty_folder_is_an_error(tmp_path):
    result = _check(tmp_path)
    assert result.returncode == 1 and "no wheels" in result.stderr
