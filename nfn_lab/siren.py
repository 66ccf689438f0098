"""SIRENs (sine-activation MLPs) of the two public INR zoos, and rendering them to images.

Both zoos store 3-layer SIRENs ``2 -> 32 -> 32 -> C`` fit to one image each; they differ
in details that matter when the weights are turned back into pixels (see ``docs/formats.md``):

- ``"nfn"`` (NFN SIREN zoos): keys ``net.0.linear.weight``, ..., ``net.2.bias``; linear
  output (images in [-1, 1]); ``'ij'`` coordinates; initialization ``U(±1/fan_in)`` for
  the first layer and ``U(±sqrt(6/fan_in)/30)`` for the others (output layer included),
  PyTorch's default biases.
- ``"dwsnets"`` (DWSNets INR zoos): keys ``seq.0.weight``, ..., ``seq.2.bias``; linear
  output plus 0.5 (images in [0, 1]); ``'xy'`` coordinates; ``U(±sqrt(6/fan_in)/30)`` for
  every sine layer (no special first layer) with zero biases, PyTorch's default output layer.

Every sine layer computes ``sin(omega0 * (x @ W.T + b))`` with ``omega0 = 30``. Pixel
``(i, j)`` of an ``S x S`` image is the network's output at coordinate ``(t[i], t[j])``
for ``'ij'`` and ``(t[j], t[i])`` for ``'xy'``, where ``t = linspace(-1, 1, S)``.

:func:`render` evaluates a whole batch of SIRENs given as :class:`WeightSpaceFeatures`
with ``torch.func`` (``functional_call`` + ``vmap``), e.g. to look at a zoo or to use
the rendered images as targets of an INR editing task. :class:`StackedSirenFit` fits one
SIREN per image, all at once, by full-batch Adam with the forward and backward pass written
out (equal to autograd through :func:`render` up to float rounding); :func:`fit` fits a
batch of images from fresh initializations with it, and the INR zoo builder uses it too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.func import functional_call, vmap

from nfn_lab._fast_math import cos_and_sin_
from nfn_lab.conversion import params_to_func_params
from nfn_lab.weightspace import WeightSpaceFeatures

__all__ = [
    "SineLayer",
    "SineLinear",
    "Siren",
    "SirenVariant",
    "StackedSirenFit",
    "fit",
    "make_coordinates",
    "pixel_targets",
    "render",
]

SirenVariant = Literal["nfn", "dwsnets"]
Indexing = Literal["ij", "xy"]
OMEGA0 = 30.0


@dataclass(frozen=True)
class _VariantFacts:
    container: str  # attribute name of the nn.Sequential: first part of every state-dict key
    output_offset: float
    indexing: Indexing
    siren_first_layer: bool  # U(±1/fan_in) for the first layer (else the hidden layers' init)
    siren_output_layer: bool  # U(±sqrt(6/fan_in)/30) for the output weights (else nn.Linear's default)
    zero_sine_biases: bool  # else nn.Linear's default U(±1/sqrt(fan_in))


_VARIANTS: dict[str, _VariantFacts] = {
    "nfn": _VariantFacts("net", 0.0, "ij", siren_first_layer=True, siren_output_layer=True, zero_sine_biases=False),
    "dwsnets": _VariantFacts(
        "seq", 0.5, "xy", siren_first_layer=False, siren_output_layer=False, zero_sine_biases=True
    ),
}


def _facts(variant: str) -> _VariantFacts:
    if variant not in _VARIANTS:
        raise ValueError(f"unknown SIREN variant {variant!r}; use one of {sorted(_VARIANTS)}.")
    return _VARIANTS[variant]


def make_coordinates(
    size: int,
    indexing: Indexing = "ij",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The ``size x size`` pixel grid over ``[-1, 1]^2``, one row per pixel in row-major order.

    Args:
        size: image side ``S``.
        indexing: ``"ij"``: row ``i * S + j`` is ``(t[i], t[j])`` (NFN);
            ``"xy"``: it is ``(t[j], t[i])`` (DWSNets, NumPy's default ``meshgrid``).
        dtype, device: of the result (the grid is computed in float64, then cast).

    Returns:
        coordinates ``(S * S, 2)``.
    """
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}.")
    if indexing not in ("ij", "xy"):
        raise ValueError(f"indexing must be 'ij' or 'xy', got {indexing!r}.")
    t = torch.linspace(-1.0, 1.0, size, dtype=torch.float64)
    rows, cols = torch.meshgrid(t, t, indexing="ij")  # (S, S) each: rows[i, j] = t[i], cols[i, j] = t[j]
    first, second = (rows, cols) if indexing == "ij" else (cols, rows)
    return torch.stack([first, second], dim=-1).reshape(size * size, 2).to(dtype=dtype, device=device)


class SineLayer(nn.Module):
    """``sin(omega0 * linear(x))`` holding its ``nn.Linear`` as ``.linear`` (the NFN zoos' keys)."""

    def __init__(self, in_features: int, out_features: int, omega0: float = OMEGA0) -> None:
        super().__init__()
        self.omega0 = omega0
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.omega0 * self.linear(x))

    def extra_repr(self) -> str:
        return f"omega0={self.omega0}"


class SineLinear(nn.Linear):
    """``sin(omega0 * (x @ W.T + b))`` as one ``nn.Linear`` (the DWSNets zoos' keys ``weight``, ``bias``)."""

    def __init__(self, in_features: int, out_features: int, omega0: float = OMEGA0) -> None:
        super().__init__(in_features, out_features)
        self.omega0 = omega0

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.omega0 * super().forward(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, omega0={self.omega0}"


class Siren(nn.Module):
    """A SIREN of one zoo's variant; its ``state_dict()`` has exactly that zoo's keys.

    Args:
        variant: ``"nfn"`` or ``"dwsnets"`` (see the module docstring).
        out_features: image channels ``C`` (1 grey, 3 RGB).
        hidden_features: width of the sine layers.
        hidden_layers: sine layers after the first one.
        in_features: coordinate dimensions.

    Shapes:
        ``(..., in_features) -> (..., out_features)``.
    """

    def __init__(
        self,
        variant: SirenVariant = "nfn",
        out_features: int = 1,
        hidden_features: int = 32,
        hidden_layers: int = 1,
        in_features: int = 2,
    ) -> None:
        super().__init__()
        facts = _facts(variant)
        self.variant = variant
        self.output_offset = facts.output_offset
        self.indexing: Indexing = facts.indexing
        sine = SineLayer if variant == "nfn" else SineLinear
        widths = [in_features] + [hidden_features] * (hidden_layers + 1)
        layers: list[nn.Module] = [sine(n_in, n_out) for n_in, n_out in itertools.pairwise(widths)]
        layers.append(nn.Linear(hidden_features, out_features))
        setattr(self, facts.container, nn.Sequential(*layers))
        self.reset_parameters()

    @property
    def layers(self) -> nn.Sequential:
        """The sine layers followed by the linear output layer."""
        return getattr(self, _facts(self.variant).container)

    def linears(self) -> list[nn.Linear]:
        """The ``nn.Linear`` of every layer, in order."""
        return [m.linear if isinstance(m, SineLayer) else cast(nn.Linear, m) for m in self.layers]

    def redraw(self) -> None:
        """Draws every parameter again exactly as building this SIREN does, from the global
        generator: each layer's ``nn.Linear`` initialization, then :meth:`reset_parameters`
        (so seeding, then ``redraw()``, gives the parameters of a SIREN built after that seeding)."""
        for linear in self.linears():
            linear.reset_parameters()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The variant's initialization (see the module docstring)."""
        facts = _facts(self.variant)
        *sines, out = self.linears()
        with torch.no_grad():
            for i, lin in enumerate(sines):
                hidden_bound = math.sqrt(6 / lin.in_features) / OMEGA0
                bound = 1 / lin.in_features if i == 0 and facts.siren_first_layer else hidden_bound
                lin.weight.uniform_(-bound, bound)
                if facts.zero_sine_biases:
                    lin.bias.zero_()
                else:
                    lin.bias.uniform_(-1 / math.sqrt(lin.in_features), 1 / math.sqrt(lin.in_features))
            out.reset_parameters()  # nn.Linear's default
            if facts.siren_output_layer:
                bound = math.sqrt(6 / out.in_features) / OMEGA0
                out.weight.uniform_(-bound, bound)

    def forward(self, coords: Tensor) -> Tensor:
        return self.layers(coords) + self.output_offset

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, output_offset={self.output_offset}, indexing={self.indexing!r}"


def _siren_like(wsfeat: WeightSpaceFeatures, variant: SirenVariant) -> Siren:
    """A SIREN module with the layer sizes of batched features ``(B, 1, ...)``."""
    shapes = [tuple(w.shape[2:]) for w in wsfeat.weights]
    if len(shapes) < 2 or any(len(s) != 2 for s in shapes):
        raise ValueError(f"a SIREN has at least two dense layers; got weight shapes {shapes} (without B, C).")
    hidden = {s[0] for s in shapes[:-1]}
    if len(hidden) != 1:
        raise ValueError(f"render needs one hidden width for all sine layers; got weight shapes {shapes}.")
    with torch.device("meta"):  # only the structure is used: no memory, no draws from the global RNG
        return Siren(
            variant,
            out_features=shapes[-1][0],
            hidden_features=hidden.pop(),
            hidden_layers=len(shapes) - 2,
            in_features=shapes[0][1],
        )


def render(wsfeat: WeightSpaceFeatures, variant: SirenVariant = "nfn", size: int = 28) -> Tensor:
    """Images of a batch of SIRENs, all evaluated at once with ``torch.func``.

    Args:
        wsfeat: raw (unnormalized) weights ``weights[i]: (B, 1, n_out, n_in)``,
            ``biases[i]: (B, 1, n_out)``, on any device and float dtype.
        variant: ``"nfn"`` or ``"dwsnets"`` (output offset, coordinate order).
        size: image side ``S`` (28 for MNIST/FashionMNIST, 32 for CIFAR-10).

    Returns:
        images ``(B, C, S, S)`` with ``C`` the SIRENs' outputs; differentiable in ``wsfeat``.
    """
    template = _siren_like(wsfeat, variant)
    keys = list(template.state_dict())  # W(1), b(1), W(2), b(2), ...: the order of params_to_func_params
    params = params_to_func_params(wsfeat)  # each (B, ...)
    coords = make_coordinates(size, template.indexing, dtype=wsfeat.dtype, device=wsfeat.device)  # (S*S, 2)

    def one_network(*arrays: Tensor) -> Tensor:  # arrays of one network -> (S*S, C)
        return functional_call(template, dict(zip(keys, arrays)), (coords,))

    pixels = vmap(one_network)(*params)  # (B, S*S, C)
    return rearrange(pixels, "b (h w) c -> b c h w", h=size)


def _views(flat: Tensor, shapes: Sequence[torch.Size]) -> list[Tensor]:
    """Consecutive views of ``flat: (sum of sizes,)`` with the given shapes (each contiguous)."""
    sizes = [math.prod(shape) for shape in shapes]
    return [part.view(shape) for part, shape in zip(flat.split(sizes), shapes)]


class StackedSirenFit:
    """``N`` SIRENs fit by full-batch Adam, each to the mean squared error over its own targets.

    Autograd over :func:`render` spends most of such a small step on dispatch and
    bookkeeping; here each layer is one batched matrix product into preallocated buffers,
    the backward pass reuses the forward's cosines, parameters and gradients are views of one
    flat buffer each, and one fused Adam updates them all (``sin``/``cos`` through
    :mod:`nfn_lab._fast_math`). The result equals autograd's up to float rounding.

    Args:
        params: the SIRENs' initial arrays ``W(1): (N, H, 2), b(1): (N, H), ..., W(L): (N, C, H),
            b(L): (N, C)`` with one hidden width ``H`` (copied, not modified).
        coords: the pixel coordinates ``(P, 2)``, shared by all SIRENs.
        target: per SIREN, the outputs to fit at the coordinates ``(N, P, C)``.
        omega0: the sine layers' frequency factor.
        offset: added to the linear output layer.
        lr: Adam's learning rate (``torch.optim.Adam``'s defaults otherwise).

    Attributes:
        params: the current arrays, shaped as the given ones (views of one flat buffer).
        grads: after :meth:`gradients` (or :meth:`step`), the gradients of the sum over SIRENs
            of each one's mean squared error (so each SIREN gets its own), shaped likewise.
    """

    def __init__(
        self, params: Sequence[Tensor], coords: Tensor, target: Tensor, omega0: float, offset: float, lr: float
    ) -> None:
        shapes = [p.shape for p in params]
        self.flat = torch.cat([p.detach().flatten() for p in params])  # (N * D,)
        self.flat.grad = torch.zeros_like(self.flat)
        self.params, self.grads = _views(self.flat, shapes), _views(self.flat.grad, shapes)
        self.optimizer = torch.optim.Adam([self.flat], lr=lr, fused=self.flat.device.type in ("cpu", "cuda"))
        self.target, self.omega0, self.offset = target, omega0, offset
        n, num_pixels, _ = target.shape
        hidden = shapes[0][1]
        self.coords = coords.expand(n, *coords.shape)  # (N, P, 2)
        # The first layer's weight gradient, transposed: (N, 2, P) @ (N, P, H) is fastest with a contiguous left side.
        self.coords_t = coords.T.expand(n, *coords.T.shape).contiguous()  # (N, 2, P)
        self.first_grad_t = target.new_empty(n, coords.shape[1], hidden)  # (N, 2, H)
        # Per sine layer, (N, P, H): its sines (the next layer's input) and cosines (for the backward pass).
        num_sine_layers = len(shapes) // 2 - 1
        self.sines = [target.new_empty(n, num_pixels, hidden) for _ in range(num_sine_layers)]
        self.cosines = [torch.empty_like(s) for s in self.sines]
        self.output = torch.empty_like(target)  # (N, P, C)
        self.upstream = torch.empty_like(self.sines[0])  # d loss / d (a sine layer's output), (N, P, H)

    @classmethod
    def to_images(cls, params: Sequence[Tensor], images: Tensor, variant: SirenVariant, lr: float) -> StackedSirenFit:
        """A fit of SIRENs of ``variant`` to ``images: (N, C, S, S)`` (one per image), at the variant's
        pixel coordinates and with its output offset; ``params`` as for the constructor."""
        facts = _facts(variant)
        coords = make_coordinates(images.shape[-1], facts.indexing, dtype=images.dtype, device=images.device)
        return cls(params, coords, pixel_targets(images), OMEGA0, facts.output_offset, lr)

    def forward(self) -> Tensor:
        """The SIRENs' outputs ``(N, P, C)``, keeping each sine layer's sines and cosines."""
        h = self.coords
        weights, biases = self.params[0::2], self.params[1::2]
        for w, b, sines, cosines in zip(weights, biases, self.sines, self.cosines):
            torch.baddbmm(b.unsqueeze(1), h, w.mT, beta=self.omega0, alpha=self.omega0, out=sines)
            cos_and_sin_(sines, cosines)
            h = sines
        return torch.baddbmm(biases[-1].unsqueeze(1), h, weights[-1].mT, out=self.output).add_(self.offset)

    def gradients(self) -> None:
        """Fills :attr:`grads` for the current parameters (a forward and a backward pass)."""
        self.forward()
        grad_weights, grad_biases = self.grads[0::2], self.grads[1::2]
        weights = self.params[0::2]
        d_out = self.output.sub_(self.target).mul_(2 / self.target[0].numel())  # d loss / d output, (N, P, C)
        torch.bmm(d_out.mT, self.sines[-1], out=grad_weights[-1])
        torch.sum(d_out, 1, out=grad_biases[-1])
        upstream = torch.bmm(d_out, weights[-1], out=self.upstream)
        for layer in reversed(range(len(self.sines))):
            d_linear = self.cosines[layer].mul_(upstream)  # d loss / d (omega0 * linear), (N, P, H)
            torch.sum(d_linear, 1, out=grad_biases[layer]).mul_(self.omega0)
            if layer == 0:
                grad_t = self.first_grad_t
                torch.baddbmm(grad_t, self.coords_t, d_linear, beta=0, alpha=self.omega0, out=grad_t)
                grad_weights[0].copy_(grad_t.mT)
            else:
                grad_w = grad_weights[layer]
                torch.baddbmm(grad_w, d_linear.mT, self.sines[layer - 1], beta=0, alpha=self.omega0, out=grad_w)
                torch.baddbmm(upstream, d_linear, weights[layer], beta=0, alpha=self.omega0, out=upstream)

    def step(self) -> None:
        """One Adam step on the gradients of the current parameters."""
        self.gradients()
        self.optimizer.step()

    def render_images(self) -> Tensor:
        """The current SIRENs' images ``(N, C, S, S)`` (square coordinate grids, as :func:`render` gives)."""
        return rearrange(self.forward(), "n (h w) c -> n c h w", h=math.isqrt(self.target.shape[1]))


def pixel_targets(images: Tensor) -> Tensor:
    """Images ``(N, C, S, S)`` -> per SIREN its outputs at the row-major pixel coordinates ``(N, S*S, C)``."""
    return rearrange(images, "n c h w -> n (h w) c").contiguous()


def fit(
    images: Tensor, variant: SirenVariant = "nfn", steps: int = 100, lr: float = 1e-4, seed: int = 0
) -> WeightSpaceFeatures:
    """Fits one SIREN per image, all networks at once (:class:`StackedSirenFit`).

    Each network starts from the variant's initialization (the SIRENs are built one after
    another from ``seed``, leaving the global RNG untouched) and minimizes its own mean
    squared error to its image.

    Args:
        images: targets ``(B, C, S, S)`` in the variant's range (``[-1, 1]`` for
            ``"nfn"``, ``[0, 1]`` for ``"dwsnets"``).
        variant: ``"nfn"`` or ``"dwsnets"``.
        steps: Adam steps; lr: its learning rate.
        seed: seeds the initializations.

    Returns:
        the fitted weights: ``weights[i]: (B, 1, n_out, n_in)``, ``biases[i]: (B, 1, n_out)``.
    """
    channels = images.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sirens = [Siren(variant, out_features=channels) for _ in range(images.shape[0])]
    params = [torch.stack(arrays).to(images) for arrays in zip(*(s.state_dict().values() for s in sirens))]
    fitting = StackedSirenFit.to_images(params, images, variant, lr)
    for _ in range(steps):
        fitting.step()
    arrays = [p.unsqueeze(1) for p in fitting.params]  # (B, 1, ...)
    return WeightSpaceFeatures(arrays[0::2], arrays[1::2])
