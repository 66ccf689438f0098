"""Timing one training step (forward + backward) of several models, interleaved.

The machine may be shared and noisy, so the sides are timed in alternating rounds
(``ref, ours, ours, ref, ref, ours, ...``) in one process on the same inputs, and each side
is summarized by the median (and min) of its per-round times. Ratios of these, not the
absolute times, are what carry over between runs.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

Step = Callable[[], None]


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block, then the previous count again."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def loader_epoch(loader: Iterable, side: str) -> int:
    """Iterates a zoo loader once into batched features; returns the number of networks.

    The reference approach (``side == "ref"``) yields ``(weights, biases)`` lists that still
    have to be wrapped, as its training loops do.
    """
    from nfn_lab.weightspace import WeightSpaceFeatures

    count = 0
    for batch in loader:
        feats = WeightSpaceFeatures(*batch[0]) if side == "ref" else batch[0]
        count += feats.batch_size
    return count


def flat_outputs(out: Any) -> list[Tensor]:
    """A model's output as a list of tensors: a tensor, or any library's weight-space features."""
    if isinstance(out, Tensor):
        return [out]
    return [*out.weights, *out.biases]


def make_step(model: nn.Module, inputs: Any, cotangents: list[Tensor]) -> Step:
    """One training step without the optimizer: clear grads, forward, backward with fixed ``cotangents``."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        for p in params:
            p.grad = None
        torch.autograd.backward(flat_outputs(model(inputs)), cotangents)

    return step


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for queued kernels on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _time_iters(step: Step, iters: int, sync: Callable[[], None]) -> float:
    """Seconds per call of ``step`` over ``iters`` back-to-back calls."""
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - start) / iters


@dataclass(frozen=True)
class WarmUp:
    """Seconds of the first call (includes compilation, if any) and of the last warm-up call."""

    first_s: float
    last_s: float


def warm_up(step: Step, sync: Callable[[], None], calls: int) -> WarmUp:
    """Runs ``step`` ``calls`` (>= 2) times, timing the first and the last call."""
    if calls < 2:
        raise ValueError(f"warm_up needs at least 2 calls (the first may compile), got {calls}.")
    first = _time_iters(step, 1, sync)
    for _ in range(calls - 2):
        step()
    return WarmUp(first, _time_iters(step, 1, sync))


@dataclass(frozen=True)
class Timing:
    """Per-call seconds of one side, one entry per round."""

    rounds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def min(self) -> float:
        return min(self.rounds)


def plan(
    step_seconds: Mapping[str, float], rounds: int, round_seconds: float, min_rounds: int = 3
) -> tuple[int, dict[str, int]]:
    """Rounds and calls per round for steps taking ``step_seconds`` each.

    Each side's round lasts about ``round_seconds`` (at least one call). When the slowest
    side's single call is longer than a round, the rounds are cut (to no fewer than
    ``min_rounds``) so that each side's timing takes about ``rounds * round_seconds``.
    """
    if rounds < 1 or round_seconds <= 0:
        raise ValueError(f"need rounds >= 1 and round_seconds > 0, got {rounds} and {round_seconds}.")
    slowest = max(step_seconds.values())
    if slowest > round_seconds:
        rounds = min(rounds, max(min_rounds, int(rounds * round_seconds / slowest)))
    return rounds, {name: max(1, round(round_seconds / t)) for name, t in step_seconds.items()}


def interleaved(
    steps: Mapping[str, Step], rounds: int, iters: Mapping[str, int], sync: Callable[[], None]
) -> dict[str, Timing]:
    """Times warmed-up ``steps`` in ``rounds`` alternating rounds of ``iters[name]`` calls each.

    The side that goes first alternates between rounds; the garbage collector is paused
    while timing.
    """
    order = list(steps)
    per_round: dict[str, list[float]] = {name: [] for name in order}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in order if r % 2 == 0 else reversed(order):
                per_round[name].append(_time_iters(steps[name], iters[name], sync))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Timing(tuple(times)) for name, times in per_round.items()}
