"""Cityscapes fine annotations, with labelIds mapped to the 19 standard train ids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from segzoo.data.base import Sample, SegmentationDataset, as_mask, require_dir
from segzoo.data.io import check_same_size, read_image, read_label_array
from segzoo.registry import DATASETS

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# Official colours (cityscapesScripts labels.py), in train-id order.
CITYSCAPES_PALETTE = [
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
]

# labelId -> trainId for the 19 evaluated classes (cityscapesScripts labels.py); all other ids are ignored.
LABEL_TO_TRAIN_ID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def train_id_lut(ignore_index: int = 255) -> np.ndarray:
    """A 256-entry lookup table from labelId to train id (``ignore_index`` for unevaluated ids)."""
    lut = np.full(256, ignore_index, dtype=np.int64)
    for label_id, train_id in LABEL_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


@DATASETS.register("cityscapes")
class Cityscapes(SegmentationDataset):
    """Cityscapes ``gtFine`` semantic labels, 19 classes.

    ``root`` holds ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` and
    ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png``; ``split`` is ``train``, ``val`` or ``test``.
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        super().__init__(transforms)
        self.root = require_dir(root, "Cityscapes root")
        self.split = split
        image_root = require_dir(self.root / "leftImg8bit", "Cityscapes image")
        label_root = require_dir(self.root / "gtFine", "Cityscapes gtFine label")
        split_dir = image_root / split
        if not split_dir.is_dir():
            available = ", ".join(sorted(p.name for p in image_root.iterdir() if p.is_dir())) or "none"
            raise FileNotFoundError(
                f"{split_dir}: Cityscapes split {split!r} not found; available: {available}"
            )

        self.pairs: list[tuple[Path, Path]] = []
        for image_path in sorted(split_dir.glob(f"*/*{IMAGE_SUFFIX}")):
            name = image_path.name[: -len(IMAGE_SUFFIX)]
            label_path = label_root / split / image_path.parent.name / f"{name}{LABEL_SUFFIX}"
            if not label_path.is_file():
                raise FileNotFoundError(f"{label_path}: label file not found for image {image_path}")
            self.pairs.append((image_path, label_path))
        if not self.pairs:
            raise ValueError(f"{split_dir}: no images found (looked for <city>/*{IMAGE_SUFFIX})")
        self._lut = train_id_lut(self.ignore_index)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> Sample:
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        label_ids = read_label_array(label_path)
        check_same_size(image.shape[-2:], label_ids.shape, image_path, label_path)
        if label_ids.max(initial=0) >= len(self._lut):
            raise ValueError(
                f"{label_path}: labelId {int(label_ids.max())} out of range; expected 0..{len(self._lut) - 1}"
            )
        return {"image": image, "mask": as_mask(self._lut[label_ids]), "meta": {"path": str(image_path)}}
