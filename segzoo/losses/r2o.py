"""R2O region losses: mask-average pooling of feature maps and the symmetric BYOL regression loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def region_pool(features: Tensor, masks: Tensor, eps: float = 1e-6) -> Tensor:
    """Mask-weighted average of ``features [B, C, h, w]`` inside each ``masks [B, K, h, w]``: ``[B, K, C]``.

    Masks are soft weights (e.g. roi-aligned one-hot maps); an empty mask gives a zero vector.
    """
    if features.shape[0] != masks.shape[0] or features.shape[-2:] != masks.shape[-2:]:
        raise ValueError(
            f"region_pool: features {tuple(features.shape)} and masks {tuple(masks.shape)} must share the "
            "batch size and spatial size"
        )
    masks = masks.to(features.dtype)
    sums = masks.flatten(2) @ features.flatten(2).transpose(1, 2)
    area = masks.flatten(2).sum(-1, keepdim=True)
    return sums / (area + eps)


def regression_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """BYOL's ``2 - 2 cos(prediction, target)`` along the last dimension (no reduction)."""
    return 2.0 - 2.0 * (F.normalize(prediction, dim=-1) * F.normalize(target, dim=-1)).sum(-1)


def region_loss(q1: Tensor, z2: Tensor, q2: Tensor, z1: Tensor) -> Tensor:
    """Symmetrised R2O loss over matched regions: ``mean(l(q1, z2)) + mean(l(q2, z1))``.

    Args:
        q1, q2: online predictions ``[M, D]`` of the M regions present in both views, from view 1 and 2.
        z1, z2: target projections ``[M, D]`` of the same regions (gradients are not taken through them).

    Each term lies in [0, 4], so the sum in [0, 8]; it is 0 when predictions and targets point the same way.
    With no region (M = 0) the loss is an exact 0 that is still connected to ``q1`` and ``q2``, so a step
    without matched regions back-propagates zeros instead of failing.
    """
    if q1.shape != z2.shape or q2.shape != z1.shape or q1.shape != q2.shape:
        raise ValueError(
            f"region_loss: q1 {tuple(q1.shape)}, z2 {tuple(z2.shape)}, q2 {tuple(q2.shape)}, z1 "
            f"{tuple(z1.shape)} must all have the same shape [M, D]"
        )
    if q1.shape[0] == 0:
        return (q1.sum() + q2.sum()) * 0.0
    return regression_loss(q1, z2.detach()).mean() + regression_loss(q2, z1.detach()).mean()


__all__ = ["region_loss", "region_pool", "regression_loss"]
