"""Smoke test of benchmarks/bench_builders.py: both sides of a tiny CNN and INR case run and are reported."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from benchmarks import bench_builders


def test_quick_run_reports_both_cases(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    text = bench_builders.main(["--quick", "--rounds", "1", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads  # restored after timing with one thread
    rows = [line for line in text.splitlines() if line.startswith("| CNN zoo") or line.startswith("| INR zoo")]
    assert len(rows) == 2
    for row in rows:
        rates = [float(x) for x in re.findall(r"\| ([0-9.]+) ", row)[:2]]
        assert len(rates) == 2 and all(r > 0 for r in rates)
    (written,) = tmp_path.glob("*_builders_quick.md")
    assert written.read_text() == text
