"""A two-minute demonstration of weight-space learning on data bundled with scikit-learn.

``python -m nfn_lab.apps.demo`` (or ``make demo``):

1. trains a small zoo of MLP classifiers ``64 -> 32 -> 32 -> 10`` on scikit-learn's 8x8
   digits, with learning rates, step counts and seeds varied so their test accuracies
   spread out;
2. converts the zoo to :class:`~nfn_lab.weightspace.WeightSpaceFeatures`
   (``weights[i]: (B, 1, n_out, n_in)``) and fits an HNP-invariant NFN
   (HNPLinear -> ReLU -> HNPLinear -> ReLU -> HNPPool -> Linear -> Sigmoid) and, as a baseline, an MLP
   on the flattened weights, to predict each network's test accuracy from its weights;
3. permutes every network's hidden neurons (a different random permutation per network)
   and shows that the networks compute the same function and the NFN predicts the same
   accuracy, while the flat-weights MLP does not.

Everything runs on one CPU thread with a fixed seed; no downloads.
"""

from __future__ import annotations

import argparse
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from nfn_lab.conversion import module_to_wsfeat, wsfeat_to_modules
from nfn_lab.digits import Digits, load_digits_split
from nfn_lab.layers import FlattenWeights, HNPLinear, HNPPool, TupleOp
from nfn_lab.symmetry import feature_layer_sizes, permute_features, sample_permutations
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures, collate_wsfeat, network_spec_from_wsfeat

__all__ = [
    "DemoResult",
    "ZooMember",
    "build_flat_mlp",
    "build_invariant_nfn",
    "fit_accuracy_predictor",
    "format_report",
    "main",
    "make_classifier",
    "permute_each_network",
    "run",
    "train_classifier",
    "train_zoo",
]

HIDDEN = 32  # width of the zoo's two hidden layers
LR_RANGE = (3e-4, 3e-2)  # Adam learning rates of the zoo, sampled log-uniformly
STEPS_RANGE = (1, 200)  # full-batch training steps of the zoo, sampled log-uniformly


@dataclass(frozen=True)
class ZooMember:
    """One trained classifier, its hyperparameters and its accuracy on ``Digits.x_test``."""

    model: nn.Module
    lr: float
    steps: int
    seed: int
    test_accuracy: float


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run` measured; every ``max_*_change`` is a max absolute difference.

    Attributes:
        zoo: the trained classifiers.
        is_heldout: per network, whether it was held out from fitting the predictors.
        nfn_predictions: the NFN's predicted test accuracy per network.
        flat_predictions: the flat-weights MLP's predicted test accuracy per network.
        max_weight_change: how much permuting the hidden neurons changed the weights.
        max_logit_change: how much it changed the networks' test-set logits.
        max_nfn_change: how much it changed the NFN's predictions.
        max_flat_change: how much it changed the flat-weights MLP's predictions.
    """

    zoo: list[ZooMember]
    is_heldout: list[bool]
    nfn_predictions: list[float]
    flat_predictions: list[float]
    max_weight_change: float
    max_logit_change: float
    max_nfn_change: float
    max_flat_change: float

    @property
    def accuracies(self) -> list[float]:
        return [m.test_accuracy for m in self.zoo]

    def heldout_mae(self, predictions: Sequence[float]) -> float:
        """Mean absolute error of ``predictions`` on the held-out networks."""
        errors = [abs(p - a) for p, a, h in zip(predictions, self.accuracies, self.is_heldout) if h]
        return sum(errors) / len(errors)


def make_classifier() -> nn.Sequential:
    """The zoo's architecture: ``64 -> 32 -> 32 -> 10`` with ReLU."""
    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return (model(x).argmax(dim=-1) == y).float().mean().item()


def train_classifier(data: Digits, lr: float, steps: int, seed: int) -> ZooMember:
    """Trains one :func:`make_classifier` with full-batch Adam and measures its test accuracy."""
    torch.manual_seed(seed)
    model = make_classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):  # full batch
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
        optimizer.step()
    return ZooMember(model.eval(), lr, steps, seed, _accuracy(model, data.x_test, data.y_test))


def _log_uniform(low: float, high: float, generator: torch.Generator) -> float:
    return math.exp(math.log(low) + (math.log(high) - math.log(low)) * torch.rand((), generator=generator).item())


def train_zoo(data: Digits, num_networks: int, seed: int = 0, progress: bool = True) -> list[ZooMember]:
    """Trains ``num_networks`` classifiers with log-uniform random learning rates and step counts."""
    generator = torch.Generator().manual_seed(seed)
    zoo = []
    for i in tqdm(range(num_networks), desc="training the zoo", disable=not progress):
        lr = _log_uniform(*LR_RANGE, generator)
        steps = round(_log_uniform(*STEPS_RANGE, generator))
        zoo.append(train_classifier(data, lr, steps, seed=seed * 10_000 + i))
    return zoo


def build_invariant_nfn(network_spec: NetworkSpec, channels: int = 16) -> nn.Sequential:
    """The HNP-invariant accuracy predictor: features ``(B, 1, ...)`` -> ``(B, 1)``.

    HNPLinear -> ReLU -> HNPLinear -> ReLU -> HNPPool -> Flatten -> Linear -> Sigmoid.
    """
    return nn.Sequential(
        HNPLinear(network_spec, in_channels=1, out_channels=channels),
        TupleOp(nn.ReLU()),
        HNPLinear(network_spec, in_channels=channels, out_channels=channels),
        TupleOp(nn.ReLU()),
        HNPPool(network_spec),  # (B, C, num_outs)
        nn.Flatten(),  # (B, C * num_outs)
        nn.Linear(channels * HNPPool.get_num_outs(network_spec), 1),
        nn.Sigmoid(),  # accuracies lie in [0, 1]
    )


def build_flat_mlp(network_spec: NetworkSpec, hidden: int = 32) -> nn.Sequential:
    """A baseline that ignores the symmetry: an MLP on all weights concatenated, features -> ``(B, 1)``.

    Args:
        network_spec: the weight space with every size set (``set_all_dims=True``).
        hidden: the MLP's width.
    """
    flatten = FlattenWeights(network_spec)
    return nn.Sequential(
        flatten,  # (B, N_params, 1)
        nn.Flatten(),  # (B, N_params)
        nn.Linear(flatten.num_params, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
        nn.Sigmoid(),  # accuracies lie in [0, 1]
    )


def fit_accuracy_predictor(
    model: nn.Module,
    wsfeat: WeightSpaceFeatures,
    targets: Tensor,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    name: str = "predictor",
) -> None:
    """Fits ``model`` (features ``(B, 1, ...)`` -> ``(B, 1)``) to ``targets: (B,)`` with MSE and Adam.

    ``name`` labels the progress bar.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in tqdm(range(epochs), desc=f"fitting the {name}", disable=not progress):
        for idx in torch.randperm(len(targets), generator=generator).split(batch_size):
            batch = wsfeat.map(operator.itemgetter(idx))
            optimizer.zero_grad()
            nn.functional.mse_loss(model(batch).squeeze(-1), targets[idx]).backward()
            optimizer.step()
    model.eval()


def permute_each_network(wsfeat: WeightSpaceFeatures, seed: int = 0) -> WeightSpaceFeatures:
    """Applies an independent random hidden-neuron (HNP) permutation to each network of the batch."""
    generator = torch.Generator().manual_seed(seed)
    sizes = feature_layer_sizes(wsfeat)
    items = [
        permute_features(wsfeat.map(operator.itemgetter(b)), sample_permutations(sizes, "hnp", generator), lead=1)
        for b in range(wsfeat.batch_size)
    ]
    return collate_wsfeat(items)


def _max_abs_change(a: WeightSpaceFeatures | Tensor, b: WeightSpaceFeatures | Tensor) -> float:
    if isinstance(a, WeightSpaceFeatures) and isinstance(b, WeightSpaceFeatures):
        return max(_max_abs_change(x, y) for x, y in zip([*a.weights, *a.biases], [*b.weights, *b.biases]))
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return (a - b).abs().max().item()
    raise TypeError(f"cannot compare {type(a).__name__} with {type(b).__name__}.")


@torch.no_grad()
def _logits(models: Sequence[nn.Module], x: Tensor) -> Tensor:
    return torch.stack([m(x) for m in models])  # (B, N, 10)


def run(
    num_networks: int = 32,
    epochs: int = 150,
    channels: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> DemoResult:
    """The whole demonstration; see the module docstring.

    Args:
        num_networks: size of the zoo; the last quarter (at least one) is held out.
        epochs: passes over the training networks when fitting the two predictors.
        channels: hidden channels of the NFN.
        seed: seeds the data split, the zoo, the predictors and the permutations.
        progress: show tqdm progress bars.
    """
    if num_networks < 2:
        raise ValueError(f"num_networks must be at least 2 (one to fit, one held out), got {num_networks}.")
    torch.manual_seed(seed)
    data = load_digits_split(seed)
    zoo = train_zoo(data, num_networks, seed, progress)
    models = [m.model for m in zoo]
    wsfeat = module_to_wsfeat(models)  # weights[i]: (B, 1, n_out, n_in)
    targets = torch.tensor([m.test_accuracy for m in zoo])  # (B,)
    num_heldout = max(1, num_networks // 4)
    fit_idx = torch.arange(num_networks - num_heldout)

    nfn = build_invariant_nfn(network_spec_from_wsfeat(wsfeat), channels)
    flat = build_flat_mlp(network_spec_from_wsfeat(wsfeat, set_all_dims=True))
    fit_features = wsfeat.map(lambda t: t[fit_idx])
    for name, predictor in (("NFN", nfn), ("flat-weights MLP", flat)):
        fit_accuracy_predictor(
            predictor, fit_features, targets[fit_idx], epochs, seed=seed, progress=progress, name=name
        )

    permuted = permute_each_network(wsfeat, seed)
    permuted_models = wsfeat_to_modules(permuted, template=models[0])
    with torch.no_grad():
        nfn_pred, nfn_pred_permuted = nfn(wsfeat).squeeze(-1), nfn(permuted).squeeze(-1)  # (B,) each
        flat_pred, flat_pred_permuted = flat(wsfeat).squeeze(-1), flat(permuted).squeeze(-1)
    return DemoResult(
        zoo=zoo,
        is_heldout=[i >= num_networks - num_heldout for i in range(num_networks)],
        nfn_predictions=nfn_pred.tolist(),
        flat_predictions=flat_pred.tolist(),
        max_weight_change=_max_abs_change(wsfeat, permuted),
        max_logit_change=_max_abs_change(_logits(models, data.x_test), _logits(permuted_models, data.x_test)),
        max_nfn_change=_max_abs_change(nfn_pred, nfn_pred_permuted),
        max_flat_change=_max_abs_change(flat_pred, flat_pred_permuted),
    )


def format_report(result: DemoResult) -> str:
    """The tables that :func:`main` prints."""
    lines = [
        "The zoo: 64-32-32-10 MLPs trained on scikit-learn's digits, and their predicted test accuracies",
        "(both predictors were fitted on the networks not marked 'held out')",
        f"{'net':>4} {'lr':>8} {'steps':>6} {'test acc':>9} {'NFN pred':>9} {'flat pred':>10}",
    ]
    for i, (member, nfn, flat, heldout) in enumerate(
        zip(result.zoo, result.nfn_predictions, result.flat_predictions, result.is_heldout)
    ):
        mark = "  (held out)" if heldout else ""
        lines.append(
            f"{i:>4} {member.lr:>8.1e} {member.steps:>6} {member.test_accuracy:>9.3f} {nfn:>9.3f} {flat:>10.3f}{mark}"
        )
    heldout_acc = [a for a, h in zip(result.accuracies, result.is_heldout) if h]
    fit_acc = [a for a, h in zip(result.accuracies, result.is_heldout) if not h]
    mean_fit = sum(fit_acc) / len(fit_acc)
    lines += [
        "",
        "Mean absolute error on the held-out networks:",
        f"  HNP-invariant NFN                {result.heldout_mae(result.nfn_predictions):.3f}",
        f"  MLP on flattened weights         {result.heldout_mae(result.flat_predictions):.3f}",
        f"  always predicting the mean       {sum(abs(a - mean_fit) for a in heldout_acc) / len(heldout_acc):.3f}",
        "",
        "Permuting the hidden neurons of every network (a different random permutation each):",
        f"  max |change| of the weights                   {result.max_weight_change:.2e}",
        f"  max |change| of the networks' test logits     {result.max_logit_change:.2e}  (same functions)",
        f"  max |change| of the NFN's predictions         {result.max_nfn_change:.2e}  (invariant)",
        f"  max |change| of the flat MLP's predictions    {result.max_flat_change:.2e}  (not invariant)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m nfn_lab.apps.demo`` and the ``nfn-lab-demo`` script."""
    parser = argparse.ArgumentParser(prog="nfn-lab-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-networks", type=int, default=32, help="size of the zoo (default: 32)")
    parser.add_argument("--epochs", type=int, default=150, help="epochs fitting the predictors (default: 150)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = run(num_networks=args.num_networks, epochs=args.epochs, seed=args.seed)
    print(format_report(result))


if __name__ == "__main__":
    main()
