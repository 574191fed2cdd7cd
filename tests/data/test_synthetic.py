"""The procedural synthetic dataset: determinism, sample format, class coverage and the parts geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from segzoo.data.datasets.synthetic import PART_NAMES, SHAPE_NAMES, Synthetic
from segzoo.registry import DATASETS


def _same(a: dict, b: dict) -> bool:
    keys = [k for k in a if k != "meta"]
    return set(keys) == {k for k in b if k != "meta"} and all(torch.equal(a[k], b[k]) for k in keys)


# --- determinism ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["shapes", "parts"])
def test_same_seed_split_index_gives_identical_samples_in_any_order(mode: str) -> None:
    first = Synthetic(mode=mode, split="val")
    second = Synthetic(mode=mode, split="val")
    forward = [first[i] for i in range(6)]
    backward = {i: second[i] for i in reversed(range(6))}
    for i in range(6):
        assert _same(forward[i], backward[i])
    assert _same(first[3], first[3])  # reading again does not advance any shared state


def test_seeds_splits_and_indices_give_different_images() -> None:
    base = Synthetic(split="train", seed=0)[0]["image"]
    assert not torch.equal(base, Synthetic(split="train", seed=1)[0]["image"])
    assert not torch.equal(base, Synthetic(split="val", seed=0)[0]["image"])
    assert not torch.equal(base, Synthetic(split="train", seed=0)[1]["image"])


def test_samples_do_not_depend_on_worker_processes() -> None:
    ds = Synthetic(split="test", num_samples=4)
    loaded = list(DataLoader(ds, batch_size=None, num_workers=2))
    for i, sample in enumerate(loaded):
        assert torch.equal(sample["image"], ds[i]["image"])
        assert torch.equal(sample["mask"], ds[i]["mask"])


def test_root_is_ignored() -> None:
    assert _same(Synthetic("/does/not/exist")[2], Synthetic(None)[2])


# --- shapes mode ----------------------------------------------------------------------------------------


def test_shapes_sample_format() -> None:
    ds = Synthetic(split="predict", size=(64, 80))
    sample = ds[5]
    assert isinstance(sample["image"], tv_tensors.Image)
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 64, 80)
    assert isinstance(sample["mask"], tv_tensors.Mask)
    assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (64, 80)
    assert sample["meta"] == {"path": "synthetic://predict/5", "index": 5, "size": (64, 80)}
    assert set(sample) == {"image", "mask", "meta"}
    assert Synthetic(size=48)[0]["image"].shape == (3, 48, 48)


def test_default_lengths_per_split_and_override() -> None:
    assert [len(Synthetic(split=s)) for s in ("train", "val", "test", "predict")] == [256, 64, 64, 16]
    assert len(Synthetic(split="val", num_samples=7)) == 7
    with pytest.raises(IndexError, match="index 7 out of range for 7 samples"):
        Synthetic(num_samples=7)[7]


def test_classes_and_palette() -> None:
    ds = Synthetic(num_classes=4)
    assert ds.classes == ("background", "disc", "square", "triangle")
    assert ds.num_classes == 4 and ds.part_names == ()
    assert len(ds.palette) == 4 and ds.palette[0] == (0, 0, 0)
    full = Synthetic(num_classes=7)
    assert full.classes[1:] == SHAPE_NAMES
    assert len(set(full.palette)) == 7


@pytest.mark.parametrize("num_classes", [2, 7])
def test_mask_values_in_range_and_every_class_appears(num_classes: int) -> None:
    ds = Synthetic(num_classes=num_classes)
    seen: set[int] = set()
    for i in range(50):
        mask = ds[i]["mask"]
        assert int(mask.min()) >= 0 and int(mask.max()) < num_classes
        seen |= set(mask.unique().tolist())
    assert seen == set(range(num_classes))


def _neighbour_difference(image: torch.Tensor, region: torch.Tensor) -> float:
    """Mean absolute difference between 4-neighbours that both lie in ``region`` (high-frequency energy)."""
    dx = (image[:, :, 1:] - image[:, :, :-1]).abs().mean(0)[region[:, 1:] & region[:, :-1]]
    dy = (image[:, 1:] - image[:, :-1]).abs().mean(0)[region[1:] & region[:-1]]
    return float(torch.cat([dx, dy]).mean()) if dx.numel() + dy.numel() > 200 else math.nan


def test_shapes_cover_part_of_the_image_and_are_textured() -> None:
    ds = Synthetic(num_classes=7)
    fractions, background, shapes = [], [], []
    for i in range(20):
        sample = ds[i]
        mask, image = sample["mask"], sample["image"].float()
        fractions.append(float((mask > 0).float().mean()))
        for cls in mask.unique().tolist():
            (shapes if cls else background).append(_neighbour_difference(image, mask == cls))
    assert 0.05 < float(np.mean(fractions)) < 0.6
    # The background is smooth (only sensor noise between neighbours); every shape carries texture.
    assert np.nanmin(shapes) > 1.5 * np.nanmax(background)


# --- parts mode -----------------------------------------------------------------------------------------


def test_parts_sample_format() -> None:
    ds = Synthetic(mode="parts", split="val", num_parts=5)
    assert ds.classes == ("background", "object") and ds.num_parts == 5
    assert ds.part_names == PART_NAMES[:5]
    sample = ds[0]
    assert set(sample) == {"image", "mask", "parts", "keypoints", "meta"}
    assert isinstance(sample["parts"], tv_tensors.Mask) and sample["parts"].dtype == torch.int64
    assert sample["parts"].shape == (96, 128)
    kp = sample["keypoints"]
    assert isinstance(kp, tv_tensors.KeyPoints) and kp.shape == (5, 2) and kp.dtype == torch.float32
    assert tuple(kp.canvas_size) == (96, 128)
    assert sample["meta"]["path"] == "synthetic://val/0"


@pytest.mark.parametrize("num_parts", [4, 8])
def test_parts_values_object_mask_and_keypoints_inside_their_part(num_parts: int) -> None:
    ds = Synthetic(mode="parts", split="test", num_parts=num_parts)
    for i in range(12):
        sample = ds[i]
        parts, mask, kp = sample["parts"], sample["mask"], sample["keypoints"]
        assert int(parts.min()) == 0 and int(parts.max()) <= num_parts
        assert set(parts.unique().tolist()) == set(range(num_parts + 1))  # every part visible
        assert torch.equal(mask, (parts > 0).long())
        assert bool((kp[:, 0] >= 0).all() and (kp[:, 0] <= 127).all())
        assert bool((kp[:, 1] >= 0).all() and (kp[:, 1] <= 95).all())
        for k in range(num_parts):
            x, y = (int(round(float(c))) for c in kp[k])
            assert int(parts[y, x]) == k + 1, f"sample {i}: keypoint of part {k + 1} at {(x, y)}"


def test_keypoints_follow_the_pose_as_part_centroids() -> None:
    ds = Synthetic(mode="parts", num_parts=8, size=(80, 112))
    for i in range(16):
        sample = ds[i]
        parts, kp = sample["parts"].numpy(), sample["keypoints"].numpy()
        for k in range(8):
            ys, xs = np.nonzero(parts == k + 1)
            # Overlaps at the joints are small, so the visible centroid stays within a pixel of the centre.
            assert np.hypot(xs.mean() - kp[k, 0], ys.mean() - kp[k, 1]) < 1.25


def test_object_is_rigid_under_a_bounded_similarity_pose() -> None:
    ds = Synthetic(mode="parts", num_parts=4)
    shapes, lengths, angles = [], [], []
    for i in range(32):
        sample = ds[i]
        kp = sample["keypoints"].numpy().astype(np.float64)
        dist = np.linalg.norm(kp[:, None] - kp[None], axis=-1)
        shapes.append(dist / dist[0, 1])
        head_dx, head_dy = kp[0] - kp[1]  # body -> head; "up" is -y at zero rotation
        lengths.append(dist[0, 1])
        angles.append(math.degrees(math.atan2(head_dx, -head_dy)))
        # The body ellipse's long axis (from the pixels) points along body -> head (from the keypoints).
        ys, xs = np.nonzero(sample["parts"].numpy() == 2)
        cov = np.cov(np.stack([xs, ys]))
        axis = np.linalg.eigh(cov)[1][:, -1]
        cos = abs(axis @ np.array([head_dx, head_dy])) / dist[0, 1]
        assert cos > math.cos(math.radians(6))
    np.testing.assert_allclose(np.stack(shapes), np.broadcast_to(shapes[0], (32, 4, 4)), atol=1e-4)
    assert max(abs(a) for a in angles) <= 45.0 + 1e-3 and np.ptp(angles) > 30
    assert max(lengths) / min(lengths) <= 1.0 / 0.6 + 1e-3 and max(lengths) / min(lengths) > 1.2


def test_transforms_are_applied() -> None:
    def tag(sample: dict) -> dict:
        sample["meta"]["tagged"] = True
        return sample

    assert Synthetic(mode="parts", transforms=tag)[0]["meta"]["tagged"] is True


# --- errors and registry --------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [1, 8])
def test_num_classes_out_of_range(num_classes: int) -> None:
    with pytest.raises(ValueError, match=rf"num_classes {num_classes} out of range; expected 2\.\.7"):
        Synthetic(num_classes=num_classes)


@pytest.mark.parametrize("num_parts", [0, 9])
def test_num_parts_out_of_range(num_parts: int) -> None:
    with pytest.raises(ValueError, match=rf"num_parts {num_parts} out of range; expected 1\.\.8"):
        Synthetic(mode="parts", num_parts=num_parts)


def test_bad_split_mode_size_samples_seed() -> None:
    expected = "unknown split 'training'; expected one of train, val, test, predict"
    with pytest.raises(ValueError, match=expected):
        Synthetic(split="training")
    with pytest.raises(ValueError, match="unknown mode 'blobs'; expected one of shapes, parts"):
        Synthetic(mode="blobs")
    with pytest.raises(ValueError, match=r"size \(8, 8\) must be two integers"):
        Synthetic(size=(8, 8))
    with pytest.raises(ValueError, match="num_samples 0 must be a positive integer"):
        Synthetic(num_samples=0)
    with pytest.raises(ValueError, match="seed -1 must be a non-negative integer"):
        Synthetic(seed=-1)


def test_registry_builds_synthetic() -> None:
    ds = DATASETS.build("synthetic", root=None, split="val", mode="parts", num_samples=3, num_parts=6)
    assert isinstance(ds, Synthetic) and len(ds) == 3 and ds.num_parts == 6
    assert ds[2]["keypoints"].shape == (6, 2)
