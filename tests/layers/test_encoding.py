"""GaussianFourierFeatureTransform, IOSinusoidalEncoding, LearnedPosEmbedding."""

import math

import pytest
import torch

from nfn_lab.layers.encoding import (
    GaussianFourierFeatureTransform,
    IOSinusoidalEncoding,
    LearnedPosEmbedding,
    fourier_encode,
)
from nfn_lab.testing import (
    SPACES,
    assert_equivariant,
    assert_sensitive,
    example_features,
    non_group_transforms,
)
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures, network_spec_from_wsfeat

CHANNELS = 2


def _features(kind, num_layers, channels=CHANNELS, **kwargs):
    return example_features(kind, num_layers, channels=channels, dtype=torch.float64, **kwargs)


@pytest.mark.parametrize("channels", [1, CHANNELS])  # 1: the broadcast-multiply path
@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_gaussian_fourier_features(kind, num_layers, channels):
    x = _features(kind, num_layers, channels=channels)
    torch.manual_seed(0)
    layer = GaussianFourierFeatureTransform(network_spec_from_wsfeat(x), channels, mapping_size=4, scale=2).double()
    y = layer(x)
    assert layer.out_channels == 8
    for a, b in zip((*x.weights, *x.biases), (*y.weights, *y.biases)):
        assert b.shape == (a.shape[0], 8, *a.shape[2:]) and b.is_contiguous()
        z = 2 * math.pi * torch.einsum("bc...,cm->bm...", a, layer.projection)
        torch.testing.assert_close(b, torch.cat([z.sin(), z.cos()], dim=1))
    assert_equivariant(layer, x, group="np")


@pytest.mark.parametrize("channels", [1, CHANNELS])
def test_gaussian_fourier_features_with_and_without_autograd_agree(channels):
    """Features that need a gradient take the differentiable path; the values are the same."""
    x = _features("conv2d", 2, channels=channels)
    layer = GaussianFourierFeatureTransform(network_spec_from_wsfeat(x), channels, mapping_size=3, scale=2).double()
    plain = layer(x)
    leaves = [t.clone().requires_grad_() for t in (*x.weights, *x.biases)]
    tracked = layer(WeightSpaceFeatures(leaves[: len(x)], leaves[len(x) :]))
    for a, b in zip((*plain.weights, *plain.biases), (*tracked.weights, *tracked.biases)):
        assert b.requires_grad
        torch.testing.assert_close(a, b.detach())
    sum(t.sum() for t in (*tracked.weights, *tracked.biases)).backward()
    for leaf in leaves:  # d/dx of sum_k sin(w_k x) + cos(w_k x), with w = 2 pi P
        freqs = 2 * math.pi * layer.projection
        z = torch.einsum("bc...,cm->bm...", leaf.detach(), freqs)
        expected = torch.einsum("bm...,cm->bc...", z.cos() - z.sin(), freqs)
        torch.testing.assert_close(leaf.grad, expected)


def test_gaussian_fourier_features_compile():
    x = _features("mlp", 2, channels=1)
    layer = GaussianFourierFeatureTransform(network_spec_from_wsfeat(x), 1, mapping_size=3, scale=2).double()
    expected, compiled = layer(x), torch.compile(layer)(x)
    for a, b in zip((*expected.weights, *expected.biases), (*compiled.weights, *compiled.biases)):
        torch.testing.assert_close(a, b)


def test_gaussian_fourier_projection_is_a_saved_buffer():
    spec = network_spec_from_wsfeat(_features("mlp", 2))
    layer = GaussianFourierFeatureTransform(spec, CHANNELS, mapping_size=3)
    assert "projection" in layer.state_dict() and not list(layer.parameters())
    assert layer.double().projection.dtype == torch.float64
    assert "in_channels=2, mapping_size=3, scale=10" in repr(layer)


def test_fourier_encode():
    x = torch.tensor([-1.0, 0.25, 1.0], dtype=torch.float64)
    enc = fourier_encode(x, max_freq=10, num_bands=3)  # frequencies 1, 3, 5
    assert enc.shape == (3, 7)
    freqs = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(enc[1, :3], torch.sin(math.pi * 0.25 * freqs))
    torch.testing.assert_close(enc[1, 3:6], torch.cos(math.pi * 0.25 * freqs))
    torch.testing.assert_close(enc[:, 6], x)


@pytest.mark.parametrize("enc_layers", [True, False])
@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_io_sinusoidal_encoding_is_hnp_not_np_equivariant(kind, num_layers, enc_layers):
    x = _features(kind, num_layers)
    layer = IOSinusoidalEncoding(network_spec_from_wsfeat(x), num_bands=3, enc_layers=enc_layers)
    y = layer(x)
    out_chan = layer.num_out_chan(CHANNELS)
    assert out_chan == CHANNELS + 7
    for a, b in zip((*x.weights, *x.biases), (*y.weights, *y.biases)):
        assert b.shape == (a.shape[0], out_chan, *a.shape[2:])
        assert torch.equal(b[:, :CHANNELS], a)
    assert_equivariant(layer, x, group="hnp")
    transforms = non_group_transforms(x, "hnp")
    assert_sensitive(layer, x, transforms["input"])
    assert_sensitive(layer, x, transforms["output"])


def _expected_code(num_layers, i, row, col, is_bias, layer_codes, inp_codes, out_codes):
    """Code of entry (row, col) of weight i (or row of bias i), written entry by entry."""
    code = layer_codes[i].clone()
    if i == 0 and not is_bias:
        code += inp_codes[col]
    if i == num_layers - 1:
        code += out_codes[row]
    return code


@pytest.mark.parametrize("kind,num_layers", [("conv2d", 1), ("conv1d", 2), ("conv3d", 3), ("mlp", 3)])
def test_io_sinusoidal_codes_per_entry(kind, num_layers):
    """Layer, input and output codes land on the right entries (incl. conv filters and L = 1)."""
    x = _features(kind, num_layers)
    layer = IOSinusoidalEncoding(network_spec_from_wsfeat(x), num_bands=2)
    y = layer(x)
    n_in, n_out = network_spec_from_wsfeat(x).get_io()

    def codes(n):
        return fourier_encode(torch.linspace(-1, 1, n, dtype=torch.float64), 10, 2)

    layer_codes, inp_codes, out_codes = codes(num_layers), codes(n_in), codes(n_out)
    for i, (w, b) in enumerate(zip(y.weights, y.biases)):
        j, k = w.shape[2] - 1, w.shape[3] - 1  # a corner entry, at the last filter position
        filt = tuple(s - 1 for s in w.shape[4:])
        expected = _expected_code(num_layers, i, j, k, False, layer_codes, inp_codes, out_codes)
        torch.testing.assert_close(w[(1, slice(CHANNELS, None), j, k, *filt)], expected)
        expected = _expected_code(num_layers, i, j, None, True, layer_codes, inp_codes, out_codes)
        torch.testing.assert_close(b[1, CHANNELS:, j], expected)


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_learned_pos_embedding_is_hnp_not_np_equivariant(kind, num_layers):
    x = _features(kind, num_layers)
    layer = LearnedPosEmbedding(network_spec_from_wsfeat(x), CHANNELS).double()
    y = layer(x)
    assert [w.shape for w in y.weights] == [w.shape for w in x.weights]
    assert_equivariant(layer, x, group="hnp")
    transforms = non_group_transforms(x, "hnp")
    assert_sensitive(layer, x, transforms["input"])
    assert_sensitive(layer, x, transforms["output"])


def test_learned_pos_embedding_entries():
    x = _features("conv2d", 2)
    layer = LearnedPosEmbedding(network_spec_from_wsfeat(x), CHANNELS).double()
    y = layer(x)
    diff_w0 = (y.weights[0] - x.weights[0])[0, :, 2, 1, 1, 0]  # first layer: layer + input 1
    torch.testing.assert_close(diff_w0, layer.weight_emb[0] + layer.inp_emb[1])
    diff_w1 = (y.weights[1] - x.weights[1])[0, :, 3, 2]  # last layer: layer + output 3
    torch.testing.assert_close(diff_w1, layer.weight_emb[1] + layer.out_emb[3])
    diff_b0 = (y.biases[0] - x.biases[0])[0, :, 2]
    torch.testing.assert_close(diff_b0, layer.bias_emb[0])
    diff_b1 = (y.biases[1] - x.biases[1])[0, :, 3]
    torch.testing.assert_close(diff_b1, layer.bias_emb[1] + layer.out_emb[3])


@pytest.mark.parametrize("cls", [IOSinusoidalEncoding, LearnedPosEmbedding])
def test_position_encodings_need_io_sizes(cls):
    spec = NetworkSpec.from_shapes([(4, -1), (-1, 4)])
    args = () if cls is IOSinusoidalEncoding else (CHANNELS,)
    with pytest.raises(ValueError, match=f"{cls.__name__} needs the network's input and output sizes"):
        cls(spec, *args)


def test_shape_errors_name_the_layer():
    x = _features("conv1d", 3)
    spec = network_spec_from_wsfeat(x)
    wrong_io = _features("conv1d", 3, layer_sizes=(2, 4, 5, 4))
    wrong_channels = _features("conv1d", 3, channels=CHANNELS + 1)
    layers = [
        (GaussianFourierFeatureTransform(spec, CHANNELS, mapping_size=2).double(), wrong_channels),
        (IOSinusoidalEncoding(spec), wrong_io),
        (LearnedPosEmbedding(spec, CHANNELS).double(), wrong_io),
        (LearnedPosEmbedding(spec, CHANNELS).double(), wrong_channels),
    ]
    for layer, bad in layers:
        with pytest.raises(ValueError, match=f"{type(layer).__name__}: layer 0 weight"):
            layer(bad)
