"""The one idiom for the layers' hand-written passes: ``torch.library`` custom operators.

Every hand-written forward pass in the layers is a ``torch.library.custom_op`` named
``nfn_lab::<name>`` (:func:`define`) with a fake registered (output shapes only), so that
``torch.compile`` traces a network around it and keeps it as one opaque call: no graph
break, and inductor never sees the backend calls (:mod:`nfn_lab.layers.gemm`) or NumPy kernels
inside. A differentiable operator registers its autograd (``register_autograd``) with a
backward that is a second custom operator, ``nfn_lab::<name>_backward``. Where skipping a
gradient saves work (products), the backward operator takes a ``needs`` flag per input and
returns an empty tensor for each gradient that nobody needs (:func:`empty_grad`); autograd
gets None for those (:func:`grads_or_none`). Static arguments (a layer's plan, sizes) are
ints, bools, strings or lists of them, as operator schemas allow. Double backward is not
supported.

Operators compute in their inputs' dtype: callers cast to the autocast dtype first
(:func:`~nfn_lab.layers.gemm.in_autocast_dtype`) and the implementations run with autocast off
(:func:`without_autocast`), as ``nn.Linear`` computes under autocast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch._library.custom_ops import CustomOpDef

__all__ = ["NAMESPACE", "define", "empty_grad", "grads_or_none", "without_autocast"]

NAMESPACE = "nfn_lab"

F = TypeVar("F", bound=Callable[..., Any])


def define(name: str) -> Callable[[Callable[..., Any]], CustomOpDef]:
    """``torch.library.custom_op("nfn_lab::<name>")`` for a function that mutates none of its inputs.

    Its tensor outputs are made contiguous (no copy where they are already), so that a fake
    that allocates them with ``new_empty`` has their strides: a product's result may come
    back transposed, which a compiled graph would misread.
    """

    def register(fn: Callable[..., Any]) -> CustomOpDef:
        @functools.wraps(fn)
        def with_contiguous_outputs(*args: Any) -> Any:
            out = fn(*args)
            if isinstance(out, Tensor):
                return out.contiguous()
            return type(out)(t.contiguous() for t in out)

        return torch.library.custom_op(f"{NAMESPACE}::{name}", mutates_args=())(with_contiguous_outputs)

    return register


def _first_tensor(args: Sequence[Any]) -> Tensor:
    for arg in args:
        if isinstance(arg, Tensor):
            return arg
        if isinstance(arg, (list, tuple)) and arg and isinstance(arg[0], Tensor):
            return arg[0]
    raise TypeError("an operator needs at least one tensor argument")


def without_autocast(fn: F) -> F:
    """``fn`` run with autocast off on the device of its first tensor argument (a list's first item)."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        device_type = _first_tensor(args).device.type
        if not torch.is_autocast_enabled(device_type):
            return fn(*args)
        with torch.autocast(device_type, enabled=False):
            return fn(*args)

    return wrapper  # type: ignore[return-value]


def empty_grad(like: Tensor) -> Tensor:
    """What a backward operator returns for a gradient that nobody needs."""
    return like.new_empty(0)


def grads_or_none(grads: Sequence[Tensor], needs: Sequence[bool]) -> list[Tensor | None]:
    """A backward operator's results as autograd takes them: None where no gradient is needed (a
    list, for an operator's ``Tensor[]`` input; ``tuple(...)`` of it for separate tensor inputs)."""
    return [g if need else None for g, need in zip(grads, needs)]
