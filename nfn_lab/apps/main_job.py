"""The main job (``make run`` / ``python -m nfn_lab.apps.main_job``): predict CNN generalization from weights.

1. Builds the digits CNN zoo (``nfn-lab zoo build cnn``) unless it is already there: small
   CNNs of the Small CNN Zoo's exact shapes trained on scikit-learn's bundled digits.
2. Trains the HNP-invariant NFN and the StatNN baseline with the experiment configs
   ``experiments/digits/predict_gen_{hnp,stat}.yaml`` through the normal CLI.
3. Tests the best checkpoint of each and prints Kendall's tau, R^2 and L1, with the path
   of each predicted-vs-actual scatter plot.

Everything runs offline on the CPU; W&B logs offline beside the CSV logs. Every folder is an
argument (``--zoo``, ``--runs``, ``--experiments``) whose default is relative to the current
directory, so the job runs from the repository root as it is, and from anywhere else with
``--experiments`` pointing at a copy of the repository's ``experiments/`` folder.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelResult", "format_table", "main", "run_main_job"]

CONFIGS = {"NFN (HNP)": "digits/predict_gen_hnp.yaml", "StatNN": "digits/predict_gen_stat.yaml"}  # under experiments/


@dataclass
class ModelResult:
    name: str
    kendall_tau: float
    r2: float
    l1: float
    seconds: float
    scatter: Path | None
    log_dir: Path


def ensure_zoo(root: Path, num_networks: int, seed: int) -> None:
    """Builds the digits CNN zoo at ``root`` unless a complete one is there."""
    if (root / "zoo.json").exists():
        print(f"Using the digits CNN zoo at {root}.")
        return
    from nfn_lab.cli.build import main as build

    print(f"Building the digits CNN zoo ({num_networks} networks) at {root} ...")
    status = build(["cnn", str(root), "--num-networks", str(num_networks), "--seed", str(seed)])
    if status != 0:
        raise SystemExit(f"building the zoo failed (exit status {status}); see the message above.")


def config_paths(experiments: Path) -> dict[str, Path]:
    """Model name -> its experiment config under ``experiments``; one-line error if one is missing."""
    paths = {name: experiments / config for name, config in CONFIGS.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise SystemExit(
            f"main job: {', '.join(missing)} not found; run from the repository root or pass "
            "--experiments DIR (the repository's experiments/ folder)."
        )
    return paths


def train_and_test(name: str, config: Path, zoo: Path, epochs: int, runs: Path, wandb: str) -> ModelResult:
    """One fit with the experiment config, then a test of its best checkpoint."""
    from nfn_lab.cli.train import run

    start = time.perf_counter()
    cli = run(
        [
            "fit",
            "--config", str(config),
            "--data.init_args.root", str(zoo),
            "--trainer.max_epochs", str(epochs),
            "--trainer.default_root_dir", str(runs),
            "--trainer.enable_model_summary", "false",
            "--wandb", wandb,
        ]
    )  # fmt: skip
    metrics = cli.test_results[0]  # the CLI tests the best checkpoint after fit
    return ModelResult(
        name=name,
        kendall_tau=metrics["test/kendall_tau"],
        r2=metrics["test/r2"],
        l1=metrics["test/l1"],
        seconds=time.perf_counter() - start,
        scatter=getattr(cli.model, "scatter_path", None),
        log_dir=Path(cli.trainer.log_dir or runs),
    )


def format_table(results: Sequence[ModelResult]) -> str:
    lines = [
        "Predicting test accuracy from weights (digits CNN zoo, test split)",
        f"{'model':<12} {'Kendall tau':>11} {'R^2':>8} {'L1':>8} {'time':>8}",
    ]
    for r in results:
        lines.append(f"{r.name:<12} {r.kendall_tau:>11.3f} {r.r2:>8.3f} {r.l1:>8.3f} {r.seconds:>7.0f}s")
    lines.append("")
    for r in results:
        lines.append(f"{r.name}: scatter plot {r.scatter}; logs, config and checkpoints in {r.log_dir}")
    return "\n".join(lines)


def run_main_job(
    zoo: Path,
    runs: Path,
    epochs: int,
    num_networks: int,
    seed: int = 0,
    wandb: str = "offline",
    experiments: Path = Path("experiments"),
) -> list[ModelResult]:
    """Builds the zoo if needed, then trains and tests each model of :data:`CONFIGS`."""
    configs = config_paths(experiments)  # before the zoo build: a wrong folder fails at once
    ensure_zoo(zoo, num_networks, seed)
    return [train_and_test(name, config, zoo, epochs, runs, wandb) for name, config in configs.items()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nfn_lab.apps.main_job", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--zoo", type=Path, default=Path("data/digits_cnn_zoo"), help="the zoo's folder (default: data/digits_cnn_zoo)"
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/main_job"), help="where runs are logged (default: runs/main_job)"
    )
    parser.add_argument(
        "--experiments",
        type=Path,
        default=Path("experiments"),
        help="the repository's experiment configs (default: experiments)",
    )
    parser.add_argument("--epochs", type=int, default=6, help="training epochs per model (default: 6)")
    parser.add_argument("--num-networks", type=int, default=1024, help="networks in a newly built zoo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.num_networks < 8:
        parser.error("--epochs must be >= 1 and --num-networks >= 8.")
    import torch

    torch.set_num_threads(1)  # small models: one thread is fastest here
    results = run_main_job(args.zoo, args.runs, args.epochs, args.num_networks, args.seed, args.wandb, args.experiments)
    print()
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
