"""Forward+backward speed of nfn-lab's NF-layers and the paper's NFNs against the reference ``nfn`` 0.1.2.

Usage (from the repository root; see benchmarks/README.md)::

    bash benchmarks/setup_reference.sh          # once: installs nfn==0.1.2 into benchmarks/.reference
    python benchmarks/bench_layers.py           # full run, eager and torch.compile
    python benchmarks/bench_layers.py --quick   # a few seconds: four small cases, eager only
    python benchmarks/bench_layers.py --against HEAD~1 --no-compile  # a change against its parent

Writes ``<date>-<time>_<device>[_quick].{md,csv,json}`` into ``benchmarks/out/`` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch._dynamo

from benchmarks import _libraries, _report
from benchmarks._cases import QUICK_CASES, Case, all_cases
from benchmarks._libraries import Library
from benchmarks._timing import Step, flat_outputs, interleaved, make_step, plan, synchronizer, torch_threads, warm_up

# Calls before timing, eager and compiled; a compiled model's first call compiles forward and backward.
WARM_UP_CALLS = {False: 2, True: 3}


def _error(err: Exception) -> str:
    """``"Type: message"`` from the first two non-empty lines (a compiler error names its cause on the second)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {' '.join(lines[:2])}"[:400]


def _record_failure(errors: dict[str, str], case: Case, what: str, side: str, err: Exception) -> None:
    """Keeps going after a side fails (a library bug, a graph break...): the report shows it as failed."""
    errors[side] = _error(err)
    print(f"  {case.name} ({what}, {side}) failed:", file=sys.stderr)
    traceback.print_exc(limit=3, file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class BuiltCase:
    """A case's model built by each library, on the same input tensors.

    Attributes:
        models: per side (``"ref"``, ``"ours"``), the model in training mode.
        inputs: per side, the input features in that library's own type.
        cotangents: the fixed output gradients, one per output tensor (the same for every side).
        errors: per side that failed to build, the error.
    """

    models: dict[str, torch.nn.Module]
    inputs: dict[str, object]
    cotangents: list[torch.Tensor]
    errors: dict[str, str]

    def steps(self, compiled: bool = False) -> dict[str, Step]:
        """Per side, one training step (:func:`~benchmarks._timing.make_step`) of the model, or of
        ``torch.compile(model)`` if ``compiled``."""
        return {
            side: make_step(torch.compile(m) if compiled else m, self.inputs[side], self.cotangents)
            for side, m in self.models.items()
        }


def build_case(case: Case, libraries: Sequence[Library], device: torch.device) -> BuiltCase:
    """Builds the case's model with each library on the same input tensors (a side that fails is
    recorded in ``errors`` and left out).

    Raises:
        RuntimeError: if the two libraries' models give outputs of different shapes (a benchmark bug).
    """
    weights, biases = case.workload.features(case.batch, case.channels)
    weights, biases = [w.to(device) for w in weights], [b.to(device) for b in biases]
    models, inputs, shapes, errors = {}, {}, {}, {}
    for lib in libraries:
        features = lib.features(weights, biases)
        try:
            torch.manual_seed(0)
            model = case.build(lib.layers, lib.spec_from_features(features)).to(device).train()
            shapes[lib.name] = [tuple(t.shape) for t in flat_outputs(model(features))]
        except Exception as err:
            _record_failure(errors, case, "build", lib.name, err)
            continue
        models[lib.name], inputs[lib.name] = model, features
    if len({tuple(s) for s in shapes.values()}) > 1:
        raise RuntimeError(f"{case.name}: the libraries' models give different output shapes: {shapes}.")
    gen = torch.Generator().manual_seed(1)
    cotangents = [torch.randn(s, generator=gen).to(device) for s in next(iter(shapes.values()), [])]
    return BuiltCase(models, inputs, cotangents, errors)


def _measure(
    case: Case, built: BuiltCase, device: torch.device, compiled: bool, rounds: int, round_seconds: float
) -> _report.ModeResult:
    """Warms up and times every side in one mode (eager or ``torch.compile``'d)."""
    sync = synchronizer(device)
    if compiled:
        torch._dynamo.reset()  # each case compiles from scratch, with no cache limit carried over
    steps, errors, warm = {}, {}, {}
    for side, step in built.steps(compiled).items():
        try:
            warm[side] = warm_up(step, sync, WARM_UP_CALLS[compiled])
        except Exception as err:
            _record_failure(errors, case, "compiled" if compiled else "eager", side, err)
            continue
        steps[side] = step
    timings = {}
    if steps:
        rounds, iters = plan({side: warm[side].last_s for side in steps}, rounds, round_seconds)
        timings = interleaved(steps, rounds, iters, sync)
    return _report.ModeResult(timings, errors, {side: w.first_s for side, w in warm.items()})


def run_case(
    case: Case, libraries: Sequence[Library], device: torch.device, compile_too: bool, rounds: int, round_seconds: float
) -> _report.CaseResult:
    """Builds the case's model with each library (:func:`build_case`) and times it."""
    built = build_case(case, libraries, device)
    num_params = {side: sum(p.numel() for p in m.parameters()) for side, m in built.models.items()}

    def measure(compiled: bool) -> _report.ModeResult:
        result = _measure(case, built, device, compiled, rounds, round_seconds)
        return dataclasses.replace(result, errors={**built.errors, **result.errors})

    return _report.CaseResult(
        case.name, case.note, case.target, num_params, measure(False), measure(True) if compile_too else None
    )


def _progress(result: _report.CaseResult) -> str:
    def mode(m: _report.ModeResult) -> str:
        ratio = "" if m.ratio is None else f" = {m.ratio:.2f}x"
        return f"ref {m.cell('ref')} ms, ours {m.cell('ours')} ms{ratio}"

    text = f"{result.name}: {mode(result.eager)}"
    if result.compiled is not None:
        text += f" | compiled: {mode(result.compiled)}"
    return text


def select_cases(patterns: Sequence[str] | None, quick: bool) -> list[Case]:
    """The quick subset, or every case; then those whose name matches any glob in ``patterns``."""
    cases = all_cases()
    if quick:
        cases = [c for c in cases if c.name in QUICK_CASES]
    if patterns:
        cases = [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    return cases


def add_case_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every tool over these cases takes: which cases, which sides, threads, where to write."""
    parser.add_argument(
        "--cases",
        nargs="+",
        metavar="PATTERN",
        help="only cases whose name matches a glob, e.g. 'NPLinear*' '*siren*' (see --list)",
    )
    parser.add_argument("--ours-only", action="store_true", help="time nfn-lab alone (no reference needed)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument(
        "--reference-dir", type=Path, default=_libraries.REFERENCE_DIR, help="where setup_reference.sh installed nfn"
    )
    parser.add_argument("--out", type=Path, default=_report.OUT_DIR, help="reports folder (default benchmarks/out)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="four small cases, short rounds, eager only (a few seconds)"
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time torch.compile'd models (default: on, off with --quick)",
    )
    add_case_arguments(parser)
    parser.add_argument(
        "--against",
        metavar="REV",
        help="compare with nfn-lab at git revision REV instead of the reference (e.g. HEAD~1): a change's A/B",
    )
    parser.add_argument("--rounds", type=int, help="alternating timing rounds per side (default 5, quick 3)")
    parser.add_argument(
        "--round-seconds", type=float, help="target length of one side's round (default 0.25, quick 0.02)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    args = parser.parse_args(argv)
    if args.against and args.ours_only:
        parser.error("--against REV and --ours-only exclude each other: --against times two revisions.")
    if args.compile is None:
        args.compile = not args.quick
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.round_seconds is None:
        args.round_seconds = 0.02 if args.quick else 0.25
    return args


def main(argv: Sequence[str] | None = None) -> list[_report.CaseResult]:
    """Runs the selected cases, prints the table and writes it to ``--out``; returns the results."""
    args = parse_args(argv)
    cases = select_cases(args.cases, args.quick)
    if args.list or not cases:
        print("\n".join(f"{c.name}  ({c.note})" for c in cases) or "no case matches --cases")
        return []
    libraries = _libraries.sides(args.ours_only, args.reference_dir, args.against)
    device = torch.device(args.device)
    with torch_threads(args.threads):
        env = _report.environment(
            device,
            args.threads,
            {lib.name: lib.version for lib in libraries},
            # Targets are set against the reference nfn; an A/B against another nfn-lab revision has none.
            {
                "rounds": args.rounds,
                "round_seconds": args.round_seconds,
                "compile": args.compile,
                "targets": not args.against,
            },
            {lib.name: lib.label for lib in libraries},
        )
        results, start = [], time.perf_counter()
        for case in cases:
            results.append(run_case(case, libraries, device, args.compile, args.rounds, args.round_seconds))
            print(_progress(results[-1]), flush=True)
        env["run_minutes"] = round((time.perf_counter() - start) / 60, 1)
    stem = _report.timestamp() + f"_{device.type}" + ("_quick" if args.quick else "")
    if args.against:
        stem += f"_vs_{libraries[0].version}"
    paths = _report.write(args.out, stem, env, results)
    print()
    print(paths["md"].read_text())
    print("written:", ", ".join(str(p) for p in paths.values()))
    return results


if __name__ == "__main__":
    main()
