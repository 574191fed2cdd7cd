"""Weizmann Horse database: horse photos with a soft figure/ground mask each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

from segzoo.data.base import Sample, SegmentationDataset, as_mask, require_dir
from segzoo.data.io import list_images, read_image, read_image_array
from segzoo.registry import DATASETS

# The photos and masks were scaled separately by the database authors, so sizes only agree up to rounding.
ASPECT_TOLERANCE = 0.03


def read_soft_mask(path: str | Path, threshold: int = 128) -> np.ndarray:
    """Read a greyscale (anti-aliased, possibly JPEG) mask as HxW int64: 1 where value >= threshold."""
    grey = read_image_array(path).mean(axis=2)  # exact for greyscale files; luminance-like for colour ones
    return (grey >= threshold).astype(np.int64)


@DATASETS.register("weizmann_horses")
class WeizmannHorses(SegmentationDataset):
    """Weizmann horses: ``rgb/horseNNN.jpg`` + ``figure_ground/horseNNN.jpg`` (foreground = value >= 128).

    The photo is resized (bilinear, antialiased) to its mask's size, so ``image`` and ``mask`` align;
    ``meta["original_size"]`` keeps the photo's size on disk. There is no official split: only
    ``split="all"`` exists and the datamodule does any splitting.
    """

    classes = ("background", "horse")
    palette = [(0, 0, 0), (255, 255, 255)]

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        super().__init__(transforms)
        if split != "all":
            raise ValueError(
                f"weizmann_horses: split {split!r} does not exist; the database has no official split, "
                "use split='all' and let the datamodule make train/val/test subsets"
            )
        self.root = Path(root)
        self.split = split
        image_dir = require_dir(self.root / "rgb", "Weizmann horses rgb")
        mask_dir = require_dir(self.root / "figure_ground", "Weizmann horses figure_ground")
        images = {p.stem: p for p in list_images(image_dir)}
        masks = {p.stem: p for p in list_images(mask_dir)}
        no_mask = sorted(images.keys() - masks.keys())
        no_image = sorted(masks.keys() - images.keys())
        if no_mask or no_image:
            raise ValueError(
                f"weizmann_horses: unmatched files in {image_dir} and {mask_dir}: images without mask "
                f"{no_mask[:5]} ({len(no_mask)}), masks without image {no_image[:5]} ({len(no_image)})"
            )
        self.samples = [(images[s], masks[s]) for s in sorted(images)]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Sample:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        mask = read_soft_mask(mask_path)
        (ih, iw), (mh, mw) = image.shape[-2:], mask.shape
        if abs(iw / ih - mw / mh) > ASPECT_TOLERANCE * (mw / mh):
            raise ValueError(
                f"image/mask aspect mismatch: {image_path} is {(ih, iw)} (H, W) but {mask_path} is "
                f"{(mh, mw)} (H, W); expected the same aspect ratio (within {ASPECT_TOLERANCE:.0%})"
            )
        if (ih, iw) != (mh, mw):
            image = tv_tensors.Image(
                F.resize(image, [mh, mw], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
            )
        return {
            "image": image,
            "mask": as_mask(mask),
            "meta": {
                "path": str(image_path),
                "mask_path": str(mask_path),
                "size": (mh, mw),
                "original_size": (ih, iw),
            },
        }
