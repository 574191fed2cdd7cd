"""Inference modes shared by segmentation methods: whole image, sliding window, multi-scale + flip."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Logits = Callable[[torch.Tensor], torch.Tensor]


def _windows(size: int, crop: int, stride: int) -> list[int]:
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop + 1, stride))
    if starts[-1] != size - crop:
        starts.append(size - crop)
    return starts


def slide_logits(
    logits_fn: Logits,
    image: torch.Tensor,
    num_classes: int,
    crop_size: Sequence[int],
    stride: Sequence[int],
    window_batch: int = 4,
) -> torch.Tensor:
    """Sliding-window logits [B, C, H, W]: windows of ``crop_size`` every ``stride`` pixels (the last
    window flush with the border), evaluated ``window_batch`` at a time, overlaps averaged. An image
    smaller than a window is evaluated whole."""
    batch, _, height, width = image.shape
    ch, cw = min(crop_size[0], height), min(crop_size[1], width)
    boxes = [(y, x) for y in _windows(height, ch, stride[0]) for x in _windows(width, cw, stride[1])]
    total = image.new_zeros((batch, num_classes, height, width))
    count = image.new_zeros((1, 1, height, width))
    for first in range(0, len(boxes), window_batch):
        group = boxes[first : first + window_batch]
        crops = torch.cat([image[:, :, y : y + ch, x : x + cw] for y, x in group])
        out = logits_fn(crops).view(len(group), batch, num_classes, ch, cw)
        for (y, x), logits in zip(group, out, strict=True):
            total[:, :, y : y + ch, x : x + cw] += logits
            count[:, :, y : y + ch, x : x + cw] += 1
    return total / count


def infer_logits(
    logits_fn: Logits,
    image: torch.Tensor,
    num_classes: int,
    mode: str = "whole",
    crop_size: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> torch.Tensor:
    """Logits at the input's size, averaged (as softmax probabilities when more than one view is used)
    over ``scales`` and, with ``flip``, horizontal flips. ``mode`` is ``"whole"`` or ``"slide"``."""
    if mode not in ("whole", "slide"):
        raise ValueError(f"inference mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide" and (crop_size is None or stride is None):
        raise ValueError("sliding-window inference needs crop_size and stride")
    height, width = image.shape[-2:]
    views = [(s, f) for s in scales for f in ((False, True) if flip else (False,))]

    def run(x: torch.Tensor) -> torch.Tensor:
        if mode == "slide":
            return slide_logits(logits_fn, x, num_classes, crop_size, stride)
        return logits_fn(x)

    if len(views) == 1 and views[0] == (1.0, False):
        return run(image)
    probs = image.new_zeros((image.shape[0], num_classes, height, width))
    for scale, flipped in views:
        x = image
        if scale != 1.0:
            size = [max(1, round(height * scale)), max(1, round(width * scale))]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if flipped:
            x = x.flip(-1)
        logits = run(x)
        if flipped:
            logits = logits.flip(-1)
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probs += logits.softmax(dim=1)
    return (probs / len(views)).log()
