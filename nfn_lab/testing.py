"""Reusable checks for NF-layers: equivariance, invariance, sensitivity, expressivity.

Every layer test in nfn-lab calls these, and so can tests of layers in users' packages::

    from nfn_lab.testing import assert_equivariant, example_features
    x = example_features("conv2d", num_layers=3, dtype=torch.float64)
    assert_equivariant(MyLayer(network_spec_from_wsfeat(x), 1, 4).double(), x, group="hnp")

The orbit count used by the expressivity check (:func:`count_orbits`) is computed
independently of any layer, by union-find over (output entry, input entry) pairs under
the group's generators (docs/weight-space.md, section 4).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from nfn_lab.symmetry import Group, feature_layer_sizes, permute_features, permuted_layers, sample_permutations
from nfn_lab.weightspace import WeightSpaceFeatures

__all__ = [
    "SPACES",
    "SPACE_KINDS",
    "SpaceKind",
    "assert_equivariant",
    "assert_invariant",
    "assert_runs_under_autocast",
    "assert_sensitive",
    "channels_last",
    "count_orbits",
    "example_features",
    "jacobian_rank",
    "non_group_transforms",
]

SpaceKind = Literal["mlp", "conv1d", "conv2d", "conv3d"]
SPACE_KINDS: tuple[SpaceKind, ...] = ("mlp", "conv1d", "conv2d", "conv3d")
# Every weight-space kind with 1 to 4 layers: the parametrization of the layer tests.
SPACES: tuple[tuple[SpaceKind, int], ...] = tuple((kind, n) for kind in SPACE_KINDS for n in (1, 2, 3, 4))
_FILTERS: dict[str, tuple[int, ...]] = {"mlp": (), "conv1d": (3,), "conv2d": (2, 3), "conv3d": (2, 1, 2)}
_DEFAULT_WIDTHS = (3, 4, 5, 4, 3, 4, 5)


def example_features(
    kind: SpaceKind = "mlp",
    num_layers: int = 3,
    batch_size: int = 2,
    channels: int = 1,
    layer_sizes: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> WeightSpaceFeatures:
    """Random features of a small MLP or CNN weight space.

    CNN spaces are convolutions followed by one dense layer (global pooling between
    them), as in the Small CNN Zoo; with ``num_layers == 1`` the only layer is a
    convolution. Default widths are small and distinct, so axis mix-ups show.
    """
    if kind not in _FILTERS:
        raise ValueError(f"unknown weight-space kind {kind!r}; use one of {SPACE_KINDS}.")
    sizes = tuple(layer_sizes) if layer_sizes is not None else _DEFAULT_WIDTHS[: num_layers + 1]
    if len(sizes) != num_layers + 1:
        raise ValueError(f"layer_sizes needs {num_layers + 1} entries (n(0)..n(L)), got {len(sizes)}.")
    gen = torch.Generator().manual_seed(seed)
    weights, biases = [], []
    for i in range(num_layers):
        conv = kind != "mlp" and (i < num_layers - 1 or num_layers == 1)
        filt = _FILTERS[kind] if conv else ()
        weights.append(torch.randn(batch_size, channels, sizes[i + 1], sizes[i], *filt, generator=gen, dtype=dtype))
        biases.append(torch.randn(batch_size, channels, sizes[i + 1], generator=gen, dtype=dtype))
    return WeightSpaceFeatures(weights, biases)


def channels_last(x: Tensor) -> Tensor:
    """The same values ``(B, C, ...)`` with the channel axis innermost in memory, as NF-layers
    output them (to test both memory forms the layers accept)."""
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def _max_abs_diff(a: Any, b: Any) -> float:
    leaves_a, spec_a = tree_flatten(a)
    leaves_b, spec_b = tree_flatten(b)
    if spec_a != spec_b:
        raise AssertionError(f"outputs have different structures: {spec_a} vs {spec_b}")
    return max((x - y).abs().max().item() for x, y in zip(leaves_a, leaves_b))


def _close(a: Any, b: Any, atol: float, rtol: float) -> bool:
    leaves_a, _ = tree_flatten(a)
    leaves_b, _ = tree_flatten(b)
    return all(x.shape == y.shape and torch.allclose(x, y, atol=atol, rtol=rtol) for x, y in zip(leaves_a, leaves_b))


Transform = Callable[[WeightSpaceFeatures], WeightSpaceFeatures]


def _group_transforms(wsfeat: WeightSpaceFeatures, group: Group, trials: int, seed: int) -> list[Transform]:
    gen = torch.Generator().manual_seed(seed)
    sizes = feature_layer_sizes(wsfeat)
    out: list[Transform] = []
    for _ in range(trials):
        perms = sample_permutations(sizes, group, generator=gen)
        out.append(functools.partial(permute_features, perms=perms))
    return out


@torch.no_grad()
def assert_equivariant(
    fn: Callable[[WeightSpaceFeatures], WeightSpaceFeatures],
    wsfeat: WeightSpaceFeatures,
    group: Group = "np",
    trials: int = 3,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
) -> None:
    """Asserts ``fn(g.x) == g.fn(x)`` for ``trials`` random elements ``g`` of ``group``.

    Use float64 features and an ``fn`` in float64 (``module.double()``) for tight tolerances.
    ``fn`` must be deterministic (call ``module.eval()`` for dropout).
    """
    out = fn(wsfeat)
    for t, g in enumerate(_group_transforms(wsfeat, group, trials, seed)):
        lhs, rhs = fn(g(wsfeat)), g(out)
        if not _close(lhs, rhs, atol, rtol):
            raise AssertionError(
                f"{_name(fn)} is not {group.upper()}-equivariant: trial {t}, max |f(g.x) - g.f(x)| = "
                f"{_max_abs_diff(lhs, rhs):.3g} (atol={atol}, rtol={rtol})."
            )


@torch.no_grad()
def assert_invariant(
    fn: Callable[[WeightSpaceFeatures], Any],
    wsfeat: WeightSpaceFeatures,
    group: Group = "np",
    trials: int = 3,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
) -> None:
    """Asserts ``fn(g.x) == fn(x)`` for ``trials`` random elements ``g`` of ``group``."""
    out = fn(wsfeat)
    for t, g in enumerate(_group_transforms(wsfeat, group, trials, seed)):
        lhs = fn(g(wsfeat))
        if not _close(lhs, out, atol, rtol):
            raise AssertionError(
                f"{_name(fn)} is not {group.upper()}-invariant: trial {t}, max |f(g.x) - f(x)| = "
                f"{_max_abs_diff(lhs, out):.3g} (atol={atol}, rtol={rtol})."
            )


def _permute_array_axis(
    wsfeat: WeightSpaceFeatures, kind: str, layer: int, axis: int, perm: Tensor
) -> WeightSpaceFeatures:
    weights, biases = list(wsfeat.weights), list(wsfeat.biases)
    arrays = weights if kind == "weight" else biases
    arrays[layer] = arrays[layer].index_select(2 + axis, perm)
    return WeightSpaceFeatures(weights, biases)


def non_group_transforms(wsfeat: WeightSpaceFeatures, group: Group) -> dict[str, Transform]:
    """Permutations that are NOT in ``group`` (nor in NP), by name, for :func:`assert_sensitive`.

    - ``"weight_rows_not_bias"``: permutes the rows of the first weight but not its bias.
    - ``"hidden_rows_only"`` (two or more layers): permutes the rows of the first weight and
      bias without the next layer's columns (this changes the network's function).
    - ``"input"`` / ``"output"`` (HNP only): permutes the input / output neurons.
    """
    sizes = feature_layer_sizes(wsfeat)

    def shift(n: int) -> Tensor:  # a permutation that moves every index
        return torch.roll(torch.arange(n), 1)

    p = shift(sizes[1])
    out: dict[str, Transform] = {"weight_rows_not_bias": lambda x: _permute_array_axis(x, "weight", 0, 0, p)}
    if len(wsfeat) > 1:
        out["hidden_rows_only"] = lambda x: _permute_array_axis(
            _permute_array_axis(x, "weight", 0, 0, p), "bias", 0, 0, p
        )
    if group == "hnp":
        perms_in: list[Tensor | None] = [shift(sizes[0])] + [None] * len(wsfeat)
        perms_out: list[Tensor | None] = [None] * len(wsfeat) + [shift(sizes[-1])]
        out["input"] = lambda x: permute_features(x, perms_in)
        out["output"] = lambda x: permute_features(x, perms_out)
    return out


@torch.no_grad()
def assert_sensitive(
    fn: Callable[[WeightSpaceFeatures], Any],
    wsfeat: WeightSpaceFeatures,
    transform: Transform,
    equivariant: bool = True,
    atol: float = 1e-6,
    rtol: float = 1e-5,
) -> None:
    """Asserts that ``fn`` does NOT commute with (or, ``equivariant=False``, is not invariant to)
    ``transform``: the converse of :func:`assert_equivariant` for a permutation outside the group."""
    out = fn(wsfeat)
    lhs = fn(transform(wsfeat))
    rhs = transform(out) if equivariant else out
    if _close(lhs, rhs, atol, rtol):
        raise AssertionError(f"{_name(fn)} is unchanged by a transform outside the group; it ignores structure.")


def assert_runs_under_autocast(
    layer: nn.Module,
    wsfeat: WeightSpaceFeatures,
    dtype: torch.dtype = torch.bfloat16,
    atol: float = 0.1,
    rtol: float = 0.05,
) -> None:
    """Asserts a layer runs forward and backward under autocast on the features' device, close to
    its float32 output, with float32 parameter gradients."""
    expected = layer(wsfeat)
    with torch.autocast(wsfeat.device.type, dtype=dtype):
        out = layer(wsfeat)
        loss = sum(t.float().square().sum() for t in (*out.weights, *out.biases))
    loss.backward()
    if out.weights[-1].dtype != dtype:
        raise AssertionError(f"{_name(layer)} returned {out.weights[-1].dtype} under {dtype} autocast.")
    for got, want in zip((*out.weights, *out.biases), (*expected.weights, *expected.biases)):
        torch.testing.assert_close(got.float(), want, atol=atol, rtol=rtol)
    if not all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters()):
        raise AssertionError(f"{_name(layer)} left a parameter without a float32 gradient under autocast.")


def _name(fn: Any) -> str:
    return type(fn).__name__ if isinstance(fn, nn.Module) else getattr(fn, "__name__", repr(fn))


# --- maximal expressivity -------------------------------------------------------------------


Entry = tuple[int, tuple[tuple[int, int], ...], int]  # (array id, ((neuron layer, index), ...), filter position)


def _entries(layer_sizes: Sequence[int], filter_shapes: Sequence[tuple[int, ...]]) -> list[Entry]:
    """Every scalar of a one-channel weight space."""
    entries: list[Entry] = []
    for i, filt in enumerate(filter_shapes):
        for j, k, f in itertools.product(range(layer_sizes[i + 1]), range(layer_sizes[i]), range(int(np.prod(filt)))):
            entries.append((2 * i, ((i + 1, j), (i, k)), f))
        for j in range(layer_sizes[i + 1]):
            entries.append((2 * i + 1, ((i + 1, j),), 0))
    return entries


def count_orbits(
    layer_sizes: Sequence[int], group: Group, filter_shapes: Sequence[tuple[int, ...]] | None = None
) -> int:
    """Number of orbits of ``group`` on (output entry, input entry) pairs of a one-channel space.

    This is the dimension of the space of equivariant linear maps (without the constant
    bias). Computed by union-find over all pairs under a transposition and a full cycle
    of each permuted neuron layer (which generate its symmetric group).
    """
    num_layers = len(layer_sizes) - 1
    filter_shapes = list(filter_shapes) if filter_shapes is not None else [()] * num_layers
    entries = _entries(layer_sizes, filter_shapes)
    index = {e: n for n, e in enumerate(entries)}
    num = len(entries)
    parent = list(range(num * num))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for moved in permuted_layers(num_layers, group):
        n = layer_sizes[moved]
        if n < 2:
            continue
        for perm in ([1, 0, *range(2, n)], [*range(1, n), 0]):
            image = [
                index[(arr, tuple((layer, perm[idx] if layer == moved else idx) for layer, idx in neurons), f)]
                for arr, neurons, f in entries
            ]
            for a in range(num):
                for b in range(num):
                    ra, rb = find(a * num + b), find(image[a] * num + image[b])
                    if ra != rb:
                        parent[ra] = rb
    return len({find(p) for p in range(num * num)})


def jacobian_rank(
    make_layer: Callable[[], nn.Module], wsfeat: WeightSpaceFeatures, settings: int | None = None, seed: int = 0
) -> int:
    """Rank of the span of a linear layer's Jacobians over random parameter settings.

    The layer is linear, so its Jacobian is its response to each basis vector of the
    input space (fed as one batch) minus its response to zero.

    Args:
        make_layer: builds the layer (one input and one output channel).
        wsfeat: one-channel features ``(1, 1, ...)`` giving the shapes (values are irrelevant).
        settings: number of random parameter settings (default: number of parameters + 8).
    """
    torch.manual_seed(seed)
    layer = make_layer().double()
    shapes = [t.shape[1:] for t in (*wsfeat.weights, *wsfeat.biases)]
    sizes = [s.numel() for s in shapes]
    num_layers = len(wsfeat)
    basis = torch.cat([torch.eye(sum(sizes), dtype=torch.float64), torch.zeros(1, sum(sizes), dtype=torch.float64)])
    parts = [p.reshape(-1, *s) for p, s in zip(basis.split(sizes, dim=1), shapes)]
    inputs = WeightSpaceFeatures(parts[:num_layers], parts[num_layers:])
    params = list(layer.parameters())
    n_settings = settings if settings is not None else sum(p.numel() for p in params) + 8
    jacobians = []
    with torch.no_grad():
        for _ in range(n_settings):
            for p in params:
                p.normal_()
            out = layer(inputs).flatten()[:, 0]  # (N_in + 1, N_out)
            jacobians.append((out[:-1] - out[-1:]).reshape(-1))
    return int(torch.linalg.matrix_rank(torch.stack(jacobians)).item())
