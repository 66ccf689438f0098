"""Real digit images for the INR zoo generators (scikit-learn's bundled 8x8 digits, offline)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor


def digit_images(
    num: int, size: int = 28, channels: int = 1, low: float = -1.0, high: float = 1.0
) -> tuple[Tensor, Tensor]:
    """The first ``num`` digits (cycling through the 1,797), upsampled 3x (nearest) to 24x24, padded to ``size``.

    Returns:
        images ``(num, channels, size, size)`` float32 in ``[low, high]`` (grey copied to
        every channel) and labels ``(num,)`` int64.
    """
    digits = load_digits()
    if num < 1 or size < 24:
        raise ValueError(f"need num >= 1 and size >= 24, got num={num}, size={size}.")
    order = np.arange(num) % len(digits.images)
    pixels = torch.as_tensor(digits.images[order], dtype=torch.float32)[:, None] / 16  # (num, 1, 8, 8) in [0, 1]
    pixels = F.interpolate(pixels, scale_factor=3, mode="nearest")  # (num, 1, 24, 24)
    before = (size - 24) // 2
    pixels = F.pad(pixels, (before, size - 24 - before, before, size - 24 - before))  # (num, 1, size, size)
    images = (low + (high - low) * pixels).expand(-1, channels, -1, -1).contiguous()
    return images, torch.as_tensor(digits.target[order], dtype=torch.int64)


@contextmanager
def one_thread() -> Iterator[None]:
    """Runs the block with one torch thread (faster for tiny SIRENs on a busy machine), then restores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
