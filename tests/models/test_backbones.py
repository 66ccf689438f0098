"""Backbones: the symmetry each one promises, shapes, and input normalization."""

import pytest
import torch

from nfn_lab.data.stats import compute_weight_stats
from nfn_lab.models import NFT, EquivariantNFN, FlatMLP, InvariantNFN, StatNN
from nfn_lab.testing import (
    assert_equivariant,
    assert_invariant,
    assert_sensitive,
    example_features,
    non_group_transforms,
)
from nfn_lab.weightspace import network_spec_from_wsfeat


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["mlp", "conv2d"])
def x(request):
    return example_features(request.param, 3, batch_size=3, dtype=torch.float64)


def _spec(x, all_dims=False):
    return network_spec_from_wsfeat(x, set_all_dims=all_dims)


@pytest.mark.parametrize(
    "kwargs,group",
    [
        (dict(mode="HNP"), "hnp"),
        (dict(mode="NP"), "np"),
        (dict(mode="NP-PosEmb"), "hnp"),
        (dict(mode="NP", io_encoding=True, layer_norm="simple", append_stats=True), "hnp"),
        (dict(mode="HNP", input_encoding="gaussian", layer_norm="param"), "hnp"),
    ],
)
def test_invariant_nfn(x, kwargs, group):
    model = InvariantNFN(_spec(x), hidden_channels=(4, 3), head_hidden=8, out_features=2, **kwargs).double().eval()
    assert model(x).shape == (3, 2)
    assert_invariant(model, x, group=group)
    assert_sensitive(model, x, non_group_transforms(x, "hnp")["hidden_rows_only"], equivariant=False)


def test_invariant_nfn_sigmoid_range(x):
    out = InvariantNFN(_spec(x), hidden_channels=(4,), head_hidden=8, sigmoid=True).double()(x * 10.0)
    assert ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize("mode,group", [("HNP", "hnp"), ("NP", "np"), ("PT", "np")])
def test_equivariant_nfn(x, mode, group):
    model = EquivariantNFN(_spec(x), hidden_channels=4, hidden_layers=3, mode=mode, layer_norm="simple").double()
    out = model(x)
    assert [w.shape for w in out.weights] == [w.shape for w in x.weights]
    assert_equivariant(model, x, group=group)


def test_nft_invariant_and_equivariant(x):
    spec = _spec(x)
    inv = NFT(spec, channels=8, num_blocks=1, num_heads=2, dropout=0.0, head_hidden=8, out_features=3).double().eval()
    assert inv(x).shape == (3, 3)
    assert_invariant(inv, x, group="hnp")
    eq = NFT(spec, channels=8, num_blocks=1, num_heads=2, dropout=0.0, pos_embedding=False, head="equivariant").double()
    assert_equivariant(eq.eval(), x, group="np")


def test_statnn_is_np_invariant(x):
    model = StatNN(_spec(x), hidden=8).double()
    assert model(x).shape == (3, 1)
    assert_invariant(model, x, group="np")


def test_flat_mlp_is_not_invariant(x):
    model = FlatMLP(_spec(x, all_dims=True), hidden=8).double()
    assert model(x).shape == (3, 1)
    assert_sensitive(model, x, non_group_transforms(x, "hnp")["input"], equivariant=False)
    editor = FlatMLP(_spec(x, all_dims=True), hidden=8, out_features=None).double()
    assert [w.shape for w in editor(x).weights] == [w.shape for w in x.weights]


def test_input_normalization_is_stored_and_required(x):
    model = InvariantNFN(_spec(x), hidden_channels=(4,), head_hidden=8, normalize=True).double()
    with pytest.raises(RuntimeError, match="set_stats"):
        model(x)
    stats = compute_weight_stats([x.to(torch.float32)], progress=False)
    model.set_input_stats(stats)
    assert "input_norm.weight_mean" in model.state_dict()
    normalized = model.input_norm(x)
    assert abs(normalized.weights[1].mean().item()) < 1e-6
    assert model(x).shape == (3, 1)


def test_shape_mismatch_is_reported(x):
    model = InvariantNFN(_spec(x), hidden_channels=(4,), head_hidden=8).double()
    with pytest.raises(ValueError, match="layer"):
        model(example_features("mlp", 2, dtype=torch.float64))


def test_bad_configuration_errors(x):
    with pytest.raises(ValueError, match="unknown mode"):
        InvariantNFN(_spec(x), mode="XYZ")
    with pytest.raises(ValueError, match="hidden_channels"):
        InvariantNFN(_spec(x), hidden_channels=())
    with pytest.raises(ValueError, match="unknown head"):
        NFT(_spec(x), head="sideways")


def test_fourier_encoding_size_and_scale_are_configurable(x):
    model = InvariantNFN(
        _spec(x), hidden_channels=(4,), head_hidden=8, input_encoding="gaussian", fourier_features=16, fourier_scale=3.0
    ).double()
    encoding = model.features[0]
    assert encoding.out_channels == 32 and encoding.scale == 3.0
    assert_invariant(model.eval(), x, group="hnp")
