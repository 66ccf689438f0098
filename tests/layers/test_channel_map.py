"""channel_map, the channel-axis linear map behind ChannelLinear and NF-attention's projections."""

import pytest
import torch
import torch.nn.functional as F

from nfn_lab.layers.channel_map import channel_map
from nfn_lab.layers.linear import ChannelLinear


def _reference(x, weight, bias):
    out = torch.einsum("ok,bkp->bop", weight, x)
    if bias is None:
        return out
    return out + (bias.unsqueeze(-1) if bias.dim() == 2 else bias[:, None])


@pytest.mark.parametrize("bias_kind", ["shared", "per_sample", "none"])
def test_gradients_match_numerical(bias_kind):
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    bias = {"shared": torch.randn(6), "per_sample": torch.randn(3, 6), "none": None}[bias_kind]
    inputs = (x, weight) if bias is None else (x, weight, bias.double().requires_grad_())
    assert torch.autograd.gradcheck(lambda *t: channel_map(*t), inputs)
    torch.testing.assert_close(channel_map(*inputs), _reference(*inputs, *([None] if bias is None else [])))


@pytest.mark.parametrize("batch,p", [(2, 1024), (3, 7)])  # per-item (oneDNN where available) and batched products
def test_float32_matches_float64(batch, p):
    x = torch.randn(batch, 64, p, dtype=torch.float64)
    weight, bias, grad = torch.randn(192, 64, dtype=torch.float64), torch.randn(192, dtype=torch.float64), None
    results = []
    for dtype in (torch.float32, torch.float64):
        leaves = [t.to(dtype).requires_grad_() for t in (x, weight, bias)]
        out = channel_map(*leaves)
        grad = torch.randn_like(out) if grad is None else grad.to(dtype)
        out.backward(grad)
        results.append([out.double(), *(t.grad.double() for t in leaves)])
    for low, high in zip(*results):
        torch.testing.assert_close(low, high, rtol=1e-4, atol=1e-3 * high.abs().max().item())


def test_strided_inputs_and_gradients():
    x = torch.randn(2, 5, 4, 3).transpose(1, 2).flatten(2).requires_grad_()  # (2, 4, 15), not contiguous
    weight = torch.randn(6, 4, requires_grad=True)
    out = channel_map(x, weight)
    out.transpose(1, 2).sum().backward()
    torch.testing.assert_close(out, torch.einsum("ok,bkp->bop", weight, x))
    torch.testing.assert_close(x.grad, weight.sum(0)[None, :, None].expand_as(x))


def test_runs_under_bf16_autocast_like_linear():
    x, weight, bias = torch.randn(2, 4, 5), torch.randn(6, 4), torch.randn(6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = channel_map(x, weight, bias)
        expected = F.linear(x.transpose(1, 2), weight, bias).transpose(1, 2)
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=0.02, atol=0.05)


def test_compiles_at_onednn_sizes():
    """Large float32 items take the oneDNN path eagerly, which inductor cannot lower: compiled,
    channel_map is traced as torch.baddbmm, and matches eager, gradients included."""
    layer = ChannelLinear(64, 192)
    x = torch.randn(2, 64, 32, 32)
    results = []
    for module in (layer, torch.compile(layer)):
        leaf = x.clone().requires_grad_()
        layer.zero_grad()
        out = module(leaf)
        out.backward(torch.ones_like(out))
        results.append([out, leaf.grad, layer.linear.weight.grad.clone()])
    for eager, compiled in zip(*results):  # different summation orders: float32 rounding
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5 * eager.abs().max().item())
