"""nfn_lab._fast_math: NumPy-backed elementwise functions agree with PyTorch's."""

import pytest
import torch

from nfn_lab._fast_math import cos_and_sin_


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cos_and_sin_matches_torch(dtype):
    z = torch.randn(3, 5, 7, dtype=dtype) * 20  # large arguments too
    expected_sin, expected_cos = z.sin(), z.cos()
    cos = torch.empty_like(z)
    cos_and_sin_(z, cos)
    torch.testing.assert_close(cos, expected_cos)
    torch.testing.assert_close(z, expected_sin)


def test_cos_and_sin_into_strided_halves_of_one_array():
    """The Fourier features' use: phases in one half of an array, cosines written to the other."""
    out = torch.randn(4, 6, 3)
    phases = out[:, :3].clone()
    cos_and_sin_(out[:, :3], out[:, 3:])
    torch.testing.assert_close(out, torch.cat([phases.sin(), phases.cos()], dim=1))
