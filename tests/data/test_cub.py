"""CUB-200-2011 reader: split files, soft masks, boxes, part keypoints and errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from segzoo.data.datasets.cub import CUB, read_id_table
from segzoo.registry import DATASETS

# id, relative path, is_train, class id, (x, y, w, h), (H, W)
IMAGES = (
    (
        1,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg",
        1,
        1,
        (2.0, 3.5, 10.0, 6.0),
        (12, 16),
    ),
    (
        2,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg",
        0,
        1,
        (0.0, 0.0, 8.0, 8.0),
        (10, 10),
    ),
    (3, "002.Laysan_Albatross/Laysan_Albatross_0001_545.jpg", 1, 2, (4.0, 1.0, 5.5, 7.25), (14, 12)),
)


def soft(h: int, w: int, image_id: int) -> np.ndarray:
    """Soft mask with values on both sides of the 128 threshold, different per image."""
    grey = np.zeros((h, w), dtype=np.uint8)
    grey[2:6, 2:8] = 255
    grey[6:8, 2:8] = 127
    grey[8:, :4] = 128
    grey[0, image_id] = 200
    return grey


def part_row(image_id: int, part: int) -> tuple[float, float, int]:
    visible = int((image_id + part) % 3 != 0)
    return (part + 0.5 * image_id, 2.0 * part, visible) if visible else (0.0, 0.0, 0)


def make_cub(root: Path, parts: bool = True, segmentations: Path | None = None) -> Path:
    cub = root / "CUB_200_2011"
    seg_root = segmentations if segmentations is not None else cub / "segmentations"
    for image_id, rel, _, _, _, (h, w) in IMAGES:
        img = cub / "images" / rel
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 60 + image_id, dtype=np.uint8)).save(img)
        seg = (seg_root / rel).with_suffix(".png")
        seg.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(soft(h, w, image_id), mode="L").save(seg)
    (cub / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel, *_ in IMAGES))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, t, *_ in IMAGES))
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, _, c, *_ in IMAGES))
    (cub / "bounding_boxes.txt").write_text(
        "".join(f"{i} {x} {y} {w} {h}\n" for i, _, _, _, (x, y, w, h), _ in IMAGES)
    )
    if parts:
        (cub / "parts").mkdir()
        lines = []
        for i, *_ in IMAGES:
            for p in range(1, 16):
                x, y, v = part_row(i, p)
                lines.append(f"{i} {p} {x} {y} {v}\n")
        (cub / "parts" / "part_locs.txt").write_text("".join(lines))
    return cub


def test_read_id_table_keeps_paths_whole(tmp_path: Path) -> None:
    path = tmp_path / "images.txt"
    path.write_text("1 a/b c.jpg\n\n2  d/e.jpg\n")
    assert read_id_table(path, 1, last_is_text=True) == {1: ["a/b c.jpg"], 2: ["d/e.jpg"]}
    path.write_text("1 2 3\nx 4 5\n")
    with pytest.raises(ValueError, match=r"images\.txt, line 2: image id 'x' is not an integer"):
        read_id_table(path, 2)


def test_splits_select_by_flag(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    assert CUB(cub, split="train").ids == [1, 3]
    assert CUB(cub, split="test").ids == [2]
    assert len(CUB(cub, split="all")) == 3
    with pytest.raises(ValueError, match="unknown split 'val'"):
        CUB(cub, split="val")


def test_sample_contents(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    ds = CUB(cub, split="train")
    assert ds.classes == ("background", "bird")
    sample = ds[1]  # id 3
    h, w = IMAGES[2][5]
    image, mask, boxes = sample["image"], sample["mask"], sample["boxes"]
    assert image.shape == (3, h, w) and image.dtype == torch.uint8
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == (h, w)
    assert torch.equal(mask, torch.from_numpy((soft(h, w, 3) >= 128).astype(np.int64)))
    assert isinstance(boxes, tv_tensors.BoundingBoxes)
    assert boxes.format == tv_tensors.BoundingBoxFormat.XYXY and boxes.canvas_size == (h, w)
    assert torch.allclose(boxes, torch.tensor([[4.0, 1.0, 9.5, 8.25]]))
    meta = sample["meta"]
    assert meta["class_id"] == 2 and meta["image_id"] == 3
    assert meta["path"] == str(cub / "images" / IMAGES[2][1])


def test_keypoints_from_part_locs(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    sample = CUB(cub, split="all")[1]  # id 2
    kp = sample["keypoints"]
    assert isinstance(kp, tv_tensors.KeyPoints) and kp.shape == (15, 2) and kp.canvas_size == (10, 10)
    expected = torch.tensor([part_row(2, p)[:2] for p in range(1, 16)], dtype=torch.float32)
    assert torch.equal(kp.as_subclass(torch.Tensor), expected)
    assert sample["meta"]["keypoints_visible"] == [bool(part_row(2, p)[2]) for p in range(1, 16)]
    assert sum(sample["meta"]["keypoints_visible"]) == 10


def test_parts_file_is_optional(tmp_path: Path) -> None:
    sample = CUB(make_cub(tmp_path, parts=False), split="all")[0]
    assert "keypoints" not in sample and "keypoints_visible" not in sample["meta"]


def test_sibling_segmentations_folder(tmp_path: Path) -> None:
    cub = make_cub(tmp_path, segmentations=tmp_path / "segmentations")
    sample = CUB(cub, split="all")[0]
    assert sample["meta"]["mask_path"] == str(
        tmp_path / "segmentations" / Path(IMAGES[0][1]).with_suffix(".png")
    )
    assert DATASETS.build("cub", root=cub, split="test")[0]["mask"].shape == (10, 10)


def test_missing_segmentations_is_an_error(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    shutil.rmtree(cub / "segmentations")
    with pytest.raises(
        FileNotFoundError, match=r"CUB_200_2011/segmentations: CUB segmentations folder not found"
    ):
        CUB(cub)


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    seg = (cub / "segmentations" / IMAGES[1][1]).with_suffix(".png")
    Image.fromarray(np.zeros((5, 10), dtype=np.uint8), mode="L").save(seg)
    with pytest.raises(
        ValueError, match=r"Black_Footed_Albatross_0002_55\.jpg is \(10, 10\).*_55\.png is \(5, 10\)"
    ):
        CUB(cub, split="test")[0]


def test_missing_box_entry_names_the_file(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    (cub / "bounding_boxes.txt").write_text("1 0 0 1 1\n2 0 0 1 1\n")
    with pytest.raises(ValueError, match=r"bounding_boxes\.txt: no entry for image ids \[3\]"):
        CUB(cub)


def test_bad_part_id(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    with (cub / "parts" / "part_locs.txt").open("a") as f:
        f.write("1 16 1.0 1.0 1\n")
    with pytest.raises(ValueError, match=r"part_locs\.txt, line 46: part id 16 out of range"):
        CUB(cub)
