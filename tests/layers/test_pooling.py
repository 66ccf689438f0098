"""NPPool and HNPPool: invariance, sensitivity, output sizes."""

import pytest
import torch

from nfn_lab.layers import HNPPool, NPPool
from nfn_lab.testing import SPACES, assert_invariant, assert_sensitive, example_features, non_group_transforms
from nfn_lab.weightspace import WeightSpaceFeatures, network_spec_from_wsfeat


@pytest.mark.parametrize("cls,group", [(NPPool, "np"), (HNPPool, "hnp")])
@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_invariant_with_declared_size(cls, group, kind, num_layers):
    x = example_features(kind, num_layers, channels=3, dtype=torch.float64)
    spec = network_spec_from_wsfeat(x)
    pool = cls(spec)
    out = pool(x)
    assert out.shape == (2, 3, cls.get_num_outs(spec))
    assert_invariant(pool, x, group=group)


@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_hnp_pool_sees_inputs_and_outputs(kind, num_layers):
    x = example_features(kind, num_layers, dtype=torch.float64)
    pool = HNPPool(network_spec_from_wsfeat(x))
    transforms = non_group_transforms(x, "hnp")
    for name in ("input", "output"):
        assert_sensitive(pool, x, transforms[name], equivariant=False)


def test_np_pool_values_are_means():
    x = example_features("conv2d", 2, dtype=torch.float64)
    out = NPPool(network_spec_from_wsfeat(x))(x)
    w0 = x.weights[0].mean(dim=(2, 3)).flatten(start_dim=2)
    torch.testing.assert_close(out[..., : w0.shape[-1]], w0)
    torch.testing.assert_close(out[..., -1], x.biases[1].mean(dim=-1))


def test_hnp_pool_one_layer_keeps_everything():
    x = example_features("mlp", 1, layer_sizes=(3, 2), dtype=torch.float64)
    spec = network_spec_from_wsfeat(x)
    assert HNPPool.get_num_outs(spec) == 3 * 2 + 2
    torch.testing.assert_close(HNPPool(spec)(x), x.flatten())


def test_get_num_outs_matches_reference_formula_for_small_cnn_zoo():
    """conv 1->16->16->16 (3x3), dense 16->10, as in the Small CNN Zoo."""
    from nfn_lab.weightspace import NetworkSpec

    spec = NetworkSpec.from_shapes(
        [(-1, 1, 3, 3), (-1, -1, 3, 3), (-1, -1, 3, 3), (10, -1)], [(-1,), (-1,), (-1,), (10,)]
    )
    assert NPPool.get_num_outs(spec) == 3 * (9 + 1) + (1 + 1)
    assert HNPPool.get_num_outs(spec) == (1 * 9 + 1) + 2 * (9 + 1) + (10 + 10)


@pytest.mark.parametrize("cls", [NPPool, HNPPool])
def test_gradient_reaches_arrays_as_broadcast_view(cls):
    """The pools' gradient is not materialized per entry (see layout.mean_over): an activation
    backward before the pool then reads one layout, whatever the features' memory form."""
    x = example_features("conv2d", 3, batch_size=2, channels=3)
    arrays = [t.clone().requires_grad_() for t in (*x.weights, *x.biases)]
    grads = {}
    for i, t in enumerate(arrays):
        t.register_hook(lambda g, i=i: grads.setdefault(i, g))
    pooled = cls(network_spec_from_wsfeat(x))(WeightSpaceFeatures(arrays[:3], arrays[3:]))
    pooled.backward(torch.ones_like(pooled))
    pool_order = [a for pair in zip(range(3), range(3, 6)) for a in pair]  # W(1), b(1), W(2), ...
    for a, dims in zip(pool_order, cls(network_spec_from_wsfeat(x))._mean_dims):
        if dims:  # averaged over its permuted neuron axes: d mean / d entry = 1 / count
            assert 0 in grads[a].stride()
            count = 1
            for d in dims:
                count *= arrays[a].shape[d]
            torch.testing.assert_close(arrays[a].grad, torch.full_like(arrays[a], 1 / count))
