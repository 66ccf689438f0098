"""The layers' custom operators (nfn_lab.layers.custom_ops): each is registered once under ``nfn_lab::``
with a fake and an autograd formula that ``torch.library.opcheck`` accepts, and a network of every
layer that uses them compiles with the eager results and gradients."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from nfn_lab import _fast_math
from nfn_lab.layers import (
    ChannelLinear,
    GaussianFourierFeatureTransform,
    HNPLinear,
    NPAttention,
    NPLinear,
    TupleOp,
)
from nfn_lab.testing import example_features
from nfn_lab.weightspace import WeightSpaceFeatures, network_spec_from_wsfeat

LAYERS = Path(__file__).resolve().parents[2] / "nfn_lab" / "layers"
OPERATORS = {
    f"nfn_lab::{name}{suffix}"
    for name in ("channel_map", "equivariant_map", "fourier_features", "gather_tokens", "scatter_tokens")
    for suffix in ("", "_backward")
} | {"nfn_lab::numpy_tanh"}


class _Network(nn.Module):
    """Every layer with a custom operator: Fourier features, NPLinear, NF-attention, ChannelLinear,
    HNPLinear, and NumPy's tanh between them."""

    def __init__(self, x: WeightSpaceFeatures) -> None:
        super().__init__()
        spec = network_spec_from_wsfeat(x)
        self.layers = nn.Sequential(
            GaussianFourierFeatureTransform(spec, 1, mapping_size=2, scale=1),
            NPLinear(spec, 4, 4),
            TupleOp(_fast_math.tanh),
            NPAttention(spec, 4, 2),
            TupleOp(ChannelLinear(4, 4)),
            HNPLinear(spec, 4, 2),
        )

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        return self.layers(x)


def _inputs() -> list[torch.Tensor]:
    x = example_features("mlp", 2, batch_size=2, channels=1, layer_sizes=(3, 4, 2), dtype=torch.float64)
    return [t.clone().requires_grad_() for t in (*x.weights, *x.biases)]


def _step(model: nn.Module, arrays: list[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs, then the gradients of the inputs and parameters, of one forward and backward."""
    model.zero_grad()
    for a in arrays:
        a.grad = None
    out = model(WeightSpaceFeatures(arrays[:2], arrays[2:]))
    outs = [*out.weights, *out.biases]
    sum((t * (i + 1)).sum() for i, t in enumerate(outs)).backward()
    return [t.detach() for t in outs] + [a.grad for a in arrays] + [p.grad.clone() for p in model.parameters()]


class _FirstCalls(TorchDispatchMode):
    """Records the first call of each ``nfn_lab`` operator: ``{name: (op, args)}``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, tuple[torch._ops.OpOverload, tuple]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "nfn_lab":
            self.calls.setdefault(func._schema.name, (func, args))
        return func(*args, **(kwargs or {}))


def _with_grad(arg: object) -> object:
    """A floating-point tensor (or list of them) as a fresh leaf that needs a gradient."""
    if isinstance(arg, list):
        return [_with_grad(a) for a in arg]
    if isinstance(arg, torch.Tensor) and arg.is_floating_point() and arg.numel():
        return arg.detach().clone().requires_grad_()
    return arg


@pytest.fixture(scope="module")
def first_calls() -> dict[str, tuple[torch._ops.OpOverload, tuple]]:
    torch.manual_seed(0)
    arrays = _inputs()
    model = _Network(WeightSpaceFeatures(arrays[:2], arrays[2:])).double()
    x, weight, bias = (torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((2, 3, 5), (4, 3), (4,)))
    with _FirstCalls() as mode:
        _step(model, arrays)
        # The network's channel maps are too small for the operator (gemm's torch.bmm path): called directly.
        torch.ops.nfn_lab.channel_map(x, weight, bias).sum().backward()
    return mode.calls


def test_every_operator_is_registered_once_under_nfn_lab(first_calls):
    registered = {f"nfn_lab::{name}" for name in dir(torch.ops.nfn_lab) if not name.startswith("_") and name != "name"}
    assert registered == OPERATORS
    assert set(first_calls) == OPERATORS  # the network below reaches every one


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_opcheck(name, first_calls):
    """Schema, fake (against the real outputs), autograd registration and tracing, on the arguments
    the operator got in a small network; forward operators with inputs that need gradients."""
    op, args = first_calls[name]
    if not name.endswith("_backward"):
        args = tuple(_with_grad(a) for a in args)
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@pytest.mark.slow
def test_a_compiled_network_gives_the_eager_results():
    """Compiled (the operators opaque calls in the graph; on the CPU, TupleOp's op a graph break)."""
    torch.manual_seed(0)
    arrays = _inputs()
    model = _Network(WeightSpaceFeatures(arrays[:2], arrays[2:])).double()
    compiled = _step(torch.compile(model), arrays)  # first: nothing cached by an eager call
    eager = _step(model, arrays)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b)


def test_no_layer_switches_on_compilation():
    """One idiom: no layer asks whether it is being compiled or writes an autograd.Function (every
    hand-written pass is a custom operator), and only gemm.py knows about oneDNN."""
    pattern = re.compile(r"is_compiling|autograd\.Function|onednn", re.IGNORECASE)
    found = [
        f"{path.name}:{i}"
        for path in sorted(LAYERS.glob("*.py"))
        if path.name != "gemm.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found


def test_outputs_have_the_fakes_strides_at_every_product_size():
    """Wide layers' weight gradients come from products that may return a transpose: the
    operators still give the contiguous outputs their fakes promise."""
    x = example_features("mlp", 2, batch_size=4, channels=64, layer_sizes=(40, 64, 8))
    layer = HNPLinear(network_spec_from_wsfeat(x), 64, 8)
    with _FirstCalls() as mode:
        out = layer(x)
        sum(t.sum() for t in (*out.weights, *out.biases)).backward()
    op, args = mode.calls["nfn_lab::equivariant_map_backward"]
    torch.library.opcheck(op, args, test_utils=("test_faketensor",))
