"""Generic images/ + masks/ folder dataset: layouts, class names, colour tables and every input error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.data.datasets.folder import FolderDataset, pair_by_stem
from segzoo.registry import DATASETS

H, W = 8, 10
COLORS = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


def _image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)).save(path)


def _mask(path: Path, labels: np.ndarray) -> None:
    """An index mask saved as a palette PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette([c for rgb in COLORS for c in rgb] + [128] * 3 * 253)
    img.save(path)


def _labels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, size=(H, W))


@pytest.fixture
def flat_root(tmp_path: Path) -> Path:
    """root/images/{a,b}.jpg + root/masks/{a,b}.png."""
    for seed, stem in enumerate("ba"):
        _image(tmp_path / "images" / f"{stem}.jpg", seed)
        _mask(tmp_path / "masks" / f"{stem}.png", _labels(seed))
    return tmp_path


def test_flat_layout_sample(flat_root: Path) -> None:
    ds = FolderDataset(flat_root, num_classes=3)
    assert len(ds) == 2 and ds.classes == ("class_0", "class_1", "class_2") and ds.ignore_index == 255
    sample = ds[0]
    assert set(sample) == {"image", "mask", "meta"}
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.uint8
    assert sample["mask"].shape == (H, W) and sample["mask"].dtype == torch.int64
    np.testing.assert_array_equal(sample["mask"].numpy(), _labels(1))  # sorted by stem: "a" was seed 1
    assert sample["meta"]["path"] == str(flat_root / "images" / "a.jpg")


def test_split_subfolders_are_preferred(flat_root: Path) -> None:
    _image(flat_root / "val" / "images" / "c.png")
    _mask(flat_root / "val" / "masks" / "c.png", np.full((H, W), 2))
    val = FolderDataset(flat_root, split="val", classes=["bg", "cat", "dog"])
    assert len(val) == 1 and val.classes == ("bg", "cat", "dog") and (val[0]["mask"] == 2).all()
    # No root/train/images: the flat folders are used.
    assert len(FolderDataset(flat_root, split="train", num_classes=3)) == 2


def test_configurable_folder_names(tmp_path: Path) -> None:
    _image(tmp_path / "rgb" / "x.jpg")
    _mask(tmp_path / "labels" / "x.png", np.ones((H, W)))
    ds = FolderDataset(tmp_path, images_dir="rgb", masks_dir="labels", num_classes=2)
    assert len(ds) == 1 and (ds[0]["mask"] == 1).all()


def test_registry_build(flat_root: Path) -> None:
    ds = DATASETS.build("folder", root=flat_root, split="train", num_classes=3)
    assert isinstance(ds, FolderDataset) and len(ds) == 2


def test_rgb_masks_with_colour_table(flat_root: Path) -> None:
    labels = _labels(5)
    table = np.array([*COLORS, [9, 9, 9]], dtype=np.uint8)
    labels[0, 0] = 3  # the ignore colour
    Image.fromarray(table[labels]).save(flat_root / "masks" / "a.png")
    ds = FolderDataset(flat_root, classes=["bg", "r", "g"], colors=COLORS, ignore_colors=[[9, 9, 9]])
    expected = np.where(labels == 3, 255, labels)
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), expected)
    assert ds.palette == [(0, 0, 0), (255, 0, 0), (0, 255, 0)]


def test_rgb_mask_without_colour_table(flat_root: Path) -> None:
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(flat_root / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png: RGB mask but no colour table"):
        FolderDataset(flat_root, num_classes=3)[0]


def test_rgb_mask_with_unknown_colour(flat_root: Path) -> None:
    Image.fromarray(np.full((H, W, 3), 7, dtype=np.uint8)).save(flat_root / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png: colours not in the colour table: \(7, 7, 7\)"):
        FolderDataset(flat_root, num_classes=3, colors=COLORS)[0]


def test_classes_or_num_classes_required(flat_root: Path) -> None:
    with pytest.raises(ValueError, match=r"needs classes=\[names\.\.\.\] or num_classes=N"):
        FolderDataset(flat_root)
    with pytest.raises(ValueError, match=r"num_classes=4 but classes lists 3 names"):
        FolderDataset(flat_root, classes=["a", "b", "c"], num_classes=4)
    with pytest.raises(ValueError, match=r"num_classes=0; expected a positive integer"):
        FolderDataset(flat_root, num_classes=0)


def test_bad_colour_tables(flat_root: Path) -> None:
    with pytest.raises(ValueError, match=r"colors has 2 entries but there are 3 classes"):
        FolderDataset(flat_root, num_classes=3, colors=COLORS[:2])
    with pytest.raises(ValueError, match=r"colors: \[0, 300, 0\] is not a colour"):
        FolderDataset(flat_root, num_classes=3, colors=[[0, 0, 0], [0, 300, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"ignore_colors: colour \[255, 0, 0\] is listed twice"):
        FolderDataset(flat_root, num_classes=3, colors=COLORS, ignore_colors=[[255, 0, 0]])


def test_unmatched_stems_lists_five_of_each_side_and_counts(tmp_path: Path) -> None:
    for i in range(7):
        _image(tmp_path / "images" / f"img{i}.jpg")
    for i in range(2):
        _mask(tmp_path / "masks" / f"mask{i}.png", np.zeros((H, W)))
    _image(tmp_path / "images" / "both.jpg")
    _mask(tmp_path / "masks" / "both.png", np.zeros((H, W)))
    with pytest.raises(ValueError) as info:
        FolderDataset(tmp_path, num_classes=2)
    message = str(info.value)
    assert "7 image(s) without masks [img0, img1, img2, img3, img4, ...]" in message
    assert "2 mask(s) without images [mask0, mask1]" in message
    assert "img5" not in message and str(tmp_path / "images") in message


def test_duplicate_stem_is_ambiguous(flat_root: Path) -> None:
    _image(flat_root / "images" / "a.png")
    with pytest.raises(ValueError, match=r"images: two files share the stem 'a' \(a\.jpg, a\.png\)"):
        FolderDataset(flat_root, num_classes=3)


def test_pair_by_stem_sorted() -> None:
    pairs = pair_by_stem(
        [Path("i/b.jpg"), Path("i/a.jpg")], [Path("m/a.png"), Path("m/b.png")], Path("i"), Path("m")
    )
    assert pairs == [(Path("i/a.jpg"), Path("m/a.png")), (Path("i/b.jpg"), Path("m/b.png"))]


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no image folder; looked for .*train/images and .*images"):
        FolderDataset(tmp_path, num_classes=2)
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=r"masks: mask folder not found"):
        FolderDataset(tmp_path, num_classes=2)
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match=r"images: no images found"):
        FolderDataset(tmp_path, num_classes=2)


def test_size_mismatch_names_both_files_and_sizes(flat_root: Path) -> None:
    _mask(flat_root / "masks" / "b.png", np.zeros((H, W - 1)))
    with pytest.raises(
        ValueError, match=r"images/b\.jpg is \(8, 10\) \(H, W\) but .*masks/b\.png is \(8, 9\)"
    ):
        FolderDataset(flat_root, num_classes=3)[1]


def test_label_out_of_range(flat_root: Path) -> None:
    _mask(flat_root / "masks" / "a.png", np.full((H, W), 5))
    with pytest.raises(ValueError, match=r"a\.jpg: label value 5 out of range; allowed 0\.\.2 or 255"):
        FolderDataset(flat_root, num_classes=3)[0]


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((H, W), 90, dtype=np.uint8), 90),  # grayscale 'L'
        (np.full((H, W, 4), 60, dtype=np.uint8), 60),  # RGBA: alpha dropped
        (np.full((H, W), 0x5A00, dtype=np.uint16), 0x5A),  # 16-bit: top byte kept
    ],
    ids=["gray", "rgba", "16bit"],
)
def test_image_modes_load_as_rgb_uint8(flat_root: Path, array: np.ndarray, expected: int) -> None:
    (flat_root / "images" / "a.jpg").unlink()
    Image.fromarray(array).save(flat_root / "images" / "a.png")
    image = FolderDataset(flat_root, num_classes=3)[0]["image"]
    assert image.shape == (3, H, W) and image.dtype == torch.uint8 and (image == expected).all()
