"""The ``nfn-lab`` command (also ``python -m nfn_lab``).

``nfn-lab zoo ...`` inspects, converts and builds model zoos (:mod:`nfn_lab.cli.zoo`,
plain argparse: it never imports lightning unless a zoo format needs it). The training
commands ``fit``/``validate``/``test``/``predict`` run LightningCLI
(:mod:`nfn_lab.cli.train`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

TRAINING_COMMANDS = ("fit", "validate", "test", "predict")
USAGE = f"""usage: nfn-lab {{zoo,sweep,{",".join(TRAINING_COMMANDS)}}} ...

  zoo       inspect, convert and build model zoos (nfn-lab zoo --help)
  sweep     run a sweep file (W&B format) with W&B online or Optuna offline (nfn-lab sweep --help)
  {"/".join(TRAINING_COMMANDS)}
            train and evaluate: nfn-lab fit --config experiments/...yaml
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``nfn-lab`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "zoo":
        from nfn_lab.cli.zoo import main as zoo_main

        return zoo_main(args[1:])
    if args and args[0] == "sweep":
        from nfn_lab.cli.sweep import main as sweep_main

        return sweep_main(args[1:])
    if args and args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if args and args[0] in TRAINING_COMMANDS:
        from nfn_lab.cli.train import run

        run(args if argv is not None else None)  # None: LightningCLI reads sys.argv itself
        return 0
    print(USAGE, end="", file=sys.stderr)
    print(f"nfn-lab: error: {'no command given' if not args else f'unknown command {args[0]!r}'}.", file=sys.stderr)
    return 2
