"""The matrix products behind the fused NF-layer maps: every backend path against float64 torch."""

import os
import subprocess
import sys

import pytest
import torch

from nfn_lab.layers import gemm

needs_onednn = pytest.mark.skipif(gemm._LINEAR is None, reason="this PyTorch build has no oneDNN linear op")

# (R, K, N): thin (MKL); wide but below oneDNN's size (MKL); wide and large (oneDNN); more rows than one
# x^T g block, with the narrower side of x^T g on either operand; and no rows.
SHAPES = [
    (5, 3, 4),
    (70, 64, 80),
    (300, 64, 80),
    (2 * gemm.THRESHOLDS.tn_block_rows + 3, 96, 9),
    (2100, 9, 72),
    (0, 64, 64),
]
# (B, K, P, N): below and above the per-item size for batched products, and no batch.
BATCHED_SHAPES = [(3, 8, 5, 6), (2, 64, 1024, 64), (0, 64, 1024, 64)]
TOLERANCES = {torch.float32: {"rtol": 1e-4, "atol": 1e-3}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}


def _randn(*shape, dtype):
    return torch.randn(*shape, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows,k,n", SHAPES)
def test_matrix_products_match_torch(rows, k, n, dtype):
    x, w, bias = _randn(rows, k, dtype=dtype), _randn(k, n, dtype=dtype), _randn(n, dtype=dtype)
    out, g = _randn(rows, n, dtype=dtype), _randn(rows, n, dtype=dtype)
    x64, w64 = x.double(), w.double()
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(gemm.matmul(x, w).double(), x64 @ w64, **tol)
    torch.testing.assert_close(gemm.matmul(x, w, bias).double(), x64 @ w64 + bias.double(), **tol)
    expected = out.double() + x64 @ w64
    result = gemm.matmul_acc(out, x, w)
    assert result.data_ptr() == out.data_ptr()  # in place
    torch.testing.assert_close(result.double(), expected, **tol)
    torch.testing.assert_close(gemm.matmul_tn(x, g).double(), x64.t() @ g.double(), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,k,p,n", BATCHED_SHAPES)
def test_batched_products_match_torch(batch, k, p, n, dtype):
    a, x = _randn(n, k, dtype=dtype), _randn(batch, k, p, dtype=dtype)
    out, g = _randn(batch, n, p, dtype=dtype), _randn(batch, n, p, dtype=dtype)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(gemm.shared_matmul(a, x).double(), a.double() @ x.double(), **tol)
    expected = out.double() + a.double() @ x.double()
    result = gemm.shared_matmul_acc(out, a, x)
    assert result.data_ptr() == out.data_ptr()
    torch.testing.assert_close(result.double(), expected, **tol)
    expected_nt = torch.einsum("bkp,bnp->kn", x.double(), g.double())
    torch.testing.assert_close(gemm.batched_matmul_nt_sum(x, g).double(), expected_nt, **tol)


def test_bfloat16_products_are_close():
    x, w, g = (torch.randn(*s) for s in ((300, 64, 1), (64, 72, 1), (300, 72, 1)))
    x, w, g = x[..., 0], w[..., 0], g[..., 0]
    torch.testing.assert_close(gemm.matmul(x.bfloat16(), w.bfloat16()).float(), x @ w, rtol=0.05, atol=0.5)
    torch.testing.assert_close(gemm.matmul_tn(x.bfloat16(), g.bfloat16()).float(), x.t() @ g, rtol=0.05, atol=2.0)


@needs_onednn
def test_wide_float32_products_go_through_onednn(monkeypatch):
    calls, original = [], gemm._LINEAR

    def counting(*args):
        calls.append(args[0].dtype)
        return original(*args)

    monkeypatch.setattr(gemm, "_LINEAR", counting)
    x, w = torch.randn(256, 64), torch.randn(64, 64)
    narrow = torch.randn(1024, 32)
    gemm.matmul(x, w)
    gemm.matmul_tn(x, x)
    gemm.matmul(narrow, w[:32])  # a reduction 32 wide: oneDNN
    assert calls == [torch.float32] * 3
    gemm.matmul(x.double(), w.double())  # float64: MKL
    gemm.matmul(x[:, :8], w[:8])  # thin: MKL
    gemm.matmul(narrow[:, :16], w[:16])  # a reduction 16 wide: MKL
    gemm.matmul(x[:64], w)  # under 1M multiply-adds: MKL
    gemm.matmul_tn(x[:64], x[:64])
    gemm.matmul_tn(narrow, narrow)  # x^T g only 32 wide: MKL
    assert len(calls) == 3
    assert gemm.uses_onednn(x) and not gemm.uses_onednn(x.double())


def test_environment_variable_turns_onednn_off():
    code = "import torch; from nfn_lab.layers import gemm; print(gemm.uses_onednn(torch.zeros(1)))"
    env = {**os.environ, "NFN_LAB_ONEDNN": "0"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("bias_shape", ["shared", "per_item"])
@pytest.mark.parametrize("batch,k,p,n", BATCHED_SHAPES)
def test_shared_matmul_adds_a_bias(batch, k, p, n, bias_shape):
    a, x = torch.randn(n, k), torch.randn(batch, k, p)
    bias = torch.randn(n) if bias_shape == "shared" else torch.randn(batch, n)
    expected = a.double() @ x.double() + (bias.double()[:, None] if bias.dim() == 1 else bias.double()[..., None])
    torch.testing.assert_close(gemm.shared_matmul(a, x, bias).double(), expected, **TOLERANCES[torch.float32])
