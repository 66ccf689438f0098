"""Function preservation of module/state-dict <-> features conversion (docs/weight-space.md, section 4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.utils.data import default_collate

from nfn_lab.conversion import (
    module_layers,
    module_to_wsfeat,
    network_spec_from_module,
    params_to_func_params,
    params_to_state_dicts,
    state_dict_to_tensors,
    state_dicts_to_wsfeat,
    wsfeat_to_modules,
    wsfeat_to_state_dicts,
)
from nfn_lab.symmetry import (
    feature_layer_sizes,
    permute_features,
    sample_permutations,
    sample_positive_scales,
    sample_sign_flips,
    scale_neurons,
)
from nfn_lab.weightspace import WeightSpaceFeatures

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_INPUT_SHAPE = {"mlp": (3,), "conv1d": (3, 11), "conv2d": (3, 9, 8), "conv3d": (3, 8, 7, 8)}
_WIDTHS = (3, 5, 4, 6, 2)
KINDS = tuple(_INPUT_SHAPE)


def make_net(
    kind: str, num_layers: int, bias: bool = True, act: type[nn.Module] = nn.ReLU, seed: int = 0
) -> nn.Sequential:
    """An MLP, or a CNN (strided/padded convs, global pooling, then dense layers), in float64.

    CNNs with ``L`` layers have ``max(1, L - 1)`` convolutions. With ``bias=False`` the
    even-indexed layers (0, 2) have no bias, so bias-free and biased layers mix.
    """
    torch.manual_seed(seed)
    n_conv = 0 if kind == "mlp" else max(1, num_layers - 1)
    mods: list[nn.Module] = []
    for i in range(num_layers):
        n_in, n_out = _WIDTHS[i], _WIDTHS[i + 1]
        with_bias = bias or i % 2 == 1
        if i < n_conv:
            dim = int(kind[4])
            mods.append(_CONV[dim](n_in, n_out, 3, stride=1 + i % 2, padding=i % 2, bias=with_bias))
            if i == n_conv - 1 and num_layers > n_conv:
                mods += [act(), _POOL[dim](1), nn.Flatten()]
                continue
        else:
            mods.append(nn.Linear(n_in, n_out, bias=with_bias))
        if i < num_layers - 1:
            mods.append(act())
    return nn.Sequential(*mods).double()


def inputs(kind: str, n: int = 7) -> torch.Tensor:
    return torch.randn(n, *_INPUT_SHAPE[kind], dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def reload(wsfeat: WeightSpaceFeatures, kind: str, num_layers: int, bias: bool = True, act=nn.ReLU) -> nn.Module:
    """A fresh module (different random init) loaded with the first network of ``wsfeat``."""
    template = make_net(kind, num_layers, bias=bias, act=act, seed=123)
    return wsfeat_to_modules(wsfeat, template)[0]


class Reordered(nn.Module):
    """A CNN whose layers are registered in a different order than forward calls them."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(5, 2)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


ARCHS = [(kind, num_layers) for kind in KINDS for num_layers in (1, 2, 3, 4)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind,num_layers", ARCHS)
def test_round_trip_preserves_function(kind: str, num_layers: int, bias: bool) -> None:
    net = make_net(kind, num_layers, bias=bias)
    x = inputs(kind)
    wsfeat = module_to_wsfeat(net)
    assert wsfeat.batch_size == 1 and wsfeat.num_channels == 1 and len(wsfeat) == num_layers
    fresh = reload(wsfeat, kind, num_layers, bias=bias)
    assert not torch.allclose(make_net(kind, num_layers, bias=bias, seed=123)(x), net(x))  # the load matters
    torch.testing.assert_close(fresh(x), net(x))
    template = make_net(kind, num_layers, bias=bias, seed=5)
    template.load_state_dict(wsfeat_to_state_dicts(wsfeat, template)[0])
    torch.testing.assert_close(template(x), net(x))


def test_bias_free_layers_give_zero_bias_features() -> None:
    net = make_net("conv2d", 3, bias=False)
    wsfeat = module_to_wsfeat(net)
    assert not wsfeat.biases[0].any() and wsfeat.biases[1].any()
    assert set(wsfeat_to_state_dicts(wsfeat, net)[0]) == set(net.state_dict())


def test_batch_of_modules() -> None:
    nets = [make_net("conv1d", 3, seed=s) for s in range(3)]
    wsfeat = module_to_wsfeat(nets)
    assert wsfeat.batch_size == 3
    assert [tuple(w.shape) for w in wsfeat.weights] == [(3, 1, 5, 3, 3), (3, 1, 4, 5, 3), (3, 1, 6, 4)]
    x = inputs("conv1d")
    for net, back in zip(nets, wsfeat_to_modules(wsfeat, make_net("conv1d", 3, seed=9))):
        torch.testing.assert_close(back(x), net(x))
    stacked = state_dicts_to_wsfeat([n.state_dict() for n in nets], nets[0])
    for a, b in zip(stacked.weights + stacked.biases, wsfeat.weights + wsfeat.biases):
        torch.testing.assert_close(a, b)


def test_network_spec_from_module() -> None:
    spec = network_spec_from_module(make_net("conv3d", 3))
    assert spec.layer_sizes == (3, 5, 4, 6)
    assert spec.filter_shapes == ((3, 3, 3), (3, 3, 3), ())
    assert spec.get_num_params() == sum(p.numel() for p in make_net("conv3d", 3).parameters())


def test_reordered_module_needs_example_input() -> None:
    net = Reordered().double()
    x = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    with pytest.raises(ValueError, match="example_input"):
        module_layers(net)
    assert [name for name, _ in module_layers(net, x)] == ["conv1", "conv2", "head"]
    wsfeat = module_to_wsfeat(net, x)
    assert not wsfeat.biases[1].any()
    template = Reordered().double()
    back = wsfeat_to_modules(wsfeat, template, x)[0]
    torch.testing.assert_close(back(x), net(x))
    perms = sample_permutations(feature_layer_sizes(wsfeat), "hnp", generator=torch.Generator().manual_seed(0))
    flips = sample_sign_flips(feature_layer_sizes(wsfeat), generator=torch.Generator().manual_seed(0))
    moved = scale_neurons(permute_features(wsfeat, perms), flips)
    torch.testing.assert_close(wsfeat_to_modules(moved, template, x)[0](x), net(x))


def _changed(a: WeightSpaceFeatures, b: WeightSpaceFeatures) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(a.weights + a.biases, b.weights + b.biases))


def _shift(n: int) -> torch.Tensor:
    return torch.roll(torch.arange(n), 1)


@pytest.mark.parametrize("kind,num_layers", [(k, n) for k, n in ARCHS if n >= 2])
def test_hidden_permutation_preserves_function(kind: str, num_layers: int) -> None:
    net = make_net(kind, num_layers)
    x = inputs(kind)
    wsfeat = module_to_wsfeat(net)
    sizes = feature_layer_sizes(wsfeat)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        permuted = permute_features(wsfeat, sample_permutations(sizes, "hnp", generator=gen))
        assert _changed(permuted, wsfeat)
        torch.testing.assert_close(reload(permuted, kind, num_layers)(x), net(x))
    # Converse: permuting the input neurons (not a symmetry) changes the function.
    inputs_permuted = permute_features(wsfeat, [_shift(sizes[0])] + [None] * num_layers)
    assert not torch.allclose(reload(inputs_permuted, kind, num_layers)(x), net(x))
    # ... and so does permuting a hidden layer's rows without the next layer's columns.
    rows_only = WeightSpaceFeatures(
        (wsfeat.weights[0][:, :, _shift(sizes[1])], *wsfeat.weights[1:]),
        (wsfeat.biases[0][:, :, _shift(sizes[1])], *wsfeat.biases[1:]),
    )
    assert not torch.allclose(reload(rows_only, kind, num_layers)(x), net(x))


@pytest.mark.parametrize("kind", KINDS)
def test_relu_positive_rescaling_preserves_function(kind: str) -> None:
    net = make_net(kind, 3)
    x = inputs(kind)
    wsfeat = module_to_wsfeat(net)
    scales = sample_positive_scales(feature_layer_sizes(wsfeat), generator=torch.Generator().manual_seed(0))
    scaled = scale_neurons(wsfeat, scales)
    assert _changed(scaled, wsfeat)
    torch.testing.assert_close(reload(scaled, kind, 3)(x), net(x))
    # Converse: the same scales on a tanh network change its function.
    tanh_net = make_net(kind, 3, act=nn.Tanh)
    tanh_scaled = scale_neurons(module_to_wsfeat(tanh_net), scales)
    assert not torch.allclose(reload(tanh_scaled, kind, 3, act=nn.Tanh)(x), tanh_net(x))


@pytest.mark.parametrize("kind", KINDS)
def test_tanh_sign_flips_preserve_function(kind: str) -> None:
    net = make_net(kind, 3, act=nn.Tanh)
    x = inputs(kind)
    wsfeat = module_to_wsfeat(net)
    flips = sample_sign_flips(feature_layer_sizes(wsfeat), generator=torch.Generator().manual_seed(3))
    flipped = scale_neurons(wsfeat, flips)
    assert _changed(flipped, wsfeat)
    torch.testing.assert_close(reload(flipped, kind, 3, act=nn.Tanh)(x), net(x))
    # Converse: sign flips are not a symmetry of ReLU networks.
    relu_net = make_net(kind, 3)
    relu_flipped = scale_neurons(module_to_wsfeat(relu_net), flips)
    assert not torch.allclose(reload(relu_flipped, kind, 3)(x), relu_net(x))


# --- rejected modules ------------------------------------------------------------------------


class SharedTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(torch.relu(self.fc(x))))


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.spare = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _tied() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    net[2].weight = net[0].weight
    return net


_shared = nn.Linear(4, 4)

REJECTED = {
    "batchnorm": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), r"'1' \(BatchNorm2d\)"),
    "batchnorm_no_affine": (
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False)),
        r"'1' \(BatchNorm2d\).*running_mean",
    ),
    "layernorm": (nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)), r"'1' \(LayerNorm\)"),
    "embedding": (nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)), r"'0' \(Embedding\)"),
    "attention": (nn.Sequential(nn.Linear(3, 4), nn.MultiheadAttention(4, 2)), r"'1' \(MultiheadAttention\)"),
    "conv_transpose": (nn.Sequential(nn.ConvTranspose2d(3, 4, 3)), r"'0' \(ConvTranspose2d\)"),
    "nested": (
        nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.ReLU(), nn.PReLU())),
        r"'1\.1' \(PReLU\)",
    ),
    "groups": (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), r"'0' \(Conv2d\) has groups=2"),
    "no_pooling": (
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 2)),
        r"dense layer '2'.*global pooling",
    ),
    "not_a_chain": (nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)), r"layer '1' has 5 inputs.*'0'.*4 outputs"),
    "registered_twice": (nn.Sequential(_shared, nn.ReLU(), _shared), r"'0' is also registered as '2'.*sharing"),
    "tied": (_tied(), r"'0' and '2' share a parameter"),
    "no_layers": (nn.Sequential(nn.ReLU()), r"no nn.Linear"),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_unsupported_modules_rejected_with_their_name(name: str) -> None:
    module, pattern = REJECTED[name]
    with pytest.raises(ValueError, match=pattern):
        module_to_wsfeat(module)


def test_layer_called_twice_rejected() -> None:
    with pytest.raises(ValueError, match=r"'fc' is called 2 times.*weight sharing"):
        module_layers(SharedTwice(), torch.randn(2, 4))


def test_unused_layer_rejected() -> None:
    with pytest.raises(ValueError, match=r"'spare' is never called"):
        module_layers(Unused(), torch.randn(2, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_rejected(bad: float) -> None:
    net = make_net("mlp", 3)
    with torch.no_grad():
        net[2].weight[1, 0] = bad
    with pytest.raises(ValueError, match=r"'2\.weight' contains NaN or inf"):
        module_to_wsfeat(net)
    with pytest.raises(ValueError, match=r"'2\.weight' contains NaN or inf"):
        state_dict_to_tensors(net.state_dict())
    with pytest.raises(ValueError, match=r"network 1: '2\.weight'"):
        module_to_wsfeat([make_net("mlp", 3), net])


def test_modules_of_different_architectures_rejected() -> None:
    with pytest.raises(ValueError, match=r"network 1: '0\.weight' has shape"):
        module_to_wsfeat([make_net("mlp", 2), nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 4)).double()])
    with pytest.raises(ValueError, match=r"network 1: missing key '4\.weight'"):
        module_to_wsfeat([make_net("mlp", 3), make_net("mlp", 2)])


def test_wsfeat_to_state_dicts_errors() -> None:
    net = make_net("conv2d", 3, bias=False)
    wsfeat = module_to_wsfeat(net)
    with pytest.raises(ValueError, match="one channel"):
        wsfeat_to_state_dicts(wsfeat.map(lambda t: t.expand(-1, 2, *t.shape[2:])), net)
    nonzero_bias = WeightSpaceFeatures(wsfeat.weights, (wsfeat.biases[0] + 1, *wsfeat.biases[1:]))
    with pytest.raises(ValueError, match=r"layer 0 \('0'\) has no bias"):
        wsfeat_to_state_dicts(nonzero_bias, net)
    wider = make_net("conv2d", 3, bias=False)
    wider[-1] = nn.Linear(4, 7).double()
    with pytest.raises(ValueError, match=r"layer 2 weight has shape \(1, 1, 6, 4\).*expects \(B, 1, 7, 4\)"):
        wsfeat_to_state_dicts(wsfeat, wider)
    nan = WeightSpaceFeatures(wsfeat.weights, (*wsfeat.biases[:2], wsfeat.biases[2] * float("nan")))
    with pytest.raises(ValueError, match=r"bias of layer 2 \('6'\) contains NaN"):
        wsfeat_to_state_dicts(nan, net)


# --- the reference library's helpers -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_reference_helpers_round_trip(kind: str) -> None:
    nets = [make_net(kind, 3, bias=False, seed=s) for s in range(3)]
    wsfeat = WeightSpaceFeatures(*default_collate([state_dict_to_tensors(n.state_dict()) for n in nets]))
    expected = module_to_wsfeat(nets)
    for a, b in zip(wsfeat.weights + wsfeat.biases, expected.weights + expected.biases):
        torch.testing.assert_close(a, b)
    keys = list(nets[0].state_dict())
    x = inputs(kind)
    template = make_net(kind, 3, bias=False, seed=7)
    for net, state_dict in zip(nets, params_to_state_dicts(keys, wsfeat)):
        assert list(state_dict) == keys
        template.load_state_dict(state_dict)
        torch.testing.assert_close(template(x), net(x))


def test_state_dict_to_tensors_accepts_any_key_order_within_a_layer() -> None:
    net = make_net("mlp", 2)
    sd = net.state_dict()
    swapped = {k: sd[k] for k in ("0.bias", "0.weight", "2.weight", "2.bias")}
    for a, b in zip(state_dict_to_tensors(swapped), state_dict_to_tensors(sd)):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_state_dict_to_tensors_errors() -> None:
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False)).state_dict()
    with pytest.raises(ValueError, match=r"'1\.running_mean' is not a layer weight or bias"):
        state_dict_to_tensors(bn)
    norm = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)).state_dict()
    with pytest.raises(ValueError, match=r"'1\.weight' has shape \(4,\)"):
        state_dict_to_tensors(norm)
    with pytest.raises(ValueError, match=r"'1\.bias' but no weight"):
        state_dict_to_tensors({"0.weight": torch.zeros(2, 3), "1.bias": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"'0\.bias' has shape \(3,\)"):
        state_dict_to_tensors({"0.weight": torch.zeros(2, 3), "0.bias": torch.zeros(3)})
    unpooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(36, 2)).state_dict()
    with pytest.raises(ValueError, match="global pooling"):
        state_dict_to_tensors(unpooled)


def test_params_to_state_dicts_errors() -> None:
    net = make_net("mlp", 3, bias=False)
    wsfeat = module_to_wsfeat(net)
    keys = list(net.state_dict())
    with pytest.raises(ValueError, match="one channel"):
        params_to_state_dicts(keys, wsfeat.map(lambda t: t.expand(-1, 2, *t.shape[2:])))
    with pytest.raises(ValueError, match=r"name 2 layers but the features have 3"):
        params_to_state_dicts(keys[:-1], wsfeat)
    with pytest.raises(ValueError, match=r"layer 0 \('0\.weight'\) has no bias key"):
        params_to_state_dicts(keys, wsfeat + 1.0)
    with pytest.raises(ValueError, match=r"'0\.scale' is not a layer weight or bias"):
        params_to_state_dicts(["0.scale", *keys[1:]], wsfeat)


def test_params_to_func_params_with_functional_call() -> None:
    nets = [make_net("conv2d", 3, seed=s) for s in range(3)]
    wsfeat = module_to_wsfeat(nets)
    params = params_to_func_params(wsfeat)
    assert [tuple(p.shape) for p in params[:2]] == [(3, 5, 3, 3, 3), (3, 5)]
    keys = list(nets[0].state_dict())
    x = inputs("conv2d")

    def run(*p: torch.Tensor) -> torch.Tensor:
        return functional_call(nets[0], dict(zip(keys, p)), (x,))

    out = torch.func.vmap(run)(*params)  # (B, N, 2)
    torch.testing.assert_close(out, torch.stack([n(x) for n in nets]))
    with pytest.raises(ValueError, match="one channel"):
        params_to_func_params(wsfeat.map(lambda t: t.expand(-1, 2, *t.shape[2:])))
