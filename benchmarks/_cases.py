"""What is timed: weight-space workloads (shapes and batch sizes) and the cases built on them.

A *case* is one model applied to one batch of weight-space features; each library builds
the model from its own layers and wraps the same input tensors in its own feature type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import _networks


@dataclass(frozen=True)
class Workload:
    """The weights of a family of networks.

    Attributes:
        name: short name used in case names.
        weight_shapes: per layer ``(n_out, n_in, *filter)``; biases are ``(n_out,)``.
        description: for the report.
    """

    name: str
    weight_shapes: tuple[tuple[int, ...], ...]
    description: str

    def features(self, batch: int, channels: int, seed: int = 0) -> tuple[list[Tensor], list[Tensor]]:
        """Random features: ``weights[i]: (B, C, *weight_shapes[i])``, ``biases[i]: (B, C, n_out(i))``."""
        gen = torch.Generator().manual_seed(seed)
        weights = [torch.randn(batch, channels, *s, generator=gen) for s in self.weight_shapes]
        biases = [torch.randn(batch, channels, s[0], generator=gen) for s in self.weight_shapes]
        return weights, biases


CNN_ZOO = Workload(
    "cnn-zoo",
    ((16, 1, 3, 3), (16, 16, 3, 3), (16, 16, 3, 3), (10, 16)),
    "Small CNN Zoo: conv 1->16->16->16 (3x3), dense 16->10",
)
SIREN = Workload("siren", ((32, 2), (32, 32), (1, 32)), "SIREN 2->32->32->1")

# (layers namespace, network spec) -> model.
ModelBuilder = Callable[[SimpleNamespace, Any], nn.Module]


@dataclass(frozen=True)
class Case:
    """One timed model on one input batch.

    Attributes:
        model: what is timed, e.g. ``"NPLinear"`` or ``"predict-gen HNP"``.
        workload: the input weight space.
        batch: ``B``.
        channels: ``C`` of the input features.
        build: builds the model from a library's layers and the input's network spec.
        target: the speed-up over the reference (eager) that nfn-lab should reach.
        kind: ``"layer"`` or ``"network"``.
        note: configuration details for the report.
    """

    model: str
    workload: Workload
    batch: int
    channels: int
    build: ModelBuilder
    target: float
    kind: str
    note: str

    @property
    def name(self) -> str:
        return f"{self.model} {self.workload.name} B={self.batch}"


# Layer widths: the hidden width of the paper's CNN-Zoo predictor; half the INR editing network's for SIRENs.
_LAYER_CHANNELS = {CNN_ZOO.name: 16, SIREN.name: 64}
_LAYER_BATCHES = {CNN_ZOO.name: (8, 128), SIREN.name: (32, 256)}


def _layer_cases(workload: Workload) -> list[Case]:
    c = _LAYER_CHANNELS[workload.name]
    # The reference shares one q/k/v projection across arrays only when no array has a filter.
    share = all(len(s) == 2 for s in workload.weight_shapes)
    builders: list[tuple[str, ModelBuilder, float, str]] = [
        ("NPLinear", lambda layers, spec: layers.NPLinear(spec, c, c), 1.0, f"{c}->{c} channels"),
        ("HNPLinear", lambda layers, spec: layers.HNPLinear(spec, c, c), 1.0, f"{c}->{c} channels"),
        (
            "NPAttention",
            lambda layers, spec: layers.NPAttention(spec, c, num_heads=8, share_projections=share),
            2.0,
            f"{c} channels, 8 heads, share_projections={share}",
        ),
    ]
    return [
        Case(model, workload, batch, c, build, target, "layer", note)
        for batch in _LAYER_BATCHES[workload.name]
        for model, build, target, note in builders
    ]


def _network_cases() -> list[Case]:
    predict_gen = [
        Case(f"predict-gen {mode}", CNN_ZOO, b, 1, build, 2.0, "network", config)
        for mode, build, config in (
            ("HNP", _networks.predict_gen_hnp, "hnp_inv.yaml"),
            ("NP", _networks.predict_gen_np, "np_inv.yaml"),
        )
        for b in (8, 128)
    ]
    return [
        *predict_gen,
        Case("edit HNP", SIREN, 32, 1, _networks.edit_hnp, 2.0, "network", "stylize equiv.yaml"),
        Case("edit NP", SIREN, 32, 1, _networks.edit_np, 2.0, "network", "stylize equiv_io.yaml"),
        Case("classify NP-512", SIREN, 32, 1, _networks.classify_np512, 1.3, "network", "inv_ff_io_mnist.yaml"),
    ]


def all_cases() -> list[Case]:
    """Every case of the full run: layers on both workloads at two batch sizes, then the paper's networks."""
    return _layer_cases(CNN_ZOO) + _layer_cases(SIREN) + _network_cases()


QUICK_CASES = (
    "NPLinear cnn-zoo B=8",
    "HNPLinear cnn-zoo B=8",
    "NPAttention cnn-zoo B=8",
    "predict-gen HNP cnn-zoo B=8",
)
