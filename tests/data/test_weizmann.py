"""Weizmann horses reader: soft JPEG masks, image resized to the mask, no official split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision import tv_tensors

from segzoo.data.datasets.weizmann import WeizmannHorses, read_soft_mask
from segzoo.data.io import read_image
from segzoo.registry import DATASETS

MH, MW = 16, 24  # mask size; photos are twice as large


def soft_mask() -> np.ndarray:
    """8x8-aligned blocks (JPEG keeps constant blocks nearly exact): 255 and 140 are horse, 0 and 110 not."""
    grey = np.zeros((MH, MW), dtype=np.uint8)
    grey[:8, 8:16] = 255
    grey[8:, 16:] = 140
    grey[8:, :8] = 110
    return grey


EXPECTED = (soft_mask() >= 128).astype(np.int64)


def make_horses(root: Path, stems: tuple[str, ...] = ("horse001", "horse002"), scale: int = 2) -> None:
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "figure_ground").mkdir(parents=True, exist_ok=True)
    for stem in stems:
        photo = np.zeros((MH * scale, MW * scale, 3), dtype=np.uint8)
        photo[:, : MW * scale // 2] = (200, 30, 30)  # left half red, right half blue
        photo[:, MW * scale // 2 :] = (30, 30, 200)
        Image.fromarray(photo).save(root / "rgb" / f"{stem}.jpg", quality=95)
        Image.fromarray(soft_mask(), mode="L").save(root / "figure_ground" / f"{stem}.jpg", quality=95)


def test_read_soft_mask_thresholds_at_128(tmp_path: Path) -> None:
    make_horses(tmp_path)
    mask = read_soft_mask(tmp_path / "figure_ground" / "horse001.jpg")
    assert mask.dtype == np.int64
    np.testing.assert_array_equal(mask, EXPECTED)


def test_sample_image_resized_to_mask(tmp_path: Path) -> None:
    make_horses(tmp_path)
    ds = WeizmannHorses(tmp_path)
    assert len(ds) == 2 and ds.classes == ("background", "horse") and len(ds.palette) == 2
    sample = ds[1]
    image, mask = sample["image"], sample["mask"]
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert image.shape == (3, MH, MW) and image.dtype == torch.uint8
    assert mask.shape == (MH, MW) and mask.dtype == torch.int64
    assert torch.equal(mask, torch.from_numpy(EXPECTED))
    original = read_image(tmp_path / "rgb" / "horse002.jpg")
    expected = F.resize(original, [MH, MW], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    assert torch.equal(image, expected)
    # Colours survive away from the vertical edge.
    assert image[0, :, 2].float().mean() > 180 and image[2, :, -3].float().mean() > 180
    assert sample["meta"]["path"] == str(tmp_path / "rgb" / "horse002.jpg")
    assert sample["meta"]["size"] == (MH, MW) and sample["meta"]["original_size"] == (2 * MH, 2 * MW)


def test_registry_and_only_split_all(tmp_path: Path) -> None:
    make_horses(tmp_path)
    assert len(DATASETS.build("weizmann_horses", root=tmp_path, split="all")) == 2
    with pytest.raises(ValueError, match="split 'train' does not exist.*no official split"):
        WeizmannHorses(tmp_path, split="train")


def test_unmatched_stems_are_listed(tmp_path: Path) -> None:
    make_horses(tmp_path)
    (tmp_path / "figure_ground" / "horse002.jpg").unlink()
    with pytest.raises(ValueError, match=r"images without mask \['horse002'\]"):
        WeizmannHorses(tmp_path)


def test_aspect_mismatch_names_both_files(tmp_path: Path) -> None:
    make_horses(tmp_path, stems=("horse001",))
    Image.fromarray(np.zeros((MH * 2, MH * 2, 3), dtype=np.uint8)).save(tmp_path / "rgb" / "horse001.jpg")
    with pytest.raises(
        ValueError, match=r"aspect mismatch: .*rgb/horse001\.jpg .*figure_ground/horse001\.jpg"
    ):
        WeizmannHorses(tmp_path)[0]


def test_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "rgb").mkdir()
    with pytest.raises(
        FileNotFoundError, match="figure_ground: Weizmann horses figure_ground folder not found"
    ):
        WeizmannHorses(tmp_path)


@pytest.mark.realdata
def test_real_weizmann(shared_data: Path) -> None:
    ds = WeizmannHorses(shared_data / "weizmann_horses")
    assert len(ds) == 200
    for i in (0, 1, 199):
        sample = ds[i]
        mask = sample["mask"]
        assert set(mask.unique().tolist()) == {0, 1}
        assert sample["image"].shape[-2:] == mask.shape
        mask_size = Image.open(sample["meta"]["mask_path"]).size
        assert mask.shape == (mask_size[1], mask_size[0])
        assert 0.05 < mask.float().mean() < 0.95
