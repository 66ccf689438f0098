"""Writes a small NFN SIREN zoo in the exact public layout (see ``datamodules/nfn_siren.py``).

Real SIRENs (the ``"nfn"`` variant of :class:`nfn_lab.siren.Siren`) are fit, a few Adam
steps each and all at once, to scikit-learn digits upsampled and padded to 28x28 (32x32
for 3 channels, like CIFAR-10) in ``[-1, 1]``. Image ``idx`` with label ``y`` gives

    <root>/randinit_smaller_<y>s/net<idx>.pth            (base set)
    <root>/randinit_smaller_aug<i>_<y>s/net<idx>.pth     (augmented copy i: another init)

each a ``torch.save``'d state dict with the public keys ``net.0.linear.weight`` ...
``net.2.bias``. Run ``python -m tests.data.nfn_siren.generate OUT_DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nfn_lab.conversion import wsfeat_to_state_dicts
from nfn_lab.siren import Siren, fit
from tests.data.digits import digit_images, one_thread

PREFIX = "randinit_smaller"


def folder(label: int, copy: int | None = None, prefix: str = PREFIX) -> str:
    """The folder name of ``label``'s base set (``copy=None``) or of augmented copy ``copy``."""
    return f"{prefix}_{label}s" if copy is None else f"{prefix}_aug{copy}_{label}s"


def generate(
    root: str | Path,
    num_images: int = 12,
    aug_copies: int = 2,
    channels: int = 1,
    steps: int = 5,
    prefix: str = PREFIX,
    seed: int = 0,
) -> dict[Path, dict[str, torch.Tensor]]:
    """Fits ``num_images * (1 + aug_copies)`` SIRENs and writes them under ``root``.

    Returns:
        every written file and the state dict saved in it.
    """
    size = 32 if channels == 3 else 28
    images, labels = digit_images(num_images, size=size, channels=channels, low=-1.0, high=1.0)
    copies = [None, *range(aug_copies)]
    with one_thread():
        fitted = fit(images.repeat(len(copies), 1, 1, 1), "nfn", steps=steps, seed=seed)  # copy-major order
    state_dicts = wsfeat_to_state_dicts(fitted, Siren("nfn", out_features=channels))
    written = {}
    for k, state_dict in enumerate(state_dicts):
        copy, idx = copies[k // num_images], k % num_images
        path = Path(root) / folder(int(labels[idx]), copy, prefix) / f"net{idx}.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        state_dict = {key: value.clone() for key, value in state_dict.items()}  # own storage, not the batch's
        torch.save(state_dict, path)
        written[path] = state_dict
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--aug-copies", type=int, default=2)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    written = generate(args.root, args.images, args.aug_copies, args.channels, args.steps)
    print(f"wrote {len(written)} SIRENs under {args.root}")


if __name__ == "__main__":
    main()
