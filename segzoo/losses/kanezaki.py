"""Losses of Kanezaki-style unsupervised segmentation (ICASSP 2018, TIP 2020).

All take the network response as logits ``[B, C, H, W]``; label maps are ``[B, H, W]`` int64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def continuity_loss(response: torch.Tensor) -> torch.Tensor:
    """Spatial continuity (TIP 2020): mean |r[y+1, x] - r[y, x]| + mean |r[y, x+1] - r[y, x]| (L1).

    A direction with a single row/column has no differences and contributes 0, so 1-pixel-high or -wide
    maps still give a finite value.
    """
    if response.ndim != 4:
        raise ValueError(
            f"continuity_loss: expected a [B, C, H, W] response, got shape {tuple(response.shape)}"
        )
    loss = response.new_zeros(())
    if response.shape[-2] > 1:
        loss = loss + (response[..., 1:, :] - response[..., :-1, :]).abs().mean()
    if response.shape[-1] > 1:
        loss = loss + (response[..., :, 1:] - response[..., :, :-1]).abs().mean()
    return loss


def _masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    # F.cross_entropy averages over kept pixels but returns NaN when none is kept; 0 keeps the sum finite.
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def similarity_loss(
    logits: torch.Tensor, target: torch.Tensor | None = None, ignore_index: int = -100
) -> torch.Tensor:
    """Feature-similarity loss: cross-entropy of ``logits`` [B, C, H, W] to ``target`` [B, H, W].

    ``target`` defaults to the logits' own argmax (TIP 2020); ICASSP 2018 passes the superpixel-refined
    argmax instead. Targets never carry gradient. Pixels equal to ``ignore_index`` are left out (mean over
    the rest; 0 when none is left).
    """
    if logits.ndim != 4:
        raise ValueError(f"similarity_loss: expected [B, C, H, W] logits, got shape {tuple(logits.shape)}")
    if target is None:
        target = logits.detach().argmax(dim=1)
    elif target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"similarity_loss: target shape {tuple(target.shape)} does not match logits "
            f"{tuple(logits.shape)} (expected [B, H, W])"
        )
    return _masked_cross_entropy(logits, target.long(), ignore_index)


def scribble_loss(logits: torch.Tensor, scribbles: torch.Tensor, unlabelled: int = 255) -> torch.Tensor:
    """Cross-entropy of ``logits`` [B, C, H, W] to user scribbles [B, H, W] on scribbled pixels only.

    Pixels equal to ``unlabelled`` carry no scribble; scribble class ``k`` is channel ``k``. Returns 0 when
    no pixel is scribbled.
    """
    if scribbles.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"scribble_loss: scribbles shape {tuple(scribbles.shape)} does not match logits "
            f"{tuple(logits.shape)} (expected [B, H, W])"
        )
    scribbles = scribbles.long()
    labelled = scribbles != unlabelled
    if bool(labelled.any()) and int(scribbles[labelled].max()) >= logits.shape[1]:
        raise ValueError(
            f"scribble_loss: scribble label {int(scribbles[labelled].max())} needs more than the "
            f"{logits.shape[1]} output channels"
        )
    target = torch.where(labelled, scribbles, torch.full_like(scribbles, -100))
    return _masked_cross_entropy(logits, target, -100)
