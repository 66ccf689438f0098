"""Compatibility with the reference library's ``nfn.common``: replace ``nfn`` by ``nfn_lab``.

Re-exports exactly the names of ``nfn.common``; new code may import them from
:mod:`nfn_lab.weightspace` and :mod:`nfn_lab.conversion` directly.
"""

from nfn_lab.conversion import params_to_func_params, params_to_state_dicts, state_dict_to_tensors
from nfn_lab.weightspace import ArraySpec, NetworkSpec, WeightSpaceFeatures, network_spec_from_wsfeat

__all__ = [
    "ArraySpec",
    "NetworkSpec",
    "WeightSpaceFeatures",
    "network_spec_from_wsfeat",
    "params_to_func_params",
    "params_to_state_dicts",
    "state_dict_to_tensors",
]
