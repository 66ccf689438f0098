"""channel_map, the channel-axis linear map behind ChannelLinear and NF-attention's projections.

Large float32 items take the custom operator (oneDNN products where available); other
inputs, float64 included, take torch.baddbmm with autograd's backward. The float32 tests use
sizes of both kinds and compare with float64.
"""

import pytest
import torch
import torch.nn.functional as F

from nfn_lab.layers import gemm
from nfn_lab.layers.channel_map import channel_map
from nfn_lab.layers.linear import ChannelLinear

# (B, C_in, P, C_out): one item is 12.6 M multiply-adds (the custom operator), or a few.
LARGE, SMALL = (2, 64, 1024, 192), (3, 4, 7, 6)
BIAS_KINDS = ["shared", "per_sample", "none"]


def _bias(kind, batch, channels, dtype=torch.float64):
    shapes = {"shared": (channels,), "per_sample": (batch, channels)}
    return torch.randn(*shapes[kind], dtype=dtype) if kind in shapes else None


def _reference(x, weight, bias):
    out = torch.einsum("ok,bkp->bop", weight, x)
    if bias is None:
        return out
    return out + (bias.unsqueeze(-1) if bias.dim() == 2 else bias[:, None])


def test_large_float32_items_take_the_custom_operator():
    x, weight = torch.randn(*LARGE[:3], requires_grad=True), torch.randn(LARGE[3], LARGE[1])
    custom = "nfn_lab_channel_map" in channel_map(x, weight).grad_fn.name()
    assert custom == gemm.uses_onednn(x)
    assert "nfn_lab" not in channel_map(x.double(), weight.double()).grad_fn.name()
    small_x, small_weight = torch.randn(*SMALL[:3], requires_grad=True), torch.randn(SMALL[3], SMALL[1])
    assert "nfn_lab" not in channel_map(small_x, small_weight).grad_fn.name()


@pytest.mark.parametrize("bias_kind", BIAS_KINDS)
def test_gradients_match_numerical(bias_kind):
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    bias = _bias(bias_kind, 3, 6)
    inputs = (x, weight) if bias is None else (x, weight, bias.requires_grad_())
    assert torch.autograd.gradcheck(lambda *t: channel_map(*t), inputs)
    torch.testing.assert_close(channel_map(*inputs), _reference(*inputs, *([None] if bias is None else [])))


@pytest.mark.parametrize("bias_kind", BIAS_KINDS)
@pytest.mark.parametrize("sizes", [LARGE, SMALL], ids=["large", "small"])
def test_float32_matches_float64(sizes, bias_kind):
    batch, c_in, p, c_out = sizes
    x, weight = torch.randn(batch, c_in, p, dtype=torch.float64), torch.randn(c_out, c_in, dtype=torch.float64)
    bias, grad = _bias(bias_kind, batch, c_out), torch.randn(batch, c_out, p, dtype=torch.float64)
    results = []
    for dtype in (torch.float32, torch.float64):
        leaves = [t.to(dtype).requires_grad_() for t in (x, weight, bias) if t is not None]
        out = channel_map(*leaves)
        out.backward(grad.to(dtype))
        results.append([out.double(), *(t.grad.double() for t in leaves)])
    for low, high in zip(*results):
        torch.testing.assert_close(low, high, rtol=1e-4, atol=1e-3 * high.abs().max().item())


def test_strided_inputs_and_gradients():
    batch, c_in, p, c_out = LARGE
    x = torch.randn(batch, p, c_in).transpose(1, 2).requires_grad_()  # (B, C_in, P), not contiguous
    weight = torch.randn(c_out, c_in, requires_grad=True)
    out = channel_map(x, weight)
    out.transpose(1, 2).sum().backward()  # the gradient arrives as a broadcast view
    torch.testing.assert_close(out, torch.einsum("ok,bkp->bop", weight, x), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(x.grad, weight.sum(0)[None, :, None].expand_as(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("sizes", [LARGE, SMALL], ids=["large", "small"])
def test_runs_under_bf16_autocast_like_linear(sizes):
    batch, c_in, p, c_out = sizes
    x, weight, bias = torch.randn(batch, c_in, p), torch.randn(c_out, c_in), torch.randn(c_out)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = channel_map(x, weight, bias)
        expected = F.linear(x.transpose(1, 2), weight, bias).transpose(1, 2)
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=0.02, atol=0.05 * expected.abs().max().item())


def test_compiles_at_onednn_sizes():
    """Large float32 items take oneDNN, which inductor cannot lower: compiled, the custom operator
    stays an opaque call in one graph, and matches eager, gradients included."""
    layer = ChannelLinear(64, 192)
    x = torch.randn(2, 64, 32, 32)
    assert torch._dynamo.explain(layer)(x).graph_break_count == 0
    results = []
    for module in (layer, torch.compile(layer)):
        leaf = x.clone().requires_grad_()
        layer.zero_grad()
        out = module(leaf)
        out.backward(torch.ones_like(out))
        results.append([out, leaf.grad, layer.linear.weight.grad.clone()])
    for eager, compiled in zip(*results):  # different summation orders: float32 rounding
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5 * eager.abs().max().item())


def test_parameter_gradients_when_the_input_needs_none():
    batch, c_in, p, c_out = LARGE
    x = torch.randn(batch, c_in, p)  # raw features: no gradient wanted
    weight, bias = torch.randn(c_out, c_in, requires_grad=True), torch.randn(c_out, requires_grad=True)
    grad = torch.randn(batch, c_out, p)
    channel_map(x, weight, bias).backward(grad)
    expected_weight = torch.einsum("bop,bkp->ok", grad.double(), x.double())
    tolerance = {"rtol": 1e-4, "atol": 1e-3 * expected_weight.abs().max().item()}
    torch.testing.assert_close(weight.grad.double(), expected_weight, **tolerance)
    torch.testing.assert_close(bias.grad, grad.sum((0, 2)), rtol=1e-4, atol=1e-3)
