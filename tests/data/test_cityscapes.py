"""Cityscapes reader: layout, labelId -> train id mapping, split selection and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.data.datasets.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    Cityscapes,
    train_id_lut,
)
from segzoo.registry import DATASETS

H, W = 8, 10
# labelIds written into every label image, and the train id each one must become.
LABEL_IDS = np.array([0, 1, 6, 7, 8, 9, 11, 17, 24, 26, 29, 31, 33, 34], dtype=np.uint8)
TRAIN_IDS = np.array([255, 255, 255, 0, 1, 255, 2, 5, 11, 13, 255, 16, 18, 255])


def _write_pair(root: Path, split: str, city: str, name: str, label_ids: np.ndarray) -> None:
    image_dir, label_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(len(name)).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(image_dir / f"{name}_leftImg8bit.png")
    Image.fromarray(label_ids.astype(np.uint8), mode="L").save(label_dir / f"{name}_gtFine_labelIds.png")


def _label_map() -> np.ndarray:
    return np.resize(LABEL_IDS, (H, W))


@pytest.fixture
def cs_root(tmp_path: Path) -> Path:
    """train: zurich (1 image) and aachen (2 images); val: frankfurt (1 image)."""
    _write_pair(tmp_path, "train", "zurich", "zurich_000000_000019", _label_map())
    _write_pair(tmp_path, "train", "aachen", "aachen_000001_000019", _label_map())
    _write_pair(tmp_path, "train", "aachen", "aachen_000000_000019", _label_map())
    _write_pair(tmp_path, "val", "frankfurt", "frankfurt_000000_000294", np.full((H, W), 26))
    return tmp_path


def test_label_ids_map_to_train_ids(cs_root: Path) -> None:
    sample = Cityscapes(cs_root, split="train")[0]
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.uint8
    assert sample["mask"].shape == (H, W) and sample["mask"].dtype == torch.int64
    np.testing.assert_array_equal(sample["mask"].numpy(), np.resize(TRAIN_IDS, (H, W)))
    mask = sample["mask"].numpy()
    labels = _label_map()
    assert (mask[labels == 7] == 0).all() and (mask[labels == 26] == 13).all()
    assert (mask[labels == 0] == 255).all()


def test_lookup_table_matches_official_table() -> None:
    lut = train_id_lut()
    assert lut.shape == (256,) and lut.dtype == np.int64
    evaluated = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    np.testing.assert_array_equal(lut[evaluated], np.arange(19))
    others = np.setdiff1d(np.arange(256), evaluated)
    assert (lut[others] == 255).all()
    assert (train_id_lut(ignore_index=-1)[others] == -1).all()


def test_classes_and_palette() -> None:
    assert len(CITYSCAPES_CLASSES) == 19 and len(CITYSCAPES_PALETTE) == 19
    assert CITYSCAPES_CLASSES[13] == "car" and CITYSCAPES_PALETTE[13] == (0, 0, 142)
    assert CITYSCAPES_PALETTE[0] == (128, 64, 128) and CITYSCAPES_PALETTE[18] == (119, 11, 32)


def test_split_selection_order_and_meta(cs_root: Path) -> None:
    train = Cityscapes(cs_root, split="train")
    assert len(train) == 3
    names = [Path(train[i]["meta"]["path"]).name for i in range(3)]
    assert names == [
        "aachen_000000_000019_leftImg8bit.png",
        "aachen_000001_000019_leftImg8bit.png",
        "zurich_000000_000019_leftImg8bit.png",
    ]
    assert train[2]["meta"]["path"] == str(
        cs_root / "leftImg8bit/train/zurich/zurich_000000_000019_leftImg8bit.png"
    )
    val = Cityscapes(cs_root, split="val")
    assert len(val) == 1 and (val[0]["mask"] == 13).all()


def test_registry_build(cs_root: Path) -> None:
    ds = DATASETS.build("cityscapes", root=cs_root, split="val")
    assert isinstance(ds, Cityscapes) and ds.num_classes == 19


def test_missing_split_lists_available(cs_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"split 'test' not found; available: train, val"):
        Cityscapes(cs_root, split="test")


def test_missing_gtfine_folder(tmp_path: Path) -> None:
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"gtFine: Cityscapes gtFine label folder not found"):
        Cityscapes(tmp_path, split="train")


def test_missing_label_file(cs_root: Path) -> None:
    (cs_root / "gtFine/train/zurich/zurich_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"zurich_000000_000019_gtFine_labelIds\.png: label file not"):
        Cityscapes(cs_root, split="train")


def test_empty_split(cs_root: Path) -> None:
    (cs_root / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"test: no images found .*_leftImg8bit\.png"):
        Cityscapes(cs_root, split="test")


def test_size_mismatch(cs_root: Path) -> None:
    path = cs_root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    Image.fromarray(np.zeros((H, W + 2), dtype=np.uint8)).save(path)
    with pytest.raises(
        ValueError, match=r"_leftImg8bit\.png is \(8, 10\).*_gtFine_labelIds\.png is \(8, 12\)"
    ):
        Cityscapes(cs_root, split="val")[0]


def test_16bit_label_beyond_table(cs_root: Path) -> None:
    path = cs_root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    Image.fromarray(np.full((H, W), 1000, dtype=np.uint16)).save(path)
    with pytest.raises(
        ValueError, match=r"_gtFine_labelIds\.png: labelId 1000 out of range; expected 0\.\.255"
    ):
        Cityscapes(cs_root, split="val")[0]
