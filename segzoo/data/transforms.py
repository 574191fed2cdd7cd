"""Joint image/mask transforms built on torchvision.transforms.v2 and tv_tensors.

Masks (``tv_tensors.Mask``) are always resampled with nearest neighbour by torchvision, and padding fills
them with ``ignore_index`` so padded pixels never count in a metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomScale(v2.Transform):
    """Resize every spatial input by one random factor drawn uniformly from ``scale_range``
    (aspect ratio kept), like mmsegmentation's ``RandomResize`` with a ratio range."""

    def __init__(self, scale_range: Sequence[float]) -> None:
        super().__init__()
        low, high = float(scale_range[0]), float(scale_range[1])
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {tuple(scale_range)}")
        self.scale_range = (low, high)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        low, high = self.scale_range
        factor = low + (high - low) * float(torch.rand(()))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, size=params["size"], antialias=True)


def _pair(size: int | Sequence[int]) -> list[int]:
    return [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]


def build_transforms(
    train: bool,
    *,
    resize: int | Sequence[int] | None = None,
    crop_size: int | Sequence[int] | None = None,
    scale_range: Sequence[float] | None = None,
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    ignore_index: int = 255,
) -> v2.Compose:
    """The standard pipeline: resize -> (train: random scale, crop padded with ignore_index, flip, colour
    jitter) -> float in [0, 1] -> normalise. ``resize`` is (H, W) or the short side when an int."""
    steps: list[v2.Transform] = []
    if resize is not None:
        steps.append(v2.Resize(resize if isinstance(resize, int) else _pair(resize), antialias=True))
    if train:
        if scale_range is not None:
            steps.append(RandomScale(scale_range))
        if crop_size is not None:
            fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index, "others": 0}
            steps.append(v2.RandomCrop(_pair(crop_size), pad_if_needed=True, fill=fill))
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if color_jitter > 0:
            cj = float(color_jitter)
            steps.append(v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=min(cj, 0.5) / 4))
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    if mean is not None and std is not None:
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)
