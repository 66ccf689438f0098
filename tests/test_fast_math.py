"""nfn_lab._fast_math: NumPy-backed elementwise functions agree with PyTorch's."""

import pytest
import torch

from nfn_lab._fast_math import sin_and_cos


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sin_and_cos_matches_torch(dtype):
    z = torch.randn(3, 5, 7, dtype=dtype) * 20  # large arguments too
    out = sin_and_cos(z)
    assert out.shape == (3, 5, 14) and out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out, torch.cat([z.sin(), z.cos()], dim=-1))


def test_sin_and_cos_is_differentiable_when_needed():
    z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    out = sin_and_cos(z)
    assert out.requires_grad
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(z.grad, z.detach().cos() - z.detach().sin())


def test_sin_and_cos_of_strided_input():
    z = torch.randn(6, 4).t()  # not contiguous
    torch.testing.assert_close(sin_and_cos(z), torch.cat([z.sin(), z.cos()], dim=-1))
