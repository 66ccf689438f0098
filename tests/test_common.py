"""The seed library's README quick start runs with ``nfn`` replaced by ``nfn_lab``."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn
from torch.utils.data.dataloader import default_collate

import nfn_lab.common
from nfn_lab import conversion, layers, weightspace
from nfn_lab.common import WeightSpaceFeatures, network_spec_from_wsfeat, state_dict_to_tensors


def run_readme_example(models: list[nn.Module]) -> tuple[nn.Module, torch.Tensor]:
    """The README's code, verbatim after its ``models = ...`` line; returns ``(nfn, out)``."""
    state_dicts = [m.state_dict() for m in models]
    wts_and_bs = [state_dict_to_tensors(sd) for sd in state_dicts]
    wts_and_bs = default_collate(wts_and_bs)
    wsfeat = WeightSpaceFeatures(*wts_and_bs)
    network_spec = network_spec_from_wsfeat(wsfeat)
    nfn_channels = 32
    nfn = nn.Sequential(
        layers.NPLinear(network_spec, 1, nfn_channels, io_embed=True),
        layers.TupleOp(nn.ReLU()),
        layers.NPLinear(network_spec, nfn_channels, nfn_channels, io_embed=True),
        layers.TupleOp(nn.ReLU()),
        layers.HNPPool(network_spec),
        nn.Flatten(start_dim=-2),
        nn.Linear(nfn_channels * layers.HNPPool.get_num_outs(network_spec), 1),
    )
    out = nfn(wsfeat)  # (B, 1)
    return nfn, out


def readme_models() -> list[nn.Module]:
    """The README's model zoo, verbatim."""
    models = [
        nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)) for _ in range(8)
    ]
    return models


def cnn_models() -> list[nn.Module]:
    """A small 2D CNN zoo (global pooling between the convolutions and the dense layer)."""
    return [
        nn.Sequential(
            nn.Conv2d(2, 6, 3),
            nn.ReLU(),
            nn.Conv2d(6, 5, 3),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(5, 10),
        )
        for _ in range(4)
    ]


ZOOS = {"readme_mlp": (readme_models, (2,)), "cnn2d": (cnn_models, (2, 8, 8))}


def _layers_of(model: nn.Sequential) -> list[nn.Module]:
    return [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]


@torch.no_grad()
def permute_neurons(models: list[nn.Module], hidden: bool, seed: int = 0) -> list[nn.Module]:
    """Copies of ``models`` with hidden (or, ``hidden=False``, input) neurons permuted, acting
    on the modules' parameters directly, independently of nfn_lab."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for model in models:
        model = copy.deepcopy(model)
        layer_list = _layers_of(model)
        if hidden:
            for a, b in itertools.pairwise(layer_list):
                p = torch.randperm(a.weight.shape[0], generator=gen)
                a.weight.copy_(a.weight[p])
                a.bias.copy_(a.bias[p])
                b.weight.copy_(b.weight[:, p])
        else:
            first = layer_list[0]
            first.weight.copy_(first.weight[:, torch.roll(torch.arange(first.weight.shape[1]), 1)])
        out.append(model)
    return out


def test_readme_example_runs_as_written() -> None:
    torch.manual_seed(0)
    _, out = run_readme_example(readme_models())
    assert out.shape == (8, 1)
    assert torch.isfinite(out).all() and out.std() > 0  # distinct networks give distinct outputs


@pytest.mark.parametrize("zoo", list(ZOOS))
def test_readme_nfn_is_invariant_to_hidden_permutations(zoo: str) -> None:
    make_models, input_shape = ZOOS[zoo]
    torch.manual_seed(0)
    models = make_models()
    nfn, out = run_readme_example(models)
    assert out.shape == (len(models), 1)

    def nfn_on(zoo_models: list[nn.Module]) -> torch.Tensor:
        wsfeat = WeightSpaceFeatures(*default_collate([state_dict_to_tensors(m.state_dict()) for m in zoo_models]))
        with torch.no_grad():
            return nfn(wsfeat)

    x = torch.randn(5, *input_shape)
    permuted = permute_neurons(models, hidden=True)
    for model, moved in zip(models, permuted):  # a true symmetry: same function, other weights
        torch.testing.assert_close(moved(x), model(x), atol=1e-5, rtol=1e-5)
        assert not torch.equal(_layers_of(moved)[0].weight, _layers_of(model)[0].weight)
    torch.testing.assert_close(nfn_on(permuted), nfn_on(models), atol=1e-5, rtol=1e-5)
    # Converse: permuting the input neurons is not a symmetry, and the NFN notices.
    assert not torch.allclose(nfn_on(permute_neurons(models, hidden=False)), nfn_on(models), atol=1e-5)


def test_common_exports_exactly_the_reference_names() -> None:
    expected = {
        "WeightSpaceFeatures": weightspace.WeightSpaceFeatures,
        "NetworkSpec": weightspace.NetworkSpec,
        "ArraySpec": weightspace.ArraySpec,
        "state_dict_to_tensors": conversion.state_dict_to_tensors,
        "params_to_state_dicts": conversion.params_to_state_dicts,
        "network_spec_from_wsfeat": weightspace.network_spec_from_wsfeat,
        "params_to_func_params": conversion.params_to_func_params,
    }
    assert set(nfn_lab.common.__all__) == set(expected)
    for name, obj in expected.items():
        assert getattr(nfn_lab.common, name) is obj
