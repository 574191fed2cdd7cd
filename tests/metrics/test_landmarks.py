"""Landmark regression and normalised error (SCOPS protocol)."""

from __future__ import annotations

import math

import pytest
import torch

from segzoo.metrics.landmarks import (
    LandmarkError,
    fit_landmark_regressor,
    grid_centres,
    normalised_error,
    part_centres,
)


def _linear_data(n: int, parts: int = 3, points: int = 5, seed: int = 0):
    """Centres with very different scales and offsets per coordinate, landmarks one fixed affine map of
    them (the same for every ``seed``): the no-intercept fit must still be exact because both sides are
    centred."""
    g = torch.Generator().manual_seed(1234)
    a = torch.randn(2 * parts, 2 * points, generator=g, dtype=torch.float64)
    b = torch.randn(2 * points, generator=g, dtype=torch.float64) * 300
    scale = torch.tensor([1.0, 100.0, 0.01, 5.0, 30.0, 0.5])[: 2 * parts]
    offset = torch.tensor([500.0, -20.0, 3.0, 1000.0, 0.0, 42.0])[: 2 * parts]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2 * parts, generator=g, dtype=torch.float64) * scale + offset
    y = (x - offset) / scale @ a + b
    return x.view(n, parts, 2), y.view(n, points, 2)


def test_regressor_recovers_an_exact_affine_map_across_scales_and_offsets():
    centres, landmarks = _linear_data(40)
    regressor = fit_landmark_regressor(centres, landmarks)
    assert regressor.num_parts == 3 and regressor.num_landmarks == 5 and regressor.num_samples == 40
    pred = regressor.predict(centres)
    assert pred.shape == (40, 5, 2) and pred.dtype == torch.float64
    torch.testing.assert_close(pred, landmarks, rtol=0, atol=1e-8)
    # Unseen samples of the same map are predicted exactly too; float32 inputs come back as float64.
    fresh_c, fresh_l = _linear_data(9, seed=7)
    torch.testing.assert_close(regressor.predict(fresh_c), fresh_l, rtol=0, atol=1e-8)
    torch.testing.assert_close(regressor.predict(fresh_c.float()), fresh_l, rtol=1e-5, atol=1e-2)


def test_regressor_equals_ordinary_least_squares_with_intercept():
    # Standardise-then-no-intercept is OLS with an intercept: compare with a direct solve on noisy data.
    g = torch.Generator().manual_seed(1)
    centres = torch.rand(30, 4, 2, generator=g, dtype=torch.float64) * 200
    landmarks = torch.rand(30, 5, 2, generator=g, dtype=torch.float64) * 200
    design = torch.cat([centres.reshape(30, -1), torch.ones(30, 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(design, landmarks.reshape(30, -1)).solution
    expected = (design @ coef).view(30, 5, 2)
    got = fit_landmark_regressor(centres, landmarks).predict(centres)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_constant_centres_predict_the_mean_landmarks():
    centres = grid_centres(4, 32, 32).expand(12, 4, 2)
    landmarks = torch.arange(12 * 5 * 2, dtype=torch.float64).view(12, 5, 2)
    pred = fit_landmark_regressor(centres, landmarks).predict(centres[:2])
    torch.testing.assert_close(pred, landmarks.mean(0).expand(2, 5, 2))


def test_ridge_shrinks_towards_the_mean_and_allows_few_samples():
    centres, landmarks = _linear_data(40)
    plain = fit_landmark_regressor(centres, landmarks).predict(centres)
    shrunk = fit_landmark_regressor(centres, landmarks, ridge=1e6).predict(centres)
    mean = landmarks.mean(0)
    assert (shrunk - mean).abs().max() < 0.01 * (plain - mean).abs().max()
    with pytest.warns(UserWarning, match="needs at least 7 training samples, got 4"):
        fit_landmark_regressor(centres[:4], landmarks[:4], ridge=1.0)


def test_too_few_samples_and_shape_errors():
    centres, landmarks = _linear_data(6)
    with pytest.raises(ValueError, match=r"3 part centres .* at least 7 training samples, got 6"):
        fit_landmark_regressor(centres, landmarks)
    with pytest.raises(ValueError, match=r"7 samples of part centres .* but 6 of landmarks"):
        fit_landmark_regressor(_linear_data(7)[0], landmarks)
    with pytest.raises(ValueError, match=r"part centres must have shape \[N, P, 2\].*\(7, 6\)"):
        fit_landmark_regressor(torch.zeros(7, 6), landmarks)
    with pytest.raises(ValueError, match="sample 2, point 1 is not finite"):
        bad = _linear_data(8)[0]
        bad[2, 1, 0] = math.nan
        fit_landmark_regressor(bad, _linear_data(8)[1])
    regressor = fit_landmark_regressor(*_linear_data(10))
    with pytest.raises(ValueError, match=r"must have 3 points per image, got shape \(2, 4, 2\)"):
        regressor.predict(torch.zeros(2, 4, 2))


def test_normalised_error_on_hand_made_points():
    gt = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]], [[0.0, 0.0], [0.0, 4.0], [2.0, 2.0]]])
    pred = gt.clone()
    pred[0, 2] += torch.tensor([3.0, 4.0])  # one point 5 px off: mean 5/3 px over iod 10
    pred[1] += torch.tensor([0.0, 2.0])  # every point 2 px off over iod 4
    errors = normalised_error(pred, gt)
    torch.testing.assert_close(errors, torch.tensor([5 / 3 / 10, 0.5], dtype=errors.dtype))
    # Another pair of reference points: image 0 (0,0)-(5,5) = 5 sqrt 2, image 1 (0,0)-(2,2) = 2 sqrt 2.
    other = normalised_error(pred, gt, eye_indices=(0, 2))
    expected = torch.tensor([5 / 3 / (5 * math.sqrt(2)), 2 / (2 * math.sqrt(2))], dtype=other.dtype)
    torch.testing.assert_close(other, expected)


def test_degenerate_inter_ocular_distance_names_the_sample():
    gt = torch.rand(3, 5, 2) * 50
    gt[1, 1] = gt[1, 0]
    with pytest.raises(ValueError, match=r"sample 1 \(b\.jpg\): inter-ocular distance 0\.0"):
        normalised_error(gt, gt, sources=["a.jpg", "b.jpg", "c.jpg"])
    with pytest.raises(ValueError, match="sample 1: inter-ocular"):
        normalised_error(gt, gt)


def test_normalised_error_shape_and_index_errors():
    gt = torch.rand(2, 5, 2) + torch.arange(5.0).view(1, 5, 1)
    with pytest.raises(ValueError, match=r"predicted landmarks \(2, 4, 2\) do not match .* \(2, 5, 2\)"):
        normalised_error(gt[:, :4], gt)
    with pytest.raises(ValueError, match=r"eye_indices \(0, 5\) must be two different point indices in 0..4"):
        normalised_error(gt, gt, eye_indices=(0, 5))
    with pytest.raises(ValueError, match=r"ground-truth landmarks must have shape \[N, P, 2\]"):
        normalised_error(gt[0], gt[0])


def test_metric_merges_halves_exactly():
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(10, 5, 2, generator=g) * 100
    pred = gt + torch.randn(10, 5, 2, generator=g) * 3
    whole = LandmarkError()
    whole.update(pred, gt)
    first, second = LandmarkError(), LandmarkError()
    first.update(pred[:4], gt[:4])
    second.update(pred[4:], gt[4:])
    first.merge_state(second)
    expected = normalised_error(pred, gt).mean()
    assert int(first.count) == int(whole.count) == 10
    torch.testing.assert_close(first.compute(), whole.compute())
    torch.testing.assert_close(whole.compute(), expected.double())
    single = LandmarkError(dtype=torch.float32)  # for backends without float64
    single.update(pred, gt)
    assert single.error_sum.dtype == torch.float32
    torch.testing.assert_close(single.compute().double(), expected.double(), rtol=1e-6, atol=0)
    whole.reset()
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert math.isnan(float(whole.compute()))


def test_grid_centres_form_a_regular_grid_inside_the_image():
    centres = grid_centres(8, 64, 128)  # wide image: 2 rows of 4
    assert centres.shape == (8, 2)
    torch.testing.assert_close(centres[:4, 0], torch.tensor([15.5, 47.5, 79.5, 111.5]))
    torch.testing.assert_close(centres[:4, 1], torch.full((4,), 15.5))
    torch.testing.assert_close(centres[4:, 1], torch.full((4,), 47.5))
    square = grid_centres(4, 32, 32)
    torch.testing.assert_close(square, torch.tensor([[7.5, 7.5], [23.5, 7.5], [7.5, 23.5], [23.5, 23.5]]))
    odd = grid_centres(5, 40, 40)
    assert odd.shape == (5, 2) and len({tuple(p) for p in odd.tolist()}) == 5
    assert bool((odd >= 0).all() and (odd <= 39).all())
    with pytest.raises(ValueError, match="num_parts must be a positive integer, got 0"):
        grid_centres(0, 10, 10)


def test_part_centres_from_labels_and_soft_maps():
    labels = torch.zeros(1, 8, 10, dtype=torch.int64)
    labels[0, 1:3, 2:4] = 1  # centre x 2.5, y 1.5
    labels[0, 5, 7] = 2  # centre (7, 5)
    labels[0, 7, 9] = 255  # padding counts for no part
    centres = part_centres(labels, num_parts=3)
    # Part 3 is absent: the image centre keeps the regression defined.
    expected = torch.tensor([[[2.5, 1.5], [7.0, 5.0], [4.5, 3.5]]], dtype=centres.dtype)
    torch.testing.assert_close(centres, expected)
    soft = torch.nn.functional.one_hot(labels.clamp(max=3), 4).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(part_centres(soft)[:, :2], expected[:, :2])
    with pytest.raises(ValueError, match="needs num_parts"):
        part_centres(labels)
