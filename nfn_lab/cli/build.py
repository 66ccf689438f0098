"""``nfn-lab zoo build cnn|inr OUT ...``: the zoo builders' command line (called by :mod:`nfn_lab.cli.zoo`).

Examples::

    nfn-lab zoo build cnn zoos/digits_cnn                      # 1,024 CNNs x 9 checkpoints
    nfn-lab zoo build cnn zoos/small --num-networks 64 --steps 0,1,5 --small-cnn-zoo-layout
    nfn-lab zoo build inr zoos/digits_siren --variant dwsnets --augmented-copies 2
    nfn-lab zoo build inr zoos/mine --images my_images/ --size 28

An interrupted build (Ctrl-C, a crash) keeps its finished chunks in ``OUT.work``; the same
command resumes it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 0,1,2,5,10, got {text!r}") from None


def _common(parser: argparse.ArgumentParser, chunk_size: int) -> None:
    parser.add_argument("out", type=Path, help="the zoo folder to create")
    parser.add_argument("--seed", type=int, default=0, help="build seed (default: 0)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=chunk_size,
        help=f"networks trained together and saved together (default: {chunk_size})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing zoo at OUT")
    parser.add_argument("--device", default="cpu", help="where to train, e.g. cuda (default: cpu)")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default: 1, fastest for these small networks)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from nfn_lab.builders.cnn_zoo import CNNZooConfig
    from nfn_lab.builders.inr_zoo import INRZooConfig

    cnn_defaults, inr_defaults = CNNZooConfig(), INRZooConfig()
    parser = argparse.ArgumentParser(prog="nfn-lab zoo build", description="Build a model zoo offline.")
    builders = parser.add_subparsers(dest="builder", required=True, metavar="{cnn,inr}")

    cnn = builders.add_parser("cnn", help="small CNNs (Small CNN Zoo shapes) trained on scikit-learn's digits")
    _common(cnn, cnn_defaults.chunk_size)
    cnn.add_argument(
        "--num-networks", type=int, default=cnn_defaults.num_networks, help=f"default: {cnn_defaults.num_networks}"
    )
    default_steps = ",".join(map(str, cnn_defaults.steps))
    cnn.add_argument(
        "--steps",
        type=_steps,
        default=cnn_defaults.steps,
        help=f"checkpoint epochs; the last ends training (default: {default_steps})",
    )
    cnn.add_argument(
        "--batch-size", type=int, default=cnn_defaults.batch_size, help=f"default: {cnn_defaults.batch_size}"
    )
    cnn.add_argument(
        "--small-cnn-zoo-layout",
        action="store_true",
        help="also write OUT/small_cnn_zoo/ (weights.npy, layout.csv, metrics.csv.gz)",
    )

    inr = builders.add_parser("inr", help="one SIREN per image (digits, an image folder or a .pt file)")
    _common(inr, inr_defaults.chunk_size)
    inr.add_argument(
        "--images",
        default="digits",
        help="'digits' (default), a folder with one subfolder per label, or a .pt file "
        "{'images': (N,C,H,W), 'labels': (N,)}",
    )
    inr.add_argument(
        "--size", type=int, default=None, help="resize images to SIZE x SIZE (default: keep; digits are 8x8)"
    )
    inr.add_argument(
        "--variant",
        choices=("nfn", "dwsnets"),
        default=inr_defaults.variant,
        help=f"SIREN variant (default: {inr_defaults.variant})",
    )
    inr.add_argument(
        "--augmented-copies",
        type=int,
        default=0,
        help="extra SIRENs per training image from other initializations (default: 0)",
    )
    inr.add_argument(
        "--steps", type=int, default=inr_defaults.steps, help=f"Adam steps per SIREN (default: {inr_defaults.steps})"
    )
    inr.add_argument(
        "--lr", type=float, default=inr_defaults.lr, help=f"Adam learning rate (default: {inr_defaults.lr:g})"
    )
    return parser


def _run(args: argparse.Namespace, command: str) -> Path:
    import torch

    torch.set_num_threads(args.threads)
    common = {"overwrite": args.overwrite, "device": args.device, "progress": not args.quiet, "command": command}
    if args.builder == "cnn":
        from nfn_lab.builders.cnn_zoo import CNNZooConfig, build_cnn_zoo

        cnn_config = CNNZooConfig(args.num_networks, args.seed, args.steps, args.batch_size, args.chunk_size)
        return build_cnn_zoo(args.out, cnn_config, small_cnn_zoo_layout=args.small_cnn_zoo_layout, **common)
    from nfn_lab.builders.inr_zoo import INRZooConfig, build_inr_zoo

    config = INRZooConfig(args.variant, args.augmented_copies, args.steps, args.lr, args.seed, args.chunk_size)
    return build_inr_zoo(args.out, config, args.images, args.size, **common)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``nfn-lab zoo build`` with ``argv`` (the arguments after ``build``); returns the exit status.

    Errors (an existing output, bad images, ...) propagate to :func:`nfn_lab.cli.zoo.main`,
    which prints them.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        out = _run(args, shlex.join(["nfn-lab", "zoo", "build", *argv]))
    except KeyboardInterrupt:
        work = args.out.parent / f"{args.out.name}.work"
        print(f"\ninterrupted; finished chunks are kept in {work}: rerun the same command to resume.", file=sys.stderr)
        return 130
    print(f"wrote {out}")
    return 0
