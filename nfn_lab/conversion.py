"""Converting networks (``nn.Module`` s, state dicts) to and from :class:`WeightSpaceFeatures`.

A network is a weight space when it is a feedforward chain of ``nn.Linear`` and
``nn.Conv1d/2d/3d`` layers (``groups=1``), with parameter-free modules (activations,
pooling, ``nn.Flatten``, dropout) between them, and global pooling between the last
convolution and the first dense layer. Layer ``i`` becomes::

    weights[i]: (B, 1, n_out, n_in, *filter)      biases[i]: (B, 1, n_out)

with zeros for the bias of a layer built with ``bias=False``.

Two families of functions live here:

- module-aware ones (:func:`module_to_wsfeat`, :func:`wsfeat_to_state_dicts`,
  :func:`wsfeat_to_modules`, ...), which find the layers in forward order, reject
  modules that the weight space cannot represent and name them in the error;
- the reference library's state-dict helpers (:func:`state_dict_to_tensors`,
  :func:`params_to_state_dicts`, :func:`params_to_func_params`), with its signatures
  and semantics, that also accept layers without bias and raise a ValueError naming
  the offending key instead of asserting.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = [
    "module_layers",
    "module_to_wsfeat",
    "network_spec_from_module",
    "params_to_func_params",
    "params_to_state_dicts",
    "state_dict_to_tensors",
    "state_dicts_to_wsfeat",
    "wsfeat_to_modules",
    "wsfeat_to_state_dicts",
]

Layer = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LAYER_TYPES = (nn.Linear, *_CONV_TYPES)
_SUPPORTED = "nn.Linear and nn.Conv1d/2d/3d layers (groups=1) with parameter-free modules between them"
_EXAMPLE_INPUT_HINT = (
    " If forward calls the layers in a different order than they are registered, pass example_input "
    "so that the order is recorded from one forward pass."
)
_KEY_ORDER_HINT = " state_dict_to_tensors takes the layers in the order their keys appear."


def _display(name: str) -> str:
    return repr(name) if name else "'<root>'"


def _layer_keys(name: str) -> tuple[str, str]:
    """State-dict keys ``(weight, bias)`` of the layer registered as ``name``."""
    prefix = f"{name}." if name else ""
    return f"{prefix}weight", f"{prefix}bias"


def _state_keys(name: str, layer: Layer) -> tuple[str, ...]:
    """The state-dict keys a layer has: its weight, and its bias unless built with ``bias=False``."""
    weight_key, bias_key = _layer_keys(name)
    return (weight_key,) if layer.bias is None else (weight_key, bias_key)


def _check_finite(x: Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or inf values; a weight space needs finite weights.")


def _check_chain(names: Sequence[str], shapes: Sequence[Sequence[int]], hint: str) -> None:
    """Checks that layer ``i``'s input size equals layer ``i - 1``'s output size.

    Args:
        names: a name per layer, used in the error.
        shapes: weight shapes ``(n_out, n_in, *filter)`` in forward order.
        hint: appended to the error message.
    """
    for i in range(1, len(shapes)):
        prev, cur = shapes[i - 1], shapes[i]
        if cur[1] == prev[0]:
            continue
        if len(prev) > 2 and len(cur) == 2:
            raise ValueError(
                f"dense layer {_display(names[i])} has {cur[1]} input features but the convolution "
                f"{_display(names[i - 1])} before it has {prev[0]} output channels. nfn-lab weight spaces need "
                "global pooling (e.g. nn.AdaptiveAvgPool2d(1) + nn.Flatten()) between the last convolution and "
                "the first dense layer, so that the dense layer's inputs are the convolution's channels." + hint
            )
        raise ValueError(
            f"layer {_display(names[i])} has {cur[1]} inputs but the layer before it, {_display(names[i - 1])}, "
            f"has {prev[0]} outputs; the layers do not form a feedforward chain." + hint
        )


# --- finding the layers of a module ----------------------------------------------------------


def _registered_layers(module: nn.Module) -> list[tuple[str, Layer]]:
    """The Linear/Conv layers in registration order, after rejecting what a weight space cannot hold."""
    layers: list[tuple[str, Layer]] = []
    seen: dict[nn.Module, str] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        if not isinstance(sub, _LAYER_TYPES):
            continue
        if sub in seen:
            raise ValueError(
                f"layer {_display(seen[sub])} is also registered as {_display(name)}; nfn-lab weight spaces do "
                "not support weight sharing."
            )
        seen[sub] = name
        if isinstance(sub, _CONV_TYPES) and sub.groups != 1:
            raise ValueError(
                f"submodule {_display(name)} ({type(sub).__name__}) has groups={sub.groups}; nfn-lab weight "
                "spaces support only convolutions with groups=1."
            )
        layers.append((name, sub))

    owners: dict[int, str] = {}
    for name, layer in layers:
        for param in (p for p in (layer.weight, layer.bias) if p is not None):
            owner = owners.setdefault(id(param), name)
            if owner != name:
                raise ValueError(
                    f"layers {_display(owner)} and {_display(name)} share a parameter; nfn-lab weight spaces do "
                    "not support weight sharing."
                )

    allowed = {key for name, layer in layers for key in _state_keys(name, layer)}
    for key in module.state_dict(keep_vars=True):
        if key not in allowed:
            owner = key.rpartition(".")[0]
            raise ValueError(
                f"submodule {_display(owner)} ({type(module.get_submodule(owner)).__name__}) holds {key!r}, which "
                f"a weight space cannot represent: nfn-lab supports {_SUPPORTED}. Remove the submodule (or fold it "
                "into a neighbouring layer, e.g. BatchNorm into the convolution before it)."
            )
    if not layers:
        raise ValueError(f"{type(module).__name__} has no nn.Linear or nn.Conv1d/2d/3d layer.")
    return layers


def _forward_order(module: nn.Module, layers: list[tuple[str, Layer]], example_input: Any) -> list[tuple[str, Layer]]:
    """Reorders ``layers`` as forward calls them on ``example_input``."""
    calls: list[str] = []
    handles = [
        layer.register_forward_hook(lambda mod, args, out, name=name: calls.append(name)) for name, layer in layers
    ]
    try:
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        with torch.no_grad():
            module(*args)
    finally:
        for handle in handles:
            handle.remove()
    by_name = dict(layers)
    for name in by_name:
        if calls.count(name) > 1:
            raise ValueError(
                f"layer {_display(name)} is called {calls.count(name)} times in forward; nfn-lab weight spaces do "
                "not support weight sharing."
            )
        if name not in calls:
            raise ValueError(
                f"layer {_display(name)} is never called in forward on example_input; a weight space holds only "
                "the layers the network uses. Remove it from the module."
            )
    return [(name, by_name[name]) for name in calls]


def module_layers(module: nn.Module, example_input: Any = None) -> list[tuple[str, Layer]]:
    """The parameterized layers of ``module`` in forward order, with their qualified names.

    Args:
        module: a feedforward chain of ``nn.Linear`` / ``nn.Conv1d/2d/3d`` layers with
            parameter-free modules in between.
        example_input: an input (or a tuple of positional inputs) for one forward pass,
            during which the order of the layers is recorded with hooks. Without it, the
            registration order is used, checked by chaining neighbouring sizes.

    Returns:
        ``[(qualified_name, layer), ...]`` in the order forward applies them.

    Raises:
        ValueError: naming the submodule, for a submodule with parameters or persistent
            buffers other than these layers (BatchNorm, LayerNorm, Embedding,
            ConvTranspose, ...), a grouped convolution, weight sharing, a layer that
            forward does not use, or layers that do not chain (including a dense layer
            after a convolution without global pooling in between).
    """
    layers = _registered_layers(module)
    if example_input is not None:
        layers = _forward_order(module, layers, example_input)
    hint = "" if example_input is not None else _EXAMPLE_INPUT_HINT
    _check_chain([name for name, _ in layers], [tuple(layer.weight.shape) for _, layer in layers], hint)
    return layers


def _spec_of_layers(layers: Sequence[tuple[str, Layer]]) -> NetworkSpec:
    return NetworkSpec.from_shapes([tuple(layer.weight.shape) for _, layer in layers])


def network_spec_from_module(module: nn.Module, example_input: Any = None) -> NetworkSpec:
    """The :class:`NetworkSpec` of ``module``'s weight space, with every size set.

    See :func:`module_layers` for the arguments and errors.
    """
    return _spec_of_layers(module_layers(module, example_input))


# --- modules / state dicts -> features -------------------------------------------------------


def _check_state_dict(state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor], item: int) -> None:
    """Checks that ``state_dict`` has the keys and shapes of ``expected`` and finite values."""
    for key in state_dict:
        if key not in expected:
            raise ValueError(f"network {item}: unexpected key {key!r}; all networks need the template's architecture.")
    for key, ref in expected.items():
        if key not in state_dict:
            raise ValueError(f"network {item}: missing key {key!r}; all networks need the template's architecture.")
        value = state_dict[key]
        if value.shape != ref.shape:
            raise ValueError(
                f"network {item}: {key!r} has shape {tuple(value.shape)} but the template has {tuple(ref.shape)}."
            )
        _check_finite(value, f"network {item}: {key!r}")


def state_dicts_to_wsfeat(
    state_dicts: Sequence[Mapping[str, Tensor]], template: nn.Module, example_input: Any = None
) -> WeightSpaceFeatures:
    """Features of a batch of state dicts of ``template``'s architecture.

    Args:
        state_dicts: ``B`` state dicts with the keys of ``template.state_dict()``.
        template: a module of the architecture (its own weights are not used).
        example_input: see :func:`module_layers`.

    Returns:
        features with ``weights[i]: (B, 1, n_out, n_in, *filter)``, ``biases[i]: (B, 1, n_out)``.

    Raises:
        ValueError: for an unsupported template (see :func:`module_layers`), a state dict
            with missing/unexpected keys or other shapes, or NaN/inf values, naming the key.
    """
    if len(state_dicts) == 0:
        raise ValueError("need at least one network to build weight-space features.")
    layers = module_layers(template, example_input)
    expected = template.state_dict()
    for item, state_dict in enumerate(state_dicts):
        _check_state_dict(state_dict, expected, item)
    weights, biases = [], []
    for name, layer in layers:
        weight_key, bias_key = _layer_keys(name)
        weight = torch.stack([sd[weight_key] for sd in state_dicts]).unsqueeze(1)  # (B, 1, n_out, n_in, *filter)
        if layer.bias is None:
            bias = weight.new_zeros(weight.shape[:3])  # (B, 1, n_out)
        else:
            bias = torch.stack([sd[bias_key] for sd in state_dicts]).unsqueeze(1)  # (B, 1, n_out)
        weights.append(weight)
        biases.append(bias)
    return WeightSpaceFeatures(weights, biases)


def module_to_wsfeat(
    module_or_modules: nn.Module | Sequence[nn.Module], example_input: Any = None
) -> WeightSpaceFeatures:
    """Features of one module or of a batch of modules of one architecture.

    Args:
        module_or_modules: a module, or ``B`` modules of one architecture.
        example_input: see :func:`module_layers` (used with the first module).

    Returns:
        detached features ``weights[i]: (B, 1, n_out, n_in, *filter)``,
        ``biases[i]: (B, 1, n_out)`` (zeros for layers without bias).

    Raises:
        ValueError: see :func:`module_layers` and :func:`state_dicts_to_wsfeat`.
    """
    if isinstance(module_or_modules, nn.Module):
        modules: list[nn.Module] = [module_or_modules]
    else:
        modules = list(module_or_modules)
    if not modules:
        raise ValueError("need at least one module to build weight-space features.")
    return state_dicts_to_wsfeat([m.state_dict() for m in modules], modules[0], example_input)


# --- features -> state dicts / modules -------------------------------------------------------


def _check_one_channel(wsfeat: WeightSpaceFeatures, where: str) -> None:
    if wsfeat.num_channels != 1:
        raise ValueError(
            f"{where} needs features with one channel (B, 1, ...), i.e. raw weights, got "
            f"{wsfeat.num_channels} channels."
        )


def wsfeat_to_state_dicts(
    wsfeat: WeightSpaceFeatures, template: nn.Module, example_input: Any = None
) -> list[OrderedDict[str, Tensor]]:
    """One state dict of ``template``'s architecture per network in the batch.

    Inverse of :func:`module_to_wsfeat`: ``template.load_state_dict(sd)`` works for each
    result. Values are views of the features (not detached).

    Args:
        wsfeat: features ``(B, 1, ...)`` of ``template``'s weight space.
        template: a module of the architecture.
        example_input: see :func:`module_layers`.

    Raises:
        ValueError: for ``C != 1``, shapes other than the template's (naming the layer),
            NaN/inf values, or a nonzero bias for a layer built with ``bias=False``.
    """
    where = "wsfeat_to_state_dicts"
    _check_one_channel(wsfeat, where)
    layers = module_layers(template, example_input)
    _spec_of_layers(layers).check_features(wsfeat, channels=1, where=where)
    for i, ((name, layer), (weight, bias)) in enumerate(zip(layers, wsfeat)):
        _check_finite(weight, f"{where}: weight of layer {i} ({_display(name)})")
        _check_finite(bias, f"{where}: bias of layer {i} ({_display(name)})")
        if layer.bias is None and bias.any():
            raise ValueError(
                f"{where}: layer {i} ({_display(name)}) has no bias (bias=False) but the features' bias {i} is "
                "nonzero; use a template whose layer has a bias."
            )
    template_keys = list(template.state_dict())
    state_dicts = []
    for b in range(wsfeat.batch_size):
        arrays: dict[str, Tensor] = {}
        for (name, layer), pair in zip(layers, wsfeat):
            for key, array in zip(_state_keys(name, layer), pair):  # drops the bias of a bias-free layer
                arrays[key] = array[b, 0]
        state_dicts.append(OrderedDict((key, arrays[key]) for key in template_keys))
    return state_dicts


def wsfeat_to_modules(wsfeat: WeightSpaceFeatures, template: nn.Module, example_input: Any = None) -> list[nn.Module]:
    """Deep copies of ``template`` loaded with each network's weights (see :func:`wsfeat_to_state_dicts`)."""
    modules = []
    for state_dict in wsfeat_to_state_dicts(wsfeat, template, example_input):
        module = copy.deepcopy(template)
        module.load_state_dict(state_dict)
        modules.append(module)
    return modules


# --- the reference library's state-dict helpers ------------------------------------------------


def _group_keys(keys: Iterable[str]) -> list[tuple[str, str | None]]:
    """``[(weight_key, bias_key or None), ...]`` per layer, in order of first appearance.

    Keys are grouped by the module name before their last dot.
    """
    groups: dict[str, dict[str, str]] = {}
    for key in keys:
        owner, _, attr = key.rpartition(".")
        if attr not in ("weight", "bias"):
            raise ValueError(
                f"state dict key {key!r} is not a layer weight or bias; these helpers handle only the weights and "
                f"biases of {_SUPPORTED} (no BatchNorm running statistics, ...)."
            )
        groups.setdefault(owner, {})[attr] = key
    out = []
    for owner, group in groups.items():
        if "weight" not in group:
            raise ValueError(f"state dict has a bias {group['bias']!r} but no weight for module {_display(owner)}.")
        out.append((group["weight"], group.get("bias")))
    return out


def state_dict_to_tensors(state_dict: Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The weights and biases of a state dict, each with a leading channel axis of 1.

    Keys are grouped into layers by module name (``"0.weight"``, ``"0.bias"``, ...) in
    the order they appear; a layer without a bias gets zeros. Collate a list of results
    with ``default_collate`` and pass it to ``WeightSpaceFeatures(*...)``.

    Returns:
        ``(weights, biases)``: ``weights[i]: (1, n_out, n_in, *filter)``, ``biases[i]: (1, n_out)``.

    Raises:
        ValueError: naming the key, for keys that are not a weight or bias (e.g.
            BatchNorm running statistics), weights that are not 2-5 dimensional, biases
            of the wrong shape, NaN/inf values, or layers that do not chain.
    """
    groups = _group_keys(state_dict)
    weights, biases = [], []
    for weight_key, bias_key in groups:
        weight = state_dict[weight_key]
        if not 2 <= weight.dim() <= 5:
            raise ValueError(
                f"{weight_key!r} has shape {tuple(weight.shape)}; a weight must be (n_out, n_in) or "
                f"(n_out, n_in, *filter) with 1-3 filter axes, so this is not one of {_SUPPORTED}."
            )
        _check_finite(weight, f"state dict entry {weight_key!r}")
        if bias_key is None:
            bias = weight.new_zeros(weight.shape[:1])
        else:
            bias = state_dict[bias_key]
            if bias.shape != weight.shape[:1]:
                raise ValueError(
                    f"{bias_key!r} has shape {tuple(bias.shape)} but {weight_key!r} has {weight.shape[0]} outputs."
                )
            _check_finite(bias, f"state dict entry {bias_key!r}")
        weights.append(weight[None])  # (1, n_out, n_in, *filter)
        biases.append(bias[None])  # (1, n_out)
    _check_chain(
        [weight_key.rpartition(".")[0] for weight_key, _ in groups],
        [tuple(w.shape[1:]) for w in weights],
        _KEY_ORDER_HINT,
    )
    return weights, biases


def params_to_state_dicts(keys: Sequence[str], wsfeat: WeightSpaceFeatures) -> list[OrderedDict[str, Tensor]]:
    """One state dict per network: the inverse of :func:`state_dict_to_tensors`.

    Args:
        keys: the state-dict keys, e.g. ``list(model.state_dict())``; grouped into layers
            by module name. A layer may lack a bias key if its bias features are zero.
        wsfeat: features ``(B, 1, ...)``.

    Returns:
        ``B`` state dicts with ``keys`` in the given order; values are views of the features.

    Raises:
        ValueError: for ``C != 1``, a number of layers in ``keys`` other than
            ``len(wsfeat)``, keys that are not a weight or bias, or nonzero biases of a
            layer without a bias key.
    """
    _check_one_channel(wsfeat, "params_to_state_dicts")
    groups = _group_keys(keys)
    if len(groups) != len(wsfeat):
        raise ValueError(
            f"the {len(keys)} keys name {len(groups)} layers but the features have {len(wsfeat)} layers; pass the "
            "state-dict keys of the features' architecture."
        )
    source: dict[str, tuple[str, int]] = {}
    for i, (weight_key, bias_key) in enumerate(groups):
        source[weight_key] = ("weight", i)
        if bias_key is not None:
            source[bias_key] = ("bias", i)
        elif wsfeat.biases[i].any():
            raise ValueError(
                f"layer {i} ({weight_key!r}) has no bias key but its bias features are nonzero; add the bias key."
            )
    state_dicts = []
    for b in range(wsfeat.batch_size):
        state_dict: OrderedDict[str, Tensor] = OrderedDict()
        for key in keys:
            kind, i = source[key]
            state_dict[key] = (wsfeat.weights if kind == "weight" else wsfeat.biases)[i][b, 0]
        state_dicts.append(state_dict)
    return state_dicts


def params_to_func_params(wsfeat: WeightSpaceFeatures) -> tuple[Tensor, ...]:
    """``(W(1), b(1), W(2), b(2), ...)`` with the channel axis removed, for functional calls.

    ``W(i): (B, n_out, n_in, *filter)``, ``b(i): (B, n_out)``; e.g.
    ``torch.func.vmap(lambda *p: functional_call(model, dict(zip(keys, p)), x))(*params)``.

    Raises:
        ValueError: for features with ``C != 1``.
    """
    _check_one_channel(wsfeat, "params_to_func_params")
    return tuple(t[:, 0] for w, b in wsfeat for t in (w, b))
