"""Group elements: sampling, action on features, and agreement with the network's function."""

import pytest
import torch
from torch import nn

from nfn_lab.symmetry import (
    feature_layer_sizes,
    permute_features,
    permuted_layers,
    sample_permutations,
    sample_positive_scales,
    sample_sign_flips,
    scale_neurons,
)
from nfn_lab.testing import example_features
from nfn_lab.weightspace import WeightSpaceFeatures


def _mlp_features(mlp: nn.Sequential) -> WeightSpaceFeatures:
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    return WeightSpaceFeatures([l.weight[None, None] for l in linears], [l.bias[None, None] for l in linears])


def _load(mlp: nn.Sequential, x: WeightSpaceFeatures) -> nn.Sequential:
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, (w, b) in zip(linears, x):
            lin.weight.copy_(w[0, 0])
            lin.bias.copy_(b[0, 0])
    return mlp


def _mlp(act: type[nn.Module]) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), act(), nn.Linear(5, 4), act(), nn.Linear(4, 2)).double()


def test_permuted_layers():
    assert permuted_layers(3, "np") == (0, 1, 2, 3)
    assert permuted_layers(3, "hnp") == (1, 2)
    with pytest.raises(ValueError, match="unknown group"):
        permuted_layers(3, "xyz")


@pytest.mark.parametrize(
    "act,sample,op",
    [
        (nn.ReLU, lambda sizes: sample_permutations(sizes, "hnp"), permute_features),
        (nn.Tanh, sample_sign_flips, scale_neurons),
        (nn.ReLU, sample_positive_scales, scale_neurons),
    ],
)
def test_symmetries_preserve_function(act, sample, op):
    mlp = _mlp(act)
    inputs = torch.randn(16, 3, dtype=torch.float64)
    expected = mlp(inputs)
    x = _mlp_features(mlp).detach()
    g = sample(feature_layer_sizes(x))
    y = op(x, g)
    assert not torch.allclose(y.weights[0], x.weights[0])
    torch.testing.assert_close(_load(_mlp(act), y)(inputs), expected)


def test_np_permutation_changes_function():
    mlp = _mlp(nn.ReLU)
    inputs = torch.randn(16, 3, dtype=torch.float64)
    x = _mlp_features(mlp).detach()
    perms = [torch.tensor([1, 2, 0]), None, None, None]
    assert not torch.allclose(_load(_mlp(nn.ReLU), permute_features(x, perms))(inputs), mlp(inputs))


def test_item_and_batch_actions_agree():
    x = example_features("conv2d", 3, batch_size=3, channels=2)
    perms = sample_permutations(feature_layer_sizes(x), "np", generator=torch.Generator().manual_seed(1))
    batched = permute_features(x, perms)
    item = WeightSpaceFeatures([w[1] for w in x.weights], [b[1] for b in x.biases])
    per_item = permute_features(item, perms, lead=1)
    for a, b in zip((*batched.weights, *batched.biases), (*per_item.weights, *per_item.biases)):
        torch.testing.assert_close(a[1], b)


def test_scales_are_in_range_and_hidden_only():
    scales = sample_positive_scales((3, 50, 40, 2), low=0.5, high=2.0)
    assert scales[0] is None and scales[-1] is None
    s = torch.cat(scales[1:-1])
    assert (s >= 0.5).all() and (s <= 2.0).all() and s.std() > 0.1
    flips = torch.cat(sample_sign_flips((3, 50, 40, 2))[1:-1])
    assert set(flips.tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="0 < low"):
        sample_positive_scales((3, 4, 2), low=-1.0)


def test_wrong_number_of_maps():
    x = example_features("mlp", 2)
    with pytest.raises(ValueError, match="expected 3 neuron-layer entries"):
        permute_features(x, [None, None])
