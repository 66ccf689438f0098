"""NetworkSpec, WeightSpaceFeatures, collate and network_spec_from_wsfeat."""

from __future__ import annotations

import copy
import json
import pickle
from unittest import mock

import pytest
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.data import DataLoader
from torch.utils.data._utils.pin_memory import pin_memory

import nfn_lab
from nfn_lab.testing import SPACE_KINDS, example_features
from nfn_lab.weightspace import (
    ArraySpec,
    NetworkSpec,
    WeightSpaceFeatures,
    collate,
    collate_wsfeat,
    network_spec_from_wsfeat,
)


def _tensors(x: WeightSpaceFeatures) -> list[torch.Tensor]:
    return [*x.weights, *x.biases]


def _assert_same(a: WeightSpaceFeatures, b: WeightSpaceFeatures) -> None:
    assert len(a) == len(b)
    for x, y in zip(_tensors(a), _tensors(b)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# --- NetworkSpec ---------------------------------------------------------------------------------

CNN_SPEC = NetworkSpec.from_shapes([(4, 3, 3, 3), (5, 4, 1, 3), (2, 5)])


@pytest.mark.parametrize(
    "weights,biases,pattern",
    [
        ([], [], "at least one layer"),
        ([(4, 3)], [], "1 weight arrays but 0 bias"),
        ([(4,)], [(4,)], r"layer 0: weight shape \(4\) must be"),
        ([(4, 3, 1, 1, 1, 1)], [(4,)], r"layer 0: weight shape .* 1 to 3 filter axes"),
        ([(4, 3, 0)], [(4,)], "filter sizes must be positive"),
        ([(4, 0)], [(4,)], "neuron counts must be positive or -1"),
        ([(4, 3)], [(4, 1)], r"layer 0: bias shape \(4, 1\) must have one axis"),
        ([(4, 3)], [(5,)], "layer 0: weight has 4 output neurons but bias has 5"),
        ([(4, 3), (2, 5)], [(4,), (2,)], "layer 1: weight expects 5 input neurons but layer 0 has 4"),
    ],
)
def test_network_spec_validation(weights, biases, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        NetworkSpec.from_shapes(weights, biases)


def test_network_spec_free_sizes_skip_neighbour_checks() -> None:
    spec = NetworkSpec.from_shapes([(-1, 3), (2, -1)], [(-1,), (2,)])
    assert spec.layer_sizes == (3, -1, 2)
    assert spec.get_io() == (3, 2)
    with pytest.raises(ValueError, match="layer 0 has a free size"):
        spec.get_num_params()


def test_network_spec_is_hashable_and_compares_by_value() -> None:
    a = NetworkSpec([ArraySpec([4, 3]), ArraySpec((2, 4))], [ArraySpec((4,)), ArraySpec((2,))])
    b = NetworkSpec.from_shapes([(4, 3), (2, 4)])
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != NetworkSpec.from_shapes([(4, 3), (3, 4)])
    assert isinstance(a.weight_spec, tuple) and a.weight_spec[0].shape == (4, 3)


def test_network_spec_dict_round_trip() -> None:
    data = json.loads(json.dumps(CNN_SPEC.to_dict()))
    assert NetworkSpec.from_dict(data) == CNN_SPEC
    with pytest.raises(ValueError, match="'bias_shapes'"):
        NetworkSpec.from_dict({"weight_shapes": data["weight_shapes"]})


def test_network_spec_queries() -> None:
    assert len(CNN_SPEC) == 3
    assert CNN_SPEC.layer_sizes == (3, 4, 5, 2)
    assert CNN_SPEC.filter_shapes == ((3, 3), (1, 3), ())
    assert CNN_SPEC.filter_sizes == (9, 3, 1)
    assert CNN_SPEC.get_io() == (3, 2)
    assert CNN_SPEC.get_num_params() == 4 * 3 * 9 + 4 + 5 * 4 * 3 + 5 + 2 * 5 + 2
    assert repr(CNN_SPEC) == "NetworkSpec(L=3: (4, 3, 3, 3)+(4), (5, 4, 1, 3)+(5), (2, 5)+(2))"


def test_check_features_accepts_matching_features() -> None:
    x = example_features("conv2d", num_layers=3, channels=2)
    network_spec_from_wsfeat(x).check_features(x, channels=2)
    network_spec_from_wsfeat(x, set_all_dims=True).check_features(x)


def test_check_features_errors_name_layer_and_shapes() -> None:
    x = example_features("mlp", num_layers=3, channels=2)
    spec = network_spec_from_wsfeat(x)
    wrong_channels = r"NPLinear: layer 0 weight has shape \(2, 2, 4, 3\) .* expects \(B, 5, \*, 3\)"
    with pytest.raises(ValueError, match=wrong_channels):
        spec.check_features(x, channels=5, where="NPLinear")
    other = example_features("mlp", num_layers=3, layer_sizes=(3, 4, 5, 6), channels=2)
    with pytest.raises(ValueError, match=r"layer 2 weight has shape \(2, 2, 6, 5\) .* expects \(B, C, 4, \*\)"):
        spec.check_features(other)
    bad_bias = WeightSpaceFeatures(x.weights, (x.biases[0], x.biases[1][..., :3], x.biases[2]))
    with pytest.raises(ValueError, match="layer 1: weight has 5 output neurons but bias has 3"):
        spec.check_features(bad_bias)
    broken = WeightSpaceFeatures((x.weights[0], x.weights[1][..., :3], x.weights[2]), x.biases)
    with pytest.raises(ValueError, match="layer 1 weight has 3 input neurons but layer 0 has 4"):
        spec.check_features(broken)
    with pytest.raises(ValueError, match="network_spec has 3 layers but the features have 2"):
        spec.check_features(example_features("mlp", num_layers=2))
    with pytest.raises(TypeError, match="expected WeightSpaceFeatures"):
        spec.check_features(x.weights)


# --- network_spec_from_wsfeat ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", SPACE_KINDS)
def test_network_spec_from_wsfeat(kind: str) -> None:
    x = example_features(kind, num_layers=3, layer_sizes=(3, 4, 5, 2))
    spec = network_spec_from_wsfeat(x)
    filt = {"mlp": (), "conv1d": (3,), "conv2d": (2, 3), "conv3d": (2, 1, 2)}[kind]
    assert spec.weight_spec == (ArraySpec((-1, 3, *filt)), ArraySpec((-1, -1, *filt)), ArraySpec((2, -1)))
    assert spec.bias_spec == (ArraySpec((-1,)), ArraySpec((-1,)), ArraySpec((2,)))
    full = network_spec_from_wsfeat(x, set_all_dims=True)
    assert full.layer_sizes == (3, 4, 5, 2)
    assert full.get_num_params() == x.flatten().shape[-1]


def test_network_spec_from_wsfeat_single_layer_keeps_both_sides() -> None:
    spec = network_spec_from_wsfeat(example_features("conv1d", num_layers=1, layer_sizes=(3, 4)))
    assert spec.weight_spec == (ArraySpec((4, 3, 3)),)


def test_network_spec_from_wsfeat_bad_ndim() -> None:
    x = example_features("mlp", num_layers=2)
    with pytest.raises(ValueError, match=r"layer 1 weight has shape \(1, 5, 4\); expected"):
        network_spec_from_wsfeat(WeightSpaceFeatures((x.weights[0], x.weights[1][0]), x.biases))
    with pytest.raises(ValueError, match=r"layer 0 bias has shape \(2, 1, 4, 1\)"):
        network_spec_from_wsfeat(WeightSpaceFeatures(x.weights, (x.biases[0][..., None], x.biases[1])))


# --- WeightSpaceFeatures --------------------------------------------------------------------------


def test_sequence_protocol() -> None:
    x = example_features("conv2d", num_layers=3)
    assert len(x) == 3
    pairs = list(x)
    assert all(w is x.weights[i] and b is x.biases[i] for i, (w, b) in enumerate(pairs))
    assert x[1] == (x.weights[1], x.biases[1]) and x[-1][0] is x.weights[2]
    _assert_same(WeightSpaceFeatures.from_zipped(pairs), x)
    with pytest.raises(ValueError, match="one bias per weight"):
        WeightSpaceFeatures(x.weights, x.biases[:2])


def test_arithmetic() -> None:
    x = example_features("conv1d", num_layers=2, seed=0)
    y = example_features("conv1d", num_layers=2, seed=1)
    for result, op in [(x + y, torch.add), (x - y, torch.sub), (x * y, torch.mul)]:
        for r, a, b in zip(_tensors(result), _tensors(x), _tensors(y)):
            torch.testing.assert_close(r, op(a, b))
    for result, expected in [(x * 2.0, 2.0), (3.0 * x, 3.0), (x + 1.0, None), (1.0 + x, None), (-x, -1.0)]:
        for r, a in zip(_tensors(result), _tensors(x)):
            torch.testing.assert_close(r, a + 1.0 if expected is None else a * expected)
    with pytest.raises(ValueError, match="features of 2 and 3 layers"):
        x + example_features("conv1d", num_layers=3)


def test_map_detach_clone_flatten() -> None:
    x = example_features("conv2d", num_layers=2, channels=3).map(lambda t: t.requires_grad_())
    doubled = x.map(lambda t: 2 * t)
    assert all(torch.equal(d, 2 * t) for d, t in zip(_tensors(doubled), _tensors(x)))
    detached = x.detach()
    assert not any(t.requires_grad for t in _tensors(detached))
    clone = detached.clone()
    assert all(c.data_ptr() != t.data_ptr() for c, t in zip(_tensors(clone), _tensors(detached)))
    _assert_same(clone, detached)
    flat = x.flatten()  # (B, C, num_params)
    assert flat.shape == (2, 3, 4 * 3 * 2 * 3 + 4 + 5 * 4 + 5)
    w0, b0 = x[0]
    torch.testing.assert_close(flat[..., : w0[0, 0].numel()], w0.flatten(start_dim=2))
    torch.testing.assert_close(flat[..., w0[0, 0].numel() : w0[0, 0].numel() + 4], b0)
    torch.testing.assert_close(flat[..., -5:], x.biases[1])


def test_accessors_and_repr() -> None:
    x = example_features("conv3d", num_layers=2, batch_size=3, channels=4, dtype=torch.float64)
    assert (x.dtype, x.device, x.batch_size, x.num_channels) == (torch.float64, torch.device("cpu"), 3, 4)
    text = repr(x)
    assert "layers=2" in text and "torch.float64" in text
    assert "(3, 4, 4, 3, 2, 1, 2)" in text and "(3, 4, 5)" in text
    assert repr(WeightSpaceFeatures((), ())) == "WeightSpaceFeatures(layers=0)"


def test_to_dtype() -> None:
    x = example_features("mlp", num_layers=2)
    y = x.to(torch.float64)
    assert y.dtype == torch.float64 and all(t.dtype == torch.float64 for t in _tensors(y))
    z = x.to("cpu", dtype=torch.float16, non_blocking=True)
    assert all(t.dtype == torch.float16 for t in _tensors(z))


def test_pin_memory_pins_every_tensor() -> None:
    x = example_features("conv2d", num_layers=3)
    pinned_ids: list[int] = []

    def fake_pin(t: torch.Tensor, device: object = None) -> torch.Tensor:  # CPU-only builds cannot pin
        pinned_ids.append(id(t))
        return t.clone()

    with mock.patch.object(torch.Tensor, "pin_memory", fake_pin):
        pinned = x.pin_memory()
        assert sorted(pinned_ids) == sorted(id(t) for t in _tensors(x))
        _assert_same(pinned, x)
        # The function DataLoader(pin_memory=True) applies to each batch keeps the features whole.
        pinned_ids.clear()
        pinned, targets = pin_memory((x, {"y": torch.zeros(2)}))
    assert set(targets) == {"y"}
    assert len(pinned_ids) == 7 and isinstance(pinned, WeightSpaceFeatures)
    _assert_same(pinned, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs an accelerator")
def test_dataloader_pin_memory() -> None:
    items = [(example_features("mlp", seed=s).map(lambda t: t[0]), torch.tensor(s)) for s in range(4)]
    wsfeat, target = next(iter(DataLoader(items, batch_size=4, pin_memory=True, collate_fn=nfn_lab.collate)))
    assert isinstance(wsfeat, WeightSpaceFeatures) and wsfeat.batch_size == 4
    assert all(t.is_pinned() for t in _tensors(wsfeat)) and target.is_pinned()


# --- collate ---------------------------------------------------------------------------------------


def _items(n: int = 3, kind: str = "conv2d") -> list[WeightSpaceFeatures]:
    """Unbatched features ``(C, ...)``."""
    return [example_features(kind, num_layers=3, batch_size=1, seed=s).map(lambda t: t[0]) for s in range(n)]


def test_collate_wsfeat_stacks_items() -> None:
    items = _items()
    batch = collate_wsfeat(items)
    assert batch.batch_size == 3 and batch.num_channels == 1
    for b, item in enumerate(items):
        _assert_same(batch.map(lambda t, b=b: t[b]), item)


def test_collate_nested_with_targets() -> None:
    items = _items()
    batch = [(x, {"y": float(i), "name": f"net{i}"}) for i, x in enumerate(items)]
    wsfeat, targets = collate(batch)
    _assert_same(wsfeat, collate_wsfeat(items))
    torch.testing.assert_close(targets["y"], torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    assert targets["name"] == ["net0", "net1", "net2"]
    assert nfn_lab.collate is collate
    loader = DataLoader(batch, batch_size=2, collate_fn=collate)
    assert [b[0].batch_size for b in loader] == [2, 1]


def test_collate_mismatched_shapes() -> None:
    items = _items()
    wider = example_features("conv2d", num_layers=3, batch_size=1, layer_sizes=(3, 4, 6, 3)).map(lambda t: t[0])
    with pytest.raises(ValueError, match=r"cannot batch item 2: layer 1 has weight \(1, 6, 4, 2, 3\)"):
        collate([(x, 0) for x in [*items[:2], wider]])
    with pytest.raises(ValueError, match=r"networks of 3 and 2 layers \(item 1\)"):
        collate_wsfeat([items[0], example_features("mlp", num_layers=2, batch_size=1).map(lambda t: t[0])])


# --- framework integration ---------------------------------------------------------------------------


def test_lightning_batch_transfer() -> None:
    apply_func = pytest.importorskip("lightning.fabric.utilities.apply_func")
    pl = pytest.importorskip("lightning.pytorch")
    x = example_features("conv1d", num_layers=2)
    batch = (x, {"y": torch.zeros(2)})
    moved, targets = apply_func.move_data_to_device(batch, torch.float64)
    assert isinstance(moved, WeightSpaceFeatures) and moved.dtype == torch.float64
    assert targets["y"].dtype == torch.float64
    with mock.patch.object(WeightSpaceFeatures, "to", autospec=True, side_effect=WeightSpaceFeatures.to) as to:
        moved, _ = pl.LightningModule().transfer_batch_to_device(batch, torch.device("cpu"), 0)
    assert to.call_count == 1 and to.call_args.args[1] == torch.device("cpu")
    assert isinstance(moved, WeightSpaceFeatures)
    _assert_same(moved, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lightning_moves_features_to_cuda() -> None:
    apply_func = pytest.importorskip("lightning.fabric.utilities.apply_func")
    x = example_features("conv2d", num_layers=2)
    moved, targets = apply_func.move_data_to_device((x, {"y": torch.zeros(2)}), "cuda")
    assert isinstance(moved, WeightSpaceFeatures) and all(t.is_cuda for t in _tensors(moved))
    assert targets["y"].is_cuda
    _assert_same(moved.to("cpu"), x)


def test_pickle_and_deepcopy() -> None:  # DataLoader workers pickle their batches
    x = example_features("conv1d", num_layers=2)
    for copied in (pickle.loads(pickle.dumps(x)), copy.deepcopy(x)):
        assert isinstance(copied, WeightSpaceFeatures)
        _assert_same(copied, x)


def test_pytree_round_trip() -> None:
    x = example_features("conv2d", num_layers=3)
    leaves, spec = tree_flatten({"x": x, "y": torch.ones(1)})
    assert len(leaves) == 7 and all(any(leaf is t for t in _tensors(x)) for leaf in leaves[:6])
    rebuilt = tree_unflatten(leaves, spec)
    assert isinstance(rebuilt["x"], WeightSpaceFeatures)
    _assert_same(rebuilt["x"], x)


def test_vmap_over_features() -> None:
    x = example_features("mlp", num_layers=3, batch_size=4)

    def per_network(item: WeightSpaceFeatures) -> WeightSpaceFeatures:
        # item: unbatched features (C, ...); normalize each network by its own norm.
        norm = torch.cat([t.flatten() for t in _tensors(item)]).norm()
        return item.map(lambda t: t / norm)

    out = torch.func.vmap(per_network)(x)
    assert isinstance(out, WeightSpaceFeatures)
    norms = x.flatten().norm(dim=(1, 2))  # (B,)
    for o, t in zip(_tensors(out), _tensors(x)):
        torch.testing.assert_close(o, t / norms.reshape(-1, *[1] * (t.dim() - 1)))
