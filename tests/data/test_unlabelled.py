"""Unlabelled image folder / single image dataset used by self-supervised methods and prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.data.datasets.unlabelled import ImageFolder
from segzoo.registry import DATASETS

H, W = 8, 10


def _image(path: Path, array: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = np.random.default_rng(len(path.name)).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """photos/{b.jpg, a.png, notes.txt, sub/c.jpg, sub/deeper/d.bmp}."""
    root = tmp_path / "photos"
    _image(root / "b.jpg")
    _image(root / "a.png")
    _image(root / "sub" / "c.jpg")
    _image(root / "sub" / "deeper" / "d.bmp")
    root.joinpath("notes.txt").write_text("not an image")
    return root


def test_folder_samples_have_image_and_absolute_path(tree: Path) -> None:
    ds = ImageFolder(tree)
    assert len(ds) == 2 and ds.classes == () and ds.num_classes == 0
    sample = ds[0]
    assert set(sample) == {"image", "meta"}
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.uint8
    assert sample["meta"]["path"] == str((tree / "a.png").resolve())
    assert Path(sample["meta"]["path"]).is_absolute()
    assert sample["meta"]["relpath"] == "a.png" and sample["meta"]["size"] == (H, W)


def test_relative_root_gives_absolute_paths(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    ds = ImageFolder("photos")
    assert ds[1]["meta"]["path"] == str((tree / "b.jpg").resolve())


def test_recursive(tree: Path) -> None:
    ds = ImageFolder(tree, recursive=True)
    assert [ds[i]["meta"]["relpath"] for i in range(len(ds))] == [
        "a.png",
        "b.jpg",
        "sub/c.jpg",
        "sub/deeper/d.bmp",
    ]


def test_single_file_and_split_ignored(tree: Path) -> None:
    ds = ImageFolder(tree / "sub" / "c.jpg", split="test")
    assert len(ds) == 1 and ds.split == "test"
    assert ds[0]["meta"]["path"] == str((tree / "sub" / "c.jpg").resolve())
    assert ds[0]["meta"]["relpath"] == "c.jpg"


def test_registry_build(tree: Path) -> None:
    ds = DATASETS.build("image_folder", root=tree, split="predict", recursive=True)
    assert isinstance(ds, ImageFolder) and len(ds) == 4


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere: no such image file or folder"):
        ImageFolder(tmp_path / "nowhere")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    tmp_path.joinpath("readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"no images found \(looked for \.jpg"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match=r"no images found in it or its subfolders"):
        ImageFolder(tmp_path, recursive=True)


def test_corrupt_image_named(tmp_path: Path) -> None:
    tmp_path.joinpath("broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg: cannot decode image"):
        ImageFolder(tmp_path)[0]


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((H, W), 90, dtype=np.uint8), 90),
        (np.full((H, W, 4), 60, dtype=np.uint8), 60),
        (np.full((H, W), 0x5A00, dtype=np.uint16), 0x5A),
    ],
    ids=["gray", "rgba", "16bit"],
)
def test_image_modes_load_as_rgb_uint8(tmp_path: Path, array: np.ndarray, expected: int) -> None:
    _image(tmp_path / "x.png", array)
    image = ImageFolder(tmp_path / "x.png")[0]["image"]
    assert image.shape == (3, H, W) and image.dtype == torch.uint8 and (image == expected).all()
