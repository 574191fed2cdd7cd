"""Face landmark reader: .pts parsing, 5-point derivation, layouts and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from segzoo.data.datasets.faces import (
    FaceLandmarks,
    centre_prior,
    five_point_landmarks,
    inter_ocular_distance,
    read_pts,
)
from segzoo.registry import DATASETS

SIZE = 32


def points68(seed: int) -> np.ndarray:
    """68 points with the iBUG left/right layout: points 36-41 left in the image, 42-47 right."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(4, SIZE - 4, size=(68, 2)).round(3)
    pts[36:42, 0] = rng.uniform(4, 12, 6).round(3)
    pts[42:48, 0] = rng.uniform(20, 28, 6).round(3)
    return pts


def write_pts(path: Path, pts: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{x:.3f} {y:.3f}\n" for x, y in pts)
    path.write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}}}\n")


def make_faces(base: Path, stems: tuple[str, ...] = ("a_1", "b_2")) -> dict[str, np.ndarray]:
    written = {}
    for k, stem in enumerate(stems):
        img = base / "images" / f"{stem}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((SIZE, SIZE, 3), 90, dtype=np.uint8)).save(img)
        written[stem] = points68(k)
        write_pts(base / "landmarks" / f"{stem}.pts", written[stem])
    return written


def test_read_pts_round_trip(tmp_path: Path) -> None:
    pts = points68(0)
    write_pts(tmp_path / "x.pts", pts)
    out = read_pts(tmp_path / "x.pts")
    assert out.shape == (68, 2) and out.dtype == np.float64
    np.testing.assert_allclose(out, pts)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nn_points: 2\n{\n1 2\n3 four\n}\n", r"x\.pts, line 5: expected two numbers"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 4 5\n}\n", r"x\.pts, line 5: expected two numbers"),
        ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", r"x\.pts: header says n_points: 3 but 2"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 4\n", r"x\.pts, line 5: missing closing '}'"),
        ("version 1\nn_points: 2\n{\n1 2\n3 4\n}\n", r"x\.pts, line 1: expected 'key: value'"),
        ("version: 1\n{\n1 2\n}\n", r"x\.pts, line 1: header has no 'n_points"),
        ("version: 1\nn_points: 1\n{\n1 2\n}\nextra\n", r"x\.pts, line 6: unexpected text"),
    ],
)
def test_read_pts_malformed(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.pts").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_pts(tmp_path / "x.pts")


def test_five_point_landmarks_numpy_and_torch() -> None:
    pts = points68(3)
    expected = np.array(
        [pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]],
    )
    five = five_point_landmarks(pts)
    assert isinstance(five, np.ndarray) and five.shape == (5, 2)
    np.testing.assert_allclose(five, expected)
    assert five[0, 0] < five[1, 0]  # CelebA's left eye is the image-left one
    five_t = five_point_landmarks(torch.from_numpy(pts))
    assert isinstance(five_t, torch.Tensor) and five_t.dtype == torch.float64
    np.testing.assert_allclose(five_t.numpy(), expected)
    with pytest.raises(ValueError, match=r"expected \[68, 2\] points, got shape \(5, 2\)"):
        five_point_landmarks(expected)


def test_inter_ocular_distance() -> None:
    five = np.array([[1.0, 2.0], [4.0, 6.0], [0, 0], [0, 0], [0, 0]])
    assert inter_ocular_distance(five) == pytest.approx(5.0)
    assert inter_ocular_distance(torch.from_numpy(five).float()) == pytest.approx(5.0)


def test_dataset_split_layout_five_points(tmp_path: Path) -> None:
    written = make_faces(tmp_path / "train")
    ds = FaceLandmarks(tmp_path, split="train")
    assert len(ds) == 2 and ds.classes == ()
    sample = ds[1]
    kp = sample["keypoints"]
    assert isinstance(kp, tv_tensors.KeyPoints) and kp.shape == (5, 2) and kp.dtype == torch.float32
    assert kp.canvas_size == (SIZE, SIZE)
    expected = torch.from_numpy(five_point_landmarks(written["b_2"])).float()
    assert torch.allclose(kp.as_subclass(torch.Tensor), expected)
    assert sample["image"].shape == (3, SIZE, SIZE)
    assert sample["meta"]["path"] == str(tmp_path / "train" / "images" / "b_2.jpg")


def test_dataset_flat_layout_68_points_and_registry(tmp_path: Path) -> None:
    written = make_faces(tmp_path)
    ds = DATASETS.build("face_landmarks", root=tmp_path, split="test", points="68")
    assert isinstance(ds, FaceLandmarks)
    kp = ds[0]["keypoints"]
    assert kp.shape == (68, 2)
    assert torch.allclose(kp.as_subclass(torch.Tensor), torch.from_numpy(written["a_1"]).float())
    with pytest.raises(ValueError, match="points='7'; expected '5' or '68'"):
        FaceLandmarks(tmp_path, points="7")


def test_unmatched_stems_are_listed(tmp_path: Path) -> None:
    make_faces(tmp_path, stems=("a", "b", "c"))
    (tmp_path / "landmarks" / "b.pts").unlink()
    (tmp_path / "landmarks" / "c.pts").rename(tmp_path / "landmarks" / "z.pts")
    with pytest.raises(ValueError, match=r"images without \.pts \['b', 'c'\].*\.pts without image \['z'\]"):
        FaceLandmarks(tmp_path)


def test_five_points_need_68(tmp_path: Path) -> None:
    make_faces(tmp_path, stems=("a",))
    write_pts(tmp_path / "landmarks" / "a.pts", np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"a\.pts: has 10 points; points='5' needs the 68"):
        FaceLandmarks(tmp_path)[0]


@pytest.mark.realdata
def test_real_helen_faces(shared_data: Path) -> None:
    ds = FaceLandmarks(shared_data / "helen_faces", split="train")
    assert len(ds) == 870
    left_first = 0
    indices = range(0, 870, 29)
    for i in indices:
        sample = ds[i]
        kp = sample["keypoints"]
        assert sample["image"].shape == (3, 256, 256)
        assert kp.shape == (5, 2) and bool(((kp >= 0) & (kp < 256)).all())
        left_first += bool(kp[0, 0] < kp[1, 0])
        assert inter_ocular_distance(kp) > 10
    assert left_first >= 0.9 * len(indices)


def test_centre_prior_values() -> None:
    prior = centre_prior(5, 7, sigma=0.25)
    assert prior.shape == (5, 7) and prior.dtype == torch.float32
    assert float(prior[2, 3]) == pytest.approx(1.0)
    # symmetric about the centre, decreasing outwards, exp(-0.5) one std (0.25 x 7 px) away in x
    assert torch.allclose(prior, prior.flip(0)) and torch.allclose(prior, prior.flip(1))
    assert float(prior[2, 0]) < float(prior[2, 1]) < float(prior[2, 2]) < float(prior[2, 3])
    far = centre_prior(1, 101, sigma=0.25)
    assert float(far[0, 50 + 25]) == pytest.approx(float(np.exp(-0.5 * (25 / 25.25) ** 2)), rel=1e-5)
    with pytest.raises(ValueError, match="sigma"):
        centre_prior(4, 4, sigma=0.0)


def test_dataset_centre_saliency(tmp_path: Path) -> None:
    make_faces(tmp_path / "train")
    plain = FaceLandmarks(tmp_path, "train")[0]
    assert "saliency" not in plain
    sample = FaceLandmarks(tmp_path, "train", saliency="centre", saliency_sigma=0.3)[0]
    assert isinstance(sample["saliency"], tv_tensors.Mask)
    assert torch.equal(sample["saliency"].as_subclass(torch.Tensor), centre_prior(SIZE, SIZE, 0.3))
    with pytest.raises(ValueError, match="saliency='learned'"):
        FaceLandmarks(tmp_path, "train", saliency="learned")
    with pytest.raises(ValueError, match="saliency_sigma"):
        FaceLandmarks(tmp_path, "train", saliency="centre", saliency_sigma=-1.0)


def test_unalign_cuts_a_fixed_square_and_moves_the_points(tmp_path: Path) -> None:
    stems = tuple(f"face_{i}" for i in range(6))
    written = {}
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    # red = 4 x column, green = 4 x row: the cut's offset can be read off its first pixel
    coded = np.stack([4 * cols, 4 * rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    for k, stem in enumerate(stems):
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(coded).save(tmp_path / "images" / f"{stem}.png")
        written[stem] = points68(k)
        write_pts(tmp_path / "landmarks" / f"{stem}.pts", written[stem])
    ds = FaceLandmarks(tmp_path, unalign=0.4)
    offsets = []
    for index, stem in enumerate(stems):
        sample = ds[index]
        assert isinstance(sample["image"], tv_tensors.Image)  # what the transforms recognise as the image
        image = sample["image"].as_subclass(torch.Tensor)
        side = image.shape[-1]
        assert image.shape[-2] == side and round(0.6 * SIZE) <= side <= SIZE
        left, top = int(image[0, 0, 0]) // 4, int(image[1, 0, 0]) // 4
        offsets.append((left, top, side))
        expected = five_point_landmarks(written[stem]) - np.array([left, top])
        assert np.allclose(sample["keypoints"].numpy(), expected, atol=1e-4)
        assert sample["keypoints"].canvas_size == (side, side) and sample["meta"]["size"] == (side, side)
    assert len(set(offsets)) > 1, "every face got the same cut"
    # fixed per file: a new dataset gives the same cuts; another seed gives other cuts
    again = FaceLandmarks(tmp_path, unalign=0.4)
    assert all(torch.equal(again[i]["image"], ds[i]["image"]) for i in range(len(stems)))
    other = FaceLandmarks(tmp_path, unalign=0.4, unalign_seed=1)
    same = [
        other[i]["image"].shape == ds[i]["image"].shape and torch.equal(other[i]["image"], ds[i]["image"])
        for i in range(len(stems))
    ]
    assert not all(same)
    with pytest.raises(ValueError, match="unalign=1.0"):
        FaceLandmarks(tmp_path, unalign=1.0)
