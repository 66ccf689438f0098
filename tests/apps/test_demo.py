"""The demo (``python -m nfn_lab.apps.demo``), run at a reduced size."""

from __future__ import annotations

import re

import pytest
import torch

from nfn_lab.apps import demo
from nfn_lab.conversion import module_to_wsfeat
from nfn_lab.digits import NUM_TRAIN_IMAGES, Digits, load_digits_split
from nfn_lab.weightspace import collate_wsfeat

SMALL = {"num_networks": 4, "epochs": 1, "channels": 4}


@pytest.fixture(scope="module")
def result() -> demo.DemoResult:
    torch.manual_seed(0)
    return demo.run(**SMALL, progress=False)


@pytest.fixture(scope="module")
def digits() -> Digits:
    return load_digits_split()


def test_digits_split_is_disjoint_and_complete(digits: Digits) -> None:
    assert digits.x_train.shape == (NUM_TRAIN_IMAGES, 64)
    assert digits.x_train.shape[0] + digits.x_test.shape[0] == 1797
    assert digits.x_train.min() >= 0.0 and digits.x_train.max() <= 1.0
    assert set(digits.y_test.tolist()) == set(range(10))


def test_training_improves_accuracy(digits: Digits) -> None:
    barely = demo.train_classifier(digits, lr=1e-3, steps=1, seed=0)
    trained = demo.train_classifier(digits, lr=1e-2, steps=60, seed=0)
    assert barely.test_accuracy < 0.5 < 0.85 < trained.test_accuracy


def test_permuting_hidden_neurons_preserves_the_networks(result: demo.DemoResult) -> None:
    assert result.max_weight_change > 0.1  # the permutation really moved the weights
    assert result.max_logit_change < 1e-4


def test_nfn_is_invariant_and_flat_mlp_is_not(result: demo.DemoResult) -> None:
    assert result.max_nfn_change < 1e-5
    assert result.max_flat_change > 1e-3


def test_result_shapes(result: demo.DemoResult) -> None:
    assert len(result.zoo) == len(result.nfn_predictions) == len(result.flat_predictions) == 4
    assert result.is_heldout == [False, False, False, True]
    assert all(0.0 <= p <= 1.0 for p in result.nfn_predictions + result.flat_predictions)


def test_each_network_gets_its_own_permutation() -> None:
    torch.manual_seed(0)
    model = demo.make_classifier()
    wsfeat = module_to_wsfeat([model, model])  # two identical networks
    permuted = demo.permute_each_network(wsfeat, seed=0)
    first, second = (permuted.map(lambda t, b=b: t[b]) for b in range(2))
    assert not torch.equal(first.weights[1], second.weights[1])
    # both are permutations of the same weights: same multiset of entries
    assert torch.equal(first.weights[1].flatten().sort().values, second.weights[1].flatten().sort().values)
    assert collate_wsfeat([first, second]).batch_size == 2


def test_report_shows_the_measured_numbers(result: demo.DemoResult) -> None:
    report = demo.format_report(result)
    assert len(re.findall(r"\(held out\)", report)) == 1
    assert f"{result.max_nfn_change:.2e}  (invariant)" in report
    assert f"{result.max_flat_change:.2e}  (not invariant)" in report


def test_main_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        demo.main(["--num-networks", "2", "--epochs", "1"])  # sets one thread
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    logit_change = float(re.search(r"networks' test logits\s+(\S+)", out).group(1))
    nfn_change = float(re.search(r"NFN's predictions\s+(\S+)", out).group(1))
    assert logit_change < 1e-4 and nfn_change < 1e-5


def test_run_rejects_a_zoo_too_small_to_hold_out() -> None:
    with pytest.raises(ValueError, match="num_networks"):
        demo.run(num_networks=1, epochs=1, progress=False)
