"""The spread of ratios over several runs of ``bench_layers.py``: per case, the lowest and highest.

Usage (from the repository root)::

    python -m benchmarks.spread benchmarks/out/*_cpu.json     # every full run kept in benchmarks/out/

Reads the runs' JSON reports and prints a markdown table: per case, the eager and the compiled
ratio (ref / ours) as ``min-max`` over the runs that timed it, with the number of runs. One run
on a shared machine can pass or miss a target by chance; the range is what carries over.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "ratio_ranges", "to_markdown"]

MODES = ("eager", "compiled")


def ratio_ranges(reports: Sequence[dict]) -> dict[str, dict[str, list[float]]]:
    """``{case: {"eager": [ratios...], "compiled": [ratios...]}}`` over ``reports`` (loaded JSON), in case order."""
    ranges: dict[str, dict[str, list[float]]] = {}
    for report in reports:
        for row in report["summary"]:
            case = ranges.setdefault(row["case"], {mode: [] for mode in MODES})
            for mode in MODES:
                if row.get(f"{mode}_ratio") is not None:
                    case[mode].append(row[f"{mode}_ratio"])
    return ranges


def _cell(ratios: list[float]) -> str:
    return "-" if not ratios else f"{min(ratios):.2f}-{max(ratios):.2f}x ({len(ratios)})"


def to_markdown(ranges: dict[str, dict[str, list[float]]]) -> str:
    """One row per case: eager and compiled ``min-max`` ratio and, in brackets, how many runs."""
    lines = ["| case | eager ratio (runs) | compiled ratio (runs) |", "|---|---:|---:|"]
    lines += [f"| {case} | {_cell(r['eager'])} | {_cell(r['compiled'])} |" for case, r in ranges.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    """Prints and returns the table for the JSON reports named in ``argv``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="bench_layers.py JSON reports (benchmarks/out/*.json)")
    args = parser.parse_args(argv)
    reports = []
    for path in args.reports:
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            parser.error(f"cannot read {path} as a bench_layers.py JSON report: {err}")
        if "summary" not in reports[-1]:
            parser.error(f"{path} has no 'summary': not a bench_layers.py JSON report.")
    text = to_markdown(ratio_ranges(reports))
    print(text)
    return text


if __name__ == "__main__":
    main()
