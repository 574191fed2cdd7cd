"""Reading images and label maps from disk with errors that name the file and the problem."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _open(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: cannot decode image ({err})") from err
    return img


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16/32-bit or float pixel arrays to uint8 (16-bit keeps its top byte)."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        top = 1.0 if array.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.max(initial=0) > 255:
        return (array.astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
    return array.clip(0, 255).astype(np.uint8)


def read_image_array(path: str | Path) -> np.ndarray:
    """Read any image as an HxWx3 uint8 RGB array; grayscale, RGBA, palette and 16-bit are converted."""
    img = _open(path)
    if img.mode in ("RGB",):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F", "1"):
        gray = _to_uint8(np.asarray(img))
        return np.repeat(gray[..., None], 3, axis=2)
    # RGBA, LA, P, CMYK, YCbCr, L: PIL knows the conversion (alpha is dropped, not composited).
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: str | Path) -> tv_tensors.Image:
    """Read an image file as a ``tv_tensors.Image`` of shape [3, H, W], dtype uint8."""
    return tv_tensors.Image(torch.from_numpy(read_image_array(path)).permute(2, 0, 1).contiguous())


def read_label_array(
    path: str | Path, colors: Mapping[tuple[int, int, int], int] | None = None
) -> np.ndarray:
    """Read a label map as an HxW int64 array.

    Index PNGs ('L', 'P' palette indices, 16-bit) give their values directly. RGB(A) masks need ``colors``,
    a map from (r, g, b) to class id; a colour not in the table is an error naming it.
    """
    img = _open(path)
    if img.mode in ("L", "P", "I;16", "I;16B", "I;16L", "I", "1"):
        return np.asarray(img).astype(np.int64)
    if img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"))
        if colors is None:
            raise ValueError(
                f"{path}: RGB mask but no colour table; pass colors={{(r, g, b): class_id, ...}} "
                "or save the mask as an index/palette PNG"
            )
        return rgb_to_labels(rgb, colors, path)
    raise ValueError(f"{path}: unsupported mask mode {img.mode!r}; expected an index, palette or RGB PNG")


def rgb_to_labels(
    rgb: np.ndarray, colors: Mapping[tuple[int, int, int], int], path: str | Path = "<array>"
) -> np.ndarray:
    """Map an HxWx3 colour mask to class ids through ``colors``; unknown colours raise."""
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for (r, g, b) in colors], dtype=np.int64)
    values = np.array(list(colors.values()), dtype=np.int64)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pos = np.searchsorted(keys, code).clip(0, len(keys) - 1)
    known = keys[pos] == code
    if not known.all():
        unknown = sorted({int(c) for c in np.unique(code[~known])[:5]})
        shown = ", ".join(str(((c >> 16) & 255, (c >> 8) & 255, c & 255)) for c in unknown)
        raise ValueError(f"{path}: colours not in the colour table: {shown}")
    return values[pos]


def check_same_size(
    image_size: Sequence[int], mask_size: Sequence[int], image_path: str | Path, mask_path: str | Path
) -> None:
    """Raise when an image and its mask differ in (H, W), naming both files and sizes."""
    if tuple(image_size) != tuple(mask_size):
        raise ValueError(
            f"image/mask size mismatch: {image_path} is {tuple(image_size)} (H, W) "
            f"but {mask_path} is {tuple(mask_size)} (H, W)"
        )


def check_label_range(
    labels: torch.Tensor | np.ndarray, num_classes: int, ignore_index: int, path: str | Path
) -> None:
    """Raise when a label is outside [0, num_classes) and is not ``ignore_index``."""
    t = torch.as_tensor(labels)
    bad = (t != ignore_index) & ((t < 0) | (t >= num_classes))
    if bool(bad.any()):
        value = int(t[bad][0])
        raise ValueError(
            f"{path}: label value {value} out of range; allowed 0..{num_classes - 1} "
            f"or {ignore_index} (ignore)"
        )


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted; an empty or missing folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"{folder}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files
