"""BSDS500 reader: MATLAB groundTruth cells, layouts, splits and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torchvision import tv_tensors

from segzoo.data.datasets.bsds import BSDS500, read_bsds_groundtruth
from segzoo.registry import DATASETS

H, W = 12, 16


def _segmentations(seed: int, n: int, h: int = H, w: int = W) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 6, size=(h, w)).astype(np.uint16) for _ in range(n)]


def write_gt(path: Path, segs: list[np.ndarray]) -> None:
    """Write a BSDS-style .mat: variable groundTruth = 1xN cell of structs (Segmentation, Boundaries)."""
    cell = np.empty((1, len(segs)), dtype=object)
    for j, seg in enumerate(segs):
        boundaries = np.zeros(seg.shape, dtype=np.uint8)
        boundaries[:, 1:] = seg[:, 1:] != seg[:, :-1]
        cell[0, j] = {"Segmentation": seg, "Boundaries": boundaries}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"groundTruth": cell})


def write_image(path: Path, h: int = H, w: int = W, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, dtype=np.uint8)).save(path)


def make_bsds(root: Path) -> dict[str, list[np.ndarray]]:
    """Two val images (3 and 5 annotators) and one train image; returns the written segmentations."""
    written = {}
    for split, stem, n, seed in (("val", "1001", 3, 0), ("val", "1002", 5, 1), ("train", "2001", 4, 2)):
        segs = _segmentations(seed, n)
        write_image(root / "images" / split / f"{stem}.jpg")
        write_gt(root / "groundTruth" / split / f"{stem}.mat", segs)
        written[stem] = segs
    return written


def test_fixture_has_the_real_mat_structure(tmp_path: Path) -> None:
    segs = _segmentations(0, 3)
    write_gt(tmp_path / "a.mat", segs)
    gt = scipy.io.loadmat(str(tmp_path / "a.mat"))["groundTruth"]
    assert gt.shape == (1, 3) and gt.dtype == object
    assert set(gt[0, 0].dtype.names) == {"Segmentation", "Boundaries"}
    assert gt[0, 1]["Segmentation"][0, 0].dtype == np.uint16


def test_read_groundtruth_round_trip(tmp_path: Path) -> None:
    segs = _segmentations(3, 4)
    write_gt(tmp_path / "a.mat", segs)
    out = read_bsds_groundtruth(tmp_path / "a.mat")
    assert out.shape == (4, H, W) and out.dtype == np.int64
    np.testing.assert_array_equal(out, np.stack(segs).astype(np.int64))
    boundaries = read_bsds_groundtruth(tmp_path / "a.mat", field="Boundaries")
    np.testing.assert_array_equal(boundaries[2][:, 1:], (segs[2][:, 1:] != segs[2][:, :-1]).astype(np.int64))


def test_samples_hold_all_annotations(tmp_path: Path) -> None:
    written = make_bsds(tmp_path)
    ds = BSDS500(tmp_path, split="val")
    assert len(ds) == 2 and ds.classes == () and ds.num_classes == 0
    sample = ds[1]
    masks = sample["masks"]
    assert isinstance(masks, tv_tensors.Mask)
    assert masks.shape == (5, H, W) and masks.dtype == torch.int64
    assert torch.equal(masks, torch.from_numpy(np.stack(written["1002"]).astype(np.int64)))
    assert int(masks.min()) >= 1  # region ids kept as in the file
    assert "mask" not in sample
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.uint8
    assert sample["meta"]["path"] == str(tmp_path / "images" / "val" / "1002.jpg")
    assert sample["meta"]["size"] == (H, W) and sample["meta"]["index"] == 1


def test_split_selection_and_registry(tmp_path: Path) -> None:
    make_bsds(tmp_path)
    train = DATASETS.build("bsds500", root=tmp_path, split="train")
    assert isinstance(train, BSDS500) and len(train) == 1
    assert train[0]["masks"].shape[0] == 4
    with pytest.raises(ValueError, match="unknown split 'trainval'"):
        BSDS500(tmp_path, split="trainval")


def test_official_bsr_folder_is_accepted(tmp_path: Path) -> None:
    data = tmp_path / "BSR" / "BSDS500" / "data"
    make_bsds(data)
    for root in (data, tmp_path / "BSR"):
        assert len(BSDS500(root, split="val")) == 2


def test_corrupt_mat_names_the_file(tmp_path: Path) -> None:
    make_bsds(tmp_path)
    bad = tmp_path / "groundTruth" / "val" / "1001.mat"
    bad.write_bytes(b"not a matlab file at all" * 10)
    with pytest.raises(ValueError, match=r"1001\.mat: cannot read MATLAB file"):
        BSDS500(tmp_path, split="val")[0]


def test_missing_variable_names_the_file(tmp_path: Path) -> None:
    make_bsds(tmp_path)
    scipy.io.savemat(str(tmp_path / "groundTruth" / "val" / "1001.mat"), {"other": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"1001\.mat: no variable 'groundTruth'"):
        BSDS500(tmp_path, split="val")[0]


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    make_bsds(tmp_path)
    write_gt(tmp_path / "groundTruth" / "val" / "1002.mat", _segmentations(0, 2, h=W, w=H))
    with pytest.raises(ValueError, match=r"1002\.jpg is \(12, 16\).*1002\.mat is \(16, 12\)"):
        BSDS500(tmp_path, split="val")[1]


def test_missing_mat_lists_the_stem(tmp_path: Path) -> None:
    make_bsds(tmp_path)
    (tmp_path / "groundTruth" / "val" / "1002.mat").unlink()
    with pytest.raises(ValueError, match=r"images without \.mat \['1002'\]"):
        BSDS500(tmp_path, split="val")


def test_missing_split_folder(tmp_path: Path) -> None:
    make_bsds(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"images/test: BSDS500 images folder not found"):
        BSDS500(tmp_path, split="test")


@pytest.mark.realdata
def test_real_bsds500_val(shared_data: Path) -> None:
    ds = BSDS500(shared_data / "bsds500", split="val")
    assert len(ds) == 100
    for i in (0, 50, 99):  # loadmat is slow-ish: a few images only
        sample = ds[i]
        masks = sample["masks"]
        assert 4 <= masks.shape[0] <= 9
        assert masks.shape[-2:] == sample["image"].shape[-2:]
        assert sorted(masks.shape[-2:]) == [321, 481]
        assert int(masks.min()) >= 1
