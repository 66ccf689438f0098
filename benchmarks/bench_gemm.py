"""The NF-layers' matrix products (``nfn_lab.layers.gemm``) against plain ``torch.mm``/``torch.bmm``.

Usage (from the repository root)::

    python -m benchmarks.bench_gemm             # the products of the paper's networks, 1 thread
    python -m benchmarks.bench_gemm --rounds 9  # steadier medians

The shapes are those the fused equivariant map runs for the networks in ``bench_layers.py``
(pointwise terms over every weight entry, broadcast terms over the reduced arrays, their
weight gradients). Each pair is timed interleaved in one process on the same operands;
``ratio = torch / nfn_lab.layers.gemm`` (> 1: the routed product is faster). Prints a
Markdown table and writes it to ``benchmarks/out/<date>-<time>_gemm.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import _report
from benchmarks._timing import interleaved, plan, synchronizer, torch_threads, warm_up
from nfn_lab.layers import gemm

# (what, rows R, K, N): x (R, K) @ w (K, N), and its weight gradient x^T g.
PRODUCTS = [
    ("CNN zoo B=128, HNP pointwise 16->16 ch.", 32768, 144, 144),
    ("CNN zoo B=128, HNP pointwise 16->5 ch.", 32768, 144, 45),
    ("CNN zoo B=128, HNP broadcast term", 2048, 304, 304),
    ("CNN zoo B=128, HNP 16->5 ch. input gradient", 32768, 45, 144),
    ("CNN zoo B=8, HNP pointwise 16->16 ch.", 2048, 144, 144),
    ("CNN zoo B=8, HNP 16->5 ch. input gradient", 2048, 45, 144),
    ("SIREN B=32, edit pointwise 128->128 ch.", 32768, 128, 128),
    ("SIREN B=32, edit first layer 256->128 ch.", 32768, 256, 128),
    ("SIREN B=32, edit broadcast term", 1024, 1024, 512),
    ("SIREN B=32, classifier broadcast term", 1024, 1536, 1536),
]
# (what, B, K, P, N): out[b] += w^T (N, K) @ x[b] (K, P), the features-first pointwise term.
BATCHED = [
    ("SIREN B=32, classifier pointwise 512->512 ch.", 32, 512, 1024, 512),
    ("SIREN B=32, NPLinear pointwise 64->64 ch.", 32, 64, 1024, 64),
]


def _cases() -> list[tuple[str, Callable[[], object], Callable[[], object], int]]:
    """``(name, torch side, routed side, flops)`` for every product and its weight gradient."""
    cases = []
    for what, rows, k, n in PRODUCTS:
        x, w, g = torch.randn(rows, k), torch.randn(k, n), torch.randn(rows, n)
        out_torch, out_ours = torch.randn(rows, n), torch.randn(rows, n)
        flops = 2 * rows * k * n
        cases += [
            (f"{what}: x @ w", lambda x=x, w=w: torch.mm(x, w), lambda x=x, w=w: gemm.matmul(x, w), flops),
            (
                f"{what}: out += x @ w",
                lambda o=out_torch, x=x, w=w: o.addmm_(x, w),
                lambda o=out_ours, x=x, w=w: gemm.matmul_acc(o, x, w),
                flops,
            ),
            (f"{what}: x^T g", lambda x=x, g=g: torch.mm(x.t(), g), lambda x=x, g=g: gemm.matmul_tn(x, g), flops),
        ]
    for what, batch, k, p, n in BATCHED:
        a, x, g = torch.randn(n, k), torch.randn(batch, k, p), torch.randn(batch, n, p)
        out_torch, out_ours = torch.randn(batch, n, p), torch.randn(batch, n, p)
        flops = 2 * batch * k * p * n
        cases += [
            (
                f"{what}: out[b] += a @ x[b]",
                lambda o=out_torch, a=a, x=x: o.baddbmm_(a.expand(x.shape[0], -1, -1), x),
                lambda o=out_ours, a=a, x=x: gemm.shared_matmul_acc(o, a, x),
                flops,
            ),
            (
                f"{what}: sum_b x[b] g[b]^T",
                lambda x=x, g=g: torch.bmm(x, g.transpose(1, 2)).sum(0),
                lambda x=x, g=g: gemm.batched_matmul_nt_sum(x, g),
                flops,
            ),
        ]
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds per product (default 5)")
    parser.add_argument("--round-seconds", type=float, default=0.2, help="length of one round per side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--out-dir", type=Path, default=_report.OUT_DIR, help="where to write the table (default benchmarks/out)"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    sync = synchronizer(torch.device("cpu"))
    env = _report.environment(torch.device("cpu"), args.threads, {}, {"onednn": gemm.uses_onednn(torch.zeros(1))})
    lines = [
        *_report.header("NF-layer matrix products: nfn_lab.layers.gemm vs torch.mm/bmm (CPU, float32)", env),
        "GFLOP/s, median over rounds; ratio = torch time / routed time.",
        "",
        "| product | torch GFLOP/s | routed GFLOP/s | ratio |",
        "|---|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    with torch_threads(args.threads):
        for name, torch_side, ours_side, flops in _cases():
            steps = {"torch": torch_side, "routed": ours_side}
            warm = {side: warm_up(step, sync, 2).last_s for side, step in steps.items()}
            rounds, iters = plan(warm, args.rounds, args.round_seconds)
            timings = interleaved(steps, rounds, iters, sync)
            t_torch, t_ours = timings["torch"].median, timings["routed"].median
            row = f"| {name} | {flops / t_torch / 1e9:.0f} | {flops / t_ours / 1e9:.0f} | {t_torch / t_ours:.2f}x |"
            lines.append(row)
            print(row, flush=True)
    path = _report.write_markdown(args.out_dir, "gemm", "\n".join(lines))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
