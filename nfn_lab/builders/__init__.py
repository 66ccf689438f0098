"""Builders of real model zoos, offline: ``nfn-lab zoo build cnn|inr OUT ...``.

- :func:`build_cnn_zoo` (:mod:`~nfn_lab.builders.cnn_zoo`): small CNNs with the Small CNN
  Zoo's weight shapes and hyperparameter ranges, trained on scikit-learn's digits, several
  checkpoints each; optionally also written in the Small CNN Zoo's own file layout.
- :func:`build_inr_zoo` (:mod:`~nfn_lab.builders.inr_zoo`): one SIREN per image (digits,
  an image folder or a tensor file) in the NFN or DWSNets variant, with augmented copies.

Both train many networks at once (``torch.func`` over stacked parameters), are
deterministic given their configuration, save finished chunks in ``<OUT>.work`` so an
interrupted build resumes where it stopped, and write the zoo atomically in nfn-lab's
Arrow format through the format's writer (:class:`datamodules.arrow_zoo.ZooWriter`), with a
``README.md`` card and ``zoo.json`` recording how it was made. The command line is :mod:`nfn_lab.cli.build`.
"""

from nfn_lab.builders.cnn_zoo import CNNZooConfig, build_cnn_zoo
from nfn_lab.builders.inr_zoo import INRZooConfig, build_inr_zoo

__all__ = ["CNNZooConfig", "INRZooConfig", "build_cnn_zoo", "build_inr_zoo"]
