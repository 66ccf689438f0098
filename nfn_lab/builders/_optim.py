"""SGD, Adam and RMSProp on parameters stacked along a leading network axis.

A zoo builder trains many networks at once: parameter ``j`` of all ``N`` networks is one
tensor ``(N, *shape_j)``. :class:`StackedOptimizer` gives every network its own optimizer
kind and learning rate, and updates each network exactly as ``torch.optim`` would update
it alone (same formulas, same defaults as passed), so networks with different
hyperparameters train in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["OPTIMIZERS", "StackedOptimizer"]

OPTIMIZERS = ("sgd", "adam", "rmsprop")


def _per_network(values: Tensor, like: Tensor) -> Tensor:
    """``values: (n,)`` viewed as ``(n, 1, ..., 1)`` to broadcast against ``like: (n, ...)``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """Per-network SGD (with optional momentum), Adam or RMSProp on stacked parameters.

    The update of network ``i`` matches ``torch.optim.SGD(momentum=momentum)``,
    ``torch.optim.Adam(betas=betas, eps=eps)`` or ``torch.optim.RMSprop(alpha=alpha,
    eps=eps)`` with learning rate ``lr[i]`` applied to that network alone. (The defaults
    are Keras's, as used by the Small CNN Zoo: no momentum, ``eps=1e-7``, ``alpha=0.9``.)

    Args:
        params: stacked parameters ``(N, *shape)``, updated in place by :meth:`step`.
        kinds: per network, one of :data:`OPTIMIZERS`.
        lr: per-network learning rates ``(N,)``.
        momentum: SGD momentum.
        betas: Adam's ``(beta1, beta2)``.
        alpha: RMSProp's smoothing constant (Keras's ``rho``).
        eps: Adam's and RMSProp's epsilon.

    Raises:
        ValueError: for an unknown kind, or ``kinds``/``lr`` not matching the network axis.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        kinds: Sequence[str],
        lr: Tensor,
        momentum: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        alpha: float = 0.9,
        eps: float = 1e-7,
    ) -> None:
        self.params = list(params)
        num_networks = self.params[0].shape[0]
        unknown = sorted(set(kinds) - set(OPTIMIZERS))
        if unknown:
            raise ValueError(f"unknown optimizer kinds {unknown}; use one of {OPTIMIZERS}.")
        if len(kinds) != num_networks or lr.shape != (num_networks,):
            raise ValueError(
                f"need one optimizer kind and one learning rate per network ({num_networks}); got "
                f"{len(kinds)} kinds and lr of shape {tuple(lr.shape)}."
            )
        self.momentum, self.betas, self.alpha, self.eps = momentum, betas, alpha, eps
        device = self.params[0].device
        # kind -> its networks: a slice if they are consecutive (updated through views), else indices (n_k,)
        self.groups: dict[str, slice | Tensor] = {}
        for kind in OPTIMIZERS:
            index = [i for i, k in enumerate(kinds) if k == kind]
            if index and index[-1] - index[0] + 1 == len(index):
                self.groups[kind] = slice(index[0], index[-1] + 1)
            elif index:
                self.groups[kind] = torch.tensor(index, device=device)
        self.lr = {kind: lr.to(device)[select] for kind, select in self.groups.items()}
        # Optimizer state per kind and parameter, (n_k, *shape); created on the first step.
        self.state: dict[str, list[dict[str, Tensor]]] = {kind: [{} for _ in self.params] for kind in self.groups}
        self.num_steps = 0

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={len(self.lr[kind])}" for kind in self.groups)
        settings = f"momentum={self.momentum}, betas={self.betas}, alpha={self.alpha}, eps={self.eps}"
        return f"StackedOptimizer({counts}, {settings})"

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor]) -> None:
        """Updates every parameter in place with its gradient ``(N, *shape)``."""
        self.num_steps += 1
        for kind, select in self.groups.items():
            for param, grad, state in zip(self.params, grads, self.state[kind]):
                p = param[select]  # a view for a slice, a copy for an index tensor
                p.sub_(_per_network(self.lr[kind], p) * getattr(self, f"_{kind}")(grad[select], state))
                if isinstance(select, Tensor):
                    param.index_copy_(0, select, p)

    def _sgd(self, grad: Tensor, state: dict[str, Tensor]) -> Tensor:
        if self.momentum == 0:
            return grad
        if "momentum" not in state:
            state["momentum"] = grad.clone()
        else:
            state["momentum"].mul_(self.momentum).add_(grad)
        return state["momentum"]

    def _adam(self, grad: Tensor, state: dict[str, Tensor]) -> Tensor:
        beta1, beta2 = self.betas
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(grad)
            state["exp_avg_sq"] = torch.zeros_like(grad)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1 = 1 - beta1**self.num_steps
        bias2 = 1 - beta2**self.num_steps
        return (exp_avg / bias1) / ((exp_avg_sq / bias2).sqrt() + self.eps)

    def _rmsprop(self, grad: Tensor, state: dict[str, Tensor]) -> Tensor:
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(grad)
        square_avg = state["square_avg"]
        square_avg.mul_(self.alpha).addcmul_(grad, grad, value=1 - self.alpha)
        return grad / (square_avg.sqrt() + self.eps)
