"""Summaries recorded in a built zoo's provenance (``zoo.json`` and its ``README.md`` card)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

__all__ = ["summarize"]


def summarize(values: Sequence[float] | np.ndarray, edges: Sequence[float] | np.ndarray) -> dict[str, object]:
    """Quantiles and a histogram of ``values``, as plain JSON/YAML values.

    Args:
        values: e.g. the final test accuracy of every network.
        edges: histogram bin edges, increasing; values outside go to the first/last bin.

    Returns:
        ``{"count", "min", "p10", "median", "p90", "max", "mean", "histogram"}``; the
        histogram maps ``"[lo, hi)"`` (``"[lo, hi]"`` for the last bin) to a count.
    """
    x = np.asarray(values, dtype=np.float64)
    bounds = np.asarray(edges, dtype=np.float64)
    counts = np.bincount(
        np.clip(np.searchsorted(bounds, x, side="right") - 1, 0, len(bounds) - 2), minlength=len(bounds) - 1
    )
    names = [
        f"[{lo:g}, {hi:g}{']' if i == len(bounds) - 2 else ')'}"
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds))
    ]
    stats = {"count": int(x.size)}
    if x.size:
        p10, median, p90 = np.quantile(x, [0.1, 0.5, 0.9])
        stats.update({"min": x.min(), "p10": p10, "median": median, "p90": p90, "max": x.max(), "mean": x.mean()})
    return {
        **{k: (round(float(v), 4) if k != "count" else v) for k, v in stats.items()},
        "histogram": {name: int(c) for name, c in zip(names, counts)},
    }
