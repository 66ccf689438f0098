"""The checkers in nfn_lab.testing must fail on maps that break the symmetry."""

import pytest
import torch
from torch import nn

from nfn_lab.layers import HNPLinear, NPPool
from nfn_lab.testing import (
    assert_equivariant,
    assert_invariant,
    assert_sensitive,
    count_orbits,
    example_features,
    jacobian_rank,
    non_group_transforms,
)
from nfn_lab.weightspace import WeightSpaceFeatures, network_spec_from_wsfeat


def _roll_rows(x: WeightSpaceFeatures) -> WeightSpaceFeatures:
    """Equivariant to nothing: mixes neighbouring rows of every array."""
    return x.map(lambda t: t + 0.5 * t.roll(1, dims=2))


def _first_row(x: WeightSpaceFeatures) -> torch.Tensor:
    return x.weights[0][:, :, 0].flatten(start_dim=1)


def test_equivariance_checker_catches_non_equivariant_map():
    x = example_features("mlp", 3, dtype=torch.float64)
    with pytest.raises(AssertionError, match="not NP-equivariant"):
        assert_equivariant(_roll_rows, x, group="np")
    with pytest.raises(AssertionError, match="not HNP-equivariant"):
        assert_equivariant(_roll_rows, x, group="hnp")


def test_invariance_checker_catches_non_invariant_map():
    x = example_features("conv2d", 3, dtype=torch.float64)
    with pytest.raises(AssertionError, match="not HNP-invariant"):
        assert_invariant(lambda f: _first_row(f), x, group="hnp")


def test_checkers_pass_identity_and_mean():
    x = example_features("conv3d", 2, dtype=torch.float64)
    assert_equivariant(lambda f: f * 2.0, x, group="np")
    assert_invariant(NPPool(network_spec_from_wsfeat(x)), x, group="np")


def test_sensitivity_checker_fails_on_map_that_ignores_structure():
    x = example_features("mlp", 2, dtype=torch.float64)
    transform = non_group_transforms(x, "np")["hidden_rows_only"]
    with pytest.raises(AssertionError, match="unchanged"):
        assert_sensitive(lambda f: f * 2.0, x, transform)


def test_non_group_transforms_are_not_in_group():
    x = example_features("mlp", 3, dtype=torch.float64)
    layer = HNPLinear(network_spec_from_wsfeat(x), 1, 2).double()
    for name, transform in non_group_transforms(x, "hnp").items():
        assert_sensitive(layer, x, transform)
        assert name in {"weight_rows_not_bias", "hidden_rows_only", "input", "output"}


@pytest.mark.parametrize(
    "sizes,group,expected",
    [
        # One layer 3 -> 2, NP: W<-W 4 orbits, W<-b 2, b<-W 2, b<-b 2.
        ((3, 2), "np", 10),
        # One layer, HNP permutes nothing: every pair of the 6 + 2 entries is its own orbit.
        ((3, 2), "hnp", 64),
        # Two layers 2 -> 3 -> 2, NP; counted by hand from the characterization (section 3).
        ((2, 3, 2), "np", 32),
    ],
)
def test_count_orbits_small_cases(sizes, group, expected):
    assert count_orbits(sizes, group) == expected


def test_jacobian_rank_of_a_dense_map_is_full():
    x = example_features("mlp", 1, batch_size=1, layer_sizes=(2, 2))
    assert jacobian_rank(lambda: _DenseMap(6), x) == 36


class _DenseMap(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.lin = nn.Linear(n, n, bias=False)

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        flat = torch.cat([x.weights[0].flatten(start_dim=1), x.biases[0].flatten(start_dim=1)], dim=1)
        out = self.lin(flat)
        return WeightSpaceFeatures([out[:, :4].reshape(x.weights[0].shape)], [out[:, 4:].reshape(x.biases[0].shape)])
