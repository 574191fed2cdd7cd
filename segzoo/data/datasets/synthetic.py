"""Procedural segmentation data that needs no files: textured shapes, or one object made of rigid parts.

Every sample is drawn in :meth:`Synthetic.load` from a generator seeded by (seed, split, index), so a
sample's pixels depend on nothing else (not on worker processes, nor on the order samples are read).

Coordinates: pixel (row ``i``, column ``j``) has its centre at (x, y) = (j, i), the convention torchvision
uses when flipping key points.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from segzoo.data.base import Sample, SegmentationDataset, as_mask
from segzoo.registry import DATASETS

SPLIT_SIZES = {"train": 256, "val": 64, "test": 64, "predict": 16}
MODES = ("shapes", "parts")
SHAPE_NAMES = ("disc", "square", "triangle", "ring", "cross", "star")
SHAPE_PALETTE = [
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
]
OBJECT_PALETTE = [(0, 0, 0), (255, 255, 255)]

# Part template in object units (x right, y down): centre (x, y), semi-axes (a along the part's x, b along
# its y), tilt in degrees, drawing layer (higher layers occlude lower ones), and the part's texture.
# Overlaps at the joints are small, so every part's centre stays visible.
PART_NAMES = ("head", "body", "left_arm", "right_arm", "left_leg", "right_leg", "left_ear", "right_ear")
_PART_TEMPLATE = (
    # cx,    cy,    a,    b,   tilt, layer, texture
    (0.00, -0.62, 0.25, 0.25, 0.0, 2, "dots"),
    (0.00, 0.00, 0.30, 0.42, 0.0, 1, "stripes"),
    (-0.39, -0.04, 0.10, 0.30, 25.0, 0, "checker"),
    (0.39, -0.04, 0.10, 0.30, -25.0, 0, "checker"),
    (-0.16, 0.60, 0.10, 0.27, 8.0, 0, "stripes"),
    (0.16, 0.60, 0.10, 0.27, -8.0, 0, "stripes"),
    (-0.21, -0.84, 0.09, 0.09, 0.0, 0, "noise"),
    (0.21, -0.84, 0.09, 0.09, 0.0, 0, "noise"),
)
# Hues spread by the golden ratio so neighbouring part ids get clearly different colours.
_PART_HUES = tuple((0.61803 * k) % 1.0 for k in range(len(PART_NAMES)))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resize an [h, w, C] grid to [height, width, C] (separable, corners aligned)."""
    gh, gw = grid.shape[:2]
    ys = np.linspace(0.0, gh - 1, height, dtype=np.float32)
    xs = np.linspace(0.0, gw - 1, width, dtype=np.float32)
    y0 = np.minimum(ys.astype(np.int64), gh - 2)
    x0 = np.minimum(xs.astype(np.int64), gw - 2)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    rows = grid[y0] * (1 - fy) + grid[y0 + 1] * fy
    return rows[:, x0] * (1 - fx) + rows[:, x0 + 1] * fx


def _background(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A smooth random colour gradient plus two octaves of low-frequency noise, [H, W, 3] in [0, 1]."""
    height, width = xx.shape
    base = _hsv(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.85))
    angle = rng.uniform(0.0, 2 * math.pi)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / max(height, width)
    ramp = ramp - ramp.mean()
    delta = rng.uniform(-0.35, 0.35, 3).astype(np.float32)
    image = base + ramp[..., None] * delta
    for cells, amplitude in ((4, 0.10), (10, 0.05)):
        gh = max(2, round(cells * height / max(height, width)) + 1)
        gw = max(2, round(cells * width / max(height, width)) + 1)
        grid = rng.standard_normal((gh, gw, 3), dtype=np.float32) * amplitude
        image = image + _upsample(grid, height, width)
    return image


def _rotate(dx: np.ndarray, dy: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of (dx, dy) in a frame rotated by ``degrees`` (image axes, y down)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return c * dx + s * dy, -s * dx + c * dy


def _texture(
    kind: str, rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, params: dict[str, float]
) -> np.ndarray:
    """A pattern in [0, 1] over the offsets (dx, dy) from a reference point, [H, W] float32."""
    u, v = _rotate(dx, dy, params.get("angle", 0.0))
    if kind == "stripes":
        wave = np.sin(2 * math.pi * u / params["period"] + rng.uniform(0, 2 * math.pi))
        return 0.5 + 0.5 * np.clip(2.0 * wave, -1.0, 1.0)
    if kind == "checker":
        cell = params["cell"]
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if kind == "dots":
        spacing = params["spacing"]
        off = rng.uniform(0, spacing, 2)
        du = (u + off[0]) % spacing - spacing / 2
        dv = (v + off[1]) % spacing - spacing / 2
        return (np.hypot(du, dv) > 0.32 * spacing).astype(np.float32)
    if kind == "rings":
        wave = np.sin(2 * math.pi * np.hypot(dx, dy) / params["period"] + rng.uniform(0, 2 * math.pi))
        return 0.5 + 0.5 * np.clip(2.0 * wave, -1.0, 1.0)
    if kind == "noise":
        grain = int(params.get("grain", 1))
        height, width = dx.shape
        field = rng.random((-(-height // grain), -(-width // grain)), dtype=np.float32)
        return np.repeat(np.repeat(field, grain, axis=0), grain, axis=1)[:height, :width]
    raise ValueError(f"unknown texture {kind!r}; expected stripes, checker, dots, rings or noise")


def _shape_inside(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels inside a shape of circumradius ~1 given coordinates (u, v) in the shape's own frame."""
    if name == "disc":
        return u * u + v * v <= 1.0
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.72
    if name == "triangle":
        # Equilateral, circumradius 1: inside when within the inradius (0.5) of all three edge normals.
        inside = np.ones(u.shape, dtype=bool)
        for k in range(3):
            a = -math.pi / 2 + k * 2 * math.pi / 3 + math.pi
            inside &= u * math.cos(a) + v * math.sin(a) <= 0.5
        return inside
    if name == "ring":
        rho2 = u * u + v * v
        return (rho2 <= 1.0) & (rho2 >= 0.55**2)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    if name == "star":
        # Five points: the radius goes linearly from 0.45 in the notches to 1 at the tips.
        phase = (np.arctan2(v, u) * 5 / (2 * math.pi)) % 1.0
        return np.hypot(u, v) <= 0.45 + 0.55 * np.abs(2 * phase - 1)
    raise ValueError(f"unknown shape {name!r}; expected one of {', '.join(SHAPE_NAMES)}")


def _shape_texture_params(cls: int, rng: np.random.Generator) -> tuple[str, dict[str, float]]:
    """Each class has its own texture family and parameter range (class ids start at 1)."""
    name = SHAPE_NAMES[cls - 1]
    if name == "disc":  # coarse, roughly horizontal stripes
        return "stripes", {"period": rng.uniform(6.0, 9.0), "angle": rng.uniform(-25.0, 25.0)}
    if name == "square":
        return "checker", {"cell": rng.uniform(3.0, 5.0), "angle": rng.uniform(0.0, 90.0)}
    if name == "triangle":
        return "dots", {"spacing": rng.uniform(5.0, 8.0), "angle": rng.uniform(0.0, 90.0)}
    if name == "ring":
        return "noise", {"grain": float(rng.integers(1, 3))}
    if name == "cross":  # fine, roughly vertical stripes
        return "stripes", {"period": rng.uniform(3.0, 4.5), "angle": rng.uniform(65.0, 115.0)}
    return "rings", {"period": rng.uniform(5.0, 8.0)}


def _to_image(pixels: np.ndarray, rng: np.random.Generator) -> tv_tensors.Image:
    """Add mild sensor noise, quantise [H, W, 3] floats in [0, 1] to a uint8 [3, H, W] image."""
    pixels = pixels + rng.standard_normal(pixels.shape, dtype=np.float32) * 0.02
    array = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1).contiguous())


@DATASETS.register("synthetic")
class Synthetic(SegmentationDataset):
    """Procedurally generated data, drawn on the fly and identical for the same (seed, split, index).

    ``mode="shapes"``: 1 to 4 possibly overlapping shapes of ``num_classes - 1`` classes (disc, square,
    triangle, ring, cross, star) on a textured background; each class has its own texture family and a
    colour from an overlapping class-dependent distribution, so shape and texture are both needed.
    ``mode="parts"``: one object of ``num_parts`` rigidly attached, differently coloured and textured parts
    under a random similarity pose (rotation +-45 deg, scale 0.6..1.0, translation keeping it inside the
    image); the sample adds ``parts`` (0 = background, 1..num_parts) and ``keypoints`` (each part's centre
    after the pose, [num_parts, 2] (x, y)); ``mask`` is background/object and ``num_classes`` is unused.

    ``root`` is accepted and ignored so the datamodule can build every dataset alike. ``num_samples``
    defaults per split to train 256, val 64, test 64, predict 16. ``size`` is (H, W) or one int for a
    square. Attributes: ``classes``, ``palette``, ``part_names`` (empty in shapes mode), ``num_parts``.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transforms: Callable[[Sample], Sample] | None = None,
        *,
        mode: str = "shapes",
        num_samples: int | None = None,
        size: tuple[int, int] | int = (96, 128),
        num_classes: int = 4,
        num_parts: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(transforms)
        if split not in SPLIT_SIZES:
            raise ValueError(f"Synthetic: unknown split {split!r}; expected one of {', '.join(SPLIT_SIZES)}")
        if mode not in MODES:
            raise ValueError(f"Synthetic: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if isinstance(size, Integral):
            size = (size, size)
        if len(size) != 2 or any(not isinstance(s, Integral) or s < 16 for s in size):
            raise ValueError(f"Synthetic: size {tuple(size)!r} must be two integers (H, W), each >= 16")
        if num_samples is not None and (int(num_samples) != num_samples or num_samples < 1):
            raise ValueError(f"Synthetic: num_samples {num_samples!r} must be a positive integer or None")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"Synthetic: seed {seed!r} must be a non-negative integer")
        self.root = root
        self.split = split
        self.mode = mode
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.num_samples = SPLIT_SIZES[split] if num_samples is None else int(num_samples)
        self._split_id = list(SPLIT_SIZES).index(split)
        if mode == "shapes":
            if not 2 <= num_classes <= len(SHAPE_NAMES) + 1:
                raise ValueError(
                    f"Synthetic: num_classes {num_classes!r} out of range; expected "
                    f"2..{len(SHAPE_NAMES) + 1} (background plus up to {len(SHAPE_NAMES)} shapes: "
                    f"{', '.join(SHAPE_NAMES)})"
                )
            self.classes = ("background", *SHAPE_NAMES[: num_classes - 1])
            self.palette = SHAPE_PALETTE[:num_classes]
            self.part_names: tuple[str, ...] = ()
        else:
            if not 1 <= num_parts <= len(PART_NAMES):
                raise ValueError(
                    f"Synthetic: num_parts {num_parts!r} out of range; expected 1..{len(PART_NAMES)} "
                    f"({', '.join(PART_NAMES)})"
                )
            self.classes = ("background", "object")
            self.palette = list(OBJECT_PALETTE)
            self.part_names = PART_NAMES[:num_parts]
        self.num_parts = len(self.part_names)

    def __len__(self) -> int:
        return self.num_samples

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._split_id, int(index)])

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.size
        yy, xx = np.meshgrid(
            np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij"
        )
        return xx, yy

    def load(self, index: int) -> Sample:
        """Generate sample ``index`` (see the class docstring for its keys)."""
        rng = self._rng(index)
        sample = self._shapes(rng) if self.mode == "shapes" else self._parts(rng)
        sample["meta"] = {"path": f"synthetic://{self.split}/{index}"}
        return sample

    def _shapes(self, rng: np.random.Generator) -> Sample:
        height, width = self.size
        xx, yy = self._grid()
        image = _background(rng, xx, yy)
        mask = np.zeros((height, width), dtype=np.int64)
        short = min(height, width)
        for _ in range(int(rng.integers(1, 5))):
            cls = int(rng.integers(1, len(self.classes)))
            radius = rng.uniform(0.10, 0.40) * short
            cx = rng.uniform(0.5 * radius, width - 1 - 0.5 * radius)
            cy = rng.uniform(0.5 * radius, height - 1 - 0.5 * radius)
            dx, dy = xx - cx, yy - cy
            u, v = _rotate(dx, dy, rng.uniform(0.0, 360.0))
            inside = _shape_inside(SHAPE_NAMES[cls - 1], u / radius, v / radius)
            # Hue centres are 1/6 apart and spread +-0.2, so neighbouring classes share colours.
            hue = (cls - 1) / 6 + rng.uniform(-0.2, 0.2)
            light = _hsv(hue, rng.uniform(0.45, 1.0), rng.uniform(0.6, 1.0))
            dark = light * rng.uniform(0.25, 0.6)
            kind, params = _shape_texture_params(cls, rng)
            pattern = _texture(kind, rng, dx, dy, params)[inside]
            image[inside] = dark + (light - dark) * pattern[:, None]
            mask[inside] = cls
        return {"image": _to_image(image, rng), "mask": as_mask(mask)}

    def _parts(self, rng: np.random.Generator) -> Sample:
        height, width = self.size
        xx, yy = self._grid()
        image = _background(rng, xx, yy)
        parts = np.zeros((height, width), dtype=np.int64)
        template = _PART_TEMPLATE[: self.num_parts]
        # Bounding radius of the template in object units: keeps the object inside under any rotation.
        extent = max(math.hypot(cx, cy) + max(a, b) for cx, cy, a, b, *_ in template)
        angle = rng.uniform(-45.0, 45.0)
        unit = rng.uniform(0.6, 1.0) * 0.47 * (min(height, width) - 1) / extent
        margin = extent * unit
        tx = rng.uniform(margin, width - 1 - margin)
        ty = rng.uniform(margin, height - 1 - margin)
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        centres = np.array(
            [(tx + unit * (c * px - s * py), ty + unit * (s * px + c * py)) for px, py, *_ in template],
            dtype=np.float32,
        )
        # Textures live in the object frame (rotation only) so they turn with the object.
        ox, oy = _rotate(xx - tx, yy - ty, angle)
        order = sorted(range(self.num_parts), key=lambda k: template[k][5])
        for k in order:
            _, _, a, b, tilt, _, kind = template[k]
            u, v = _rotate(xx - centres[k, 0], yy - centres[k, 1], angle + tilt)
            inside = (u / (a * unit)) ** 2 + (v / (b * unit)) ** 2 <= 1.0
            hue = _PART_HUES[k] + rng.uniform(-0.03, 0.03)
            light = _hsv(hue, rng.uniform(0.6, 0.95), rng.uniform(0.75, 1.0))
            dark = light * rng.uniform(0.3, 0.5)
            params = {"period": 6.0, "cell": 4.0, "spacing": 6.0, "grain": 1.0, "angle": 30.0 * k}
            pattern = _texture(kind, rng, ox, oy, params)[inside]
            image[inside] = dark + (light - dark) * pattern[:, None]
            parts[inside] = k + 1
        return {
            "image": _to_image(image, rng),
            "mask": as_mask(parts > 0),
            "parts": as_mask(parts),
            "keypoints": tv_tensors.KeyPoints(torch.from_numpy(centres), canvas_size=(height, width)),
        }
