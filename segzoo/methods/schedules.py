"""Learning-rate schedules shared by methods."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def poly_with_warmup(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.1,
    power: float = 0.9,
) -> LambdaLR:
    """Linear warm-up from ``warmup_ratio`` x lr over ``warmup_steps``, then ``(1 - t/T) ** power``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")

    def factor(step: int) -> float:
        poly = max(0.0, 1.0 - step / total_steps) ** power
        if step < warmup_steps:
            return poly * (warmup_ratio + (1.0 - warmup_ratio) * step / warmup_steps)
        return poly

    return LambdaLR(optimizer, factor)


def cosine_with_warmup(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then half a cosine down to 0 at ``total_steps``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)
