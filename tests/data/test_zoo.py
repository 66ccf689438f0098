"""The base zoo Dataset/DataModule, transforms and statistics, on an in-memory zoo of real MLPs."""

import pytest
import torch
from torch import nn

from nfn_lab.conversion import module_to_wsfeat, wsfeat_to_modules
from nfn_lab.data import (
    EvalDistributedSampler,
    RandomHiddenPermutation,
    RandomPositiveScale,
    RandomSignFlip,
    TensorZooDataModule,
    TensorZooDataset,
    compute_weight_stats,
)
from nfn_lab.weightspace import WeightSpaceFeatures, collate


def _mlp(act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 6), act(), nn.Linear(6, 5), act(), nn.Linear(5, 2))


def memory_zoo(feats, targets, transform=None):
    return TensorZooDataset(feats, {"y": targets}, transform)


def memory_datamodule(root, feats, targets, **kwargs):
    return TensorZooDataModule(feats, {"y": targets}, split_sizes=(10, 5, -1), root=root, **kwargs)


@pytest.fixture
def zoo():
    torch.manual_seed(0)
    models = [_mlp() for _ in range(21)]  # odd split sizes on purpose
    return models, module_to_wsfeat(models).detach(), torch.rand(21)


def test_items_have_channel_axis_and_targets(zoo):
    models, feats, targets = zoo
    ds = memory_zoo(feats, targets)
    item, tgt = ds[3]
    assert item.weights[0].shape == (1, 6, 3)
    torch.testing.assert_close(item.weights[1][0], models[3][2].weight.detach())
    assert tgt["y"] == targets[3]
    with pytest.raises(IndexError, match="out of range"):
        ds[21]


def test_collate_batches_items(zoo):
    _, feats, targets = zoo
    ds = memory_zoo(feats, targets)
    batch, tgt = collate([ds[i] for i in range(4)])
    assert batch.weights[2].shape == (4, 1, 2, 5) and tgt["y"].shape == (4,)


@pytest.mark.parametrize(
    "act,transform",
    [(nn.ReLU, RandomHiddenPermutation()), (nn.ReLU, RandomPositiveScale()), (nn.Tanh, RandomSignFlip())],
)
def test_augmentations_preserve_function(act, transform):
    torch.manual_seed(1)
    models = [_mlp(act) for _ in range(3)]
    feats = module_to_wsfeat(models).detach()
    ds = memory_zoo(feats, torch.zeros(3), transform=transform)
    inputs = torch.randn(10, 3)
    for i, model in enumerate(models):
        aug, _ = ds[i]
        assert not torch.allclose(aug.weights[0][0], model[0].weight)
        rebuilt = wsfeat_to_modules(collate([aug]), _mlp(act))[0]
        torch.testing.assert_close(rebuilt(inputs), model(inputs), atol=1e-5, rtol=1e-5)


def test_positive_scale_is_not_a_symmetry_of_tanh():
    torch.manual_seed(2)
    model = _mlp(nn.Tanh)
    ds = memory_zoo(module_to_wsfeat([model]).detach(), torch.zeros(1), transform=RandomPositiveScale(0.3, 3.0))
    rebuilt = wsfeat_to_modules(collate([ds[0][0]]), _mlp(nn.Tanh))[0]
    inputs = torch.randn(10, 3)
    assert not torch.allclose(rebuilt(inputs), model(inputs), atol=1e-4)


def test_weight_stats_match_direct_computation(zoo):
    _, feats, targets = zoo
    stats = compute_weight_stats([collate([memory_zoo(feats, targets)[i] for i in range(21)])], progress=False)
    torch.testing.assert_close(stats.weight_mean[1], feats.weights[1].mean().reshape(1))
    torch.testing.assert_close(stats.bias_std[2], feats.biases[2].std(unbiased=False).reshape(1), rtol=1e-4, atol=1e-6)
    normalized = stats.normalizer()(WeightSpaceFeatures([w[0] for w in feats.weights], [b[0] for b in feats.biases]))
    assert normalized.weights[0].shape == (1, 6, 3)
    with pytest.raises(ValueError, match="empty split"):
        compute_weight_stats([], progress=False)


def test_datamodule_loaders_and_normalization(zoo, tmp_path):
    _, feats, targets = zoo
    dm = memory_datamodule(tmp_path, feats, targets, batch_size=4, normalize=True, augment=[RandomHiddenPermutation()])
    assert dm.network_spec.layer_sizes == (3, 6, 5, 2)  # before setup
    dm.setup("fit")
    batch, tgt = next(iter(dm.train_dataloader()))
    assert batch.batch_size == 4 and tgt["y"].shape == (4,)
    train = torch.cat([b.weights[0].flatten() for b, _ in dm.train_dataloader()])
    assert abs(train.mean().item()) < 1e-5 and abs(train.std().item() - 1) < 0.05
    assert list((tmp_path / ".nfn_lab_cache").glob("stats-*.json")), "statistics are cached beside the zoo"
    assert sum(b.batch_size for b, _ in dm.val_dataloader()) == 5
    assert sum(b.batch_size for b, _ in dm.test_dataloader()) == 6


def test_cached_stats_are_reused(zoo, tmp_path):
    _, feats, targets = zoo
    first = memory_datamodule(tmp_path, feats, targets).compute_weight_stats(progress=False)
    changed = feats.map(lambda t: t + 100.0)  # same key, different data: the cache must win
    second = memory_datamodule(tmp_path, changed, targets).compute_weight_stats(progress=False)
    torch.testing.assert_close(first.weight_mean[0], second.weight_mean[0])


def test_unknown_split(zoo, tmp_path):
    _, feats, targets = zoo
    with pytest.raises(ValueError, match="unknown split"):
        memory_datamodule(tmp_path, feats, targets)._dataset("holdout", None)


@pytest.mark.parametrize("size,replicas", [(7, 2), (10, 3), (1, 2)])
def test_eval_sampler_covers_each_sample_once(size, replicas):
    data = list(range(size))
    shards = [list(EvalDistributedSampler(data, num_replicas=replicas, rank=r)) for r in range(replicas)]
    assert sorted(i for s in shards for i in s) == data
    assert [len(EvalDistributedSampler(data, num_replicas=replicas, rank=r)) for r in range(replicas)] == [
        len(s) for s in shards
    ]


def test_tensor_zoo_rejects_bad_splits_and_targets(zoo):
    _, feats, targets = zoo
    with pytest.raises(ValueError, match="do not divide 21 networks"):
        TensorZooDataModule(feats, {"y": targets}, split_sizes=(10, 10, 10))
    with pytest.raises(ValueError, match="has 3 values for 21 networks"):
        TensorZooDataset(feats, {"y": targets[:3]})
    with pytest.raises(ValueError, match="one channel"):
        TensorZooDataset(feats.map(lambda t: t.expand(-1, 2, *t.shape[2:])), {"y": targets})
