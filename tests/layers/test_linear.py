"""NPLinear, HNPLinear, Pointwise, ChannelLinear: equivariance, sensitivity, maximal expressivity."""

import pytest
import torch
from torch import nn

from nfn_lab.layers import ChannelLinear, HNPLinear, NPLinear, Pointwise
from nfn_lab.symmetry import feature_layer_sizes
from nfn_lab.testing import (
    SPACES,
    assert_equivariant,
    assert_runs_under_autocast,
    assert_sensitive,
    channels_last,
    count_orbits,
    example_features,
    jacobian_rank,
    non_group_transforms,
)
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures, network_spec_from_wsfeat

LAYERS = {
    "np": lambda spec, c_in, c_out: NPLinear(spec, c_in, c_out),
    "np_io_embed": lambda spec, c_in, c_out: NPLinear(spec, c_in, c_out, io_embed=True),
    "hnp": lambda spec, c_in, c_out: HNPLinear(spec, c_in, c_out),
    "pointwise": lambda spec, c_in, c_out: Pointwise(spec, c_in, c_out),
}
# The group each layer must commute with; io_embed breaks NP down to HNP.
LAYER_GROUP = {"np": "np", "np_io_embed": "hnp", "hnp": "hnp", "pointwise": "np"}


def _features(kind, num_layers, channels=2):
    return example_features(kind, num_layers, batch_size=2, channels=channels, dtype=torch.float64)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_equivariant(name, kind, num_layers):
    x = _features(kind, num_layers)
    layer = LAYERS[name](network_spec_from_wsfeat(x), 2, 3).double()
    y = layer(x)
    assert [w.shape[1] for w in y.weights] == [3] * num_layers
    assert [w.shape[2:] for w in y.weights] == [w.shape[2:] for w in x.weights]
    assert_equivariant(layer, x, group=LAYER_GROUP[name])


@pytest.mark.parametrize("name", ["np", "np_io_embed", "hnp"])
@pytest.mark.parametrize("kind,num_layers", SPACES)
def test_sensitive_outside_group(name, kind, num_layers):
    x = _features(kind, num_layers)
    layer = LAYERS[name](network_spec_from_wsfeat(x), 2, 3).double()
    for transform in non_group_transforms(x, LAYER_GROUP[name]).values():
        assert_sensitive(layer, x, transform)


def test_np_io_embed_is_not_np_equivariant():
    x = _features("mlp", 2)
    layer = NPLinear(network_spec_from_wsfeat(x), 2, 3, io_embed=True).double()
    with pytest.raises(AssertionError, match="not NP-equivariant"):
        assert_equivariant(layer, x, group="np")


def test_stacked_layers_work_at_other_hidden_widths():
    """NP/HNP layers built from one zoo's spec apply to networks of any hidden width."""
    x = example_features("conv2d", 3, layer_sizes=(3, 4, 5, 2), dtype=torch.float64)
    wide = example_features("conv2d", 3, layer_sizes=(3, 7, 6, 2), dtype=torch.float64)
    spec = network_spec_from_wsfeat(x)
    net = nn.Sequential(NPLinear(spec, 1, 4), HNPLinear(spec, 4, 2)).double()
    assert net(wide).weights[1].shape == (2, 2, 6, 7, 2, 3)


EXPRESSIVITY_SPACES = [("mlp", n) for n in (1, 2, 3, 4)] + [("conv1d", n) for n in (1, 2, 3)] + [("conv2d", 2)]


@pytest.mark.parametrize("group,cls", [("np", NPLinear), ("hnp", HNPLinear)])
@pytest.mark.parametrize("kind,num_layers", EXPRESSIVITY_SPACES)
def test_maximally_expressive(group, cls, kind, num_layers):
    """Rank of stacked Jacobians == number of orbits on (output entry, input entry) pairs."""
    x = example_features(kind, num_layers, batch_size=1, layer_sizes=(2, 3, 3, 2, 3)[: num_layers + 1])
    spec = network_spec_from_wsfeat(x)
    orbits = count_orbits(feature_layer_sizes(x), group, spec.filter_shapes)
    assert jacobian_rank(lambda: cls(spec, 1, 1), x) == orbits


def test_rank_check_detects_missing_terms():
    """Pointwise is NP-equivariant but far from maximal: the rank test must tell."""
    x = example_features("mlp", 3, batch_size=1, layer_sizes=(2, 3, 3, 2))
    spec = network_spec_from_wsfeat(x)
    assert jacobian_rank(lambda: Pointwise(spec, 1, 1), x) < count_orbits(feature_layer_sizes(x), "np")


@pytest.mark.parametrize("cls", [NPLinear, HNPLinear, Pointwise])
def test_shape_mismatch_names_layer(cls):
    x = _features("conv2d", 3)
    layer = cls(network_spec_from_wsfeat(x), 2, 3)
    bad = WeightSpaceFeatures((x.weights[0], x.weights[1][..., :1], x.weights[2]), x.biases).to(torch.float32)
    with pytest.raises(ValueError, match=r"layer 1 weight has shape .*expects"):
        layer(bad)
    with pytest.raises(ValueError, match=r"channel|expects"):
        layer(_features("conv2d", 3, channels=5).to(torch.float32))
    with pytest.raises(ValueError, match="has 3 layers but the features have 2"):
        layer(_features("conv2d", 2).to(torch.float32))


def test_hnp_needs_io_sizes():
    spec = NetworkSpec.from_shapes([(-1, -1), (-1, -1)])
    with pytest.raises(ValueError, match="size must be known"):
        HNPLinear(spec, 1, 2)
    NPLinear(spec, 1, 2)  # NP does not need any size


@pytest.mark.parametrize("init_type", ["pytorch_default", "kaiming_normal"])
def test_init_keeps_output_scale(init_type):
    """Output scale stays O(1) for unit-variance input, whatever the number of terms."""
    torch.manual_seed(0)
    x = example_features("mlp", 4, batch_size=64, channels=16, layer_sizes=(8, 32, 32, 32, 4))
    layer = HNPLinear(network_spec_from_wsfeat(x), 16, 16, init_type=init_type)
    std = torch.cat([t.flatten() for t in (*layer(x).weights, *layer(x).biases)]).std().item()
    assert 0.1 < std < 3.0


def test_unknown_init_type():
    with pytest.raises(ValueError, match="init_type"):
        NPLinear(NetworkSpec.from_shapes([(2, 3)]), 1, 1, init_type="xavier")


def test_gradients_reach_every_parameter():
    x = _features("conv1d", 3).to(torch.float32)
    layer = NPLinear(network_spec_from_wsfeat(x), 2, 3, io_embed=True)
    out = layer(x)
    sum(t.square().sum() for t in (*out.weights, *out.biases)).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_repr_is_informative():
    layer = NPLinear(network_spec_from_wsfeat(_features("mlp", 2)), 2, 3, io_embed=True)
    assert "in_channels=2" in repr(layer) and "out_channels=3" in repr(layer) and "io_embed=True" in repr(layer)


def test_channel_linear_maps_channel_axis():
    lin = ChannelLinear(3, 5)
    x = torch.randn(2, 3, 4, 6)
    expected = torch.einsum("oc,bcij->boij", lin.linear.weight, x) + lin.linear.bias[:, None, None]
    torch.testing.assert_close(lin(x), expected)


def test_channel_linear_without_bias_and_on_flat_inputs():
    lin = ChannelLinear(3, 5, bias=False)
    x = torch.randn(2, 3, 4, 6, 7)
    torch.testing.assert_close(lin(x), torch.einsum("oc,bcijk->boijk", lin.linear.weight, x))
    flat = torch.randn(4, 3)  # (B, C): no neuron axes
    torch.testing.assert_close(lin(flat), flat @ lin.linear.weight.t())


@pytest.mark.slow
def test_compiles():
    x = _features("conv2d", 3).to(torch.float32)
    spec = network_spec_from_wsfeat(x)
    layer = HNPLinear(spec, 2, 3)
    compiled = torch.compile(layer)
    torch.testing.assert_close(compiled(x).weights[1], layer(x).weights[1])


@pytest.mark.parametrize("memory", ["channels_first", "channels_last"])
@pytest.mark.parametrize("cls", [NPLinear, HNPLinear])
@pytest.mark.parametrize("kind,num_layers", [("mlp", 1), ("mlp", 3), ("conv1d", 2)])
def test_fused_backward_matches_numerical_gradient(cls, kind, num_layers, memory):
    """The hand-written backward (equivariant_map.py) against finite differences, float64, with
    the features in either memory form (channels-first inputs are taken features first)."""
    x = example_features(kind, num_layers, batch_size=2, channels=2, layer_sizes=(2, 3, 2, 3, 2)[: num_layers + 1])
    layer = cls(network_spec_from_wsfeat(x), 2, 2).double()
    arrays = [t.double() for t in (*x.weights, *x.biases)]
    if memory == "channels_last":
        arrays = [channels_last(t) for t in arrays]
    arrays = [t.requires_grad_() for t in arrays]

    def fn(*tensors):
        feats = WeightSpaceFeatures(tensors[:num_layers], tensors[num_layers : 2 * num_layers])
        out = layer(feats)
        return (*out.weights, *out.biases)

    assert torch.autograd.gradcheck(fn, (*arrays,), eps=1e-6, atol=1e-6)
    feats = WeightSpaceFeatures(arrays[:num_layers], arrays[num_layers:])
    for name, value in layer.named_parameters():

        def of_param(v, name=name):
            out = torch.func.functional_call(layer, {name: v}, (feats,))
            return (*out.weights, *out.biases)

        assert torch.autograd.gradcheck(of_param, (value.detach().clone().requires_grad_(),), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", [NPLinear, HNPLinear])
@pytest.mark.parametrize("kind", ["conv2d", "mlp"])  # channels-last and features-first forms
def test_runs_under_bf16_autocast(cls, kind):
    x = example_features(kind, 3, batch_size=4, channels=2)
    assert_runs_under_autocast(cls(network_spec_from_wsfeat(x), 2, 3), x)


@pytest.mark.parametrize("cls", [NPLinear, HNPLinear])
@pytest.mark.parametrize("kind,num_layers", [("mlp", 1), ("mlp", 2), ("mlp", 4), ("conv2d", 2)])
def test_memory_form_changes_nothing_but_speed(cls, kind, num_layers):
    """Channels-first and channels-last inputs give the same outputs and gradients, and each
    output keeps its input's memory form, so stacked layers never convert."""
    x = _features(kind, num_layers, channels=3)
    layer = cls(network_spec_from_wsfeat(x), 3, 4).double()
    results = {}
    for memory in ("channels_first", "channels_last"):
        arrays = [t.clone() if memory == "channels_first" else channels_last(t) for t in (*x.weights, *x.biases)]
        arrays = [t.requires_grad_() for t in arrays]
        out = layer(WeightSpaceFeatures(arrays[:num_layers], arrays[num_layers:]))
        outs = (*out.weights, *out.biases)
        layer.zero_grad()
        torch.autograd.backward(outs, [torch.ones_like(t) * (i + 1) for i, t in enumerate(outs)])
        grads = [t.grad for t in arrays] + [p.grad.clone() for p in layer.parameters()]
        results[memory] = ([o.detach() for o in outs], grads)
        if memory == "channels_first" and kind == "mlp" and (cls is NPLinear or num_layers > 2):
            assert outs[1 if cls is NPLinear else num_layers // 2].is_contiguous()  # a weight of two permuted axes
    for first, last in zip(*(results[m][0] + results[m][1] for m in ("channels_first", "channels_last"))):
        torch.testing.assert_close(first, last)


@pytest.mark.parametrize("memory", ["channels_first", "channels_last"])
@pytest.mark.parametrize("cls", [NPLinear, HNPLinear])
def test_float32_products_match_float64(cls, memory):
    """Wide float32 layers run their products on oneDNN where available (nfn_lab/layers/gemm.py):
    outputs and gradients agree with the same layer in float64. Sizes reach every product path:
    per-batch-item products (features first), more than one x^T g block (features last)."""
    x = example_features("mlp", 3, batch_size=3, channels=64, layer_sizes=(2, 32, 32, 2), dtype=torch.float64)
    layer64 = cls(network_spec_from_wsfeat(x), 64, 64).double()
    layer32 = cls(network_spec_from_wsfeat(x), 64, 64)
    layer32.load_state_dict(layer64.state_dict())
    results = {}
    for dtype, layer in ((torch.float32, layer32), (torch.float64, layer64)):
        arrays = [t.to(dtype) for t in (*x.weights, *x.biases)]
        arrays = [(t.clone() if memory == "channels_first" else channels_last(t)).requires_grad_() for t in arrays]
        out = layer(WeightSpaceFeatures(arrays[:3], arrays[3:]))
        outs = (*out.weights, *out.biases)
        torch.autograd.backward(outs, [torch.ones_like(t) * (i + 1) for i, t in enumerate(outs)])
        results[dtype] = [t.double() for t in (*outs, *(a.grad for a in arrays), *(p.grad for p in layer.parameters()))]
    for low, high in zip(results[torch.float32], results[torch.float64]):
        torch.testing.assert_close(low.detach(), high.detach(), rtol=1e-4, atol=1e-3 * high.abs().max().item())


@pytest.mark.parametrize("cls", [NPLinear, HNPLinear])
@pytest.mark.parametrize("memory", ["channels_first", "channels_last"])
def test_backward_makes_no_input_products_when_no_input_needs_a_gradient(cls, memory, monkeypatch):
    """A first layer's inputs (raw weights) need no gradient: its backward then runs no product
    towards the inputs (term or pointwise), and the parameters' gradients are unchanged."""
    from nfn_lab.layers import gemm

    x = _features("mlp", 3, channels=3)
    layer = cls(network_spec_from_wsfeat(x), 3, 4).double()

    def backward(inputs_need_grad: bool) -> tuple[list[torch.Tensor], int]:
        arrays = [t.clone() if memory == "channels_first" else channels_last(t) for t in (*x.weights, *x.biases)]
        arrays = [t.requires_grad_(inputs_need_grad) for t in arrays]
        out = layer(WeightSpaceFeatures(arrays[:3], arrays[3:]))
        outs = (*out.weights, *out.biases)
        calls = []
        with monkeypatch.context() as patch:
            for name in ("matmul", "matmul_acc", "shared_matmul_acc"):
                original = getattr(gemm, name)
                patch.setattr(gemm, name, lambda *a, original=original, **k: calls.append(1) or original(*a, **k))
            layer.zero_grad()
            torch.autograd.backward(outs, [torch.ones_like(t) * (i + 1) for i, t in enumerate(outs)])
        return [p.grad.clone() for p in layer.parameters()], len(calls)

    with_inputs, input_products = backward(True)
    without_inputs, no_products = backward(False)
    assert input_products > 0 and no_products == 0
    for a, b in zip(with_inputs, without_inputs):
        torch.testing.assert_close(a, b)
