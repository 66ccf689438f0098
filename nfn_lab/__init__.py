"""nfn-lab: neural functional networks and the framework around them."""

from nfn_lab.weightspace import ArraySpec, NetworkSpec, WeightSpaceFeatures, collate, network_spec_from_wsfeat

__version__ = "0.1.0"
__all__ = ["ArraySpec", "NetworkSpec", "WeightSpaceFeatures", "__version__", "collate", "network_spec_from_wsfeat"]
