"""Results of a benchmark run: the environment, per-case timings, and their markdown/CSV/JSON forms."""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from benchmarks._timing import Timing

SIDES = ("ref", "ours")
# Where every benchmark writes its reports by default; git ignores it (reports are not kept in the tree).
OUT_DIR = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class ModeResult:
    """One case in one mode (eager or compiled): a timing or an error per side.

    Attributes:
        timings: per side, per-call seconds of each round.
        errors: per side that could not be timed, ``"ExceptionType: message"``.
        first_call_s: per side, seconds of the first call (includes compilation when compiled).
    """

    timings: dict[str, Timing] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    first_call_s: dict[str, float] = field(default_factory=dict)

    def ms(self, side: str) -> float | None:
        """Median milliseconds per step of ``side``, or None if it was not timed."""
        return self.timings[side].median * 1e3 if side in self.timings else None

    @property
    def ratio(self) -> float | None:
        """``ref / ours`` of the medians (> 1: nfn-lab is faster); None unless both sides were timed."""
        if not all(s in self.timings for s in SIDES):
            return None
        return self.timings["ref"].median / self.timings["ours"].median

    @property
    def ratio_of_mins(self) -> float | None:
        """``ref / ours`` of the fastest rounds, a cross-check of :attr:`ratio` on a noisy machine."""
        if not all(s in self.timings for s in SIDES):
            return None
        return self.timings["ref"].min / self.timings["ours"].min

    def cell(self, side: str) -> str:
        """Markdown cell for one side: the median ms, ``failed`` or ``-`` (not run)."""
        if side in self.errors:
            return "failed"
        ms = self.ms(side)
        return "-" if ms is None else f"{ms:.2f}"


@dataclass(frozen=True)
class CaseResult:
    """Everything measured for one case."""

    name: str
    note: str
    target: float
    num_params: dict[str, int]
    eager: ModeResult
    compiled: ModeResult | None

    def verdict(self) -> str:
        """``ok`` if the eager ratio reaches the target and the compiled ratio (if measured) exceeds 1."""
        if self.eager.ratio is None:
            return "-"
        ok = self.eager.ratio >= self.target
        if self.compiled is not None:
            ok = ok and self.compiled.ratio is not None and self.compiled.ratio > 1
        return "ok" if ok else "MISS"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision(repo: Path) -> str:
    """``<short commit>`` plus ``+uncommitted`` when the tree has changes; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+uncommitted" if dirty else "")


def environment(
    device: torch.device,
    threads: int,
    versions: dict[str, str],
    settings: dict[str, object],
    labels: dict[str, str] | None = None,
) -> dict[str, object]:
    """What a reader needs to judge the numbers: when, where, with which versions and settings.

    ``labels``: what each side is (``{"ref": "nfn 0.1.2"}``), for the report's title.
    """
    cpu = _cpu_model()
    if device.type == "cuda":
        cpu += f"; GPU {torch.cuda.get_device_name(device)}"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu": cpu,
        "threads": threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "nfn_lab_git": _git_revision(Path(__file__).resolve().parents[1]),
        **{f"{side}_version": v for side, v in versions.items()},
        **{f"{side}_label": v for side, v in (labels or {}).items()},
        **settings,
    }


def header(title: str, env: dict[str, object]) -> list[str]:
    """A report's first lines: ``# title`` and one ``- key: value`` line per entry of ``env``."""
    return [f"# {title}", "", *(f"- {key}: {value}" for key, value in env.items()), ""]


def timestamp() -> str:
    """``<date>-<time>``, the start of every result file's name."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def write_markdown(out_dir: Path, kind: str, text: str) -> Path:
    """Writes ``text`` to ``<out_dir>/<date>-<time>_<kind>.md`` and returns the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{timestamp()}_{kind}.md"
    path.write_text(text + "\n")
    return path


def _fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def to_markdown(env: dict[str, object], results: list[CaseResult]) -> str:
    """A header listing ``env`` and one table row per case."""
    lines = [
        *header(f"NF-layer benchmark: nfn-lab (ours) vs {env.get('ref_label', 'nfn 0.1.2')} (ref)", env),
        (
            "Milliseconds per training step (forward + backward), median over the rounds; "
            "ratio = ref / ours (> 1: ours is faster). `verdict`: eager ratio >= target and compiled ratio > 1."
        ),
        "",
        "| case | config | ref ms | ours ms | ratio | target "
        "| compiled ref ms | compiled ours ms | compiled ratio | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    with_targets = env.get("targets", True)
    for r in results:
        c = r.compiled
        compiled_cells = [c.cell("ref"), c.cell("ours"), _fmt_ratio(c.ratio)] if c is not None else ["-", "-", "-"]
        lines.append(
            "| "
            + " | ".join(
                [
                    r.name,
                    r.note,
                    r.eager.cell("ref"),
                    r.eager.cell("ours"),
                    _fmt_ratio(r.eager.ratio),
                    f"{r.target:g}x" if with_targets else "-",
                    *compiled_cells,
                    r.verdict() if with_targets else "-",
                ]
            )
            + " |"
        )
    errors = [
        f"- {r.name} ({mode}, {side}): {msg}"
        for r in results
        for mode, m in (("eager", r.eager), ("compiled", r.compiled))
        if m is not None
        for side, msg in m.errors.items()
    ]
    if errors:
        lines += ["", "Failures:", "", *errors]
    return "\n".join(lines) + "\n"


def _row(r: CaseResult) -> dict[str, object]:
    row: dict[str, object] = {"case": r.name, "config": r.note, "target": r.target, "verdict": r.verdict()}
    for mode, m in (("eager", r.eager), ("compiled", r.compiled)):
        for side in SIDES:
            row[f"{mode}_{side}_ms"] = None if m is None else m.ms(side)
            row[f"{mode}_{side}_error"] = None if m is None else m.errors.get(side)
        row[f"{mode}_ratio"] = None if m is None else m.ratio
        row[f"{mode}_ratio_of_mins"] = None if m is None else m.ratio_of_mins
    for side in SIDES:
        row[f"{side}_params"] = r.num_params.get(side)
    return row


def write(out_dir: Path, stem: str, env: dict[str, object], results: list[CaseResult]) -> dict[str, Path]:
    """Writes ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` (with per-round times) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{stem}.{ext}" for ext in ("md", "csv", "json")}
    paths["md"].write_text(to_markdown(env, results))
    rows = [_row(r) for r in results]
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case"])
        writer.writeheader()
        writer.writerows(rows)
    raw = [asdict(r) for r in results]  # includes every round's time
    paths["json"].write_text(json.dumps({"environment": env, "summary": rows, "raw": raw}, indent=1))
    return paths
