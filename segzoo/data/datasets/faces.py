"""Face images with 300-W ``.pts`` landmarks (68 iBUG points), optionally reduced to the 5 MAFL points."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from zlib import crc32

import numpy as np
import torch
from torchvision import tv_tensors

from segzoo.data.base import Sample, SegmentationDataset, require_dir
from segzoo.data.io import list_images, read_image
from segzoo.registry import DATASETS

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# iBUG 68-point indices (0-based). Points 36-41 are the subject's right eye, which lies on the image's
# left: that is CelebA's "lefteye" (the one with the smaller x), likewise for the mouth corners 48 / 54.
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
NOSE_TIP = 30
LEFT_MOUTH = 48
RIGHT_MOUTH = 54
FIVE_POINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


def read_pts(path: str | Path) -> np.ndarray:
    """Parse a 300-W ``.pts`` file (``version: 1``, ``n_points: N``, ``{``, N lines ``x y``, ``}``).

    Returns an [N, 2] float64 array of (x, y); any malformed line is a ValueError naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: landmark file not found")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    header: dict[str, str] = {}
    points: list[tuple[float, float]] = []
    state = "header"
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if state == "header":
            if line == "{":
                state = "points"
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"{path}, line {lineno}: expected 'key: value' or '{{', got {line!r}")
            header[key.strip()] = value.strip()
        elif state == "points":
            if line == "}":
                state = "done"
                continue
            fields = line.split()
            try:
                if len(fields) != 2:
                    raise ValueError
                points.append((float(fields[0]), float(fields[1])))
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: expected two numbers 'x y', got {line!r}") from None
        else:
            raise ValueError(f"{path}, line {lineno}: unexpected text after '}}': {line!r}")
    if "n_points" not in header:
        raise ValueError(f"{path}, line 1: header has no 'n_points: N' before '{{'")
    try:
        n_points = int(header["n_points"])
    except ValueError:
        raise ValueError(f"{path}: n_points {header['n_points']!r} is not an integer") from None
    if state != "done":
        what = "'{'" if state == "header" else "closing '}'"
        raise ValueError(f"{path}, line {len(lines)}: missing {what}")
    if len(points) != n_points:
        raise ValueError(f"{path}: header says n_points: {n_points} but {len(points)} points are listed")
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def five_point_landmarks(points68: ArrayT) -> ArrayT:
    """Reduce [68, 2] iBUG landmarks to the 5 MAFL/CelebA points [5, 2].

    Order: left eye, right eye, nose tip, left mouth corner, right mouth corner, where "left" is the image
    left as in CelebA (eye centres are the means of points 36-41 and 42-47; nose 30; mouth 48 and 54).
    """
    if tuple(points68.shape) != (68, 2):
        raise ValueError(f"five_point_landmarks: expected [68, 2] points, got shape {tuple(points68.shape)}")
    rows = [
        points68[LEFT_EYE].mean(0),
        points68[RIGHT_EYE].mean(0),
        points68[NOSE_TIP],
        points68[LEFT_MOUTH],
        points68[RIGHT_MOUTH],
    ]
    if isinstance(points68, torch.Tensor):
        return torch.stack(rows)
    return np.stack(rows)


def centre_prior(height: int, width: int, sigma: float = 0.25) -> torch.Tensor:
    """A fixed Gaussian centre prior ``[H, W]`` in (0, 1]: 1 at the image centre, std ``sigma`` x the side.

    Not a saliency detector: the same map for every image. It is a fair prior only for collections whose
    object is centred by construction (face crops around their landmark box). Pixel (i, j) has its centre at
    (x, y) = (j, i), as everywhere in segzoo.
    """
    if not sigma > 0:
        raise ValueError(f"centre_prior: sigma must be > 0 (a fraction of the image side), got {sigma}")
    if height < 1 or width < 1:
        raise ValueError(f"centre_prior: image size must be positive, got height={height}, width={width}")
    y = (torch.arange(height, dtype=torch.float32) - (height - 1) / 2) / (sigma * height)
    x = (torch.arange(width, dtype=torch.float32) - (width - 1) / 2) / (sigma * width)
    return torch.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))


def inter_ocular_distance(points5: np.ndarray | torch.Tensor) -> float:
    """Euclidean distance between the two eye centres (rows 0 and 1) of [5, 2] landmarks."""
    if tuple(points5.shape) != (5, 2):
        raise ValueError(f"inter_ocular_distance: expected [5, 2] points, got shape {tuple(points5.shape)}")
    p = torch.as_tensor(points5, dtype=torch.float64)
    return float(torch.linalg.vector_norm(p[0] - p[1]))


@DATASETS.register("face_landmarks")
class FaceLandmarks(SegmentationDataset):
    """Face images with 300-W landmarks: ``<root>/<split>/images/<id>.jpg`` + ``.../landmarks/<id>.pts``.

    ``root`` may also directly hold ``images/`` and ``landmarks/`` (then ``split`` is only recorded).
    ``points="5"`` gives the 5 MAFL points (see :func:`five_point_landmarks`), ``"68"`` all of them, as
    ``keypoints`` [K, 2] (x, y) float32 in pixels of the image.

    ``saliency="centre"`` adds ``saliency``: the fixed Gaussian :func:`centre_prior` (std ``saliency_sigma``
    x the image side), for SCOPS's soft-masked semantic term. It is an unsupervised prior that the crops are
    centred on the face, not a saliency map of the image; None (default) adds nothing.

    ``unalign=f`` (0 < f < 1) undoes the alignment of pre-cropped faces such as Helen's (a square around the
    landmark box): every image is cut once to a square of side ``U(1 - f, 1)`` x its shorter side at a
    uniform random position, drawn from the file name and ``unalign_seed``, so the crop of a face is fixed
    across epochs, splits and processes. Faces then vary in position and size, as in CelebA's "wild"
    images, and the landmarks follow (in pixels of the cut image). 0 (default) keeps the images whole.
    """

    classes: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[Sample], Sample] | None = None,
        points: str = "5",
        saliency: str | None = None,
        saliency_sigma: float = 0.25,
        unalign: float = 0.0,
        unalign_seed: int = 0,
    ) -> None:
        super().__init__(transforms)
        if not 0 <= unalign < 1:
            raise ValueError(f"face_landmarks: unalign={unalign!r}; expected a fraction in [0, 1)")
        self.unalign = float(unalign)
        self.unalign_seed = int(unalign_seed)
        points = str(points)
        if points not in ("5", "68"):
            raise ValueError(f"face_landmarks: points={points!r}; expected '5' or '68'")
        if saliency not in (None, "centre"):
            raise ValueError(f"face_landmarks: saliency={saliency!r}; expected None or 'centre'")
        if not saliency_sigma > 0:
            raise ValueError(f"face_landmarks: saliency_sigma must be > 0, got {saliency_sigma}")
        self.saliency = saliency
        self.saliency_sigma = float(saliency_sigma)
        self.root = Path(root)
        self.split = split
        self.points = points
        base = self.root if (self.root / "images").is_dir() else self.root / split
        image_dir = require_dir(base / "images", f"face_landmarks {split!r} images")
        pts_dir = require_dir(base / "landmarks", f"face_landmarks {split!r} landmarks")
        images = {p.stem: p for p in list_images(image_dir)}
        pts = {p.stem: p for p in pts_dir.iterdir() if p.suffix.lower() == ".pts" and p.is_file()}
        no_pts = sorted(images.keys() - pts.keys())
        no_image = sorted(pts.keys() - images.keys())
        if no_pts or no_image:
            raise ValueError(
                f"face_landmarks: unmatched files in {image_dir} and {pts_dir}: images without .pts "
                f"{no_pts[:5]} ({len(no_pts)}), .pts without image {no_image[:5]} ({len(no_image)})"
            )
        self.samples = [(images[s], pts[s]) for s in sorted(images)]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Sample:
        image_path, pts_path = self.samples[index]
        image = read_image(image_path)
        points = read_pts(pts_path)
        if self.points == "5":
            if points.shape[0] != 68:
                raise ValueError(
                    f"{pts_path}: has {points.shape[0]} points; points='5' needs the 68 iBUG points"
                )
            points = five_point_landmarks(points)
        if self.unalign > 0:
            image, points = self._unaligned(image, points, image_path.stem)
        keypoints = tv_tensors.KeyPoints(
            torch.from_numpy(points).to(torch.float32), canvas_size=tuple(image.shape[-2:])
        )
        sample: Sample = {
            "image": image,
            "keypoints": keypoints,
            "meta": {"path": str(image_path), "landmarks_path": str(pts_path)},
        }
        if self.saliency == "centre":
            prior = centre_prior(image.shape[-2], image.shape[-1], self.saliency_sigma)
            sample["saliency"] = tv_tensors.Mask(prior)
        return sample

    def _unaligned(
        self, image: torch.Tensor, points: np.ndarray, stem: str
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Cut ``image`` to its fixed random square (see the class docstring); shift ``points`` with it."""
        height, width = image.shape[-2:]
        rng = np.random.default_rng([crc32(stem.encode()), self.unalign_seed])
        side = max(1, round(min(height, width) * rng.uniform(1 - self.unalign, 1)))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        cut = tv_tensors.Image(image[..., top : top + side, left : left + side])  # slicing drops the type
        return cut, points - np.array([left, top], dtype=points.dtype)
