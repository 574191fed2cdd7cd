"""The sample convention every segzoo dataset follows, and the base class that enforces it.

A sample is a dict:

- ``image``: ``tv_tensors.Image`` [3, H, W] uint8 (float after ``Normalize``),
- ``mask``: ``tv_tensors.Mask`` [H, W] int64 class ids, ``ignore_index`` where unlabelled (optional),
- ``masks``: ``tv_tensors.Mask`` [N, H, W] int64, several annotations of one image (BSDS500; optional),
- ``parts``: ``tv_tensors.Mask`` [H, W] int64 part ids, 0 = background (optional),
- ``keypoints``: ``tv_tensors.KeyPoints`` [K, 2] (x, y) in pixels (optional),
- ``boxes``: ``tv_tensors.BoundingBoxes`` [1, 4] XYXY (optional),
- ``saliency``: ``tv_tensors.Mask`` [H, W] float in [0, 1] (optional),
- ``meta``: dict with ``path`` (str), ``index`` (int) and ``size`` ((H, W) as read from disk).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from segzoo.data.io import check_label_range

Sample = dict[str, Any]


class SegmentationDataset(Dataset, ABC):
    """Base class: subclasses implement :meth:`__len__` and :meth:`load`; ``__getitem__`` checks and
    transforms.

    Class attributes (or instance attributes set in ``__init__``):
    ``classes`` (names; empty when unlabelled), ``ignore_index``, ``palette`` (optional list of RGB).
    """

    classes: tuple[str, ...] = ()
    ignore_index: int = 255
    palette: list[tuple[int, int, int]] | None = None

    def __init__(self, transforms: Callable[[Sample], Sample] | None = None) -> None:
        self.transforms = transforms

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @abstractmethod
    def load(self, index: int) -> Sample:
        """Return the raw sample ``index`` (uint8 image, int64 masks, ``meta`` with ``path``)."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    def __getitem__(self, index: int) -> Sample:
        if index < 0 or index >= len(self):
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {len(self)} samples")
        sample = self.load(index)
        meta = sample.setdefault("meta", {})
        meta["index"] = index
        meta.setdefault("size", tuple(sample["image"].shape[-2:]))
        if "mask" in sample and self.num_classes:
            check_label_range(sample["mask"], self.num_classes, self.ignore_index, meta.get("path", index))
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def require_dir(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, raising a clear error when the folder is missing."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} folder not found")
    return path


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, raising a clear error when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    return path


def as_mask(array: Any) -> torch.Tensor:
    """Wrap an HxW (or NxHxW) integer array as an int64 ``tv_tensors.Mask``."""
    from torchvision import tv_tensors

    return tv_tensors.Mask(torch.as_tensor(array, dtype=torch.int64))
