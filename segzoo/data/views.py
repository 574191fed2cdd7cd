"""R2O/BYOL views of one image: two augmented crops, the whole-image "raw" view and its SLIC superpixels.

:class:`R2OViews` is a sample transform (``data.train_transforms`` of :class:`segzoo.data.SegDataModule`).
SLIC runs here, in the loader workers, so the training step never waits for it on the main process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from segzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from segzoo.ops.superpixels import slic

VIEW_KEYS = ("view1", "view2", "raw", "boxes1", "boxes2", "flip1", "flip2", "superpixels")


def _pair_of(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if len(value) != 2:
        raise ValueError(f"R2OViews: {name} must be a number or a pair (view 1, view 2), got {value!r}")
    return float(value[0]), float(value[1])


class R2OViews:
    """Turn a sample with an ``image`` (uint8 ``[3, H, W]``) into an R2O pretraining sample.

    Added keys (all fixed-size tensors, so the collate stacks them):

    - ``view1``, ``view2``: float ``[3, size, size]``, normalised. Each is a RandomResizedCrop of the
      original image (``scale``, ``ratio``, bicubic) with BYOL's photometric augmentations (colour jitter
      with probability ``jitter_prob``, grayscale ``grayscale_prob``, Gaussian blur ``blur_prob`` per view,
      solarisation ``solarize_prob`` per view) and its own random horizontal flip (``flip_prob``).
    - ``raw``: float ``[3, size, size]``, the whole image resized to ``size`` (bicubic), normalised.
    - ``boxes1``, ``boxes2``: float32 ``[4]`` crop boxes ``x1, y1, x2, y2`` in raw-view pixel coordinates
      (continuous: the crop covers ``[x1, x2) x [y1, y2)``), before the view's flip.
    - ``flip1``, ``flip2``: bool ``[]``, whether the view was flipped horizontally after cropping.
    - ``superpixels``: int64 ``[size, size]``, SLIC of the raw view with contiguous ids from 0
      (:func:`segzoo.ops.superpixels.slic`, ``n_segments`` and ``compactness``; other parameters at
      scikit-image's defaults).

    ``image`` is replaced by the raw view (so the collate's padding and ``meta["input_size"]`` stay
    meaningful for images of any size), and label keys (``mask``, ``parts``, ``masks``, ``saliency``,
    ``keypoints``, ``boxes``) are dropped: pretraining is unlabelled and they would not match the views.
    All randomness comes from torch's default generator, which the DataLoader seeds per worker, so a
    seeded run repeats.
    """

    _DROPPED = ("mask", "parts", "masks", "saliency", "keypoints", "boxes")

    def __init__(
        self,
        size: int = 224,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_prob: float = 0.5,
        jitter_prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        grayscale_prob: float = 0.2,
        blur_prob: float | Sequence[float] = (1.0, 0.1),
        blur_sigma: Sequence[float] = (0.1, 2.0),
        solarize_prob: float | Sequence[float] = (0.0, 0.2),
        n_segments: int = 100,
        compactness: float = 10.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"R2OViews: size must be an int >= 8, got {size!r}")
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"R2OViews: scale must be [low, high] with 0 < low <= high <= 1, got {scale!r}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"R2OViews: ratio must be [low, high] with 0 < low <= high, got {ratio!r}")
        self.size = size
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip_prob = float(flip_prob)
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        blur = _pair_of(blur_prob, "blur_prob")
        solarize = _pair_of(solarize_prob, "solarize_prob")
        # BYOL: a kernel of about 10% of the view, odd
        kernel = max(3, (size // 10) | 1)
        jitter = v2.RandomApply([v2.ColorJitter(brightness, contrast, saturation, hue)], p=jitter_prob)
        self.photometric = [
            v2.Compose(
                [
                    jitter,
                    v2.RandomGrayscale(p=grayscale_prob),
                    v2.RandomApply([v2.GaussianBlur(kernel, sigma=tuple(blur_sigma))], p=blur[i]),
                    v2.RandomSolarize(threshold=0.5, p=solarize[i]),
                ]
            )
            for i in range(2)
        ]
        self.normalize = v2.Normalize(mean=list(mean), std=list(std))

    def _view(self, image: Tensor, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """One augmented view, its crop box in raw-view pixels and its flip flag."""
        height, width = image.shape[-2:]
        top, left, h, w = v2.RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        crop = F.resized_crop(
            image, top, left, h, w, [self.size, self.size], InterpolationMode.BICUBIC, antialias=True
        )
        flip = bool(torch.rand(()) < self.flip_prob)
        if flip:
            crop = F.horizontal_flip(crop)
        crop = self.photometric[index](F.to_dtype(crop, torch.float32, scale=True)).clamp(0.0, 1.0)
        sx, sy = self.size / width, self.size / height
        box = torch.tensor([left * sx, top * sy, (left + w) * sx, (top + h) * sy], dtype=torch.float32)
        return self.normalize(crop), box, torch.tensor(flip)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Return ``sample`` with the R2O keys added (see the class docstring)."""
        image = sample.get("image")
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
            path = sample.get("meta", {}).get("path", "<unknown>")
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"R2OViews: {path}: expected an RGB image tensor [3, H, W], got {shape}")
        image = image.as_subclass(Tensor)
        if image.dtype != torch.uint8:
            image = F.to_dtype(image.clamp(0.0, 1.0), torch.uint8, scale=True)
        out = {k: v for k, v in sample.items() if k not in self._DROPPED}
        raw = F.resize(image, [self.size, self.size], InterpolationMode.BICUBIC, antialias=True)
        segments = slic(
            raw.permute(1, 2, 0).numpy(), n_segments=self.n_segments, compactness=self.compactness
        )
        out["superpixels"] = torch.from_numpy(segments).to(torch.int64)
        raw = self.normalize(F.to_dtype(raw, torch.float32, scale=True))
        out["raw"] = raw
        out["image"] = raw
        for i in (1, 2):
            view, box, flip = self._view(image, i - 1)
            out[f"view{i}"], out[f"boxes{i}"], out[f"flip{i}"] = view, box, flip
        return out


__all__ = ["VIEW_KEYS", "R2OViews"]
