"""scikit-learn's bundled 8x8 digits, split once for every offline zoo and demo (no download)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from torch import Tensor

__all__ = ["NUM_TRAIN_IMAGES", "Digits", "load_digits_split"]

NUM_TRAIN_IMAGES = 1200  # of the 1,797 digits; the other 597 are the test set


@dataclass(frozen=True)
class Digits:
    """scikit-learn's digits, pixels scaled to [0, 1]: ``x_*: (N, 64)``, ``y_*: (N,)``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digits_split(seed: int = 0) -> Digits:
    """The 1,797 digits bundled with scikit-learn, shuffled and split 1,200 / 597."""
    x, y = load_digits(return_X_y=True)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x = torch.as_tensor(x, dtype=torch.float32)[order] / 16.0  # (1797, 64), pixels in [0, 1]
    y = torch.as_tensor(y)[order]  # (1797,)
    n = NUM_TRAIN_IMAGES
    return Digits(x[:n], y[:n], x[n:], y[n:])
