"""Full-batch Adam on stacked SIRENs, with the forward and backward pass written out.

A chunk of the INR zoo is ``N`` SIRENs ``2 -> H -> ... -> H -> C`` (sine layers
``sin(omega0 * (x @ W.T + b))``, a linear output plus an offset) fit to one image each, all
on the same ``P`` pixel coordinates. Autograd over ``torch.func.vmap`` spends most of such a
small step on dispatch and bookkeeping; here each layer is one batched matrix product
(``torch.baddbmm``) into preallocated buffers, the backward pass reuses the forward's
``cos``, the parameters and gradients are views of one flat buffer each, and one fused Adam
updates them all; ``sin`` and ``cos`` come from :mod:`nfn_lab.builders._fast_math`. The result
equals autograd's up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor

from nfn_lab.builders._fast_math import cos_and_sin_

__all__ = ["StackedSirenFit"]


def _views(flat: Tensor, shapes: Sequence[torch.Size]) -> list[Tensor]:
    """Consecutive views of ``flat: (sum of sizes,)`` with the given shapes (each contiguous)."""
    sizes = [math.prod(shape) for shape in shapes]
    return [part.view(shape) for part, shape in zip(flat.split(sizes), shapes)]


class StackedSirenFit:
    """``N`` SIRENs fit by full-batch Adam, each to the mean squared error over its own targets.

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


def pixel_targets(images: Tensor) -> Tensor:
    """Images ``(N, C, S, S)`` -> per SIREN its outputs at the row-major pixel coordinates ``(N, S*S, C)``."""
    return rearrange(images, "n c h w -> n (h w) c").contiguous()
