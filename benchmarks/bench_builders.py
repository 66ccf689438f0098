"""Zoo builders: training many networks at once (nfn-lab's builders) vs one network at a time.

Both sides train the same networks with the same hyperparameters, initial weights and number
of steps, and do the same evaluation work; only the batching differs:

- CNN zoo: ``vectorized`` is :func:`nfn_lab.builders.cnn_zoo.train_chunk` (stacked parameters,
  ``torch.func.vmap``, :class:`~nfn_lab.builders._optim.StackedOptimizer`); ``one at a time``
  trains each network as an ``nn.Module`` (:func:`~nfn_lab.builders.cnn_zoo.small_cnn`) with its
  own ``torch.optim`` optimizer, minibatches of its own training subset, dropout and L2
  penalty, and evaluates it on the test set and its subset at the same checkpoints.
- INR zoo: ``vectorized`` is :func:`nfn_lab.builders.inr_zoo.fit_chunk`; ``one at a time``
  fits each :class:`nfn_lab.siren.Siren` module alone with ``torch.optim.Adam``.

The networks of a CNN case share a training-set size and activation (as a builder chunk
does) and mix optimizers, learning rates, dropout and L2. Sides are timed in interleaved
rounds in one process with one thread (the machine may be shared: compare the ratios)::

    python -m benchmarks.bench_builders                  # every case, 3 rounds
    python -m benchmarks.bench_builders --quick          # seconds: tiny cases, 2 rounds
    python -m benchmarks.bench_builders --device cuda    # both sides on a GPU (timed with synchronization)

Prints a markdown table and writes it to ``benchmarks/out/<date>-<time>_builders[_quick].md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from einops import rearrange

from benchmarks import _report
from benchmarks._timing import Timing, interleaved, synchronizer, torch_threads
from nfn_lab.builders import cnn_zoo, inr_zoo
from nfn_lab.builders._optim import OPTIMIZERS
from nfn_lab.builders._resumable import derive_seed
from nfn_lab.builders.cnn_zoo import CNNZooConfig, _Digits, init_network, sample_hyperparameters, small_cnn, train_chunk
from nfn_lab.builders.inr_zoo import ImageSet, INRZooConfig, fit_chunk, init_sirens, load_images
from nfn_lab.siren import Siren, make_coordinates

SIDES = ("one at a time", "vectorized")


# --- one network at a time ------------------------------------------------------------------------


def _torch_optimizer(kind: str, params: Any, lr: float) -> torch.optim.Optimizer:
    """The per-network optimizer with the defaults :class:`StackedOptimizer` uses (Keras's)."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, eps=1e-7)
    return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)


def train_cnns_one_at_a_time(
    ids: Sequence[int], hparams: Sequence[dict[str, Any]], config: CNNZooConfig, data: _Digits
) -> list[tuple[float, float]]:
    """The work of :func:`train_chunk` for ``ids``, one ``nn.Module`` after another, on ``data``'s device.

    Returns:
        ``(accuracy, loss)`` on the test set and on the network's subset, per network and checkpoint.
    """
    num_pool, device = len(data.y_train), data.x_train.device
    metrics = []
    for network_id, h in zip(ids, hparams):
        gen = torch.Generator().manual_seed(derive_seed(config.seed, cnn_zoo._STREAM_INIT, network_id))
        model = small_cnn(h["activation"], h["dropout"]).to(device)
        with torch.no_grad():
            for param, array in zip(model.parameters(), init_network(h, gen)):
                param.copy_(array)
        subset = torch.randperm(num_pool, generator=gen)[: max(1, round(h["train_fraction"] * num_pool))].to(device)
        x_own, y_own = data.x_train[subset], data.y_train[subset]
        optimizer = _torch_optimizer(h["optimizer"], model.parameters(), h["learning_rate"])
        kernels = [p for p in model.parameters() if p.dim() > 1]
        for epoch in range(config.steps[-1] + 1):
            if epoch > 0:
                model.train()
                for batch in torch.randperm(len(subset), generator=gen).to(device).split(config.batch_size):
                    loss = F.cross_entropy(model(x_own[batch]), y_own[batch])
                    loss = loss + h["l2reg"] * sum(k.square().sum() for k in kernels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            if epoch in config.steps:
                model.eval()
                with torch.no_grad():
                    for x, y in ((data.x_test, data.y_test), (x_own, y_own)):  # the same metrics as train_chunk
                        logits = model(x)
                        metrics.append(
                            ((logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item())
                        )
    return metrics


def fit_sirens_one_at_a_time(
    items: Sequence[tuple[int, int]], images: ImageSet, config: INRZooConfig, device: torch.device
) -> None:
    """The work of :func:`fit_chunk` for ``items``, one :class:`Siren` after another."""
    channels, size = images.images.shape[1], images.images.shape[-1]
    for image_index, copy in items:
        model = Siren(config.variant, out_features=channels)
        seed = derive_seed(config.seed, inr_zoo._STREAM_INIT, image_index, copy)  # fit_chunk's initialization
        (arrays,) = zip(*init_sirens(config.variant, channels, [seed]))
        model.load_state_dict(dict(zip(model.state_dict(), arrays)))
        model.to(device)
        coords = make_coordinates(size, model.indexing, device=device)  # (S*S, 2)
        image = images.images[image_index].to(device)
        target = rearrange(image * 2 - 1 if config.variant == "nfn" else image, "c h w -> (h w) c")
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        for _ in range(config.steps):
            loss = (model(coords) - target).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


# --- cases ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Networks trained by both sides: ``run[side]()`` trains all ``num_networks`` once."""

    name: str
    num_networks: int
    run: dict[str, Callable[[], None]]


def cnn_case(num_networks: int, steps: tuple[int, ...], fraction: float, activation: str, data: _Digits) -> Case:
    """The first ``num_networks`` of a zoo's networks with this ``train_fraction`` and activation, as one chunk."""
    config = CNNZooConfig(num_networks=num_networks, steps=steps, chunk_size=num_networks)
    candidates = sample_hyperparameters(config.seed, range(40 * num_networks))
    ids = [i for i, h in enumerate(candidates) if h["train_fraction"] == fraction and h["activation"] == activation]
    ids = sorted(ids[:num_networks], key=lambda i: OPTIMIZERS.index(candidates[i]["optimizer"]))  # as in a chunk
    hparams = [candidates[i] for i in ids]
    name = (
        f"CNN zoo: {num_networks} CNNs ({activation}, sgd/adam/rmsprop), {steps[-1]} epochs on {fraction:g} of the "
        f"digits, {len(steps)} checkpoints"
    )
    return Case(
        name,
        num_networks,
        {
            "one at a time": lambda: train_cnns_one_at_a_time(ids, hparams, config, data),
            "vectorized": lambda: train_chunk(ids, hparams, config, 0, data),
        },
    )


def inr_case(num_networks: int, steps: int, variant: str, images: ImageSet, device: torch.device) -> Case:
    config = INRZooConfig(variant=variant, steps=steps)
    items = [(i, 0) for i in range(num_networks)]
    size = images.images.shape[-1]
    return Case(
        f"INR zoo: {num_networks} SIRENs ({variant}) on {size}x{size} digits, {steps} Adam steps",
        num_networks,
        {
            "one at a time": lambda: fit_sirens_one_at_a_time(items, images, config, device),
            "vectorized": lambda: fit_chunk(items, images, config, device),
        },
    )


def make_cases(quick: bool, device: torch.device) -> list[Case]:
    """The benchmark's cases, with their data on ``device``."""
    data = _Digits.load(device)
    digits = load_images("digits")
    if quick:
        return [cnn_case(4, (0, 1), 0.1, "relu", data), inr_case(8, 10, "nfn", digits, device)]
    return [
        cnn_case(64, (0, 1, 2, 5, 10), 0.25, "relu", data),
        cnn_case(128, (0, 1, 2, 5, 10), 0.1, "tanh", data),
        inr_case(256, 100, "nfn", digits, device),
        inr_case(256, 100, "dwsnets", digits, device),
    ]


# --- running and reporting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """Per side, seconds per training of all the case's networks: wall-clock and this process's CPU time."""

    wall: dict[str, Timing]
    cpu: dict[str, Timing]


def measure(case: Case, rounds: int, device: torch.device) -> Measurement:
    """Times each side in ``rounds`` interleaved rounds (after one warm-up run each).

    On a shared machine the process may get less than a core; its CPU time (one thread)
    is then the steadier measure of the work each side does. On a GPU each run ends with a
    synchronization, so both clocks include waiting for the device.
    """
    for run in case.run.values():
        run()
    cpu: dict[str, list[float]] = {side: [] for side in case.run}
    sync = synchronizer(device)

    def with_cpu_time(side: str, run: Callable[[], None]) -> Callable[[], None]:
        def step() -> None:
            start = time.process_time()
            run()
            sync()
            cpu[side].append(time.process_time() - start)

        return step

    steps = {side: with_cpu_time(side, run) for side, run in case.run.items()}
    wall = interleaved(steps, rounds, dict.fromkeys(steps, 1), sync)
    return Measurement(wall, {side: Timing(tuple(times)) for side, times in cpu.items()})


def to_markdown(env: dict[str, object], cases: list[Case], results: list[Measurement]) -> str:
    lines = [
        "| case | one at a time (networks/s) | vectorized (networks/s) | speed-up (wall) | speed-up (CPU time) |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, result in zip(cases, results):
        single, vector = result.wall["one at a time"], result.wall["vectorized"]
        cpu_ratio = result.cpu["one at a time"].median / result.cpu["vectorized"].median
        lines.append(
            f"| {case.name} | {case.num_networks / single.median:.1f} | {case.num_networks / vector.median:.1f} | "
            f"{single.median / vector.median:.1f}x | {cpu_ratio:.1f}x |"
        )
    settings = ", ".join(f"{k}: {v}" for k, v in env.items())
    notes = "Networks/s: wall clock, median of the rounds; speed-ups: ratios of the medians."
    return "\n".join([*lines, "", notes, f"Environment: {settings}.", ""])


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny cases, for a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per side (default: 3, quick: 2)")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this, e.g. 'INR'")
    parser.add_argument(
        "--out", type=Path, default=_report.OUT_DIR, help="folder for the markdown result (default benchmarks/out)"
    )
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"), help="cpu (default) or cuda")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    with torch_threads(1):
        cases = [case for case in make_cases(args.quick, args.device) if args.only in case.name]
        results = []
        for case in cases:
            print(f"timing {case.name} on {args.device} ...", file=sys.stderr)
            results.append(measure(case, rounds, args.device))
    env = _report.environment(args.device, 1, {}, {"rounds": rounds})
    text = to_markdown(env, cases, results)
    print(text)
    suffix = ("_quick" if args.quick else "") + ("" if args.device.type == "cpu" else f"_{args.device.type}")
    _report.write_markdown(args.out, f"builders{suffix}", text.rstrip("\n"))  # it ends the file with one
    return text


if __name__ == "__main__":
    main()
