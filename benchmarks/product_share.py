"""How much of nfn-lab's training step is matrix products: the floor under a speed target.

Usage (from the repository root; the reference is optional, see benchmarks/README.md)::

    python -m benchmarks.product_share --cases 'edit*' 'predict-gen*B=8' 'NPAttention siren B=32'
    python -m benchmarks.product_share --ours-only --cases 'edit HNP*'

Per case of ``bench_layers.py`` (eager, one thread): each side's step is timed interleaved as
there, and after each round nfn-lab's step runs once more under a dispatch mode that times
every matrix-product op (oneDNN's linear, ``mm``, ``addmm``, ``bmm``, ``baddbmm``, attention)
and counts its multiply-adds. The table gives, per case, nfn-lab's time in products, their
speed inside the step, and what a target leaves: a step ``target`` times faster than the
reference's has ``ref / target`` milliseconds, of which the products already take their
share. Where that budget is spent before the rest of the step (reductions, broadcasts, the
activations between layers, Python) is counted, only faster products reach the target.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import _libraries, _report
from benchmarks._cases import Case
from benchmarks._timing import interleaved, plan, synchronizer, torch_threads, warm_up
from benchmarks.bench_layers import add_case_arguments, build_case, select_cases

__all__ = ["ProductShare", "ProductTimer", "main", "measure", "to_markdown"]


def _mm_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    """``(..., M, K) @ (..., K, N)``: ``prod(batch) * M * K * N``."""
    return math.prod(a.shape) * b.shape[-1]


def _linear_macs(args: Sequence[object]) -> int:
    x, w = args[0], args[1]  # x (..., K), w (N, K)
    return math.prod(x.shape) * w.shape[0]


def _attention_macs(args: Sequence[object]) -> int:
    q, k, v = args[0], args[1], args[2]  # (B, H, L, E), (B, H, S, E), (B, H, S, Ev)
    return math.prod(q.shape) * k.shape[-2] + math.prod(q.shape[:-1]) * k.shape[-2] * v.shape[-1]


# op name -> multiply-adds from its arguments (an attention backward counts twice its forward).
PRODUCT_OPS: dict[str, Callable[[Sequence[object]], int]] = {
    "mkldnn::_linear_pointwise": _linear_macs,
    "aten::mm": lambda a: _mm_macs(a[0], a[1]),
    "aten::bmm": lambda a: _mm_macs(a[0], a[1]),
    "aten::addmm": lambda a: _mm_macs(a[1], a[2]),
    "aten::addmm_": lambda a: _mm_macs(a[1], a[2]),
    "aten::baddbmm": lambda a: _mm_macs(a[1], a[2]),
    "aten::baddbmm_": lambda a: _mm_macs(a[1], a[2]),
    "aten::_scaled_dot_product_flash_attention_for_cpu": _attention_macs,
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward": lambda a: 2 * _attention_macs(a[1:4]),
}


class ProductTimer(TorchDispatchMode):
    """While active, times every op in :data:`PRODUCT_OPS` and sums its multiply-adds.

    Attributes:
        seconds: time spent inside those ops.
        macs: their multiply-adds.
        calls: how many ran.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self.macs = 0
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # PyTorch's protocol
        if func.namespace == "nfn_lab":  # an opaque custom operator: its implementation, with the products timed
            with self:
                return func.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args, **(kwargs or {}))
        macs = PRODUCT_OPS.get(func._schema.name)
        if macs is None:
            return func(*args, **(kwargs or {}))
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        self.seconds += time.perf_counter() - start
        self.macs += macs(args)
        self.calls += 1
        return out


@dataclass(frozen=True)
class ProductShare:
    """One case's step and the matrix products inside nfn-lab's (milliseconds, medians over rounds).

    Attributes:
        case: the case's name.
        target: the speed-up over the reference that nfn-lab should reach.
        ref_ms: the reference's step, or None when it was not timed.
        ours_ms: nfn-lab's step.
        products_ms: nfn-lab's time inside matrix products, in a step of its own (see the module doc).
        gmacs: nfn-lab's multiply-adds in products per step, in billions.
        calls: nfn-lab's product calls per step.
    """

    case: str
    target: float
    ref_ms: float | None
    ours_ms: float
    products_ms: float
    gmacs: float
    calls: int

    @property
    def gflops(self) -> float:
        """Speed of nfn-lab's products inside the step (2 FLOPs per multiply-add)."""
        return 2 * self.gmacs / self.products_ms * 1e3

    @property
    def budget_ms(self) -> float | None:
        """The step time that meets the target: ``ref_ms / target``."""
        return None if self.ref_ms is None else self.ref_ms / self.target

    @property
    def left_ms(self) -> float | None:
        """What the budget leaves for everything but the products (negative: the products alone miss it)."""
        return None if self.budget_ms is None else self.budget_ms - self.products_ms


def measure(case: Case, libraries: Sequence[_libraries.Library], rounds: int, round_seconds: float) -> ProductShare:
    """Times the case's eager step on every side, and nfn-lab's products inside its step.

    Raises:
        RuntimeError: if nfn-lab's model fails to build.
    """
    built = build_case(case, libraries, torch.device("cpu"))
    if "ours" not in built.models:
        raise RuntimeError(f"{case.name}: nfn-lab's model failed to build: {built.errors['ours']}")
    steps = built.steps()
    sync = synchronizer(torch.device("cpu"))
    warm = {side: warm_up(step, sync, 2).last_s for side, step in steps.items()}
    rounds, iters = plan(warm, rounds, round_seconds)
    step_s: dict[str, list[float]] = {side: [] for side in steps}
    timers = []
    for _ in range(rounds):  # one timed round per side, then nfn-lab's step once under the timer
        for side, timing in interleaved(steps, 1, iters, sync).items():
            step_s[side].append(timing.median)
        timers.append(ProductTimer())
        with timers[-1]:
            steps["ours"]()
    ref_s = statistics.median(step_s["ref"]) if "ref" in step_s else None
    return ProductShare(
        case=case.name,
        target=case.target,
        ref_ms=None if ref_s is None else ref_s * 1e3,
        ours_ms=statistics.median(step_s["ours"]) * 1e3,
        products_ms=statistics.median(t.seconds for t in timers) * 1e3,
        gmacs=timers[-1].macs / 1e9,
        calls=timers[-1].calls,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def to_markdown(shares: Sequence[ProductShare]) -> str:
    """One row per case: steps, nfn-lab's products (time, share, speed) and the target's budget."""
    lines = [
        "| case | ref ms | ours ms | ours in products ms (share) | product calls | GFLOP/s in products "
        "| target | budget ms (ref / target) | budget left for the rest ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in shares:
        share = f"{s.products_ms:.1f} ({s.products_ms / s.ours_ms:.0%})"
        lines.append(
            f"| {s.case} | {_ms(s.ref_ms)} | {s.ours_ms:.1f} | {share} | {s.calls} | {s.gflops:.0f} "
            f"| {s.target:g}x | {_ms(s.budget_ms)} | {_ms(s.left_ms)} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[ProductShare]:
    """Measures the selected cases, prints the table and writes it to ``<out>/<date>-<time>_products.md``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_case_arguments(parser)  # --cases, --ours-only (no budget then), --threads, --reference-dir, --out
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds per side (default 5)")
    parser.add_argument("--round-seconds", type=float, default=0.25, help="length of one round per side")
    args = parser.parse_args(argv)
    cases = select_cases(args.cases, quick=False)
    if not cases:
        parser.error(f"no case matches {args.cases}; python benchmarks/bench_layers.py --list names them.")
    libraries = _libraries.sides(args.ours_only, args.reference_dir)
    shares = []
    with torch_threads(args.threads):
        for case in cases:
            shares.append(measure(case, libraries, args.rounds, args.round_seconds))
            print(
                f"{case.name}: ours {shares[-1].ours_ms:.1f} ms, {shares[-1].products_ms:.1f} in products", flush=True
            )
    env = _report.environment(
        torch.device("cpu"), args.threads, {lib.name: lib.version for lib in libraries}, {"rounds": args.rounds}
    )
    text = "\n".join(
        [*_report.header("Matrix products inside nfn-lab's training step (CPU, eager)", env), to_markdown(shares)]
    )
    print("\n" + text)
    path = _report.write_markdown(args.out, "products", text)
    print(f"\nwritten: {path}")
    return shares


if __name__ == "__main__":
    main()
