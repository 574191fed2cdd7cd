"""Dense CRF post-processing: cleans up noisy probabilities, validates its inputs, optional dependency."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from segzoo.ops.crf import dense_crf


def _two_regions(height: int = 40, width: int = 56, flip: float = 0.25, seed: int = 0):
    """Left half class 0, right half class 1 with a clear image edge; probabilities that favour the truth
    (0.7) except for a random quarter of the pixels, where they favour the wrong class."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), dtype=np.int64)
    truth[:, width // 2 :] = 1
    image = np.where(truth[..., None] == 1, 220, 30).astype(np.uint8).repeat(3, axis=-1)
    p1 = np.where(truth == 1, 0.7, 0.3)
    p1 = np.where(rng.random((height, width)) < flip, 1 - p1, p1)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    return image, probs, truth


def test_crf_removes_noise_with_the_smoothness_term():
    image, probs, truth = _two_regions()
    argmax_wrong = int((probs.argmax(0) != truth).sum())
    labels = dense_crf(image, probs)
    assert labels.shape == truth.shape and labels.dtype == np.int64
    assert argmax_wrong > 400  # about a quarter of 2240 pixels
    assert int((labels != truth).sum()) < argmax_wrong / 10


def test_bilateral_term_follows_the_image_edge():
    image, probs, truth = _two_regions()
    smooth = int((dense_crf(image, probs) != truth).sum())
    bilateral = int((dense_crf(image, probs, sxy_bilateral=20) != truth).sum())
    assert bilateral <= smooth and bilateral < 5


def test_torch_inputs_give_the_same_labels():
    image, probs, _ = _two_regions(seed=1)
    expected = dense_crf(image, probs, sxy_bilateral=10)
    chw = torch.from_numpy(image).permute(2, 0, 1)  # segzoo's image layout
    got = dense_crf(chw, torch.from_numpy(probs), sxy_bilateral=10)
    np.testing.assert_array_equal(got, expected)


def test_confident_probabilities_are_kept():
    image, _, truth = _two_regions()
    probs = np.stack([truth == 0, truth == 1]).astype(np.float32)  # exact one-hot: log(0) is floored
    np.testing.assert_array_equal(dense_crf(image, probs), truth)


def test_shape_mismatch_names_both_shapes():
    image, probs, _ = _two_regions()
    with pytest.raises(ValueError, match=r"image size \(40, 50\).*\(40, 50, 3\).*\(40, 56\).*\(2, 40, 56\)"):
        dense_crf(image[:, :50], probs)
    with pytest.raises(ValueError, match=r"probs must be \[C, H, W\].*\(40, 56\)"):
        dense_crf(image, probs[0])
    with pytest.raises(TypeError, match="uint8"):
        dense_crf(image.astype(np.float32), probs)
    with pytest.raises(ValueError, match="finite and non-negative"):
        dense_crf(image, probs - 1)


def test_missing_pydensecrf_names_the_extra(monkeypatch):
    image, probs, _ = _two_regions()
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    with pytest.raises(ImportError, match=r"pip install 'segzoo\[crf\]' \(pydensecrf2\)"):
        dense_crf(image, probs)
