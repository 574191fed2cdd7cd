"""SCOPS losses (Hung et al., CVPR 2019): concentration, equivariance, semantic consistency, orthonormality.

Part maps ``R`` are the softmax foreground channels ``[B, K, H, W]`` (background channel 0 excluded);
coordinates are normalised (x, y) in [-1, 1] at pixel centres, ``align_corners=False`` (see
:mod:`segzoo.ops.tps`). Reductions, chosen so each value is a per-image quantity averaged over the batch and
the loss weights do not depend on the batch size, image size or feature width:

- concentration: sum over parts of the spatial variance, mean over the batch;
- equivariance KL: KL summed over channels per pixel, mean over the valid pixels of the batch;
- centre equivariance: squared distance summed over parts, mean over the batch;
- semantic consistency: squared error mean over pixels *and* feature channels, mean over the batch;
- orthonormality: sum over the K x K entries (a property of the basis, no batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from segzoo.ops.tps import normalized_to_pixels, pixel_grid


def _check_maps(probs: Tensor, name: str) -> None:
    if probs.ndim != 4:
        raise ValueError(f"{name}: expected part maps [B, K, H, W], got shape {tuple(probs.shape)}")


def part_distributions(probs: Tensor, eps: float = 1e-3, mask: Tensor | None = None) -> Tensor:
    """Each part map as a spatial distribution: ``(R_k + eps) / sum(R_k + eps)`` over the (masked) pixels.

    ``eps`` (1e-3 in SCOPS) keeps an empty part's centre defined and its gradient bounded; ``mask``
    ``[B, 1, H, W]`` (0/1) restricts the distribution to valid pixels (e.g. inside a warp or unpadded).
    """
    _check_maps(probs, "part_distributions")
    mass = probs + eps
    if mask is not None:
        mass = mass * mask.to(mass.dtype)
    return mass / mass.sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(mass.dtype).tiny)


def part_centres(probs: Tensor, eps: float = 1e-3, mask: Tensor | None = None) -> Tensor:
    """Centres of mass ``[B, K, 2]`` (x, y), normalised [-1, 1], of part maps ``[B, K, H, W]``."""
    dist = part_distributions(probs, eps, mask)
    grid = pixel_grid(probs.shape[-2], probs.shape[-1], device=probs.device, dtype=probs.dtype)
    return torch.einsum("bkhw,hwc->bkc", dist, grid)


def centres_to_pixels(centres: Tensor, size: Sequence[int]) -> Tensor:
    """Normalised centres ``[..., 2]`` -> pixel (x, y) of an image of ``size`` (H, W), centres at integers."""
    return normalized_to_pixels(centres, size)


def concentration_loss(probs: Tensor, eps: float = 1e-3, mask: Tensor | None = None) -> Tensor:
    """``mean_b sum_k sum_p p_k(p) ||x_p - c_k||^2``: the spatial variance of every part, summed over parts.

    Gradients flow through the centres ``c_k`` too. 0 for point masses (with ``eps=0``); a uniform map on
    [-1, 1]^2 gives 2/3 per part.
    """
    dist = part_distributions(probs, eps, mask)
    grid = pixel_grid(probs.shape[-2], probs.shape[-1], device=probs.device, dtype=probs.dtype)
    centres = torch.einsum("bkhw,hwc->bkc", dist, grid)
    sq = (grid[None, None] - centres[:, :, None, None, :]).pow(2).sum(-1)
    return (dist * sq).sum(dim=(1, 2, 3)).mean()


def equivariance_kl(log_pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """``KL(target || pred)`` per pixel (summed over the K+1 channels), mean over valid pixels of the batch.

    ``log_pred``: log-softmax of the network on the warped image, ``R(T(I))``; ``target``: the warped part
    probabilities of the original image, ``T(R(I))``, detached here (SCOPS trains only the warped branch
    with this term). ``valid`` ``[B, 1, H, W]`` marks pixels whose warp source lies inside the image; the
    target is renormalised there so border pixels compare two distributions.
    """
    if log_pred.shape != target.shape:
        raise ValueError(
            f"equivariance_kl: prediction {tuple(log_pred.shape)} and target {tuple(target.shape)} differ"
        )
    target = target.detach()
    target = target / target.sum(dim=1, keepdim=True).clamp_min(1e-12)
    per_pixel = (torch.xlogy(target, target) - target * log_pred).sum(dim=1, keepdim=True)
    if valid is None:
        return per_pixel.mean()
    weight = valid.to(per_pixel.dtype)
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)


def centre_equivariance_loss(centres: Tensor, target_centres: Tensor) -> Tensor:
    """``mean_b sum_k ||c_k - c'_k||^2`` between two sets of part centres ``[B, K, 2]``."""
    if centres.shape != target_centres.shape:
        raise ValueError(
            f"centre_equivariance_loss: shapes {tuple(centres.shape)} and "
            f"{tuple(target_centres.shape)} differ"
        )
    return (centres - target_centres).pow(2).sum(dim=(1, 2)).mean()


def semantic_consistency_loss(
    parts: Tensor, features: Tensor, basis: Tensor, saliency: Tensor | None = None, chunk: int = 128
) -> Tensor:
    """``mean over b, pixels, channels of (sum_k R_k w_k - V)^2`` with ``V = S * upsample(features)``.

    Args:
        parts: foreground part maps ``R`` ``[B, K, H, W]``.
        features: frozen features ``[B, D, h, w]`` at any resolution; bilinearly upsampled to (H, W)
            (``align_corners=False``).
        basis: non-negative part basis ``W`` ``[K, D]`` (row k = w_k).
        saliency: optional ``[B, 1, H, W]`` (or ``[B, H, W]``) soft mask ``S`` in [0, 1].
        chunk: channels upsampled at a time for the constant ``||V||^2`` term (bounds memory).

    Computed through ``||RW - V||^2 = R^T (W W^T) R - 2 R . (W V) + ||V||^2``: bilinear upsampling is
    linear, so ``W V`` is taken at the features' resolution and only K maps are upsampled; the D-channel
    reconstruction at full resolution (gigabytes at 256 px) is never formed. Same value and gradients as
    the direct formula.
    """
    _check_maps(parts, "semantic_consistency_loss")
    batch, k, height, width = parts.shape
    if features.ndim != 4 or features.shape[0] != batch:
        raise ValueError(
            f"semantic_consistency_loss: features must be [B={batch}, D, h, w], got {tuple(features.shape)}"
        )
    dim = features.shape[1]
    if tuple(basis.shape) != (k, dim):
        raise ValueError(
            f"semantic_consistency_loss: basis must be [K={k}, D={dim}] for these parts and features, "
            f"got {tuple(basis.shape)}"
        )
    size = (height, width)
    features = features.detach()
    projected = torch.einsum("bdhw,kd->bkhw", features, basis)
    if projected.shape[-2:] != size:
        projected = F.interpolate(projected, size=size, mode="bilinear", align_corners=False)
    if saliency is not None:
        saliency = saliency.reshape(batch, 1, height, width).to(parts.dtype)
        projected = projected * saliency
    gram = basis @ basis.t()
    quadratic = torch.einsum("bkhw,kl,blhw->bhw", parts, gram, parts)
    cross = (parts * projected).sum(dim=1)
    with torch.no_grad():
        constant = features.new_zeros(batch, height, width)
        for start in range(0, dim, chunk):
            part = features[:, start : start + chunk]
            if part.shape[-2:] != size:
                part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            constant += part.pow(2).sum(dim=1)
        if saliency is not None:
            constant = constant * saliency[:, 0].pow(2)
    return (quadratic - 2.0 * cross + constant).mean() / dim


def orthonormality_loss(basis: Tensor, eps: float = 1e-6) -> Tensor:
    """``sum((W_hat W_hat^T - I)^2)`` with ``W_hat`` the rows of ``basis`` ``[K, D]`` L2-normalised."""
    if basis.ndim != 2:
        raise ValueError(f"orthonormality_loss: basis must be [K, D], got shape {tuple(basis.shape)}")
    unit = basis / (basis.pow(2).sum(dim=1, keepdim=True) + eps).sqrt()
    eye = torch.eye(basis.shape[0], device=basis.device, dtype=basis.dtype)
    return (unit @ unit.t() - eye).pow(2).sum()


__all__ = [
    "centre_equivariance_loss",
    "centres_to_pixels",
    "concentration_loss",
    "equivariance_kl",
    "orthonormality_loss",
    "part_centres",
    "part_distributions",
    "semantic_consistency_loss",
]
