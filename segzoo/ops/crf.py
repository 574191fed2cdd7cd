"""Fully connected CRF post-processing (Krähenbühl & Koltun) of per-pixel class probabilities.

SCOPS applies it for display only: a Gaussian pairwise term (sxy 3, compat 5) for 5 mean-field iterations,
no appearance (bilateral) term. ``pydensecrf`` is an optional dependency (``segzoo[crf]``), imported on
first use so the rest of segzoo works without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# pydensecrf's own floor for -log(p): keeps the unary finite where a class has probability 0.
_PROB_FLOOR = 1e-5
_MISSING = "dense CRF needs the optional dependency: pip install 'segzoo[crf]' (pydensecrf2)"


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _as_hwc_image(image: Any) -> np.ndarray:
    """A C-contiguous uint8 [H, W, 3] image; a torch [3, H, W] image (segzoo's layout) is transposed."""
    is_tensor = isinstance(image, torch.Tensor)
    array = _as_numpy(image)
    if is_tensor and array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"dense_crf: image must be [H, W, 3] (or a torch [3, H, W] tensor), got shape {array.shape}"
        )
    if array.dtype != np.uint8:
        raise TypeError(f"dense_crf: image must be uint8 RGB (0..255), got dtype {array.dtype}")
    return np.ascontiguousarray(array)


def dense_crf(
    image: np.ndarray | torch.Tensor,
    probs: np.ndarray | torch.Tensor,
    sxy_gaussian: float = 3.0,
    compat_gaussian: float = 5.0,
    sxy_bilateral: float | None = None,
    srgb_bilateral: float = 13.0,
    compat_bilateral: float = 10.0,
    iterations: int = 5,
) -> np.ndarray:
    """Refine class probabilities with a dense CRF and return the labels [H, W] int64.

    Args:
        image: uint8 RGB [H, W, 3] (numpy or torch; a torch [3, H, W] tensor is accepted too). Only the
            bilateral term looks at it, but its size must match ``probs``.
        probs: class probabilities [C, H, W] (e.g. a softmax), numpy or torch.
        sxy_gaussian, compat_gaussian: the smoothness kernel (spatial std in pixels, Potts weight).
        sxy_bilateral: spatial std of the appearance kernel; ``None`` (the default, as in SCOPS's display
            CRF) disables it. With it, ``srgb_bilateral`` and ``compat_bilateral`` apply.
        iterations: mean-field iterations.
    """
    probs_np = _as_numpy(probs)
    if probs_np.ndim != 3 or probs_np.shape[0] < 1:
        raise ValueError(f"dense_crf: probs must be [C, H, W] probabilities, got shape {probs_np.shape}")
    if not np.issubdtype(probs_np.dtype, np.floating):
        raise TypeError(f"dense_crf: probs must be floating point probabilities, got dtype {probs_np.dtype}")
    rgb = _as_hwc_image(image)
    num_classes, height, width = probs_np.shape
    if rgb.shape[:2] != (height, width):
        raise ValueError(
            f"dense_crf: image size {rgb.shape[:2]} (image shape {rgb.shape}) does not match probs size "
            f"{(height, width)} (probs shape {probs_np.shape})"
        )
    if not np.isfinite(probs_np).all() or probs_np.min() < 0:
        raise ValueError("dense_crf: probs must be finite and non-negative (softmax outputs)")
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"dense_crf: iterations must be a positive integer, got {iterations!r}")
    try:
        from pydensecrf import densecrf
    except ImportError as error:
        raise ImportError(_MISSING) from error

    unary = -np.log(np.clip(probs_np.astype(np.float32), _PROB_FLOOR, None)).reshape(num_classes, -1)
    crf = densecrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=float(sxy_gaussian), compat=float(compat_gaussian))
    if sxy_bilateral is not None:
        crf.addPairwiseBilateral(
            sxy=float(sxy_bilateral), srgb=float(srgb_bilateral), rgbim=rgb, compat=float(compat_bilateral)
        )
    q = np.asarray(crf.inference(int(iterations)), dtype=np.float32).reshape(num_classes, height, width)
    return q.argmax(axis=0).astype(np.int64)
