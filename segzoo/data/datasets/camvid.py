"""CamVid road scenes in the SegNet layout: ``<split>/``, ``<split>annot/`` and ``<split>.txt``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from segzoo.data.base import Sample, SegmentationDataset, as_mask, require_dir
from segzoo.data.datasets.folder import pair_by_stem
from segzoo.data.io import check_same_size, list_images, read_image, read_label_array
from segzoo.registry import DATASETS

CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)

# SegNet's CamVid colours, in class-id order.
CAMVID_PALETTE = [
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
]

CAMVID_VOID = 11
_VOID_COLOR = (0, 0, 0)


def _available_splits(root: Path) -> list[str]:
    """Split names that have an ``<split>annot`` folder or a ``<split>.txt`` list."""
    folders = {p.name[: -len("annot")] for p in root.glob("*annot") if p.is_dir() and p.name != "annot"}
    lists = {p.stem for p in root.glob("*.txt") if (root / p.stem).is_dir()}
    return sorted(folders | lists)


def _resolve_listed(root: Path, entry: str) -> Path:
    """A path from a list file: relative to ``root``; SegNet's absolute paths fall back to their last two
    components (``train/x.png``) under ``root`` when they do not exist here."""
    path = Path(entry)
    if not path.is_absolute():
        return root / path
    if path.exists():
        return path
    return root / path.parent.name / path.name


def _read_list(root: Path, list_file: Path) -> list[tuple[Path, Path]]:
    """Parse ``image label`` lines, checking that both files exist."""
    pairs = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(
                f"{list_file}, line {number}: {line.strip()!r}; expected two paths 'image label'"
            )
        image_path, mask_path = (_resolve_listed(root, f) for f in fields)
        for path in (image_path, mask_path):
            if not path.is_file():
                raise FileNotFoundError(f"{list_file}, line {number}: {path} not found")
        pairs.append((image_path, mask_path))
    if not pairs:
        raise ValueError(f"{list_file}: list is empty; expected lines 'image label'")
    return pairs


@DATASETS.register("camvid")
class CamVid(SegmentationDataset):
    """CamVid (SegNet version): 11 classes, label 11 (void) becomes ``ignore_index``.

    ``root`` holds ``<split>/`` images, ``<split>annot/`` label PNGs and optionally ``<split>.txt``
    with ``image label`` pairs relative to ``root``; without the list, files are paired by stem.
    ``split`` is any split present (``train``, ``val``, ``test``).
    """

    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        super().__init__(transforms)
        self.root = require_dir(root, "CamVid root")
        self.split = split
        list_file = self.root / f"{split}.txt"
        image_dir, mask_dir = self.root / split, self.root / f"{split}annot"
        if list_file.is_file():
            self.pairs = _read_list(self.root, list_file)
        elif image_dir.is_dir() and mask_dir.is_dir():
            self.pairs = pair_by_stem(list_images(image_dir), list_images(mask_dir), image_dir, mask_dir)
        else:
            available = ", ".join(_available_splits(self.root)) or "none"
            raise FileNotFoundError(
                f"{self.root}: CamVid split {split!r} not found (no {list_file.name}, "
                f"or no {image_dir.name}/ and {mask_dir.name}/ folders); available splits: {available}"
            )
        # RGB label images (some CamVid copies) are decoded with the palette, void black -> 11.
        self._colors = {rgb: i for i, rgb in enumerate(CAMVID_PALETTE)} | {_VOID_COLOR: CAMVID_VOID}

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> Sample:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)
        labels = read_label_array(mask_path, self._colors)
        check_same_size(image.shape[-2:], labels.shape, image_path, mask_path)
        labels = np.where(labels == CAMVID_VOID, self.ignore_index, labels)
        return {"image": image, "mask": as_mask(labels), "meta": {"path": str(image_path)}}
