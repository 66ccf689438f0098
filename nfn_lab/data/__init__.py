"""Model zoos: base Dataset/DataModule, transforms, weight statistics, the registry of zoo formats."""

from nfn_lab.data.formats import register_format
from nfn_lab.data.memory import TensorZooDataModule, TensorZooDataset
from nfn_lab.data.stats import WeightStats, cached_weight_stats, compute_weight_stats
from nfn_lab.data.transforms import Compose, Normalize, RandomHiddenPermutation, RandomPositiveScale, RandomSignFlip
from nfn_lab.data.zoo import EvalDistributedSampler, Item, ZooDataModule, ZooDataset, check_finite

__all__ = [
    "Compose",
    "EvalDistributedSampler",
    "Item",
    "Normalize",
    "RandomHiddenPermutation",
    "RandomPositiveScale",
    "RandomSignFlip",
    "TensorZooDataModule",
    "TensorZooDataset",
    "WeightStats",
    "ZooDataModule",
    "ZooDataset",
    "cached_weight_stats",
    "check_finite",
    "compute_weight_stats",
    "register_format",
]
