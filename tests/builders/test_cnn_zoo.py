"""The CNN zoo builder: the architecture, hyperparameters, and whole builds (deterministic, resumable, exact)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datamodules.arrow_zoo import batch_to_tensors
from datamodules.small_cnn_zoo import SmallCNNZooDataset
from nfn_lab import _fast_math
from nfn_lab.builders import cnn_zoo
from nfn_lab.builders.cnn_zoo import (
    PARAM_SHAPES,
    SEARCH_SPACE,
    TARGETS,
    CNNZooConfig,
    build_cnn_zoo,
    grouped_forward,
    init_network,
    sample_hyperparameters,
    small_cnn,
)
from nfn_lab.conversion import module_to_wsfeat, wsfeat_to_modules
from nfn_lab.data.arrow_container import open_zoo
from nfn_lab.data.card import read_zoo_info
from nfn_lab.digits import load_digits_split
from nfn_lab.weightspace import WeightSpaceFeatures

CONFIG = CNNZooConfig(num_networks=12, seed=3, steps=(0, 1, 2), chunk_size=2)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_cnn_zoo(tmp_path_factory.mktemp("cnn") / "zoo", CONFIG, small_cnn_zoo_layout=True, progress=False)


def _read(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every column of every split as numpy arrays."""
    return {split: open_zoo(root, split).with_format("numpy")[:] for split in read_zoo_info(root).splits}


def _digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits_split(0)
    return digits.x_test.reshape(-1, 1, 8, 8) * 2 - 1, digits.y_test


# --- the architecture and its vectorized forward ---------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_grouped_forward_is_the_modules_function(activation: str) -> None:
    gen = torch.Generator().manual_seed(0)
    hparams = {"w_init": "he_normal", "b_init": "RandomNormal", "init_std": 0.1}
    params = [torch.stack(a) for a in zip(*(init_network(hparams, gen) for _ in range(3)))]  # (3, *shape) each
    modules = wsfeat_to_modules(
        WeightSpaceFeatures([p.unsqueeze(1) for p in params[0::2]], [p.unsqueeze(1) for p in params[1::2]]),
        small_cnn(activation),
    )
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    expected = torch.stack([m.eval()(x) for m in modules])  # (3, 5, 10)
    torch.testing.assert_close(grouped_forward(params, x, None, activation), expected)  # shared images
    ones = [torch.ones(5, 3, 16, s, s) for s in (4, 2, 1)]  # keep-everything dropout masks
    # The same images as each network's own (image b of network n in channel n).
    torch.testing.assert_close(grouped_forward(params, x.expand(-1, 3, -1, -1), ones, activation), expected)


def _module_with_masks(module: torch.nn.Sequential, x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """``module``'s logits with its three dropout layers replaced by multiplying with ``masks[i]: (B, 16, s, s)``."""
    masks = iter(masks)
    for layer in module:
        x = x * next(masks) if isinstance(layer, torch.nn.Dropout) else layer(x)
    return x


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_grouped_forward_with_dropout_and_its_gradient_are_the_modules(activation: str) -> None:
    gen = torch.Generator().manual_seed(1)
    hparams = {"w_init": "glorot_uniform", "b_init": "RandomNormal", "init_std": 0.1}
    params = [torch.stack(a).double() for a in zip(*(init_network(hparams, gen) for _ in range(3)))]
    modules = wsfeat_to_modules(
        WeightSpaceFeatures([p.unsqueeze(1) for p in params[0::2]], [p.unsqueeze(1) for p in params[1::2]]),
        small_cnn(activation).double(),
    )
    x = torch.rand(5, 3, 8, 8, dtype=torch.float64) * 2 - 1  # image b of network n in channel n
    keep_prob = torch.tensor([0.5, 0.8, 1.0])
    masks = [m.double() for m in cnn_zoo._dropout_masks(keep_prob, 5, torch.Generator().manual_seed(2))]
    assert [tuple(m.shape) for m in masks] == [(5, 3, 16, s, s) for s in (4, 2, 1)]
    assert set(masks[0][:, 0].unique().tolist()) == {0.0, 2.0} and bool((masks[0][:, 2] == 1).all())
    leaves = [p.clone().requires_grad_() for p in params]
    logits = grouped_forward(leaves, x, masks, activation)  # (3, 5, 10)
    expected = [_module_with_masks(m, x[:, n : n + 1], [k[:, n] for k in masks]) for n, m in enumerate(modules)]
    torch.testing.assert_close(logits, torch.stack(expected))
    grads = torch.autograd.grad(logits.square().sum(), leaves)
    for n, m in enumerate(modules):
        want = torch.autograd.grad(expected[n].square().sum(), list(m.parameters()))
        for got, w in zip(grads, want, strict=True):
            torch.testing.assert_close(got[n], w)


def test_numpy_tanh_is_torchs_with_its_gradient() -> None:
    x = torch.randn(4, 6, 3, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = _fast_math.tanh(x)
    torch.testing.assert_close(y, torch.tanh(x))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(_fast_math.tanh, (x,))


def test_small_cnn_has_the_small_cnn_zoos_shapes() -> None:
    wsfeat = module_to_wsfeat(small_cnn("tanh"), example_input=torch.zeros(1, 1, 8, 8))
    assert [tuple(w.shape[2:]) for w in wsfeat.weights] == [PARAM_SHAPES[j] for j in range(0, 8, 2)]
    assert sum(math.prod(s) for s in PARAM_SHAPES) == 4970
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        small_cnn("gelu")


# --- hyperparameters and initialization -------------------------------------------------------------


def test_hyperparameters_cover_the_search_space_and_are_keyed_by_network() -> None:
    hparams = sample_hyperparameters(0, range(300))
    for name, dist in SEARCH_SPACE.items():
        values = [h[name] for h in hparams]
        if isinstance(dist, cnn_zoo.Choice):
            assert set(values) == set(dist.values), name
        else:
            assert dist.low <= min(values) and max(values) <= dist.high, name
            spread = (max(values) / min(values)) if dist.log else (max(values) - min(values))
            assert spread > ((dist.high / dist.low) ** 0.8 if dist.log else 0.8 * (dist.high - dist.low)), name
    assert sample_hyperparameters(0, [7]) == [hparams[7]]  # independent of the zoo's size
    assert sample_hyperparameters(1, [7]) != [hparams[7]]


@pytest.mark.parametrize(
    ("w_init", "expected_std"),
    [("he_normal", math.sqrt(2 / 144)), ("glorot_uniform", math.sqrt(6 / 288) / math.sqrt(3)), ("RandomNormal", 0.2)],
)
def test_initializers_have_kerass_scales(w_init: str, expected_std: float) -> None:
    weight = init_network({"w_init": w_init, "b_init": "zeros", "init_std": 0.2}, torch.Generator().manual_seed(0))[2]
    assert weight.shape == (16, 16, 3, 3)
    assert abs(weight.std().item() / expected_std - 1) < 0.1


def test_truncated_and_orthogonal_initializers() -> None:
    gen = torch.Generator().manual_seed(0)
    arrays = init_network({"w_init": "TruncatedNormal", "b_init": "RandomNormal", "init_std": 0.05}, gen)
    assert arrays[2].abs().max() <= 0.1 and arrays[1].abs().max() > 0  # within 2 std; biases drawn too
    kernel = init_network({"w_init": "orthogonal", "b_init": "zeros", "init_std": 0.05}, gen)[2].flatten(1)
    torch.testing.assert_close(kernel @ kernel.T, torch.eye(16), atol=1e-5, rtol=0)
    assert not init_network({"w_init": "orthogonal", "b_init": "zeros", "init_std": 0.05}, gen)[1].any()


# --- whole builds ---------------------------------------------------------------------------------------


def test_zoo_rows_splits_and_metadata(zoo: Path) -> None:
    info = read_zoo_info(zoo)
    columns = _read(zoo)
    ids = {split: set(c["network_id"].tolist()) for split, c in columns.items()}
    assert sum(len(v) for v in ids.values()) == CONFIG.num_networks
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    for split, c in columns.items():
        assert info.splits[split] == len(ids[split]) * len(CONFIG.steps)  # every checkpoint of a network, one split
        assert sorted(c["step"].tolist()) == sorted(list(CONFIG.steps) * len(ids[split]))
        assert c["is_final"].tolist() == [s == CONFIG.steps[-1] for s in c["step"].tolist()]
    assert set(info.target_names) == set(TARGETS)
    assert info.provenance["config"]["seed"] == 3 and "learning_rate" in info.provenance["search_space"]
    assert info.provenance["final_test_accuracy"]["count"] == CONFIG.num_networks
    assert (zoo / "README.md").read_text().count("final_test_accuracy") == 1
    assert not (zoo.parent / "zoo.work").exists()  # the work folder is removed once the zoo is written


def test_stored_weights_reproduce_the_recorded_accuracies(zoo: Path) -> None:
    info = read_zoo_info(zoo)
    batch = open_zoo(zoo, "train").with_format("numpy")[:]
    weights, biases, targets = batch_to_tensors(batch, info, info.target_names)
    x, y = _digits_test()
    for i, activation in enumerate(batch["activation"].tolist()):
        wsfeat = WeightSpaceFeatures([w[i : i + 1, None] for w in weights], [b[i : i + 1, None] for b in biases])
        (module,) = wsfeat_to_modules(wsfeat, small_cnn(activation))
        with torch.no_grad():
            logits = module.eval()(x)
        assert (logits.argmax(1) == y).float().mean().item() == pytest.approx(
            targets["test_accuracy"][i].item(), abs=1e-6
        )
        assert F.cross_entropy(logits, y).item() == pytest.approx(targets["test_loss"][i].item(), rel=1e-4)
    final = targets["test_accuracy"][torch.from_numpy(batch["is_final"])]
    assert final.max() - final.min() > 0.3  # the hyperparameters spread the accuracies even after 2 epochs


def test_same_seed_gives_the_same_zoo_and_another_seed_another(zoo: Path, tmp_path: Path) -> None:
    again = build_cnn_zoo(tmp_path / "again", CONFIG, progress=False)
    first, second = _read(zoo), _read(again)
    for split in first:
        for name in ("w0", "b1", "w3", "test_accuracy", "network_id", "learning_rate"):
            np.testing.assert_array_equal(first[split][name], second[split][name])
    other = build_cnn_zoo(tmp_path / "other", CNNZooConfig(num_networks=2, seed=4, steps=(0,)), progress=False)
    assert not np.array_equal(_read(other)["train"]["w1"][0], first["train"]["w1"][0])


def test_an_interrupted_build_resumes_to_the_same_zoo(zoo: Path, tmp_path: Path, record_calls) -> None:
    record_calls(cnn_zoo, "train_chunk", crash_on=2)
    out = tmp_path / "zoo"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cnn_zoo(out, CONFIG, progress=False)
    assert not out.exists()  # nothing that looks like a zoo
    assert sorted(p.name for p in (tmp_path / "zoo.work").glob("chunk-*")) == ["chunk-00000.pt"]

    calls = record_calls(cnn_zoo, "train_chunk")
    build_cnn_zoo(out, CONFIG, progress=False)
    assert len(calls) == len(cnn_zoo._Plan.make(CONFIG).chunks) - 1  # the finished chunk is not trained again
    first, resumed = _read(zoo), _read(out)
    for split in first:
        for name in ("w0", "b0", "w2", "train_loss", "network_id", "step"):
            np.testing.assert_array_equal(first[split][name], resumed[split][name])


def test_refuses_a_non_empty_output_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "zoo"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    monkeypatch.setattr(cnn_zoo, "train_chunk", lambda *a, **k: pytest.fail("trained before checking the output"))
    with pytest.raises(FileExistsError, match="not empty"):
        build_cnn_zoo(out, CNNZooConfig(num_networks=2, steps=(0,)), progress=False)
    assert (out / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_an_existing_zoo(tmp_path: Path) -> None:
    tiny = CNNZooConfig(num_networks=2, steps=(0,))
    out = build_cnn_zoo(tmp_path / "zoo", tiny, progress=False)
    with pytest.raises(FileExistsError):
        build_cnn_zoo(out, tiny, progress=False)
    build_cnn_zoo(out, CNNZooConfig(num_networks=3, steps=(0,)), overwrite=True, progress=False)
    assert sum(read_zoo_info(out).splits.values()) == 3


def test_small_cnn_zoo_layout_matches_the_arrow_zoo(zoo: Path) -> None:
    folder = zoo / cnn_zoo.SMALL_CNN_ZOO_FOLDER
    dataset = SmallCNNZooDataset(folder, split=None, target=list(TARGETS), step="last")
    assert len(dataset) == CONFIG.num_networks and dataset.network_spec == read_zoo_info(zoo).network_spec
    columns = _read(zoo)
    final = {int(n): (s, i) for s, c in columns.items() for i, n in enumerate(c["network_id"]) if c["is_final"][i]}
    for item in range(len(dataset)):  # rows are in network-id order
        feats, targets = dataset[item]
        split, row = final[item]
        for j, (w, b) in enumerate(feats):
            np.testing.assert_array_equal(w[0].flatten().numpy(), columns[split][f"w{j}"][row])
            np.testing.assert_array_equal(b[0].numpy(), columns[split][f"b{j}"][row])
        for name in TARGETS:
            assert targets[name].item() == pytest.approx(float(columns[split][name][row]), abs=1e-6)
    every = SmallCNNZooDataset(folder, split=None, step=None)
    assert len(every) == CONFIG.num_networks * len(CONFIG.steps)


def test_config_rejects_bad_steps() -> None:
    with pytest.raises(ValueError, match="steps must be increasing"):
        CNNZooConfig(steps=(0, 2, 1))
