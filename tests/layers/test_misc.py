"""TupleOp, ResBlock, LearnedScale, StatFeaturizer, FlattenWeights/UnflattenWeights."""

import pytest
import torch
from torch import nn

from nfn_lab.layers.linear import NPLinear
from nfn_lab.layers.misc import FlattenWeights, LearnedScale, ResBlock, StatFeaturizer, TupleOp, UnflattenWeights
from nfn_lab.layers.norm import SimpleLayerNorm
from nfn_lab.testing import (
    SPACES,
    assert_equivariant,
    assert_invariant,
    assert_sensitive,
    example_features,
    non_group_transforms,
)
from nfn_lab.weightspace import WeightSpaceFeatures, network_spec_from_wsfeat

CHANNELS = 3


def _features(kind, num_layers, channels=CHANNELS, **kwargs):
    return example_features(kind, num_layers, channels=channels, dtype=torch.float64, **kwargs)


def _res_block(spec, dropout=0.0):
    return ResBlock(
        NPLinear(spec, CHANNELS, CHANNELS), TupleOp(nn.ReLU()), dropout=dropout, norm=SimpleLayerNorm(spec, CHANNELS)
    ).double()


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_tuple_op_applies_op_to_every_array(kind, num_layers):
    x = _features(kind, num_layers)
    layer = TupleOp(torch.tanh)
    y = layer(x)
    for a, b in zip((*x.weights, *x.biases), (*y.weights, *y.biases)):
        torch.testing.assert_close(b, torch.tanh(a))
    assert_equivariant(layer, x, group="np")
    assert "op=tanh" in repr(layer)


def test_tuple_op_runs_eagerly_under_compile_on_cpu():
    """The op stays out of compiled graphs on the CPU (inductor's ReLU-mask store is slow there),
    and the compiled module still gives the eager results and gradients."""
    traced = []

    def relu(t):
        traced.append(torch.compiler.is_compiling())
        return torch.relu(t)

    x = example_features("mlp", 2, batch_size=2, channels=3)
    arrays = [t.clone().requires_grad_() for t in (*x.weights, *x.biases)]
    out = torch.compile(TupleOp(relu))(WeightSpaceFeatures(arrays[:2], arrays[2:]))
    assert traced and not any(traced)
    torch.autograd.backward([*out.weights, *out.biases], [torch.ones_like(t) for t in arrays])
    for a, o in zip(arrays, (*out.weights, *out.biases)):
        torch.testing.assert_close(o, torch.relu(a))
        torch.testing.assert_close(a.grad, (a > 0).to(a.dtype))


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_res_block_is_np_equivariant(kind, num_layers):
    x = _features(kind, num_layers)
    block = _res_block(network_spec_from_wsfeat(x), dropout=0.5).eval()
    assert_equivariant(block, x, group="np")
    for transform in non_group_transforms(x, "np").values():
        assert_sensitive(block, x, transform)


def test_res_block_adds_residual_branch():
    x = _features("conv2d", 2)
    spec = network_spec_from_wsfeat(x)
    base = NPLinear(spec, CHANNELS, CHANNELS).double()
    block = ResBlock(base, TupleOp(nn.ReLU()), dropout=0.0, norm=None)
    expected = x + TupleOp(nn.ReLU())(base(x))
    for a, b in zip(block(x).weights, expected.weights):
        torch.testing.assert_close(a, b)


def test_res_block_rejects_channel_change():
    x = _features("mlp", 2, channels=1)
    spec = network_spec_from_wsfeat(x)
    block = ResBlock(NPLinear(spec, 1, 4), TupleOp(nn.ReLU())).double()
    with pytest.raises(ValueError, match=r"ResBlock.*in_channels == out_channels"):
        block(x)
    with pytest.raises(ValueError, match="dropout"):
        ResBlock(NPLinear(spec, 1, 1), TupleOp(nn.ReLU()), dropout=1.0)


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_learned_scale(kind, num_layers):
    x = _features(kind, num_layers)
    layer = LearnedScale(network_spec_from_wsfeat(x), init_scale=0.5).double()
    with torch.no_grad():
        layer.weight_scales.copy_(torch.arange(1.0, num_layers + 1))
        layer.bias_scales.copy_(-torch.arange(1.0, num_layers + 1))
    y = layer(x)
    for i in range(num_layers):
        torch.testing.assert_close(y.weights[i], x.weights[i] * (i + 1))
        torch.testing.assert_close(y.biases[i], -x.biases[i] * (i + 1))
    assert_equivariant(layer, x, group="np")
    layer.reset_parameters()
    assert torch.all(layer.weight_scales == 0.5) and torch.all(layer.bias_scales == 0.5)


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_stat_featurizer_is_np_invariant(kind, num_layers):
    x = _features(kind, num_layers)
    spec = network_spec_from_wsfeat(x)
    layer = StatFeaturizer(spec)
    out = layer(x)
    assert out.shape == (x.batch_size, CHANNELS, StatFeaturizer.get_num_outs(spec))
    assert_invariant(layer, x, group="np")


def test_stat_featurizer_statistics():
    """Each array's 7 statistics, in array order W(1), b(1), W(2), ..."""
    x = _features("conv1d", 2)
    out = StatFeaturizer()(x).reshape(x.batch_size, CHANNELS, 4, 7)
    for a, arr in enumerate((x.weights[0], x.biases[0], x.weights[1], x.biases[1])):
        flat = arr.flatten(start_dim=2)
        torch.testing.assert_close(out[:, :, a, 0], flat.mean(-1))
        torch.testing.assert_close(out[:, :, a, 1], flat.var(-1, correction=0))
        torch.testing.assert_close(out[:, :, a, 2], flat.amin(-1))
        srt, n = flat.sort(-1).values, flat.shape[-1]
        torch.testing.assert_close(out[:, :, a, 4], (srt[..., (n - 1) // 2] + srt[..., n // 2]) / 2)
        torch.testing.assert_close(out[:, :, a, 6], flat.amax(-1))


def test_stat_featurizer_single_output_network_is_finite():
    x = _features("mlp", 2, layer_sizes=(3, 4, 1))
    assert torch.isfinite(StatFeaturizer()(x)).all()


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_flatten_unflatten_round_trip(kind, num_layers):
    x = _features(kind, num_layers)
    spec = network_spec_from_wsfeat(x, set_all_dims=True)
    tokens = FlattenWeights(spec)(x)
    assert tokens.shape == (x.batch_size, spec.get_num_params(), CHANNELS)
    torch.testing.assert_close(tokens, x.flatten().transpose(1, 2), rtol=0, atol=0)
    y = UnflattenWeights(spec)(tokens)
    for a, b in zip((*x.weights, *x.biases), (*y.weights, *y.biases)):
        assert torch.equal(a, b)


def test_flatten_token_order():
    """The first tokens are W(1) row-major (filter fastest), then b(1)."""
    x = _features("conv1d", 2)
    tokens = FlattenWeights(network_spec_from_wsfeat(x, set_all_dims=True))(x)
    w0 = x.weights[0]  # (B, C, 4, 3, 3)
    torch.testing.assert_close(tokens[:, 1, :], w0[:, :, 0, 0, 1])
    torch.testing.assert_close(tokens[:, 3, :], w0[:, :, 0, 1, 0])
    torch.testing.assert_close(tokens[:, w0[0, 0].numel(), :], x.biases[0][:, :, 0])


@pytest.mark.parametrize("cls", [FlattenWeights, UnflattenWeights])
def test_flatten_needs_all_sizes(cls):
    spec = network_spec_from_wsfeat(_features("mlp", 3))  # hidden sizes free
    with pytest.raises(ValueError, match=f"{cls.__name__}: layer 0 has a free size.*set_all_dims=True"):
        cls(spec)


def test_shape_errors_name_the_layer():
    x = _features("conv2d", 2)
    spec = network_spec_from_wsfeat(x, set_all_dims=True)
    wrong = _features("conv2d", 2, layer_sizes=(3, 5, 5))
    for layer in (FlattenWeights(spec), LearnedScale(spec), StatFeaturizer(spec)):
        with pytest.raises(ValueError, match=type(layer).__name__):
            layer(wrong)
    with pytest.raises(ValueError, match=r"UnflattenWeights: expected tokens \(B, \d+, C\)"):
        UnflattenWeights(spec)(torch.zeros(2, 7, 1))
