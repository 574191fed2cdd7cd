"""CUB-200-2011 birds: foreground masks, bounding boxes and the 15 part locations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from segzoo.data.base import Sample, SegmentationDataset, as_mask, require_dir, require_file
from segzoo.data.io import check_same_size, read_image, read_image_array
from segzoo.registry import DATASETS

SPLITS = ("train", "test", "all")
NUM_PARTS = 15


def read_id_table(path: str | Path, num_fields: int, last_is_text: bool = False) -> dict[int, list[str]]:
    """Read a CUB ``id field ...`` text file (whitespace-separated) into {id: fields}.

    With ``last_is_text`` the remainder of the line after ``num_fields - 1`` fields is kept whole (paths).
    A malformed line or a repeated id is an error naming the file and the line.
    """
    path = require_file(path, "CUB annotation")
    table: dict[int, list[str]] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        fields = raw.split(maxsplit=num_fields) if last_is_text else raw.split()
        if len(fields) != num_fields + 1:
            raise ValueError(
                f"{path}, line {lineno}: expected an id and {num_fields} fields, got {raw.strip()!r}"
            )
        try:
            key = int(fields[0])
        except ValueError:
            raise ValueError(f"{path}, line {lineno}: image id {fields[0]!r} is not an integer") from None
        if key in table:
            raise ValueError(f"{path}, line {lineno}: image id {key} appears twice")
        table[key] = fields[1:]
    return table


def read_part_locs(path: str | Path, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``parts/part_locs.txt`` (``id part_id x y visible``) for ``ids``.

    Returns keypoints [len(ids), 15, 2] float32 (x, y; invisible parts keep the file's 0, 0) and
    visibility [len(ids), 15] bool. Parts missing from the file count as invisible at (0, 0).
    """
    path = require_file(path, "CUB part locations")
    row_of = {image_id: i for i, image_id in enumerate(ids)}
    points = np.zeros((len(ids), NUM_PARTS, 2), dtype=np.float32)
    visible = np.zeros((len(ids), NUM_PARTS), dtype=bool)
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        try:
            if len(fields) != 5:
                raise ValueError
            image_id, part = int(fields[0]), int(fields[1])
            x, y, vis = float(fields[2]), float(fields[3]), float(fields[4])
        except ValueError:
            raise ValueError(
                f"{path}, line {lineno}: expected 'image_id part_id x y visible', got {raw.strip()!r}"
            ) from None
        if not 1 <= part <= NUM_PARTS:
            raise ValueError(f"{path}, line {lineno}: part id {part} out of range; expected 1..{NUM_PARTS}")
        row = row_of.get(image_id)
        if row is not None:
            points[row, part - 1] = (x, y)
            visible[row, part - 1] = vis > 0
    return points, visible


def _missing(path: Path, table: dict[int, list[str]], ids: list[int]) -> None:
    lacking = [i for i in ids if i not in table]
    if lacking:
        raise ValueError(f"{path}: no entry for image ids {lacking[:5]} ({len(lacking)} missing)")


@DATASETS.register("cub")
class CUB(SegmentationDataset):
    """CUB-200-2011 birds (``root`` = the ``CUB_200_2011`` folder).

    Samples: ``image``, ``mask`` (0 background / 1 bird, soft masks thresholded at 128), ``boxes`` [1, 4]
    XYXY, ``keypoints`` [15, 2] when ``parts/part_locs.txt`` exists (with ``meta["keypoints_visible"]``),
    ``meta["class_id"]`` (1..200 as in ``image_class_labels.txt``) and ``meta["image_id"]``.
    Segmentations are read from ``root/segmentations`` or, as the separate official archive unpacks,
    ``root/../segmentations``; ``segmentations=`` overrides the folder.
    """

    classes = ("background", "bird")
    palette = [(0, 0, 0), (255, 255, 255)]

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[Sample], Sample] | None = None,
        segmentations: str | Path | None = None,
    ) -> None:
        super().__init__(transforms)
        if split not in SPLITS:
            raise ValueError(f"cub: unknown split {split!r}; expected one of {SPLITS}")
        self.root = require_dir(root, "CUB-200-2011")
        self.split = split
        self.image_dir = require_dir(self.root / "images", "CUB images")
        self.seg_dir = self._find_segmentations(segmentations)

        images_txt = self.root / "images.txt"
        split_txt = self.root / "train_test_split.txt"
        boxes_txt = self.root / "bounding_boxes.txt"
        labels_txt = self.root / "image_class_labels.txt"
        paths = read_id_table(images_txt, 1, last_is_text=True)
        is_train = read_id_table(split_txt, 1)
        boxes = read_id_table(boxes_txt, 4)
        labels = read_id_table(labels_txt, 1)
        all_ids = sorted(paths)
        for path, table in ((split_txt, is_train), (boxes_txt, boxes), (labels_txt, labels)):
            _missing(path, table, all_ids)

        if split == "all":
            self.ids = all_ids
        else:
            wanted = "1" if split == "train" else "0"
            self.ids = [i for i in all_ids if is_train[i][0] == wanted]
        if not self.ids:
            raise ValueError(f"{split_txt}: no images in split {split!r}")
        self.relpaths = [paths[i][0].strip() for i in self.ids]
        try:
            self.boxes_xywh = np.array([[float(v) for v in boxes[i]] for i in self.ids], dtype=np.float32)
            self.class_ids = [int(labels[i][0]) for i in self.ids]
        except ValueError as err:
            raise ValueError(f"{boxes_txt} / {labels_txt}: non-numeric value ({err})") from None

        parts_txt = self.root / "parts" / "part_locs.txt"
        self.keypoints: np.ndarray | None = None
        self.visible: np.ndarray | None = None
        if parts_txt.is_file():
            self.keypoints, self.visible = read_part_locs(parts_txt, self.ids)

    def _find_segmentations(self, override: str | Path | None) -> Path:
        if override is not None:
            return require_dir(override, "CUB segmentations")
        candidates = (self.root / "segmentations", self.root.parent / "segmentations")
        for folder in candidates:
            if folder.is_dir():
                return folder
        raise FileNotFoundError(
            f"{candidates[0]}: CUB segmentations folder not found (also looked in {candidates[1]}); "
            "masks are required: unpack segmentations.tgz there or pass segmentations=..."
        )

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> Sample:
        relpath = self.relpaths[index]
        image_path = self.image_dir / relpath
        mask_path = (self.seg_dir / relpath).with_suffix(".png")
        image = read_image(image_path)
        # Soft masks (0..255, several annotators averaged): the usual 0.5 threshold.
        grey = read_image_array(mask_path).mean(axis=2)
        check_same_size(image.shape[-2:], grey.shape, image_path, mask_path)
        h, w = grey.shape
        x, y, bw, bh = self.boxes_xywh[index]
        boxes = tv_tensors.BoundingBoxes(
            torch.tensor([[x, y, x + bw, y + bh]], dtype=torch.float32), format="XYXY", canvas_size=(h, w)
        )
        meta = {
            "path": str(image_path),
            "mask_path": str(mask_path),
            "image_id": self.ids[index],
            "class_id": self.class_ids[index],
        }
        sample: Sample = {"image": image, "mask": as_mask(grey >= 128), "boxes": boxes, "meta": meta}
        if self.keypoints is not None and self.visible is not None:
            sample["keypoints"] = tv_tensors.KeyPoints(
                torch.from_numpy(self.keypoints[index].copy()), canvas_size=(h, w)
            )
            meta["keypoints_visible"] = self.visible[index].tolist()
        return sample
