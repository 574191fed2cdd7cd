"""PASCAL VOC 2012 semantic segmentation (21 classes, palette PNG masks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segzoo.data.base import Sample, SegmentationDataset, as_mask, require_dir
from segzoo.data.io import check_same_size, read_image, read_label_array
from segzoo.registry import DATASETS

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """The standard VOC colour map: the bits of the index spread over the high bits of r, g, b."""
    colors = []
    for index in range(n):
        r = g = b = 0
        code = index
        for shift in range(7, -1, -1):
            r |= (code & 1) << shift
            g |= ((code >> 1) & 1) << shift
            b |= ((code >> 2) & 1) << shift
            code >>= 3
        colors.append((r, g, b))
    return colors


VOC_PALETTE = voc_colormap(len(VOC_CLASSES))


def _find_voc2012(root: Path) -> Path:
    """Accept the ``VOC2012`` folder itself or a folder containing ``VOC2012`` or ``VOCdevkit/VOC2012``."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{root}: not a PASCAL VOC 2012 folder; expected ImageSets/Segmentation in it, "
        "in VOC2012/ or in VOCdevkit/VOC2012/"
    )


@DATASETS.register("voc")
class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 segmentation: ``split`` names a list in ``ImageSets/Segmentation`` (train, val,
    trainval). Masks are palette PNGs whose indices are the class ids (255 = boundary, ignored).

    ``mask_dir`` selects another mask folder with the same layout (e.g. ``SegmentationClassAug``).
    """

    classes = VOC_CLASSES
    palette = VOC_PALETTE

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[Sample], Sample] | None = None,
        mask_dir: str = "SegmentationClass",
    ) -> None:
        super().__init__(transforms)
        self.root = _find_voc2012(require_dir(root, "VOC root"))
        self.split = split
        sets = self.root / "ImageSets" / "Segmentation"
        list_file = sets / f"{split}.txt"
        if not list_file.is_file():
            available = ", ".join(sorted(p.stem for p in sets.glob("*.txt"))) or "none"
            raise FileNotFoundError(
                f"{list_file}: VOC split {split!r} not found; available splits: {available}"
            )
        ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise ValueError(f"{list_file}: list is empty; expected one image id per line")
        image_dir = require_dir(self.root / "JPEGImages", "VOC image")
        masks = require_dir(self.root / mask_dir, "VOC mask")
        self.pairs = [(image_dir / f"{i}.jpg", masks / f"{i}.png") for i in ids]
        for path in (p for pair in self.pairs for p in pair):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: file not found (listed in {list_file})")
        # RGB-encoded masks are decoded with the VOC colour map; (224, 224, 192) is the boundary colour.
        self._colors = {rgb: i for i, rgb in enumerate(VOC_PALETTE)} | {
            voc_colormap()[255]: self.ignore_index
        }

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> Sample:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)
        labels = read_label_array(mask_path, self._colors)
        check_same_size(image.shape[-2:], labels.shape, image_path, mask_path)
        return {"image": image, "mask": as_mask(labels), "meta": {"path": str(image_path)}}
