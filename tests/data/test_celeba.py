"""CelebA reader: list files, CelebA/MAFL splits, aligned images, face crops and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision import tv_tensors

from segzoo.data.datasets.celeba import (
    LANDMARK_NAMES,
    CelebA,
    crop_with_padding,
    read_celeba_list,
    square_crop_box,
)
from segzoo.data.io import read_image
from segzoo.registry import DATASETS

NAMES = ("000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg")
PARTITION = (0, 0, 1, 2)
WILD_SIZE = (40, 60)  # (H, W)
ALIGN_SIZE = (24, 20)
BOX = (10, 5, 20, 10)  # x, y, w, h of every wild face


def landmarks(k: int, aligned: bool) -> list[int]:
    base = [18, 12, 28, 13, 23, 17, 19, 20, 27, 21] if not aligned else [6, 9, 13, 9, 10, 13, 7, 17, 12, 17]
    return [v + k for v in base]


def _list_file(path: Path, columns: str, rows: list[str]) -> None:
    # CelebA pads its columns with runs of spaces; keep that so the parser is exercised.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{len(rows)}\n{columns}\n" + "".join(f"{r}\n" for r in rows))


def make_celeba(root: Path, official: bool = False, mafl: bool = True) -> Path:
    img_dir = root / "Img" if official else root
    anno_dir = root / "Anno" if official else root
    eval_dir = root / "Eval" if official else root
    rng = np.random.default_rng(0)
    for folder, (h, w) in (("img_celeba", WILD_SIZE), ("img_align_celeba", ALIGN_SIZE)):
        (img_dir / folder).mkdir(parents=True, exist_ok=True)
        for name in NAMES:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(img_dir / folder / name)
    cols = " ".join(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy")
    for fname, aligned in (("list_landmarks_celeba.txt", False), ("list_landmarks_align_celeba.txt", True)):
        rows = [f"{n}  " + "  ".join(f"{v:3d}" for v in landmarks(k, aligned)) for k, n in enumerate(NAMES)]
        _list_file(anno_dir / fname, cols, rows)
    _list_file(
        anno_dir / "list_bbox_celeba.txt",
        "image_id x_1 y_1 width height",
        [f"{n}    {BOX[0]}   {BOX[1]}  {BOX[2]}   {BOX[3]}" for n in NAMES],
    )
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "list_eval_partition.txt").write_text(
        "".join(f"{n} {p}\n" for n, p in zip(NAMES, PARTITION, strict=True))
    )
    if mafl:
        (root / "MAFL").mkdir()
        (root / "MAFL" / "training.txt").write_text("000004.jpg\n000001.jpg\n")
        (root / "MAFL" / "testing.txt").write_text("000003.jpg\n\n")
    return root


def test_read_celeba_list_header_and_spaces(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("2\nimage_id x_1 y_1 width height\na.jpg   1  2 3    4\nb.jpg 5 6 7 8\n")
    names, values = read_celeba_list(path, 4)
    assert names == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(values, [[1, 2, 3, 4], [5, 6, 7, 8]])
    path.write_text("3\nimage_id x_1 y_1 width height\na.jpg 1 2 3 4\n")
    with pytest.raises(ValueError, match=r"list\.txt: header declares 3 rows but 1 were read"):
        read_celeba_list(path, 4)
    path.write_text("1\ncols\na.jpg 1 2 3\n")
    with pytest.raises(ValueError, match=r"list\.txt, line 3: expected a file name and 4 numbers"):
        read_celeba_list(path, 4)
    path.write_text("a.jpg 0\nb.jpg 2\n")  # partition files have no header
    assert read_celeba_list(path, 1)[0] == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ("train", ["000001.jpg", "000002.jpg"]),
        ("val", ["000003.jpg"]),
        ("test", ["000004.jpg"]),
        ("mafl_train", ["000004.jpg", "000001.jpg"]),
        ("mafl_test", ["000003.jpg"]),
    ],
)
def test_splits(tmp_path: Path, split: str, expected: list[str]) -> None:
    assert CelebA(make_celeba(tmp_path), split=split).names == expected


def test_wild_sample(tmp_path: Path) -> None:
    root = make_celeba(tmp_path)
    sample = CelebA(root, split="mafl_train")[0]  # 000004.jpg, k = 3
    kp, boxes = sample["keypoints"], sample["boxes"]
    assert isinstance(kp, tv_tensors.KeyPoints) and kp.shape == (5, 2) and kp.canvas_size == WILD_SIZE
    expected = torch.tensor(landmarks(3, False), dtype=torch.float32).reshape(5, 2)
    assert torch.equal(kp.as_subclass(torch.Tensor), expected)
    assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.canvas_size == WILD_SIZE
    assert torch.equal(boxes.as_subclass(torch.Tensor), torch.tensor([[10.0, 5.0, 30.0, 15.0]]))
    assert sample["image"].shape == (3, *WILD_SIZE)
    assert sample["meta"]["path"] == str(root / "img_celeba" / "000004.jpg")


def test_aligned_sample_official_layout(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, official=True)
    ds = DATASETS.build("celeba", root=root, split="val", aligned=True)
    sample = ds[0]
    assert sample["image"].shape == (3, *ALIGN_SIZE)
    expected = torch.tensor(landmarks(2, True), dtype=torch.float32).reshape(5, 2)
    assert torch.equal(sample["keypoints"].as_subclass(torch.Tensor), expected)
    assert "boxes" not in sample
    assert sample["meta"]["path"] == str(root / "Img" / "img_align_celeba" / "000003.jpg")


def test_square_crop_box_and_padding() -> None:
    assert square_crop_box(BOX, 1.5) == (5, -5, 30)
    image = torch.arange(2 * 4 * 5, dtype=torch.uint8).reshape(2, 4, 5)
    out = crop_with_padding(image, -1, 2, 3)
    assert out.shape == (2, 3, 3)
    assert torch.equal(out[:, :2, 1:], image[:, 2:4, 0:2])
    assert int(out[:, :, 0].abs().sum()) == 0 and int(out[:, 2, :].abs().sum()) == 0


def test_crop_shifts_keypoints_and_pads(tmp_path: Path) -> None:
    root = make_celeba(tmp_path)
    sample = CelebA(root, split="train", crop=True, box_scale=1.5)[1]  # 000002.jpg, k = 1
    image, kp, boxes = sample["image"], sample["keypoints"], sample["boxes"]
    # Box centre (20, 10), side 1.5 * 20 = 30 -> square x 5..35, y -5..25 (5 rows of zero padding on top).
    assert image.shape == (3, 30, 30) and kp.canvas_size == (30, 30) and boxes.canvas_size == (30, 30)
    original = read_image(root / "img_celeba" / "000002.jpg")
    assert torch.equal(image[:, 5:, :], original[:, 0:25, 5:35])
    assert int(image[:, :5].sum()) == 0
    expected = torch.tensor(landmarks(1, False), dtype=torch.float32).reshape(5, 2) - torch.tensor(
        [5.0, -5.0]
    )
    assert torch.equal(kp.as_subclass(torch.Tensor), expected)
    assert torch.equal(boxes.as_subclass(torch.Tensor), torch.tensor([[5.0, 10.0, 25.0, 20.0]]))
    assert sample["meta"]["crop_box"] == (5, -5, 35, 25)
    assert sample["meta"]["size"] == WILD_SIZE


def test_crop_with_size_scales_keypoints(tmp_path: Path) -> None:
    root = make_celeba(tmp_path)
    plain = CelebA(root, split="train", crop=True, box_scale=1.5)[0]
    small = CelebA(root, split="train", crop=True, box_scale=1.5, size=15)[0]
    assert small["image"].shape == (3, 15, 15) and small["keypoints"].canvas_size == (15, 15)
    assert torch.allclose(small["keypoints"], plain["keypoints"] * 0.5)
    assert torch.allclose(small["boxes"].float(), plain["boxes"] * 0.5)
    assert torch.equal(small["image"], F.resize(plain["image"], [15, 15], antialias=True))


def test_option_errors(tmp_path: Path) -> None:
    root = make_celeba(tmp_path)
    with pytest.raises(ValueError, match="unknown split 'all'"):
        CelebA(root, split="all")
    with pytest.raises(ValueError, match="crop=True needs the in-the-wild images"):
        CelebA(root, aligned=True, crop=True)
    with pytest.raises(ValueError, match="size=64 resizes the face crop; set crop=True"):
        CelebA(root, size=64)


def test_missing_mafl_folder(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, mafl=False)
    with pytest.raises(
        FileNotFoundError, match=r"MAFL: MAFL folder not found; split 'mafl_test' needs MAFL/testing"
    ):
        CelebA(root, split="mafl_test")


def test_missing_landmark_entry_names_the_file(tmp_path: Path) -> None:
    root = make_celeba(tmp_path)
    _list_file(root / "list_landmarks_celeba.txt", "cols", [f"000001.jpg {' '.join(['1'] * 10)}"])
    with pytest.raises(ValueError, match=r"list_landmarks_celeba\.txt: no entry for \['000002\.jpg'\]"):
        CelebA(root, split="train")


def test_missing_image_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"img_align_celeba: CelebA aligned image folder not found"):
        CelebA(tmp_path, aligned=True)
