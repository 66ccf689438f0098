"""StackedOptimizer updates each network exactly as torch.optim would update it alone."""

from __future__ import annotations

import pytest
import torch

from nfn_lab.builders._optim import StackedOptimizer

INTERLEAVED = ["sgd", "adam", "rmsprop", "adam", "sgd", "rmsprop"]  # updated through index copies
GROUPED = ["sgd", "sgd", "adam", "adam", "rmsprop", "rmsprop"]  # updated through views
LRS = [0.1, 1e-3, 1e-2, 3e-2, 0.05, 1e-3]


def _reference(kind: str, params: list[torch.Tensor], lr: float, momentum: float) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-7)
    return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)


@pytest.mark.parametrize("kinds", [INTERLEAVED, GROUPED])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_matches_torch_optim_per_network(momentum: float, kinds: list[str]) -> None:
    torch.manual_seed(0)
    shapes = [(3, 2, 3, 3), (3,)]
    stacked = [torch.randn(len(kinds), *s, dtype=torch.float64) for s in shapes]
    alone = [[p[i].clone().requires_grad_() for p in stacked] for i in range(len(kinds))]
    refs = [_reference(k, a, lr, momentum) for k, a, lr in zip(kinds, alone, LRS)]
    opt = StackedOptimizer(stacked, kinds, torch.tensor(LRS, dtype=torch.float64), momentum=momentum)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in stacked]
        opt.step(grads)
        for i, ref in enumerate(refs):
            for p, g in zip(alone[i], grads):
                p.grad = g[i].clone()
            ref.step()
    for i in range(len(kinds)):
        for p, a in zip(stacked, alone[i]):
            torch.testing.assert_close(p[i], a.detach(), rtol=1e-12, atol=1e-12)


def test_one_kind_updates_every_network() -> None:
    stacked = [torch.zeros(4, 2)]
    opt = StackedOptimizer(stacked, ["sgd"] * 4, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    opt.step([torch.ones(4, 2)])
    assert torch.equal(stacked[0][:, 0], torch.tensor([-1.0, -2.0, -3.0, -4.0]))


def test_rejects_unknown_kind_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="unknown optimizer kinds \\['adagrad'\\]"):
        StackedOptimizer([torch.zeros(2, 3)], ["sgd", "adagrad"], torch.ones(2))
    with pytest.raises(ValueError, match="one optimizer kind and one learning rate per network \\(2\\)"):
        StackedOptimizer([torch.zeros(2, 3)], ["sgd"], torch.ones(2))
