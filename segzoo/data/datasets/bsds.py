"""BSDS500: natural images with several human segmentations each (MATLAB ``groundTruth`` files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.io

from segzoo.data.base import Sample, SegmentationDataset, as_mask, require_dir
from segzoo.data.io import check_same_size, list_images, read_image
from segzoo.registry import DATASETS

SPLITS = ("train", "val", "test")


def read_bsds_groundtruth(path: str | Path, field: str = "Segmentation") -> np.ndarray:
    """Read every annotator's ``field`` from a BSDS ``groundTruth`` .mat as an [N, H, W] int64 array.

    The file holds a 1xN cell of structs (``Segmentation``: region ids from 1, ``Boundaries``: 0/1 edges);
    values are returned unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ground-truth file not found")
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError... on damaged files
        raise ValueError(f"{path}: cannot read MATLAB file ({type(err).__name__}: {err})") from err
    if "groundTruth" not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise ValueError(f"{path}: no variable 'groundTruth' (found {found}); expected a BSDS500 .mat")
    cells = np.asarray(content["groundTruth"]).ravel()
    if cells.size == 0:
        raise ValueError(f"{path}: 'groundTruth' holds no annotations")
    annotations = []
    for j, cell in enumerate(cells):
        struct = np.asarray(cell).ravel()
        names = struct.dtype.names or ()
        if struct.size != 1 or field not in names:
            raise ValueError(
                f"{path}: annotation {j} is not a struct with a {field!r} field (fields: {list(names)})"
            )
        value = np.asarray(struct[0][field])
        # loadmat wraps each struct field in an object array of shape (1, 1).
        while value.dtype == object and value.size == 1:
            value = np.asarray(value.ravel()[0])
        if value.ndim != 2 or not np.issubdtype(value.dtype, np.number):
            raise ValueError(
                f"{path}: annotation {j} {field!r} has shape {value.shape} and dtype {value.dtype}; "
                "expected a 2-D numeric array"
            )
        if annotations and value.shape != annotations[0].shape:
            raise ValueError(
                f"{path}: annotation {j} is {value.shape} (H, W) but annotation 0 is "
                f"{annotations[0].shape} (H, W)"
            )
        annotations.append(value.astype(np.int64))
    return np.stack(annotations)


def _resolve_root(root: Path) -> Path:
    """Accept the data folder itself or the unpacked archive (``BSR/`` or ``BSR/BSDS500``) above it."""
    for candidate in (root, root / "BSDS500" / "data", root / "BSR" / "BSDS500" / "data", root / "data"):
        if (candidate / "images").is_dir() and (candidate / "groundTruth").is_dir():
            return candidate
    return root


@DATASETS.register("bsds500")
class BSDS500(SegmentationDataset):
    """Berkeley Segmentation Dataset 500: ``images/<split>/<id>.jpg`` + ``groundTruth/<split>/<id>.mat``.

    Each sample has ``image`` and ``masks`` (all human segmentations, [N, H, W] int64 region ids as in
    the file, starting at 1); there is no class list and no ``mask``. ``root`` may be the data folder or
    the official ``BSR`` archive folder above it.
    """

    classes: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        super().__init__(transforms)
        if split not in SPLITS:
            raise ValueError(f"bsds500: unknown split {split!r}; expected one of {SPLITS}")
        self.root = _resolve_root(Path(root))
        self.split = split
        image_dir = require_dir(self.root / "images" / split, "BSDS500 images")
        gt_dir = require_dir(self.root / "groundTruth" / split, "BSDS500 groundTruth")
        images = list_images(image_dir)
        gts = {p.stem: p for p in gt_dir.iterdir() if p.suffix.lower() == ".mat" and p.is_file()}
        stems = {p.stem for p in images}
        no_gt = sorted(stems - gts.keys())
        no_image = sorted(gts.keys() - stems)
        if no_gt or no_image:
            raise ValueError(
                f"bsds500: unmatched files in {image_dir} and {gt_dir}: images without .mat "
                f"{no_gt[:5]} ({len(no_gt)}), .mat without image {no_image[:5]} ({len(no_image)})"
            )
        self.samples = [(p, gts[p.stem]) for p in images]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Sample:
        image_path, gt_path = self.samples[index]
        image = read_image(image_path)
        masks = read_bsds_groundtruth(gt_path)
        check_same_size(image.shape[-2:], masks.shape[-2:], image_path, gt_path)
        return {
            "image": image,
            "masks": as_mask(masks),
            "meta": {"path": str(image_path), "gt_path": str(gt_path), "num_annotations": len(masks)},
        }
