"""CamVid (SegNet layout) reader: list files, stem matching, void -> ignore, errors and the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.data.datasets.camvid import CAMVID_CLASSES, CAMVID_PALETTE, CamVid
from segzoo.registry import DATASETS

H, W = 8, 10


def _labels(seed: int) -> np.ndarray:
    """Labels 0..11 (11 = void), every value present."""
    labels = np.random.default_rng(seed).integers(0, 12, size=(H, W))
    labels.flat[:12] = np.arange(12)
    return labels


def _write(root: Path, split: str, stem: str, seed: int, ext: str = ".jpg") -> None:
    (root / split).mkdir(exist_ok=True)
    (root / f"{split}annot").mkdir(exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / split / f"{stem}{ext}")
    Image.fromarray(_labels(seed).astype(np.uint8), mode="L").save(root / f"{split}annot" / f"{stem}.png")


@pytest.fixture
def camvid_root(tmp_path: Path) -> Path:
    """train (3, with train.txt listing 2 of them), val (2, no list) and test (1, png, no list)."""
    for seed, stem in enumerate(("0001TP_006690", "0001TP_006720", "0001TP_006750")):
        _write(tmp_path, "train", stem, seed)
    tmp_path.joinpath("train.txt").write_text(
        "train/0001TP_006720.jpg trainannot/0001TP_006720.png\n"
        "train/0001TP_006690.jpg trainannot/0001TP_006690.png\n\n"
    )
    _write(tmp_path, "val", "0016E5_07961", 10)
    _write(tmp_path, "val", "0016E5_07959", 11)
    _write(tmp_path, "test", "Seq05VD_f00000", 20, ext=".png")
    return tmp_path


def test_sample_and_void_mapping(camvid_root: Path) -> None:
    ds = CamVid(camvid_root, split="train")
    sample = ds[1]
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.uint8
    assert sample["mask"].shape == (H, W) and sample["mask"].dtype == torch.int64
    expected = np.where(_labels(0) == 11, 255, _labels(0))
    np.testing.assert_array_equal(sample["mask"].numpy(), expected)
    assert 11 not in sample["mask"].unique().tolist()
    assert sample["meta"]["path"] == str(camvid_root / "train" / "0001TP_006690.jpg")


def test_list_file_is_used_in_its_order(camvid_root: Path) -> None:
    ds = CamVid(camvid_root, split="train")
    assert len(ds) == 2
    assert [Path(ds[i]["meta"]["path"]).stem for i in range(2)] == ["0001TP_006720", "0001TP_006690"]


def test_without_list_pairs_by_stem_and_accepts_test(camvid_root: Path) -> None:
    val = CamVid(camvid_root, split="val")
    assert len(val) == 2
    assert [Path(val[i]["meta"]["path"]).name for i in range(2)] == ["0016E5_07959.jpg", "0016E5_07961.jpg"]
    np.testing.assert_array_equal(val[0]["mask"].numpy(), np.where(_labels(11) == 11, 255, _labels(11)))
    test = CamVid(camvid_root, split="test")
    assert len(test) == 1 and test[0]["meta"]["path"].endswith("Seq05VD_f00000.png")


def test_segnet_absolute_paths_fall_back_to_root(camvid_root: Path) -> None:
    camvid_root.joinpath("train.txt").write_text(
        "/SegNet/CamVid/train/0001TP_006750.jpg /SegNet/CamVid/trainannot/0001TP_006750.png\n"
    )
    ds = CamVid(camvid_root, split="train")
    assert len(ds) == 1 and ds[0]["meta"]["path"] == str(camvid_root / "train" / "0001TP_006750.jpg")


def test_classes_palette_and_registry(camvid_root: Path) -> None:
    assert CAMVID_CLASSES == (
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
        "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
    )  # fmt: skip
    assert len(CAMVID_PALETTE) == 11 and CAMVID_PALETTE[0] == (128, 128, 128)
    assert CAMVID_PALETTE[3] == (128, 64, 128) and CAMVID_PALETTE[10] == (0, 128, 192)
    ds = DATASETS.build("camvid", root=camvid_root, split="train")
    assert isinstance(ds, CamVid) and ds.num_classes == 11 and ds.ignore_index == 255


def test_rgb_annotation_decoded_with_segnet_palette(camvid_root: Path) -> None:
    labels = _labels(10)
    colours = np.array([*CAMVID_PALETTE, (0, 0, 0)], dtype=np.uint8)
    Image.fromarray(colours[labels]).save(camvid_root / "valannot" / "0016E5_07961.png")
    np.testing.assert_array_equal(
        CamVid(camvid_root, split="val")[1]["mask"].numpy(), np.where(labels == 11, 255, labels)
    )


def test_missing_split_lists_available(camvid_root: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"split 'valid' not found .*available splits: test, train, val"
    ):
        CamVid(camvid_root, split="valid")


def test_list_entry_missing_file(camvid_root: Path) -> None:
    camvid_root.joinpath("train.txt").write_text("train/nope.jpg trainannot/nope.png\n")
    with pytest.raises(FileNotFoundError, match=r"train\.txt, line 1: .*nope\.jpg not found"):
        CamVid(camvid_root, split="train")


def test_malformed_list_line(camvid_root: Path) -> None:
    camvid_root.joinpath("train.txt").write_text(
        "train/0001TP_006690.jpg trainannot/0001TP_006690.png\ntrain/0001TP_006720.jpg\n"
    )
    with pytest.raises(
        ValueError, match=r"train\.txt, line 2: 'train/0001TP_006720\.jpg'; expected two paths"
    ):
        CamVid(camvid_root, split="train")


def test_unmatched_stems_without_list(camvid_root: Path) -> None:
    (camvid_root / "valannot" / "0016E5_07959.png").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) without masks \[0016E5_07959\], 0 mask\(s\)"):
        CamVid(camvid_root, split="val")


def test_label_beyond_void_is_rejected(camvid_root: Path) -> None:
    Image.fromarray(np.full((H, W), 12, dtype=np.uint8)).save(
        camvid_root / "testannot" / "Seq05VD_f00000.png"
    )
    with pytest.raises(
        ValueError, match=r"Seq05VD_f00000\.png: label value 12 out of range; allowed 0\.\.10"
    ):
        CamVid(camvid_root, split="test")[0]


def test_grayscale_image_loads_as_rgb(camvid_root: Path) -> None:
    Image.fromarray(np.full((H, W), 77, dtype=np.uint8)).save(camvid_root / "test" / "Seq05VD_f00000.png")
    image = CamVid(camvid_root, split="test")[0]["image"]
    assert image.shape == (3, H, W) and image.dtype == torch.uint8 and (image == 77).all()


@pytest.mark.realdata
def test_real_camvid(shared_data: Path) -> None:
    root = shared_data / "camvid"
    train, val = CamVid(root, split="train"), CamVid(root, split="val")
    assert (len(train), len(val)) == (367, 101)
    # A few samples only: the whole set would take too long for the unit suite.
    for ds, index in ((train, 0), (train, 366), (val, 50)):
        sample = ds[index]
        assert sample["image"].shape == (3, 360, 480) and sample["image"].dtype == torch.uint8
        assert sample["mask"].shape == (360, 480) and sample["mask"].dtype == torch.int64
        values = set(sample["mask"].unique().tolist())
        assert values <= set(range(11)) | {255} and values & set(range(11))
