"""NPAttention (NF-attention) and the cross-attention encoder/decoder."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from nfn_lab.layers.attention import CrossAttnDecoder, CrossAttnEncoder, NPAttention
from nfn_lab.testing import (
    SPACE_KINDS,
    assert_equivariant,
    assert_invariant,
    assert_runs_under_autocast,
    assert_sensitive,
    example_features,
    non_group_transforms,
)
from nfn_lab.weightspace import WeightSpaceFeatures, network_spec_from_wsfeat

CHANNELS, HEADS = 4, 2


def _features(kind: str = "mlp", num_layers: int = 3, **kwargs) -> WeightSpaceFeatures:
    return example_features(kind, num_layers, channels=CHANNELS, dtype=torch.float64, **kwargs)


def _attention(x: WeightSpaceFeatures, **kwargs) -> NPAttention:
    torch.manual_seed(0)
    return NPAttention(network_spec_from_wsfeat(x), CHANNELS, num_heads=HEADS, **kwargs).double()


def _naive_np_attention(layer: NPAttention, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
    """NF-attention of an MLP written token by token, straight from the definition."""
    num_layers, heads, ch = len(x), layer.num_heads, layer.channels // layer.num_heads
    arrays = [*x.weights, *x.biases]
    qkv = [
        layer.to_qkv[0 if layer.share_projections else a](t.movedim(1, -1)).movedim(-1, 1).unflatten(1, (3, heads, ch))
        for a, t in enumerate(arrays)
    ]  # (B, 3, H, ch, *neurons)
    outs = [torch.zeros_like(t[:, 0]) for t in qkv]  # (B, H, ch, *neurons)

    def attend(tokens: list[Tensor]) -> Tensor:  # tokens: (B, 3, H, ...) each -> (B, H, T, ...)
        q, k, v = torch.stack([t.flatten(3) for t in tokens], dim=3).unbind(1)  # (B, H, T, E)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return (weights @ v).view(*v.shape[:3], *tokens[0].shape[3:])

    # Cross term: neuron layer l's tokens are vectors over its neurons.
    for l in range(num_layers + 1):
        places = []  # (array, index of the token inside the array)
        if l > 0:
            places += [(l - 1, (slice(None), j)) for j in range(arrays[l - 1].shape[3])]  # columns of W(l)
            places += [(num_layers + l - 1, (slice(None),))]  # b(l)
        if l < num_layers:
            places += [(l, (j, slice(None))) for j in range(arrays[l].shape[2])]  # rows of W(l+1)
        out = attend([qkv[a][(..., *idx)] for a, idx in places])
        for t, (a, idx) in enumerate(places):
            outs[a][(..., *idx)] += out[:, :, t]
    # Diagonal term: the per-array means attend to each other.
    means = [t.flatten(4).mean(-1) for t in qkv]  # (B, 3, H, ch)
    out = attend(means)  # (B, H, 2L, ch)
    outs = [o + out[:, :, a].view(*out.shape[:2], ch, *[1] * (o.dim() - 3)) for a, o in enumerate(outs)]
    outs = [o.flatten(1, 2) for o in outs]
    return WeightSpaceFeatures(outs[:num_layers], outs[num_layers:])


def _assert_close(a: WeightSpaceFeatures, b: WeightSpaceFeatures) -> None:
    for x, y in zip((*a.weights, *a.biases), (*b.weights, *b.biases)):
        torch.testing.assert_close(x, y)


# --- NPAttention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("share_projections", [True, False])
@pytest.mark.parametrize(
    "layer_sizes", [(3, 4), (3, 4, 2), (2, 5, 4, 3), (2, 3, 3, 3, 3, 3, 2)], ids=["L1", "L2", "L3", "L6-uniform"]
)
def test_matches_naive_definition(layer_sizes, share_projections):
    # L6-uniform: neuron layers 2-4 have equal token counts and widths and attend in one call.
    x = _features("mlp", len(layer_sizes) - 1, layer_sizes=layer_sizes)
    layer = _attention(x, share_projections=share_projections)
    _assert_close(layer(x), _naive_np_attention(layer, x))


@pytest.mark.parametrize("share_projections", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", SPACE_KINDS)
def test_np_equivariant_and_structure_sensitive(kind, num_layers, share_projections):
    x = _features(kind, num_layers)
    layer = _attention(x, share_projections=share_projections)
    out = layer(x)
    for (w, b), (wo, bo) in zip(x, out):
        assert wo.shape == w.shape and bo.shape == b.shape
    assert_equivariant(layer, x, group="np")
    for transform in non_group_transforms(x, "np").values():
        assert_sensitive(layer, x, transform)


@pytest.mark.parametrize("kind", ["mlp", "conv2d"])
def test_ablations_are_equivariant(kind):
    x = _features(kind, 3)
    cross_only = _attention(x, ablate_diagonalterm=True)
    assert_equivariant(cross_only, x, group="np")
    assert_sensitive(cross_only, x, non_group_transforms(x, "np")["hidden_rows_only"])
    diag_only = _attention(x, ablate_crossterm=True)
    assert_equivariant(diag_only, x, group="np")
    for w, b in diag_only(x):  # per-array summaries, broadcast over every entry
        assert torch.allclose(w, w[:, :, :1, :1].expand_as(w)) and torch.allclose(b, b[:, :, :1].expand_as(b))


def test_output_is_sum_of_cross_and_diagonal_terms():
    x = _features("mlp", 3)
    ablations = [(False, False), (False, True), (True, False)]
    full, cross_only, diag_only = (_attention(x, ablate_crossterm=c, ablate_diagonalterm=d) for c, d in ablations)
    _assert_close(full(x), cross_only(x) + diag_only(x))  # same seed, same parameters


@pytest.mark.parametrize("share_projections", [True, False])
def test_projection_sharing_and_gradients(share_projections):
    x = _features("conv2d", 3)  # two 2x3 convolutions, then a dense layer
    layer = _attention(x, share_projections=share_projections)
    # Shared: one projection per number of filter positions (6 for the convs, 1 for the rest).
    assert len(layer.to_qkv) == (2 if share_projections else 6)
    assert len(layer.unproject) == (1 if share_projections else 2)
    out = layer(x)
    sum(t.square().sum() for t in (*out.weights, *out.biases)).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_chained_layers_accept_strided_outputs():
    x = _features("conv1d", 3)
    spec = network_spec_from_wsfeat(x)
    torch.manual_seed(0)
    block = nn.Sequential(NPAttention(spec, CHANNELS, HEADS), NPAttention(spec, CHANNELS, HEADS)).double()
    assert_equivariant(block, x, group="np")


@pytest.mark.parametrize("share_projections", [True, False])
def test_runs_under_bf16_autocast(share_projections):
    x = example_features("conv2d", 3, batch_size=4, channels=CHANNELS)
    layer = NPAttention(network_spec_from_wsfeat(x), CHANNELS, HEADS, share_projections=share_projections)
    assert_runs_under_autocast(layer, x)


@pytest.mark.slow
@pytest.mark.parametrize("share_projections", [True, False])
def test_compiles(share_projections):
    # float64: compiled and eager sum in different orders. Layer 0 gathers a single strided part.
    x = example_features("conv2d", 3, channels=CHANNELS, dtype=torch.float64)
    layer = NPAttention(network_spec_from_wsfeat(x), CHANNELS, HEADS, share_projections=share_projections).double()

    def outputs_and_grads(model):
        layer.zero_grad()
        out = [*(y := model(x)).weights, *y.biases]
        sum(t.square().sum() for t in out).backward()
        return out + [p.grad.clone() for p in layer.parameters()]

    compiled = outputs_and_grads(torch.compile(layer))  # gather and scatter: opaque custom operators
    eager = outputs_and_grads(layer)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)


def test_dropout_only_in_training():
    x = _features("mlp", 2)
    layer = _attention(x, dropout=0.5)
    layer.train()
    assert not torch.equal(layer(x).weights[0], layer(x).weights[0])
    layer.eval()
    _assert_close(layer(x), layer(x))


def test_bad_arguments_raise():
    x = _features("mlp", 2)
    spec = network_spec_from_wsfeat(x)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        NPAttention(spec, 6, num_heads=4)
    with pytest.raises(ValueError, match="keep at least one"):
        NPAttention(spec, 4, num_heads=2, ablate_crossterm=True, ablate_diagonalterm=True)
    with pytest.raises(ValueError, match="dropout"):
        NPAttention(spec, 4, num_heads=2, dropout=1.0)
    layer = NPAttention(spec, CHANNELS, HEADS).double()
    with pytest.raises(ValueError, match="layer 0 weight"):
        layer(_features("mlp", 2, layer_sizes=(5, 4, 5)))  # n_in 5, the spec says 3
    with pytest.raises(ValueError, match="layer 0 weight"):
        layer(example_features("mlp", 2, channels=2, dtype=torch.float64))  # 2 channels, not 4
    assert "num_heads=2" in repr(layer)


# --- cross-attention encoder / decoder ----------------------------------------------------------------


@pytest.mark.parametrize("kind", SPACE_KINDS)
def test_encoder_is_np_invariant(kind):
    x = _features(kind, 3)
    spec = network_spec_from_wsfeat(x, set_all_dims=True)
    encoder = CrossAttnEncoder(spec, CHANNELS, num_latents=5).double()
    z = encoder(x)
    assert z.shape == (x.batch_size, 5, CHANNELS)
    assert_invariant(encoder, x, group="np")
    assert not torch.allclose(encoder(x * 2.0), z)


def test_decoder_shapes_and_latent_order_invariance():
    x = _features("conv2d", 2)
    spec = network_spec_from_wsfeat(x, set_all_dims=True)
    decoder = CrossAttnDecoder(spec, CHANNELS, spec.get_num_params()).double()
    latents = torch.randn(3, 7, CHANNELS, dtype=torch.float64)
    out = decoder(latents)
    for (w, b), (wo, bo) in zip(x, out):
        assert wo.shape == (3, *w.shape[1:]) and bo.shape == (3, *b.shape[1:])
    _assert_close(decoder(latents[:, torch.randperm(7)]), out)
    assert not torch.allclose(decoder(latents * 2.0).weights[0], out.weights[0])


def test_encoder_decoder_bad_input_raises():
    x = _features("mlp", 2)
    spec = network_spec_from_wsfeat(x, set_all_dims=True)
    with pytest.raises(ValueError, match="free size"):
        CrossAttnEncoder(network_spec_from_wsfeat(x), CHANNELS, 3)  # hidden sizes left free
    with pytest.raises(ValueError, match="num_params"):
        CrossAttnDecoder(spec, CHANNELS, spec.get_num_params() + 1)
    with pytest.raises(ValueError, match="layer 1 weight"):
        CrossAttnEncoder(spec, CHANNELS, 3).double()(_features("mlp", 2, layer_sizes=(3, 4, 2)))
    with pytest.raises(ValueError, match="latents"):
        CrossAttnDecoder(spec, CHANNELS)(torch.randn(2, 3, CHANNELS + 1))
