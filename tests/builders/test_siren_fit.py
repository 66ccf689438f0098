"""The INR zoo's hand-written SIREN fit matches autograd through ``nfn_lab.siren.render`` and torch.optim.Adam."""

from __future__ import annotations

import pytest
import torch

from nfn_lab.builders._siren_fit import StackedSirenFit, pixel_targets
from nfn_lab.builders.inr_zoo import init_sirens
from nfn_lab.siren import OMEGA0, Siren, make_coordinates, render
from nfn_lab.weightspace import WeightSpaceFeatures

SIZE = 5


def _case(variant: str, channels: int, hidden_layers: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Initial arrays of 3 SIRENs ``(3, ...)`` (float64) and random targets ``(3, C, S, S)`` in their range."""
    torch.manual_seed(0)
    sirens = [Siren(variant, out_features=channels, hidden_layers=hidden_layers).double() for _ in range(3)]
    params = [torch.stack(arrays) for arrays in zip(*(s.state_dict().values() for s in sirens))]
    return params, torch.rand(3, channels, SIZE, SIZE, dtype=torch.float64) - 0.5 * (variant == "nfn")


def _fit(params: list[torch.Tensor], images: torch.Tensor, variant: str, lr: float = 1e-3) -> StackedSirenFit:
    siren = Siren(variant)
    coords = make_coordinates(SIZE, siren.indexing, dtype=torch.float64)
    return StackedSirenFit(params, coords, pixel_targets(images), OMEGA0, siren.output_offset, lr)


def _autograd_loss(params: list[torch.Tensor], images: torch.Tensor, variant: str) -> torch.Tensor:
    """The sum over SIRENs of each one's mean squared error, through the reference renderer."""
    wsfeat = WeightSpaceFeatures([w.unsqueeze(1) for w in params[0::2]], [b.unsqueeze(1) for b in params[1::2]])
    return (render(wsfeat, variant, SIZE) - images).square().flatten(1).mean(1).sum()


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


@pytest.mark.parametrize("variant", ["nfn", "dwsnets"])
def test_init_sirens_are_the_modules_own_initialization(variant: str) -> None:
    seeds = [3, 17, 3]
    stacked = init_sirens(variant, 3, seeds)
    before = torch.random.get_rng_state()
    for k, seed in enumerate(seeds):
        torch.manual_seed(seed)
        for got, want in zip(stacked, Siren(variant, out_features=3).state_dict().values(), strict=True):
            assert torch.equal(got[k], want)
    assert torch.equal(stacked[0][0], stacked[0][2])
    torch.random.set_rng_state(before)
