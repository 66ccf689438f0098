"""Every NF-layer on a CUDA device: the same outputs and gradients as on the CPU.

Skipped without a GPU (CI has none); run on a GPU machine with
``python -m pytest tests/layers/test_cuda.py``. The CPU tests prove the math (equivariance,
expressivity, gradients); these prove that nothing in the layers is tied to the CPU: device
placement of buffers and index tensors, the fused backward's in-place GEMMs, autocast.
"""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from nfn_lab import layers as L
from nfn_lab.testing import assert_runs_under_autocast, channels_last, example_features
from nfn_lab.weightspace import NetworkSpec, network_spec_from_wsfeat

DEVICE = "cuda"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

C = 4  # channels of the input features

# name -> (spec -> module taking features of C channels); every layer of nfn_lab.layers.
FEATURE_LAYERS: dict[str, Callable[[NetworkSpec], nn.Module]] = {
    "NPLinear": lambda spec: L.NPLinear(spec, C, 3),
    "NPLinear_io_embed": lambda spec: L.NPLinear(spec, C, 3, io_embed=True),
    "HNPLinear": lambda spec: L.HNPLinear(spec, C, 3),
    "Pointwise": lambda spec: L.Pointwise(spec, C, 3),
    "NPPool": lambda spec: L.NPPool(spec),
    "HNPPool": lambda spec: L.HNPPool(spec),
    "NPAttention": lambda spec: L.NPAttention(spec, C, num_heads=2, share_projections=False),
    "TupleOp_ChannelLinear": lambda spec: L.TupleOp(L.ChannelLinear(C, 3)),
    "ResBlock": lambda spec: L.ResBlock(L.NPLinear(spec, C, C), L.TupleOp(nn.ReLU()), norm=L.SimpleLayerNorm(spec, C)),
    "StatFeaturizer": lambda spec: L.StatFeaturizer(spec),
    "LearnedScale": lambda spec: L.LearnedScale(spec, 0.5),
    "FlattenWeights": lambda spec: L.FlattenWeights(spec),
    "CrossAttnEncoder": lambda spec: L.CrossAttnEncoder(spec, C, num_latents=3),
    "ChannelLayerNorm": lambda spec: L.TupleOp(L.ChannelLayerNorm(C)),
    "SimpleLayerNorm": lambda spec: L.SimpleLayerNorm(spec, C),
    "ParamLayerNorm": lambda spec: L.ParamLayerNorm(spec, C),
    "ChannelDropout_eval": lambda spec: L.ChannelDropout(0.5).eval(),
    "GaussianFourierFeatureTransform": lambda spec: L.GaussianFourierFeatureTransform(spec, C, mapping_size=3, scale=1),
    "IOSinusoidalEncoding": lambda spec: L.IOSinusoidalEncoding(spec),
    "LearnedPosEmbedding": lambda spec: L.LearnedPosEmbedding(spec, C),
}
# Layers that take token tensors (B, N, C) rather than features.
TOKEN_LAYERS: dict[str, Callable[[NetworkSpec], nn.Module]] = {
    "UnflattenWeights": lambda spec: L.UnflattenWeights(spec),
    "CrossAttnDecoder": lambda spec: L.CrossAttnDecoder(spec, C),
}
SPACES = [("mlp", 3), ("conv2d", 2)]


def _leaves(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _run(module: nn.Module, inputs: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs, then the gradients of inputs and parameters, of a fixed scalar of the outputs."""
    leaves = [t.requires_grad_() for t in _leaves(inputs)]
    outs = _leaves(module(inputs))
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=o.device).view_as(o)).sum() for o in outs)
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, leaves + params, allow_unused=True)
    return [o.detach().cpu() for o in outs], [g.cpu() for g in grads if g is not None]


def _assert_same_on_cuda(build: Callable[[NetworkSpec], nn.Module], spec: NetworkSpec, inputs: Any) -> None:
    torch.manual_seed(0)
    module = build(spec).double()
    cpu = _run(module, inputs)
    gpu = _run(module.to(DEVICE), inputs.to(DEVICE))
    for want, got in zip(cpu[0] + cpu[1], gpu[0] + gpu[1]):
        torch.testing.assert_close(got, want)
    assert len(cpu[1]) == len(gpu[1]) > 0


@pytest.mark.parametrize("name", list(FEATURE_LAYERS))
@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_feature_layer_matches_cpu(name: str, kind: str, num_layers: int) -> None:
    x = example_features(kind, num_layers, batch_size=3, channels=C, dtype=torch.float64)
    _assert_same_on_cuda(FEATURE_LAYERS[name], network_spec_from_wsfeat(x, set_all_dims=True), x)


@pytest.mark.parametrize("name", list(TOKEN_LAYERS))
def test_token_layer_matches_cpu(name: str) -> None:
    spec = network_spec_from_wsfeat(example_features("mlp", 3), set_all_dims=True)
    tokens = torch.randn(3, L.FlattenWeights(spec).num_params, C, dtype=torch.float64)
    _assert_same_on_cuda(TOKEN_LAYERS[name], spec, tokens)


@pytest.mark.parametrize("cls", [L.NPLinear, L.HNPLinear])
@pytest.mark.parametrize("memory", ["channels_first", "channels_last"])
def test_linear_layers_run_under_cuda_bf16_autocast(cls: type, memory: str) -> None:
    x = example_features("mlp", 3, batch_size=4, channels=2)
    if memory == "channels_last":
        x = x.map(channels_last)
    assert_runs_under_autocast(cls(network_spec_from_wsfeat(x), 2, 3).to(DEVICE), x.to(DEVICE))


@pytest.mark.parametrize("channels", [1, C])
def test_fourier_features_without_autograd_match_cpu(channels: int) -> None:
    """The no-autograd path writes phases, cosines and sines into one output (``torch.cos(out=)`` on CUDA)."""
    x = example_features("conv2d", 2, batch_size=3, channels=channels, dtype=torch.float64)
    layer = L.GaussianFourierFeatureTransform(network_spec_from_wsfeat(x), channels, mapping_size=3).double()
    with torch.no_grad():
        want = _leaves(layer(x))
        got = _leaves(layer.to(DEVICE)(x.to(DEVICE)))
    for a, b in zip(want, got):
        torch.testing.assert_close(b.cpu(), a)
    assert len(want) == len(got) == 2 * len(x)
