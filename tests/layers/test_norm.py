"""ChannelLayerNorm, SimpleLayerNorm, ParamLayerNorm, ChannelDropout."""

import pytest
import torch

from nfn_lab.layers.misc import TupleOp
from nfn_lab.layers.norm import ChannelDropout, ChannelLayerNorm, ParamLayerNorm, SimpleLayerNorm
from nfn_lab.symmetry import feature_layer_sizes, permute_features, sample_permutations
from nfn_lab.testing import (
    SPACE_KINDS,
    SPACES,
    assert_equivariant,
    assert_sensitive,
    example_features,
    non_group_transforms,
)
from nfn_lab.weightspace import network_spec_from_wsfeat

CHANNELS = 3


def _features(kind, num_layers, channels=CHANNELS, **kwargs):
    return example_features(kind, num_layers, channels=channels, dtype=torch.float64, **kwargs)


def _randomize(module):
    """Random gains and shifts, so that per-position affine parameters show."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def _standardized(x, dims):
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, correction=0)
    return (x - mean) / torch.sqrt(var + 1e-5)


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_channel_layer_norm_via_tuple_op(kind, num_layers):
    x = _features(kind, num_layers)
    norm = ChannelLayerNorm(CHANNELS).double()
    layer = TupleOp(norm)
    y = layer(x)
    for a, b in zip((*x.weights, *x.biases), (*y.weights, *y.biases)):
        torch.testing.assert_close(b, _standardized(a, 1))
    _randomize(norm)
    assert_equivariant(layer, x, group="np")


def test_channel_layer_norm_affine_and_errors():
    norm = _randomize(ChannelLayerNorm(4).double())
    x = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    expected = _standardized(x, 1) * norm.gamma.view(1, 4, 1, 1) + norm.beta.view(1, 4, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    norm.reset_parameters()
    torch.testing.assert_close(norm(x), _standardized(x, 1))
    with pytest.raises(ValueError, match=r"ChannelLayerNorm: expected \(B, 4, ...\)"):
        norm(torch.randn(2, 3, 5))


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_simple_layer_norm(kind, num_layers):
    x = _features(kind, num_layers)
    layer = SimpleLayerNorm(network_spec_from_wsfeat(x), CHANNELS).double()
    y = layer(x)
    for w, v in zip(x.weights, y.weights):  # over channels and filter positions
        torch.testing.assert_close(v, _standardized(w, (1, *range(4, w.dim()))))
    for b, v in zip(x.biases, y.biases):
        torch.testing.assert_close(v, _standardized(b, 1))
    _randomize(layer)
    assert_equivariant(layer, x, group="np")


def _param_norm_axes(num_layers, i, weight_dim):
    """Axes ParamLayerNorm normalizes weight i over: channels, filter, and fixed neuron axes."""
    axes = {1, *range(4, weight_dim)}
    if i == 0:
        axes.add(3)
    if i == num_layers - 1:
        axes.add(2)
    return tuple(sorted(axes))


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_param_layer_norm_is_hnp_not_np_equivariant(kind, num_layers):
    x = _features(kind, num_layers)
    layer = ParamLayerNorm(network_spec_from_wsfeat(x), CHANNELS).double()
    y = layer(x)
    for i, (w, v) in enumerate(zip(x.weights, y.weights)):
        torch.testing.assert_close(v, _standardized(w, _param_norm_axes(num_layers, i, w.dim())))
    for b, v in zip(x.biases[:-1], y.biases[:-1]):
        torch.testing.assert_close(v, _standardized(b, 1))
    torch.testing.assert_close(y.biases[-1], _standardized(x.biases[-1], (1, 2)))  # all of b(L)
    _randomize(layer)
    assert_equivariant(layer, x, group="hnp")
    transforms = non_group_transforms(x, "hnp")
    assert_sensitive(layer, x, transforms["input"])
    assert_sensitive(layer, x, transforms["output"])


@pytest.mark.parametrize("cls", [SimpleLayerNorm, ParamLayerNorm])
def test_layer_norm_errors_name_the_layer(cls):
    x = _features("conv2d", 2)
    layer = cls(network_spec_from_wsfeat(x), CHANNELS)
    with pytest.raises(ValueError, match=f"{cls.__name__}: layer 0 weight"):
        layer(_features("conv2d", 2, channels=2))
    assert f"channels={CHANNELS}" in repr(layer)


def test_param_layer_norm_needs_io_sizes():
    spec = network_spec_from_wsfeat(_features("mlp", 2), set_all_dims=True)
    free_io = type(spec).from_shapes([(4, -1), (-1, 4)])
    with pytest.raises(ValueError, match="neuron layer 0 is held fixed"):
        ParamLayerNorm(free_io, CHANNELS)
    ParamLayerNorm(spec, CHANNELS)  # all sizes known: fine


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_channel_dropout_eval_is_identity(kind, num_layers):
    x = _features(kind, num_layers)
    layer = ChannelDropout(0.5).eval()
    y = layer(x)
    assert all(torch.equal(a, b) for a, b in zip((*x.weights, *x.biases), (*y.weights, *y.biases)))


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_channel_dropout_train_is_equivariant_for_fixed_seed(kind, num_layers):
    x = _features(kind, num_layers)
    layer = ChannelDropout(0.5).train()
    perms = sample_permutations(feature_layer_sizes(x), "np", generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    out = layer(x)
    torch.manual_seed(3)
    out_of_permuted = layer(permute_features(x, perms))
    expected = permute_features(out, perms)
    for a, b in zip((*out_of_permuted.weights, *out_of_permuted.biases), (*expected.weights, *expected.biases)):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(out.weights, x.weights))  # it did drop something


@pytest.mark.parametrize("kind", SPACE_KINDS)
def test_channel_dropout_drops_whole_channels_at_the_right_rate(kind):
    p = 0.3
    x = example_features(kind, 2, batch_size=64, channels=16, dtype=torch.float64)
    torch.manual_seed(0)
    y = ChannelDropout(p).train()(x)
    pairs = [(w, v, 2) for w, v in zip(x.weights, y.weights)] + [(b, v, 1) for b, v in zip(x.biases, y.biases)]
    for a, b, num_neuron_axes in pairs:
        ratio = b / a  # 0 where dropped, 1 / (1 - p) where kept
        neuron_axes = tuple(range(2, 2 + num_neuron_axes))
        kept = ratio.amax(dim=neuron_axes, keepdim=True)  # (B, C, 1, [1,] *filter)
        torch.testing.assert_close(ratio, kept.expand_as(ratio))  # constant over neurons
        assert set(torch.unique(kept.round(decimals=6)).tolist()) <= {0.0, round(1 / (1 - p), 6)}
        rate = (kept == 0).double().mean().item()
        assert abs(rate - p) < 5 * (p * (1 - p) / kept.numel()) ** 0.5


def test_channel_dropout_extremes_and_errors():
    x = _features("mlp", 2)
    zeros = ChannelDropout(1.0).train()(x)
    assert all(torch.count_nonzero(a) == 0 for a in (*zeros.weights, *zeros.biases))
    with pytest.raises(ValueError, match="ChannelDropout: dropout must be in"):
        ChannelDropout(1.5)
