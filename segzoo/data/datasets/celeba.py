"""CelebA faces with the 5 annotated landmarks, CelebA and MAFL splits, optional face-centred crops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

from segzoo.data.base import Sample, SegmentationDataset, require_dir
from segzoo.data.io import read_image
from segzoo.registry import DATASETS

PARTITIONS = {"train": "0", "val": "1", "test": "2"}
MAFL_SPLITS = {"mafl_train": "training.txt", "mafl_test": "testing.txt"}
LANDMARK_NAMES = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
# Official archive layout keeps images in Img/, lists in Anno/ and Eval/; torchvision's copy is flat.
SUBFOLDERS = ("", "Img", "Anno", "Eval")


def read_celeba_list(path: str | Path, num_values: int) -> tuple[list[str], np.ndarray]:
    """Read a CelebA list file into (names, values [N, num_values] as float64).

    The optional 2-line header (a count, then column names) is detected and the count checked; columns
    may be separated by any run of spaces. Malformed rows are errors naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CelebA list file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    start, declared = 0, None
    first = lines[0].split() if lines else []
    if len(first) == 1 and first[0].isdigit():
        declared, start = int(first[0]), 2
    names: list[str] = []
    rows: list[list[float]] = []
    for lineno in range(start + 1, len(lines) + 1):
        fields = lines[lineno - 1].split()
        if not fields:
            continue
        try:
            if len(fields) != num_values + 1:
                raise ValueError
            rows.append([float(v) for v in fields[1:]])
        except ValueError:
            raise ValueError(
                f"{path}, line {lineno}: expected a file name and {num_values} numbers, "
                f"got {lines[lineno - 1].strip()!r}"
            ) from None
        names.append(fields[0])
    if declared is not None and declared != len(names):
        raise ValueError(f"{path}: header declares {declared} rows but {len(names)} were read")
    return names, np.asarray(rows, dtype=np.float64).reshape(-1, num_values)


def square_crop_box(box_xywh: np.ndarray | list[float], scale: float) -> tuple[int, int, int]:
    """Square around a (x, y, w, h) box, side = scale * max(w, h): returns integer (x0, y0, side)."""
    x, y, w, h = (float(v) for v in box_xywh)
    side = max(1, round(scale * max(w, h)))
    x0 = round(x + w / 2 - side / 2)
    y0 = round(y + h / 2 - side / 2)
    return x0, y0, side


def crop_with_padding(image: torch.Tensor, x0: int, y0: int, side: int) -> torch.Tensor:
    """Cut the ``side`` x ``side`` square at (x0, y0) from a [C, H, W] image, zero outside the image."""
    c, h, w = image.shape
    out = image.new_zeros((c, side, side))
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
    return out


def _find(root: Path, name: str, what: str, folder: bool = False) -> Path:
    candidates = [root / sub / name for sub in SUBFOLDERS]
    for candidate in candidates:
        if candidate.is_dir() if folder else candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{candidates[0]}: CelebA {what} not found "
        f"(also looked in {', '.join(str(c) for c in candidates[1:])})"
    )


@DATASETS.register("celeba")
class CelebA(SegmentationDataset):
    """CelebA with 5 landmarks: ``image``, ``keypoints`` [5, 2] (lefteye, righteye, nose, leftmouth,
    rightmouth; "left" = image left) and, for in-the-wild images, ``boxes`` [1, 4] XYXY.

    ``split``: "train" / "val" / "test" from ``list_eval_partition.txt``, or "mafl_train" / "mafl_test"
    from ``MAFL/training.txt`` / ``MAFL/testing.txt``. ``aligned=True`` reads ``img_align_celeba`` and its
    landmarks (no boxes exist for those). ``crop=True`` (wild only) cuts a square of side
    ``box_scale * max(w, h)`` centred on the face box, zero-padded at the borders, optionally resized to
    ``size`` x ``size``; keypoints and box follow, and ``meta["crop_box"]`` is the square (x0, y0, x1, y1)
    in the original image.
    """

    classes: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[Sample], Sample] | None = None,
        aligned: bool = False,
        crop: bool = False,
        box_scale: float = 1.3,
        size: int | None = None,
    ) -> None:
        super().__init__(transforms)
        if split not in PARTITIONS and split not in MAFL_SPLITS:
            known = [*PARTITIONS, *MAFL_SPLITS]
            raise ValueError(f"celeba: unknown split {split!r}; expected one of {known}")
        if crop and aligned:
            raise ValueError(
                "celeba: crop=True needs the in-the-wild images (aligned=False); face boxes exist only there"
            )
        if size is not None and not crop:
            raise ValueError(
                f"celeba: size={size} resizes the face crop; set crop=True (or resize with transforms)"
            )
        if size is not None and size < 1:
            raise ValueError(f"celeba: size={size}; expected a positive integer")
        if box_scale <= 0:
            raise ValueError(f"celeba: box_scale={box_scale}; expected a positive number")
        self.root = require_dir(root, "CelebA")
        self.split = split
        self.aligned = aligned
        self.crop = crop
        self.box_scale = box_scale
        self.size = size
        if aligned:
            self.image_dir = _find(self.root, "img_align_celeba", "aligned image folder", folder=True)
            landmarks_txt = _find(self.root, "list_landmarks_align_celeba.txt", "landmark list")
        else:
            self.image_dir = _find(self.root, "img_celeba", "in-the-wild image folder", folder=True)
            landmarks_txt = _find(self.root, "list_landmarks_celeba.txt", "landmark list")

        self.names = self._split_names(split)
        lm_names, lm_values = read_celeba_list(landmarks_txt, 10)
        self.landmarks = self._select(landmarks_txt, lm_names, lm_values).reshape(-1, 5, 2).astype(np.float32)
        self.boxes_xywh: np.ndarray | None = None
        if not aligned:
            bbox_txt = _find(self.root, "list_bbox_celeba.txt", "bounding-box list")
            box_names, box_values = read_celeba_list(bbox_txt, 4)
            self.boxes_xywh = self._select(bbox_txt, box_names, box_values).astype(np.float32)

    def _split_names(self, split: str) -> list[str]:
        if split in MAFL_SPLITS:
            mafl = self.root / "MAFL"
            if not mafl.is_dir():
                raise FileNotFoundError(
                    f"{mafl}: MAFL folder not found; split {split!r} needs MAFL/{MAFL_SPLITS[split]} "
                    "(one CelebA file name per line)"
                )
            path = mafl / MAFL_SPLITS[split]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: MAFL split file not found")
            lines = path.read_text(encoding="utf-8").splitlines()
            names = [line.split()[0] for line in lines if line.strip()]
        else:
            partition_txt = _find(self.root, "list_eval_partition.txt", "partition list")
            part_names, part_values = read_celeba_list(partition_txt, 1)
            wanted = float(PARTITIONS[split])
            names = [n for n, v in zip(part_names, part_values[:, 0], strict=True) if v == wanted]
            path = partition_txt
        if not names:
            raise ValueError(f"{path}: no images in split {split!r}")
        return names

    def _select(self, path: Path, names: list[str], values: np.ndarray) -> np.ndarray:
        row_of = {name: i for i, name in enumerate(names)}
        missing = [n for n in self.names if n not in row_of]
        if missing:
            raise ValueError(
                f"{path}: no entry for {missing[:5]} ({len(missing)} images of split {self.split!r})"
            )
        return values[[row_of[n] for n in self.names]]

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> Sample:
        image_path = self.image_dir / self.names[index]
        image = read_image(image_path)
        h, w = image.shape[-2:]
        points = torch.from_numpy(self.landmarks[index].copy())
        meta: dict = {"path": str(image_path), "size": (h, w)}
        box = None
        if self.boxes_xywh is not None:
            x, y, bw, bh = (float(v) for v in self.boxes_xywh[index])
            box = torch.tensor([[x, y, x + bw, y + bh]], dtype=torch.float32)
        if self.crop and box is not None:
            x0, y0, side = square_crop_box(self.boxes_xywh[index], self.box_scale)
            image = crop_with_padding(image, x0, y0, side)
            offset = torch.tensor([x0, y0], dtype=torch.float32)
            points = points - offset
            box = box - offset.repeat(2)
            meta["crop_box"] = (x0, y0, x0 + side, y0 + side)
            if self.size is not None and self.size != side:
                image = F.resize(image, [self.size, self.size], antialias=True)
                factor = self.size / side
                points = points * factor
                box = box * factor
            h, w = image.shape[-2:]
        sample: Sample = {
            "image": tv_tensors.Image(image),
            "keypoints": tv_tensors.KeyPoints(points, canvas_size=(h, w)),
            "meta": meta,
        }
        if box is not None:
            sample["boxes"] = tv_tensors.BoundingBoxes(box, format="XYXY", canvas_size=(h, w))
        return sample
