"""PASCAL VOC 2012 reader on a tiny fixture in the real layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.data.datasets.voc import VOC_CLASSES, VOC_PALETTE, VOCSegmentation, voc_colormap
from segzoo.registry import DATASETS

H, W = 8, 10


def _palette_png(path: Path, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette([c for rgb in voc_colormap() for c in rgb])
    img.save(path)


def _labels(seed: int) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, 21, size=(H, W))
    labels[0, :] = 255  # boundary pixels
    return labels


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """``tmp/VOCdevkit/VOC2012`` with train = a, b and val = c."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for seed, name in enumerate(("2007_000001", "2007_000002", "2008_000003")):
        rgb = np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "JPEGImages" / f"{name}.jpg")
        _palette_png(root / "SegmentationClass" / f"{name}.png", _labels(seed))
    sets = root / "ImageSets" / "Segmentation"
    sets.joinpath("train.txt").write_text("2007_000001\n2007_000002\n")
    sets.joinpath("val.txt").write_text("2008_000003\n\n")
    return root


def test_sample_shapes_values_and_meta(voc_root: Path) -> None:
    ds = VOCSegmentation(voc_root, split="train")
    assert len(ds) == 2
    sample = ds[1]
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.uint8
    assert sample["mask"].shape == (H, W) and sample["mask"].dtype == torch.int64
    np.testing.assert_array_equal(sample["mask"].numpy(), _labels(1))
    assert sample["meta"]["path"] == str(voc_root / "JPEGImages" / "2007_000002.jpg")
    assert sample["meta"]["size"] == (H, W) and sample["meta"]["index"] == 1


def test_split_selection_and_root_forms(voc_root: Path) -> None:
    val = VOCSegmentation(voc_root, split="val")
    assert len(val) == 1 and val[0]["meta"]["path"].endswith("2008_000003.jpg")
    # The folder that contains VOCdevkit/VOC2012 is accepted as root too.
    container = voc_root.parent.parent
    assert len(VOCSegmentation(container, split="train")) == 2
    assert VOCSegmentation(container, split="train").root == voc_root


def test_classes_and_palette() -> None:
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person"
    assert len(VOC_PALETTE) == 21
    assert VOC_PALETTE[:4] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert VOC_PALETTE[15] == (192, 128, 128) and VOC_PALETTE[20] == (0, 64, 128)
    assert voc_colormap()[255] == (224, 224, 192)
    assert VOCSegmentation.ignore_index == 255


def test_rgb_encoded_mask_is_decoded_with_the_colour_map(voc_root: Path) -> None:
    labels = _labels(0)
    cmap = np.array(voc_colormap(), dtype=np.uint8)
    Image.fromarray(cmap[labels]).save(voc_root / "SegmentationClass" / "2007_000001.png")
    np.testing.assert_array_equal(VOCSegmentation(voc_root, split="train")[0]["mask"].numpy(), labels)


def test_registry_build(voc_root: Path) -> None:
    ds = DATASETS.build("voc", root=voc_root, split="val")
    assert isinstance(ds, VOCSegmentation) and len(ds) == 1


def test_missing_split_names_file_and_available_splits(voc_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"trainaug\.txt.*'trainaug'.*available splits: train, val"):
        VOCSegmentation(voc_root, split="trainaug")


def test_not_a_voc_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not a PASCAL VOC 2012 folder.*ImageSets/Segmentation"):
        VOCSegmentation(tmp_path, split="train")


def test_missing_listed_mask(voc_root: Path) -> None:
    (voc_root / "SegmentationClass" / "2007_000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"2007_000002\.png: file not found \(listed in .*train\.txt"):
        VOCSegmentation(voc_root, split="train")


def test_empty_list(voc_root: Path) -> None:
    (voc_root / "ImageSets" / "Segmentation" / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"empty\.txt: list is empty"):
        VOCSegmentation(voc_root, split="empty")


def test_size_mismatch_names_both_files(voc_root: Path) -> None:
    _palette_png(voc_root / "SegmentationClass" / "2008_000003.png", np.zeros((H + 1, W), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"2008_000003\.jpg is \(8, 10\).*2008_000003\.png is \(9, 10\)"):
        VOCSegmentation(voc_root, split="val")[0]


def test_label_out_of_range(voc_root: Path) -> None:
    _palette_png(voc_root / "SegmentationClass" / "2008_000003.png", np.full((H, W), 21, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"2008_000003\.jpg: label value 21 out of range; allowed 0\.\.20"):
        VOCSegmentation(voc_root, split="val")[0]
