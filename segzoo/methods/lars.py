"""LARS: layer-wise adaptive rate scaling (You et al., 2017) in the form BYOL, SimCLR and R2O use.

No LARS ships with torch, and none of lightly/timm/pl_bolts is installed, hence this small optimiser.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer


class LARS(Optimizer):
    """SGD with momentum where each parameter's update is scaled by its trust ratio.

    For a parameter ``w`` with gradient ``g`` in a group with ``lars=True``::

        g <- g + weight_decay * w
        g <- g * eta * ||w|| / ||g||      (only when both norms are > 0)
        v <- momentum * v + g
        w <- w - lr * v

    Groups with ``lars=False`` (biases and BatchNorm parameters in R2O/BYOL) skip both the weight decay and
    the adaptation, i.e. they follow plain momentum SGD (``torch.optim.SGD`` with ``momentum``, no
    dampening, no decay), exactly.

    Args:
        params: parameters or parameter groups (a group may set ``lars``, ``weight_decay``, ``lr``, ...).
        lr, momentum, weight_decay, eta: defaults (R2O: eta 0.001, momentum 0.9, weight decay 1e-6).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        eta: float = 0.001,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"LARS: expected lr >= 0, momentum >= 0, weight_decay >= 0 and eta > 0, got lr={lr}, "
                f"momentum={momentum}, weight_decay={weight_decay}, eta={eta}"
            )
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every parameter that has a gradient; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["lars"]:
                    if group["weight_decay"] != 0:
                        grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    grad = grad * trust
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def lars_param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Two groups of the trainable parameters: weights (decay + adaptation) and biases/norm parameters
    (every parameter with fewer than 2 dimensions: no decay, no adaptation)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    return [
        g
        for g in (
            {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, "lars": True},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lars": False},
        )
        if g["params"]
    ]


__all__ = ["LARS", "lars_param_groups"]
