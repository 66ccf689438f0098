"""Weight-space features and network specs: the objects every NF-layer consumes.

A feedforward network with ``L`` layers has weights ``W(i)`` of shape
``(n(i), n(i-1), *filter)`` and biases ``b(i)`` of shape ``(n(i),)``. A
:class:`WeightSpaceFeatures` holds one tensor per weight and per bias with a batch
axis ``B`` and a channel axis ``C`` in front::

    weights[i]: (B, C, n(i), n(i-1), *filter)      biases[i]: (B, C, n(i))

A :class:`NetworkSpec` describes the shapes of one network (without ``B`` and ``C``);
``-1`` marks a neuron axis whose size is free (the NP/HNP layers work for any width).
"""

from __future__ import annotations

import collections.abc
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import register_pytree_node
from torch.utils.data._utils.collate import collate as _torch_collate
from torch.utils.data._utils.collate import default_collate_fn_map

__all__ = [
    "ArraySpec",
    "NetworkSpec",
    "WeightSpaceFeatures",
    "collate",
    "collate_wsfeat",
    "network_spec_from_wsfeat",
]

MAX_FILTER_DIMS = 3  # Conv1d, Conv2d, Conv3d


@dataclass(frozen=True)
class ArraySpec:
    """Shape of one weight or bias array of a network, without batch and channel axes.

    ``-1`` marks a neuron axis of free size.
    """

    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join("*" if s == -1 else str(s) for s in shape) + ")"


@dataclass(frozen=True)
class NetworkSpec:
    """Shapes of the weights and biases of a feedforward network (MLP or CNN).

    Args:
        weight_spec: one :class:`ArraySpec` per layer, ``(n(i), n(i-1), *filter)``.
        bias_spec: one :class:`ArraySpec` per layer, ``(n(i),)``.

    Lists are accepted and stored as tuples, so a spec is hashable and can be
    compared, logged and saved with a run's config.

    Raises:
        ValueError: if the arrays are not the weights and biases of one feedforward
            network (wrong number of axes, mismatched neighbouring sizes, ...).
    """

    weight_spec: tuple[ArraySpec, ...]
    bias_spec: tuple[ArraySpec, ...]

    def __post_init__(self) -> None:
        weights = tuple(s if isinstance(s, ArraySpec) else ArraySpec(tuple(s)) for s in self.weight_spec)
        biases = tuple(s if isinstance(s, ArraySpec) else ArraySpec(tuple(s)) for s in self.bias_spec)
        object.__setattr__(self, "weight_spec", weights)
        object.__setattr__(self, "bias_spec", biases)
        self._check_consistent()

    def _check_consistent(self) -> None:
        if len(self.weight_spec) == 0:
            raise ValueError("NetworkSpec needs at least one layer; got no weight arrays.")
        if len(self.weight_spec) != len(self.bias_spec):
            raise ValueError(
                f"NetworkSpec has {len(self.weight_spec)} weight arrays but {len(self.bias_spec)} bias "
                "arrays; give one bias spec per layer (zeros for layers without bias)."
            )
        for i, (w, b) in enumerate(zip(self.weight_spec, self.bias_spec)):
            if not 2 <= len(w.shape) <= 2 + MAX_FILTER_DIMS:
                raise ValueError(
                    f"layer {i}: weight shape {_shape_str(w.shape)} must be (n_out, n_in) or "
                    "(n_out, n_in, *filter) with 1 to 3 filter axes."
                )
            if any(s < 1 for s in w.shape[2:]):
                raise ValueError(f"layer {i}: filter sizes must be positive, got {_shape_str(w.shape)}.")
            if any(s < 1 and s != -1 for s in w.shape[:2] + b.shape):
                raise ValueError(f"layer {i}: neuron counts must be positive or -1 (free).")
            if len(b.shape) != 1:
                raise ValueError(f"layer {i}: bias shape {_shape_str(b.shape)} must have one axis (n_out,).")
            if -1 not in (w.shape[0], b.shape[0]) and w.shape[0] != b.shape[0]:
                raise ValueError(f"layer {i}: weight has {w.shape[0]} output neurons but bias has {b.shape[0]}.")
            if i > 0:
                prev = self.weight_spec[i - 1].shape[0]
                if -1 not in (prev, w.shape[1]) and prev != w.shape[1]:
                    raise ValueError(
                        f"layer {i}: weight expects {w.shape[1]} input neurons but layer {i - 1} has "
                        f"{prev} output neurons."
                    )

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_shapes(
        cls, weight_shapes: Sequence[Sequence[int]], bias_shapes: Sequence[Sequence[int]] | None = None
    ) -> NetworkSpec:
        """Builds a spec from plain shapes; biases default to ``(n_out,)`` per layer."""
        if bias_shapes is None:
            bias_shapes = [(next(iter(w)),) for w in weight_shapes]
        return cls(tuple(ArraySpec(tuple(w)) for w in weight_shapes), tuple(ArraySpec(tuple(b)) for b in bias_shapes))

    def to_dict(self) -> dict[str, list[list[int]]]:
        """A JSON/YAML-serializable form; inverse of :meth:`from_dict`."""
        return {
            "weight_shapes": [list(s.shape) for s in self.weight_spec],
            "bias_shapes": [list(s.shape) for s in self.bias_spec],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkSpec:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls.from_shapes(data["weight_shapes"], data["bias_shapes"])
        except KeyError as err:
            raise ValueError(f"a network_spec dict needs 'weight_shapes' and 'bias_shapes'; missing {err}.") from None

    # --- queries -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.weight_spec)

    def get_io(self) -> tuple[int, int]:
        """``(n_in, n_out)``: the network's input and output sizes (``-1`` if free)."""
        return self.weight_spec[0].shape[1], self.weight_spec[-1].shape[0]

    @property
    def filter_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per layer, the filter shape: ``()`` for dense layers, ``(kh, kw)`` for Conv2d."""
        return tuple(s.shape[2:] for s in self.weight_spec)

    @property
    def filter_sizes(self) -> tuple[int, ...]:
        """Per layer, the number of filter positions (``1`` for dense layers)."""
        return tuple(math.prod(f) for f in self.filter_shapes)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``(n(0), ..., n(L))``; ``-1`` where the spec leaves a size free."""
        sizes = [self.weight_spec[0].shape[1]]
        for w, b in zip(self.weight_spec, self.bias_spec):
            sizes.append(w.shape[0] if w.shape[0] != -1 else b.shape[0])
        return tuple(sizes)

    def get_num_params(self) -> int:
        """Number of scalars in one network (all sizes must be known)."""
        total = 0
        for i, (w, b) in enumerate(zip(self.weight_spec, self.bias_spec)):
            if -1 in w.shape or -1 in b.shape:
                raise ValueError(
                    f"layer {i} has a free size; build the spec with set_all_dims=True to count parameters."
                )
            total += math.prod(w.shape) + math.prod(b.shape)
        return total

    def __repr__(self) -> str:
        layers = ", ".join(
            f"{_shape_str(w.shape)}+{_shape_str(b.shape)}" for w, b in zip(self.weight_spec, self.bias_spec)
        )
        return f"NetworkSpec(L={len(self)}: {layers})"

    # --- validation ----------------------------------------------------------------------
    def check_features(self, wsfeat: WeightSpaceFeatures, channels: int | None = None, where: str = "") -> None:
        """Raises a ValueError naming the layer, expected and actual shapes on any mismatch.

        Args:
            wsfeat: batched features ``(B, C, ...)``.
            channels: the channel count ``C`` the caller expects, or None to skip that check.
            where: the caller's name, prefixed to the message (e.g. ``"NPLinear"``).
        """
        prefix = f"{where}: " if where else ""
        if not isinstance(wsfeat, WeightSpaceFeatures):
            raise TypeError(f"{prefix}expected WeightSpaceFeatures, got {type(wsfeat).__name__}.")
        if len(wsfeat) != len(self):
            raise ValueError(f"{prefix}network_spec has {len(self)} layers but the features have {len(wsfeat)}.")
        for i, ((w, b), ws, bs) in enumerate(zip(wsfeat, self.weight_spec, self.bias_spec)):
            for kind, x, spec in (("weight", w, ws), ("bias", b, bs)):
                expected = ("B", "C" if channels is None else channels, *spec.shape)
                ok = x.dim() == len(expected) and all(e in ("B", "C", -1) or a == e for a, e in zip(x.shape, expected))
                if not ok:
                    exp = "(" + ", ".join("*" if e == -1 else str(e) for e in expected) + ")"
                    raise ValueError(
                        f"{prefix}layer {i} {kind} has shape {tuple(x.shape)} but the network_spec "
                        f"expects {exp} (B, C, ...); build the layer from the features' own spec "
                        "(network_spec_from_wsfeat) or check the channel count."
                    )
            if b.shape[-1] != w.shape[2]:
                raise ValueError(
                    f"{prefix}layer {i}: weight has {w.shape[2]} output neurons but bias has {b.shape[-1]}."
                )
            if i > 0 and w.shape[3] != wsfeat.weights[i - 1].shape[2]:
                raise ValueError(
                    f"{prefix}layer {i} weight has {w.shape[3]} input neurons but layer {i - 1} has "
                    f"{wsfeat.weights[i - 1].shape[2]} output neurons."
                )


# Specs are stored in checkpoints' hyperparameters: allow them in torch.load(weights_only=True).
torch.serialization.add_safe_globals([ArraySpec, NetworkSpec])

TensorTransform = Callable[[Tensor], Tensor]


class WeightSpaceFeatures(collections.abc.Sequence):
    """Per-layer weight and bias tensors of a batch of networks (or of NF-layer activations).

    ``weights[i]``: ``(B, C, n(i), n(i-1), *filter)``; ``biases[i]``: ``(B, C, n(i))``.
    A dataset item may omit ``B``; :func:`collate` stacks items into a batch.

    Behaves as a sequence of ``(weight, bias)`` pairs, supports ``+``, ``-``, ``*``,
    ``.to(...)`` (so Lightning moves it to the device with the rest of the batch),
    ``.pin_memory()`` (for ``DataLoader(pin_memory=True)``), and is a registered pytree
    node, so ``torch.func`` and ``torch.compile`` see through it.
    """

    __slots__ = ("biases", "weights")

    def __init__(self, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> None:
        weights, biases = tuple(weights), tuple(biases)
        if len(weights) != len(biases):
            raise ValueError(
                f"WeightSpaceFeatures needs one bias per weight; got {len(weights)} weights and {len(biases)} biases."
            )
        self.weights: tuple[Tensor, ...] = weights
        self.biases: tuple[Tensor, ...] = biases

    # --- sequence protocol -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return zip(self.weights, self.biases)

    def __getitem__(self, idx: int) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return self.weights[idx], self.biases[idx]

    # --- arithmetic --------------------------------------------------------------------------
    def _zip_with(self, other: Any, op: Callable[[Tensor, Any], Tensor]) -> WeightSpaceFeatures:
        if isinstance(other, WeightSpaceFeatures):
            if len(other) != len(self):
                raise ValueError(f"cannot combine features of {len(self)} and {len(other)} layers.")
            return WeightSpaceFeatures(
                tuple(op(a, b) for a, b in zip(self.weights, other.weights)),
                tuple(op(a, b) for a, b in zip(self.biases, other.biases)),
            )
        return self.map(lambda x: op(x, other))

    def __add__(self, other: Any) -> WeightSpaceFeatures:
        return self._zip_with(other, torch.add)

    def __sub__(self, other: Any) -> WeightSpaceFeatures:
        return self._zip_with(other, torch.sub)

    def __mul__(self, other: Any) -> WeightSpaceFeatures:
        return self._zip_with(other, torch.mul)

    __radd__ = __add__
    __rmul__ = __mul__

    def __neg__(self) -> WeightSpaceFeatures:
        return self.map(torch.neg)

    # --- tensor-like helpers --------------------------------------------------------------------
    def map(self, func: TensorTransform) -> WeightSpaceFeatures:
        """Applies ``func`` to every weight and bias tensor."""
        return WeightSpaceFeatures(tuple(func(w) for w in self.weights), tuple(func(b) for b in self.biases))

    def detach(self) -> WeightSpaceFeatures:
        return self.map(Tensor.detach)

    def clone(self) -> WeightSpaceFeatures:
        return self.map(Tensor.clone)

    def to(self, *args: Any, **kwargs: Any) -> WeightSpaceFeatures:
        """Like :meth:`torch.Tensor.to` (device, dtype, ``non_blocking``) on every tensor."""
        return self.map(lambda x: x.to(*args, **kwargs))

    def pin_memory(self) -> WeightSpaceFeatures:
        return self.map(Tensor.pin_memory)

    def flatten(self) -> Tensor:
        """All entries of each network in one vector: ``(B, C, num_params)``.

        Order: ``W(1), b(1), W(2), b(2), ...``, each in row-major order.
        """
        parts = []
        for w, b in self:
            parts.append(w.flatten(start_dim=2))
            parts.append(b.flatten(start_dim=2))
        return torch.cat(parts, dim=-1)

    @classmethod
    def from_zipped(cls, weight_and_biases: Sequence[tuple[Tensor, Tensor]]) -> WeightSpaceFeatures:
        """Builds features from a list of ``(weight, bias)`` pairs."""
        weights, biases = zip(*weight_and_biases)
        return cls(weights, biases)

    # --- accessors -------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @property
    def batch_size(self) -> int:
        """``B`` of batched features ``(B, C, ...)``."""
        return self.weights[0].shape[0]

    @property
    def num_channels(self) -> int:
        """``C`` of batched features ``(B, C, ...)``."""
        return self.weights[0].shape[1]

    def __repr__(self) -> str:
        if not self.weights:
            return "WeightSpaceFeatures(layers=0)"
        w_shapes = ", ".join(str(tuple(w.shape)) for w in self.weights)
        b_shapes = ", ".join(str(tuple(b.shape)) for b in self.biases)
        return (
            f"WeightSpaceFeatures(layers={len(self)}, dtype={self.dtype}, device={self.device},\n"
            f"  weights=[{w_shapes}],\n  biases=[{b_shapes}])"
        )


def _flatten_wsfeat(x: WeightSpaceFeatures) -> tuple[list[Tensor], int]:
    return [*x.weights, *x.biases], len(x)


def _unflatten_wsfeat(values: Iterable[Tensor], num_layers: int) -> WeightSpaceFeatures:
    values = list(values)
    return WeightSpaceFeatures(values[:num_layers], values[num_layers:])


register_pytree_node(
    WeightSpaceFeatures,
    _flatten_wsfeat,
    _unflatten_wsfeat,
    serialized_type_name="nfn_lab.weightspace.WeightSpaceFeatures",
)


def collate_wsfeat(batch: Sequence[WeightSpaceFeatures], *, collate_fn_map: Any = None) -> WeightSpaceFeatures:
    """Stacks unbatched features ``(C, ...)`` into one batch ``(B, C, ...)``.

    Raises:
        ValueError: naming the item and layer whose shape differs from the first item's.
    """
    first = batch[0]
    for item_idx, item in enumerate(batch[1:], start=1):
        if len(item) != len(first):
            raise ValueError(f"cannot batch networks of {len(first)} and {len(item)} layers (item {item_idx}).")
        for layer, ((w0, b0), (w, b)) in enumerate(zip(first, item)):
            if w.shape != w0.shape or b.shape != b0.shape:
                raise ValueError(
                    f"cannot batch item {item_idx}: layer {layer} has weight {tuple(w.shape)}, bias "
                    f"{tuple(b.shape)} but item 0 has {tuple(w0.shape)}, {tuple(b0.shape)}; a batch needs "
                    "networks of one architecture."
                )
    return WeightSpaceFeatures(
        tuple(torch.stack(ws) for ws in zip(*(x.weights for x in batch))),
        tuple(torch.stack(bs) for bs in zip(*(x.biases for x in batch))),
    )


_COLLATE_FN_MAP = {**default_collate_fn_map, WeightSpaceFeatures: collate_wsfeat}


def collate(batch: Sequence[Any]) -> Any:
    """``torch.utils.data.default_collate`` that also batches :class:`WeightSpaceFeatures`.

    Use as ``DataLoader(..., collate_fn=nfn_lab.collate)``; items may be features alone or
    nested in tuples and dicts, e.g. ``(wsfeat, {"test_accuracy": 0.9})``.
    """
    return _torch_collate(batch, collate_fn_map=_COLLATE_FN_MAP)


_DIM_TO_FILTER_AXES = {4: 0, 5: 1, 6: 2, 7: 3}


def network_spec_from_wsfeat(wsfeat: WeightSpaceFeatures, set_all_dims: bool = False) -> NetworkSpec:
    """The spec of batched features ``(B, C, ...)``.

    Hidden sizes are left free (``-1``), as NP/HNP layers work at any width; the input
    size of the first layer and the output size of the last are kept. ``set_all_dims``
    keeps every size.
    """
    weight_specs, bias_specs = [], []
    last = len(wsfeat) - 1
    for i, (weight, bias) in enumerate(wsfeat):
        if weight.dim() not in _DIM_TO_FILTER_AXES:
            raise ValueError(
                f"layer {i} weight has shape {tuple(weight.shape)}; expected (B, C, n_out, n_in) for a dense "
                "layer or (B, C, n_out, n_in, *filter) with 1-3 filter axes for a convolution."
            )
        if bias.dim() != 3:
            raise ValueError(f"layer {i} bias has shape {tuple(bias.shape)}; expected (B, C, n_out).")
        n_out, n_in = weight.shape[2], weight.shape[3]
        keep_in = set_all_dims or i == 0
        keep_out = set_all_dims or i == last
        weight_specs.append(ArraySpec((n_out if keep_out else -1, n_in if keep_in else -1, *weight.shape[4:])))
        bias_specs.append(ArraySpec((bias.shape[-1] if keep_out else -1,)))
    return NetworkSpec(tuple(weight_specs), tuple(bias_specs))
