"""Superpixel wrappers, the vectorised majority vote and small-segment merging."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from segzoo.ops.superpixels import felzenszwalb, merge_small_segments, slic, superpixel_vote

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def brute_force_vote(labels: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Majority label per segment with a Python loop; ties go to the smallest label."""
    out = np.empty_like(labels)
    for seg in np.unique(segments):
        inside = segments == seg
        counts = Counter(labels[inside].tolist())
        best = max(counts.values())
        out[inside] = min(label for label, c in counts.items() if c == best)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(5))
def test_vote_equals_brute_force_majority(device: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, num_segments, num_labels = 500, int(rng.integers(1, 40)), int(rng.integers(1, 6))
    labels = rng.integers(0, num_labels, n)
    segments = rng.integers(0, num_segments, n)
    got = superpixel_vote(
        torch.from_numpy(labels).to(device), torch.from_numpy(segments).to(device), num_segments, num_labels
    )
    assert got.dtype == torch.int64
    assert got.device.type == device
    np.testing.assert_array_equal(got.cpu().numpy(), brute_force_vote(labels, segments))


def test_vote_ties_go_to_smallest_label() -> None:
    labels = torch.tensor([3, 1, 1, 3, 2, 0, 2, 0])
    segments = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert superpixel_vote(labels, segments, 2, 4).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]


def test_vote_paints_majority_and_ignores_unused_ids() -> None:
    labels = torch.tensor([5, 5, 2, 7, 7, 7])
    segments = torch.tensor([4, 4, 4, 1, 1, 1])
    assert superpixel_vote(labels, segments, 10, 8).tolist() == [5, 5, 5, 7, 7, 7]


def test_vote_rejects_bad_shapes_and_ranges() -> None:
    with pytest.raises(ValueError, match="1-D of equal length"):
        superpixel_vote(torch.zeros(4, dtype=torch.long), torch.zeros(5, dtype=torch.long), 1, 1)
    with pytest.raises(ValueError, match="num_segments"):
        superpixel_vote(torch.tensor([0, 1]), torch.tensor([0, 3]), 2, 2)


def _image(h: int = 24, w: int = 32) -> np.ndarray:
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, : w // 2] = (200, 30, 30)
    image[:, w // 2 :] = (20, 40, 220)
    return image


@pytest.mark.parametrize("fn", [lambda im: slic(im, 20, 10.0), lambda im: felzenszwalb(im, 50, 0.5, 5)])
def test_wrappers_return_contiguous_int64_maps(fn) -> None:
    segments = fn(_image())
    assert segments.shape == (24, 32)
    assert segments.dtype == np.int64
    np.testing.assert_array_equal(np.unique(segments), np.arange(segments.max() + 1))
    # The colour edge between the two halves is a segment boundary.
    left, right = set(segments[:, :16].ravel()), set(segments[:, 16:].ravel())
    assert not left & right


def test_felzenszwalb_merges_a_flat_image_and_slic_handles_one_pixel() -> None:
    assert felzenszwalb(np.full((5, 7, 3), 90, np.uint8), 32, 0.5, 4).max() == 0
    assert slic(np.zeros((1, 1, 3), np.uint8), 100, 10.0).tolist() == [[0]]


@pytest.mark.parametrize("fn", [slic, felzenszwalb])
def test_wrappers_reject_non_rgb(fn) -> None:
    with pytest.raises(ValueError, match=r"expected an HxWx3 RGB image, got .*\(4, 4\)"):
        fn(np.zeros((4, 4), np.uint8))


def test_merge_small_segments_hand_built() -> None:
    labels = np.array([[0, 0, 0, 1], [0, 2, 0, 1], [0, 0, 0, 1], [3, 3, 3, 3]])
    # The 1-pixel segment 2 is enclosed by 0; the others are big enough.
    expected = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], [2, 2, 2, 2]])
    np.testing.assert_array_equal(merge_small_segments(labels, 2), expected)
    # Segment 1 (3 px) shares 3 boundary edges with 0 and 1 with 3: it joins 0; 3 (4 px) stays.
    expected = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(merge_small_segments(labels, 4), expected)
    # At 5, segment 3 (3 edges with 0, 1 with 1) joins 0 too, in the same round as 1 and 2.
    np.testing.assert_array_equal(merge_small_segments(labels, 5), np.zeros((4, 4), np.int64))


def test_merge_small_segments_random_map_invariants() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 30, (20, 20))
    merged = merge_small_segments(labels, 15)
    sizes = np.bincount(merged.ravel())
    assert merged.dtype == np.int64
    assert (sizes >= 15).all() or sizes.size == 1
    # Merging only joins segments: every old segment maps into exactly one new one.
    for old in np.unique(labels):
        assert np.unique(merged[labels == old]).size == 1


def test_merge_small_segments_by_nearest_feature() -> None:
    # Segment 1 (2 px) shares 4 boundary edges with 0 and 2 with 2, but its colour is near 2's.
    labels = np.array([[0, 0, 0, 0], [0, 1, 1, 2], [0, 0, 2, 2], [0, 0, 2, 2]])
    colour = np.zeros((4, 4, 1))
    colour[labels == 1] = 0.9
    colour[labels == 2] = 1.0
    by_boundary = merge_small_segments(labels, 3)
    by_colour = merge_small_segments(labels, 3, colour)
    assert by_boundary[1, 1] == by_boundary[0, 0] != by_boundary[1, 3]
    assert by_colour[1, 1] == by_colour[1, 3] != by_colour[0, 0]
    # Equal distances fall back to the longest boundary.
    np.testing.assert_array_equal(merge_small_segments(labels, 3, np.zeros((4, 4, 2))), by_boundary)


def test_merge_small_segments_rejects_mismatched_features() -> None:
    with pytest.raises(
        ValueError, match=r"features must be HxWxC with HxW = \(4, 4\), got shape \(4, 3, 3\)"
    ):
        merge_small_segments(np.zeros((4, 4), np.int64), 2, np.zeros((4, 3, 3)))
