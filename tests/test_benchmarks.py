"""Smoke tests of the benchmark harness (benchmarks/), with nfn-lab only: the reference is never needed."""

from __future__ import annotations

import csv
import json
import time

import pytest
import torch

from benchmarks import _libraries, bench_layers, spread
from benchmarks._cases import QUICK_CASES, all_cases
from benchmarks._report import CaseResult, ModeResult
from benchmarks._timing import Timing, interleaved, plan


def test_quick_run_of_one_case_writes_reports(tmp_path):
    threads = torch.get_num_threads()
    argv = ["--quick", "--ours-only", "--cases", "NPLinear cnn-zoo B=8", "--rounds", "2", "--round-seconds", "0.005"]
    results = bench_layers.main([*argv, "--out", str(tmp_path)])

    assert torch.get_num_threads() == threads  # restored after timing with one thread
    assert [r.name for r in results] == ["NPLinear cnn-zoo B=8"]
    (result,) = results
    assert result.compiled is None  # --quick does not compile
    assert len(result.eager.timings["ours"].rounds) == 2 and result.eager.ms("ours") > 0
    assert "ref" not in result.eager.timings and result.eager.ratio is None

    md, csv_path, json_path = (next(tmp_path.glob(f"*_cpu_quick.{ext}")) for ext in ("md", "csv", "json"))
    text = md.read_text()
    assert "| NPLinear cnn-zoo B=8 |" in text and torch.__version__ in text
    (row,) = csv.DictReader(csv_path.open())
    assert float(row["eager_ours_ms"]) == pytest.approx(result.eager.ms("ours"))
    data = json.loads(json_path.read_text())
    assert data["environment"]["threads"] == 1
    assert data["raw"][0]["eager"]["timings"]["ours"]["rounds"] == list(result.eager.timings["ours"].rounds)


def test_quick_subset_names_existing_cases():
    assert {c.name for c in bench_layers.select_cases(None, quick=True)} == set(QUICK_CASES)
    assert [c.name for c in bench_layers.select_cases(["*siren B=256"], quick=False)] == [
        "NPLinear siren B=256",
        "HNPLinear siren B=256",
        "NPAttention siren B=256",
    ]


@pytest.mark.parametrize("case", [c for c in all_cases() if c.kind == "network"], ids=lambda c: c.model)
def test_paper_networks_build_and_run_with_nfn_lab(case):
    lib = _libraries.ours()
    weights, biases = case.workload.features(batch=2, channels=case.channels)
    features = lib.features(weights, biases)
    model = case.build(lib.layers, lib.spec_from_features(features))
    out = model(features)
    if case.model.startswith("edit"):  # weights -> 1-channel weight deltas of the same network
        assert [w.shape for w in out.weights] == [w.shape for w in weights]
        assert [b.shape for b in out.biases] == [b.shape for b in biases]
    else:  # weights -> one prediction per network
        assert out.shape == (2, 10 if case.model.startswith("classify") else 1)


def test_interleaved_times_each_side_and_orders_them():
    steps = {"slow": lambda: time.sleep(0.004), "fast": lambda: None}
    timings = interleaved(steps, rounds=3, iters={"slow": 2, "fast": 5}, sync=lambda: None)
    assert {name: len(t.rounds) for name, t in timings.items()} == {"slow": 3, "fast": 3}
    assert timings["slow"].min >= 0.004 > timings["fast"].median


def test_plan_cuts_rounds_only_for_steps_longer_than_a_round():
    assert plan({"ref": 0.01, "ours": 0.02}, rounds=7, round_seconds=0.3) == (7, {"ref": 30, "ours": 15})
    assert plan({"ref": 1.0, "ours": 0.1}, rounds=7, round_seconds=0.3) == (3, {"ref": 1, "ours": 3})
    with pytest.raises(ValueError, match="rounds"):
        plan({"ref": 1.0}, rounds=0, round_seconds=0.3)


def test_ratio_is_ref_over_ours_of_medians_and_verdict_checks_both_modes():
    eager = ModeResult({"ref": Timing((0.02, 0.03, 0.05)), "ours": Timing((0.01, 0.02, 0.01))})
    assert eager.ratio == pytest.approx(3.0) and eager.ratio_of_mins == pytest.approx(2.0)
    faster = ModeResult({"ref": Timing((0.02,)), "ours": Timing((0.01,))})
    slower = ModeResult({"ref": Timing((0.01,)), "ours": Timing((0.02,))})
    failed = ModeResult({"ref": Timing((0.01,))}, errors={"ours": "BackendCompilerFailed: ..."})

    def verdict(target, compiled):
        return CaseResult("c", "", target, {}, eager, compiled).verdict()

    assert verdict(2.0, faster) == "ok"
    assert verdict(3.5, faster) == "MISS"  # eager ratio 3 is below the target
    assert verdict(2.0, slower) == "MISS"  # slower when compiled
    assert verdict(2.0, failed) == "MISS" and failed.cell("ours") == "failed"


def test_missing_reference_points_to_setup_script(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"setup_reference\.sh"):
        _libraries.reference(tmp_path)


def test_gemm_benchmark_times_every_product(tmp_path):
    from benchmarks import bench_gemm

    assert bench_gemm.main(["--rounds", "1", "--round-seconds", "0.001", "--out-dir", str(tmp_path)]) == 0
    (table,) = tmp_path.glob("*_gemm.md")
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ") and line.endswith("x |")]
    assert len(rows) == len(bench_gemm._cases())
    assert all(float(row.split("|")[-2].strip().rstrip("x")) > 0 for row in rows)


# --against exports a git revision: these tests need the repository's history (a clone, not a tarball).
needs_git_history = pytest.mark.skipif(
    not (_libraries.REPO_ROOT / ".git").exists(), reason="not a git checkout: no revision to export"
)


@needs_git_history
def test_against_a_git_revision_times_both_versions_of_nfn_lab(tmp_path):
    argv = ["--quick", "--against", "HEAD", "--cases", "NPLinear cnn-zoo B=8"]
    argv += ["--rounds", "2", "--round-seconds", "0.005"]
    (result,) = bench_layers.main([*argv, "--out", str(tmp_path)])
    assert result.eager.ratio is not None and result.eager.ms("ref") > 0
    (md,) = tmp_path.glob("*_cpu_quick_vs_*.md")
    text = md.read_text()
    assert "vs nfn-lab at " in text
    assert "| - | - | - | - | -" in text.splitlines()[-1]  # no target or verdict against another revision


@needs_git_history
def test_revision_imports_a_separate_copy_of_the_package():
    lib, current = _libraries.revision("HEAD"), _libraries.ours()
    assert lib.name == "ref" and lib.label.startswith("nfn-lab at ")
    assert lib.layers.NPLinear is not current.layers.NPLinear
    assert lib.layers.NPLinear.__module__.startswith("nfn_lab_")


@needs_git_history
def test_unknown_revision_and_conflicting_options_are_rejected():
    with pytest.raises(ValueError, match="no-such-revision"):
        _libraries.revision("no-such-revision")
    with pytest.raises(SystemExit):
        bench_layers.parse_args(["--against", "HEAD", "--ours-only"])


def _spread_report(ratios: dict[str, tuple[float | None, float | None]]) -> dict:
    """A bench_layers.py JSON report with only what spread.py reads."""
    rows = [{"case": case, "eager_ratio": e, "compiled_ratio": c} for case, (e, c) in ratios.items()]
    return {"summary": rows}


def test_spread_gives_each_cases_range_over_runs(tmp_path):
    paths = []
    for i, ratios in enumerate([{"a": (1.5, 1.1), "b": (2.0, None)}, {"a": (1.9, 0.9), "b": (2.2, None)}]):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(_spread_report(ratios)))
    text = spread.main([str(p) for p in paths])
    assert "| a | 1.50-1.90x (2) | 0.90-1.10x (2) |" in text
    assert "| b | 2.00-2.20x (2) | - |" in text


def test_spread_rejects_a_file_that_is_not_a_report(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit):
        spread.main([str(bad)])


def test_product_timer_times_and_counts_every_matrix_product():
    from benchmarks.product_share import ProductTimer

    a, b, bias = torch.randn(6, 4), torch.randn(4, 5), torch.randn(5)
    batched = torch.randn(3, 6, 4), torch.randn(3, 4, 5)
    with ProductTimer() as timer:
        torch.mm(a, b)
        torch.addmm(bias, a, b)
        torch.bmm(*batched)
        a.relu()  # not a product
    assert timer.calls == 3
    assert timer.macs == 2 * 6 * 4 * 5 + 3 * 6 * 4 * 5
    assert timer.seconds > 0


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN")
def test_product_timer_counts_onednn_linear():
    from benchmarks.product_share import ProductTimer

    x, w_t = torch.randn(2, 6, 4), torch.randn(5, 4)  # (..., K) @ (N, K)^T
    with ProductTimer() as timer:
        torch.ops.mkldnn._linear_pointwise(x, w_t, None, "none", [], "")
    assert (timer.calls, timer.macs) == (1, 2 * 6 * 4 * 5)


def test_product_share_budget_is_what_the_target_leaves():
    from benchmarks.product_share import ProductShare, to_markdown

    share = ProductShare("x", target=2.0, ref_ms=30.0, ours_ms=16.0, products_ms=10.0, gmacs=0.5, calls=7)
    assert share.budget_ms == 15.0 and share.left_ms == 5.0 and share.gflops == pytest.approx(100.0)
    alone = ProductShare("y", target=2.0, ref_ms=None, ours_ms=16.0, products_ms=10.0, gmacs=0.5, calls=7)
    assert alone.budget_ms is None and alone.left_ms is None
    rows = to_markdown([share, alone]).splitlines()[2:]
    assert rows[0] == "| x | 30.0 | 16.0 | 10.0 (62%) | 7 | 100 | 2x | 15.0 | 5.0 |"
    assert rows[1].startswith("| y | - | 16.0 |") and rows[1].endswith("| 2x | - | - |")


def test_product_share_measures_a_case_with_nfn_lab_alone(tmp_path):
    from benchmarks import product_share

    argv = ["--ours-only", "--cases", "NPLinear cnn-zoo B=8", "--rounds", "2", "--round-seconds", "0.005"]
    (share,) = product_share.main([*argv, "--out", str(tmp_path)])
    assert share.case == "NPLinear cnn-zoo B=8" and share.ref_ms is None
    assert share.ours_ms > 0 and share.products_ms > 0 and share.calls > 0 and share.gmacs > 0
    (table,) = tmp_path.glob("*_products.md")
    assert "| NPLinear cnn-zoo B=8 |" in table.read_text()
    with pytest.raises(SystemExit):
        product_share.main(["--ours-only", "--cases", "no such case", "--out", str(tmp_path)])
