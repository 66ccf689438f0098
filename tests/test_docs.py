"""Every reference to a repository file resolves: in code, comments, docstrings, configs and docs.

A reference is a path-like word naming a markdown file (``docs/weight-space.md``,
``benchmarks/README.md``), a benchmark or script (``benchmarks/bench_layers.py``), an experiment
config (``experiments/digits/classify_np.yaml``) or anything under ``docs/``; it resolves when that
file exists relative to the repository root or to the folder of the file that cites it. Relative
markdown links in ``docs/*.md`` and ``README.md`` must resolve too. Words with placeholders
(``<zoo>``, ``*``, ``{a,b}``) and URLs are not references.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("nfn_lab", "datamodules", "benchmarks", "scripts", "experiments", "tests", "docs")
SCANNED_FILES = ("README.md", "Makefile", "pyproject.toml")
SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".toml", ".txt", ".cfg"}
SKIPPED_FOLDERS = {"out", "__pycache__"}  # benchmark reports (ignored by git), bytecode
SKIPPED_FILES = {Path(__file__).resolve()}  # its made-up references are the scanner's test data
# Files that the code writes (run reports) and the folders reports go to: outputs, not citations.
OUTPUT_NAMES = {"results.md", "durations.md"}
OUTPUT_FOLDERS = ("benchmarks/out/", "experiments/out/")

# A maximal path-like word (not inside a URL or a longer word) that names a repository file.
_WORD = r"(?<![\w./:~$*}>-])"
REFERENCE = re.compile(
    _WORD + r"((?:[\w.-]+/)*[\w.-]*\w\.md"
    r"|(?:benchmarks|scripts)/[\w./-]*\w\.(?:py|sh)"
    r"|experiments/[\w./-]*\w\.ya?ml"
    r"|docs/[\w./-]*\w)(?![\w/*<{-])"
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def references(text: str) -> list[str]:
    """The repository file references in ``text``, in order of appearance."""
    return [match.group(1) for match in REFERENCE.finditer(text)]


def relative_links(text: str) -> list[str]:
    """The targets of the markdown links in ``text`` that point into the repository (anchors cut off)."""
    targets = (target.split("#")[0] for target in LINK.findall(text))
    return [t for t in targets if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def resolves(reference: str, cited_in: Path) -> bool:
    """Whether ``reference`` names an existing file or folder, from the root or from ``cited_in``'s folder.

    A report that the code writes (:data:`OUTPUT_NAMES`, :data:`OUTPUT_FOLDERS`) needs no file.
    """
    if Path(reference).name in OUTPUT_NAMES or reference.startswith(OUTPUT_FOLDERS):
        return True
    return any((base / reference).exists() for base in (ROOT, cited_in.parent))


def scanned_files() -> Iterator[Path]:
    for name in SCANNED_FILES:
        if (ROOT / name).exists():
            yield ROOT / name
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            parts = set(path.relative_to(ROOT).parts[:-1])
            hidden = any(part.startswith(".") for part in path.relative_to(ROOT).parts)
            skipped = hidden or parts & SKIPPED_FOLDERS or path in SKIPPED_FILES
            if path.is_file() and path.suffix in SUFFIXES and not skipped:
                yield path


def broken_references() -> list[str]:
    broken = []
    for path in scanned_files():
        text = path.read_text(errors="replace")
        cited = references(text)
        if path.suffix == ".md" and (path.parent == ROOT / "docs" or path == ROOT / "README.md"):
            cited += relative_links(text)
        where = path.relative_to(ROOT)
        broken += [f"{where}: {ref}" for ref in dict.fromkeys(cited) if not resolves(ref, path)]
    return broken


def test_the_scanner_finds_references() -> None:
    text = (
        "see docs/weight-space.md, ``formats.md`` and benchmarks/bench_layers.py; "
        "config experiments/digits/classify_np.yaml; not https://x.org/README.md, "
        "tests/data/<zoo>/README.md or README_*.md"
    )
    assert references(text) == [
        "docs/weight-space.md",
        "formats.md",
        "benchmarks/bench_layers.py",
        "experiments/digits/classify_np.yaml",
    ]
    assert relative_links("[a](docs/formats.md#small-cnn-zoo) [b](https://x.org) [c](#here)") == ["docs/formats.md"]


def test_a_missing_file_does_not_resolve() -> None:
    (found,) = references("see docs/no-such-page.md for details")
    assert not resolves(found, ROOT / "README.md")
    assert resolves("docs/architecture.md", ROOT / "README.md")
    assert resolves("README.md", ROOT / "benchmarks" / "bench_layers.py")  # relative to the citing file's folder
    assert resolves("benchmarks/out/20260101-000000_cpu.md", ROOT / "README.md")  # a report, written when run


def test_the_scan_covers_the_tree() -> None:
    files = set(scanned_files())
    assert ROOT / "README.md" in files and ROOT / "docs" / "formats.md" in files
    assert ROOT / "nfn_lab" / "weightspace.py" in files
    assert Path(__file__).resolve() not in files


def test_every_reference_resolves() -> None:
    broken = broken_references()
    if broken:
        pytest.fail(f"{len(broken)} references to missing files:\n" + "\n".join(broken))
