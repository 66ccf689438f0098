"""SIREN variants of the INR zoos: keys, initialization, coordinates, batched rendering and fitting
(the hand-written stacked fit against autograd through ``render`` and ``torch.optim.Adam``)."""

from __future__ import annotations

import math

import pytest
import torch

from nfn_lab.conversion import module_to_wsfeat
from nfn_lab.siren import OMEGA0, Siren, StackedSirenFit, fit, make_coordinates, pixel_targets, render
from nfn_lab.weightspace import WeightSpaceFeatures
from tests.data.digits import one_thread

KEYS = {  # the zoos' files (docs/formats.md)
    "nfn": ["net.0.linear.weight", "net.0.linear.bias", "net.1.linear.weight", "net.1.linear.bias"]
    + ["net.2.weight", "net.2.bias"],
    "dwsnets": ["seq.0.weight", "seq.0.bias", "seq.1.weight", "seq.1.bias", "seq.2.weight", "seq.2.bias"],
}


@pytest.mark.parametrize("indexing", ["ij", "xy"])
def test_coordinates_put_pixel_ij_where_the_indexing_says(indexing):
    size = 5
    t = torch.linspace(-1, 1, size, dtype=torch.float64)
    coords = make_coordinates(size, indexing, dtype=torch.float64)
    assert coords.shape == (size * size, 2)
    for i in range(size):
        for j in range(size):
            expected = (t[i], t[j]) if indexing == "ij" else (t[j], t[i])
            assert coords[i * size + j].tolist() == [expected[0].item(), expected[1].item()]
    with pytest.raises(ValueError, match="indexing must be"):
        make_coordinates(size, "yx")


@pytest.mark.parametrize("variant", ["nfn", "dwsnets"])
def test_state_dict_has_the_zoo_keys_and_shapes(variant):
    state = Siren(variant, out_features=3).state_dict()
    assert list(state) == KEYS[variant]
    assert [tuple(v.shape) for v in state.values()] == [(32, 2), (32,), (32, 32), (32,), (3, 32), (3,)]


def test_initializations_follow_each_zoo():
    torch.manual_seed(0)
    nfn = [lin.weight.abs().max().item() for lin in Siren("nfn").linears()]
    assert 0.25 < nfn[0] <= 1 / 2  # U(+-1/fan_in), fan_in = 2
    assert all(0.5 * math.sqrt(6 / 32) / 30 < w <= math.sqrt(6 / 32) / 30 for w in nfn[1:])
    dws = Siren("dwsnets")
    first, hidden, out = dws.linears()
    assert 0.5 * math.sqrt(3) / 30 < first.weight.abs().max() <= math.sqrt(3) / 30  # no special first layer
    assert not first.bias.any() and not hidden.bias.any() and out.bias.any()
    with pytest.raises(ValueError, match="unknown SIREN variant"):
        Siren("siren")


def test_dwsnets_adds_half_to_the_output():
    siren = Siren("dwsnets")
    with torch.no_grad():
        siren.linears()[-1].weight.zero_()
        siren.linears()[-1].bias.zero_()
    assert torch.equal(siren(torch.rand(7, 2)), torch.full((7, 1), 0.5))


@pytest.mark.parametrize("variant", ["nfn", "dwsnets"])
def test_render_equals_each_module_on_its_grid(variant):
    torch.manual_seed(1)
    sirens = [Siren(variant, out_features=2, hidden_features=6, hidden_layers=2).double() for _ in range(3)]
    images = render(module_to_wsfeat(sirens), variant, size=7)
    assert images.shape == (3, 2, 7, 7) and images.dtype == torch.float64
    coords = make_coordinates(7, sirens[0].indexing, dtype=torch.float64)
    for image, siren in zip(images, sirens):
        torch.testing.assert_close(image, siren(coords).reshape(7, 7, 2).permute(2, 0, 1))


def test_render_leaves_the_global_rng_alone_and_checks_its_input():
    wsfeat = module_to_wsfeat([Siren("nfn")])
    state = torch.random.get_rng_state()
    render(wsfeat, "nfn", 4)
    assert torch.equal(state, torch.random.get_rng_state())
    with pytest.raises(ValueError, match="one channel"):
        render(wsfeat.map(lambda t: t.expand(-1, 2, *t.shape[2:])), "nfn", 4)
    uneven = WeightSpaceFeatures(
        [torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 5, 4), torch.zeros(1, 1, 1, 5)],
        [torch.zeros(1, 1, 4), torch.zeros(1, 1, 5), torch.zeros(1, 1, 1)],
    )
    with pytest.raises(ValueError, match="one hidden width"):
        render(uneven, "nfn", 4)


@pytest.mark.parametrize("variant, low", [("nfn", -1.0), ("dwsnets", 0.0)])
def test_fit_lowers_each_networks_error_reproducibly(variant, low):
    torch.manual_seed(2)
    images = low + (1 - low) * (torch.rand(3, 1, 6, 6) > 0.5).float()
    state = torch.random.get_rng_state()
    with one_thread():
        start, fitted = fit(images, variant, steps=0, seed=3), fit(images, variant, steps=20, lr=1e-3, seed=3)
        again = fit(images, variant, steps=20, lr=1e-3, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    error = lambda w: (render(w, variant, 6) - images).square().mean(dim=(1, 2, 3))  # noqa: E731
    assert (error(fitted) < 0.7 * error(start)).all()
    assert all(torch.equal(a, b) for a, b in zip(fitted.weights, again.weights))


@pytest.mark.parametrize("variant", ["nfn", "dwsnets"])
def test_redraw_gives_a_new_sirens_parameters(variant):
    torch.manual_seed(5)
    built = Siren(variant, out_features=3)
    other = Siren(variant, out_features=3)
    torch.manual_seed(5)
    other.redraw()
    for got, want in zip(other.state_dict().values(), built.state_dict().values(), strict=True):
        assert torch.equal(got, want)


# --- the stacked fit ----------------------------------------------------------------------------

FIT_SIZE = 5


def _case(variant: str, channels: int, hidden_layers: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Initial arrays of 3 SIRENs ``(3, ...)`` (float64) and random targets ``(3, C, S, S)`` in their range."""
    torch.manual_seed(0)
    sirens = [Siren(variant, out_features=channels, hidden_layers=hidden_layers).double() for _ in range(3)]
    params = [torch.stack(arrays) for arrays in zip(*(s.state_dict().values() for s in sirens))]
    return params, torch.rand(3, channels, FIT_SIZE, FIT_SIZE, dtype=torch.float64) - 0.5 * (variant == "nfn")


def _fit(params: list[torch.Tensor], images: torch.Tensor, variant: str, lr: float = 1e-3) -> StackedSirenFit:
    siren = Siren(variant)
    coords = make_coordinates(FIT_SIZE, siren.indexing, dtype=torch.float64)
    return StackedSirenFit(params, coords, pixel_targets(images), OMEGA0, siren.output_offset, lr)


def _autograd_loss(params: list[torch.Tensor], images: torch.Tensor, variant: str) -> torch.Tensor:
    """The sum over SIRENs of each one's mean squared error, through the reference renderer."""
    wsfeat = WeightSpaceFeatures([w.unsqueeze(1) for w in params[0::2]], [b.unsqueeze(1) for b in params[1::2]])
    return (render(wsfeat, variant, FIT_SIZE) - images).square().flatten(1).mean(1).sum()


@pytest.mark.parametrize(
    ("variant", "channels", "hidden_layers"), [("nfn", 1, 1), ("dwsnets", 1, 1), ("nfn", 3, 2), ("dwsnets", 3, 0)]
)
def test_gradients_equal_autograds(variant: str, channels: int, hidden_layers: int) -> None:
    params, images = _case(variant, channels, hidden_layers)
    fit = _fit(params, images, variant)
    fit.gradients()
    leaves = [p.clone().requires_grad_() for p in params]
    expected = torch.autograd.grad(_autograd_loss(leaves, images, variant), leaves)
    for got, want in zip(fit.grads, expected, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", ["nfn", "dwsnets"])
def test_steps_equal_torch_optim_adam_on_autograd(variant: str) -> None:
    params, images = _case(variant, 1, 1)
    fit = _fit(params, images, variant, lr=1e-2)
    leaves = [p.clone().requires_grad_() for p in params]
    reference = torch.optim.Adam(leaves, lr=1e-2)
    for _ in range(5):
        fit.step()
        reference.zero_grad()
        _autograd_loss(leaves, images, variant).backward()
        reference.step()
    for got, want in zip(fit.params, leaves, strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-9, atol=1e-11)
    assert not torch.equal(fit.params[0], params[0])  # the fit moved the parameters (and left the inputs alone)
