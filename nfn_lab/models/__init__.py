"""Backbones: nn.Modules on weight-space features, each taking ``network_spec`` first."""

from nfn_lab.models.baselines import FlatMLP, StatNN
from nfn_lab.models.equivariant import EquivariantNFN
from nfn_lab.models.invariant import InvariantNFN
from nfn_lab.models.transformer import NFT

__all__ = ["NFT", "EquivariantNFN", "FlatMLP", "InvariantNFN", "StatNN"]
