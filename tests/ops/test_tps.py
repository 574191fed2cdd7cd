"""Random TPS + similarity warps: conventions, exact interpolation, and key points that agree with images."""

from __future__ import annotations

import math

import pytest
import torch

from segzoo.ops.tps import (
    TPSWarp,
    control_grid,
    identity_warp,
    normalized_to_pixels,
    pixel_grid,
    pixels_to_normalized,
    random_tps_warp,
)


def _blob(height: int, width: int, x: float, y: float, sigma: float = 1.2) -> torch.Tensor:
    """A Gaussian blob centred at pixel (x, y), [1, 1, H, W]."""
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    return torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))[None, None]


def _centroid(image: torch.Tensor) -> torch.Tensor:
    """Pixel (x, y) centre of mass of [H, W]."""
    h, w = image.shape
    ys = torch.arange(h, dtype=image.dtype)[:, None]
    xs = torch.arange(w, dtype=image.dtype)[None, :]
    mass = image.sum()
    return torch.stack(((image * xs).sum() / mass, (image * ys).sum() / mass))


def test_pixel_convention_matches_grid_sample_align_corners_false() -> None:
    # pixel centres at integers; normalised -1 / +1 are the outer edges of the first / last pixel
    pts = torch.tensor([[0.0, 0.0], [9.0, 5.0], [-0.5, -0.5], [9.5, 5.5]])
    norm = pixels_to_normalized(pts, (6, 10))
    assert torch.allclose(norm[0], torch.tensor([-0.9, -5 / 6]))
    assert torch.allclose(norm[2], torch.tensor([-1.0, -1.0]))
    assert torch.allclose(norm[3], torch.tensor([1.0, 1.0]))
    assert torch.allclose(normalized_to_pixels(norm, (6, 10)), pts, atol=1e-6)
    grid = pixel_grid(6, 10)
    assert grid.shape == (6, 10, 2)
    assert torch.allclose(grid[5, 9], pixels_to_normalized(torch.tensor([9.0, 5.0]), (6, 10)))
    # the identity grid reproduces the image exactly through grid_sample(align_corners=False)
    image = torch.rand(1, 2, 6, 10)
    out = torch.nn.functional.grid_sample(image, grid[None], align_corners=False)
    assert torch.allclose(out, image, atol=1e-6)


def test_control_grid_and_errors() -> None:
    grid = control_grid(5)
    assert grid.shape == (25, 2)
    assert grid.min() == -1.0 and grid.max() == 1.0
    with pytest.raises(ValueError, match="grid_size must be >= 2"):
        control_grid(1)
    with pytest.raises(ValueError, match=r"scale must be \(low, high\)"):
        random_tps_warp(2, scale=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"centres and targets must both be \[B, N, 2\]"):
        TPSWarp.fit(torch.zeros(1, 4, 2), torch.zeros(1, 5, 2))


def test_identity_warp_leaves_images_and_points_unchanged() -> None:
    warp = identity_warp(3)
    images = torch.rand(3, 4, 17, 23)
    assert torch.allclose(warp.warp(images), images, atol=1e-5)
    points = torch.rand(3, 6, 2) * 2 - 1
    assert torch.allclose(warp.forward_points(points), points, atol=1e-6)
    assert warp.valid_mask(17, 23).all()
    with pytest.raises(ValueError, match=r"expected \[B, C, H, W\] with B = 3"):
        warp.warp(torch.rand(2, 1, 8, 8))


def test_spline_interpolates_its_control_points() -> None:
    gen = torch.Generator().manual_seed(3)
    centres = control_grid(5).expand(2, -1, -1).contiguous()
    targets = centres + 0.05 * torch.randn(2, 25, 2, generator=gen)
    warp = TPSWarp.fit(centres, targets)
    assert torch.allclose(warp.backward_points(centres), targets, atol=1e-5)
    # the non-affine part is orthogonal to affine functions: sum w = 0, sum w c = 0
    assert torch.allclose(warp.kernel_weights.sum(1), torch.zeros(2, 2), atol=1e-5)
    assert torch.allclose(warp.kernel_weights.transpose(1, 2) @ centres, torch.zeros(2, 2, 2), atol=1e-5)


def test_zoom_direction_and_pure_similarity() -> None:
    # zoom 2 (no rotation, shift or jitter) magnifies: a point at p goes to 2p; the TPS part is zero
    warp = random_tps_warp(1, jitter=0.0, rotation=0.0, translation=0.0, scale=(2.0, 2.0))
    assert torch.allclose(warp.kernel_weights, torch.zeros_like(warp.kernel_weights), atol=1e-6)
    p = torch.tensor([[[0.2, -0.3], [0.0, 0.0]]])
    assert torch.allclose(warp.forward_points(p), 2 * p, atol=1e-6)
    # zoom 0.5 shrinks the image: the border of the output samples outside the input
    shrink = random_tps_warp(1, jitter=0.0, rotation=0.0, translation=0.0, scale=(0.5, 0.5))
    valid = shrink.valid_mask(16, 16)[0, 0]
    assert not valid[0].any() and valid[8, 8]
    assert valid.float().mean() == pytest.approx(0.25, abs=0.07)


def test_rotation_is_a_rotation() -> None:
    gen = torch.Generator().manual_seed(0)
    warp = random_tps_warp(4, generator=gen, jitter=0.0, translation=0.0, scale=(1.0, 1.0))
    linear = warp.affine[:, 1:]
    # orthogonal with determinant 1, angles within the +-60 degree range
    eye = torch.eye(2).expand(4, 2, 2)
    assert torch.allclose(linear @ linear.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(linear), torch.ones(4), atol=1e-5)
    angles = torch.atan2(linear[:, 0, 1], linear[:, 0, 0]).abs()
    assert (angles <= math.radians(60) + 1e-5).all()


def test_forward_points_invert_the_backward_map() -> None:
    gen = torch.Generator().manual_seed(1)
    warp = random_tps_warp(8, generator=gen, jitter=0.05)
    points = torch.rand(8, 20, 2, generator=gen) * 2 - 1
    mapped = warp.forward_points(points)
    assert torch.allclose(warp.backward_points(mapped), points, atol=1e-5)
    # the analytic Jacobian matches finite differences
    q = torch.rand(8, 3, 2, generator=gen, dtype=torch.float64) * 2 - 1
    warp64 = warp.to(dtype=torch.float64)
    h = 1e-6
    numeric = torch.stack(
        [
            (warp64.backward_points(q + h * e) - warp64.backward_points(q - h * e)) / (2 * h)
            for e in torch.eye(2, dtype=torch.float64)
        ],
        dim=-1,
    )
    assert torch.allclose(warp64.jacobian(q), numeric, atol=1e-6)


def test_warped_landmarks_agree_with_the_warped_image() -> None:
    """TPS round trip: a blob drawn at a landmark, warped as an image, sits where the landmark maps to."""
    gen = torch.Generator().manual_seed(7)
    height, width = 48, 64
    landmarks = torch.tensor([[20.0, 18.0], [40.0, 25.0], [31.5, 30.0]])
    warp = random_tps_warp(
        len(landmarks), generator=gen, jitter=0.03, rotation=40.0, translation=0.05, scale=(0.9, 1.2)
    )
    images = torch.cat([_blob(height, width, float(x), float(y)) for x, y in landmarks])
    warped = warp.warp(images)
    mapped = warp.warp_points(landmarks[:, None, :], size=(height, width))[:, 0]
    for i in range(len(landmarks)):
        assert 2 < mapped[i, 0] < width - 3 and 2 < mapped[i, 1] < height - 3
        assert torch.allclose(_centroid(warped[i, 0]), mapped[i], atol=0.25), (i, mapped[i])
    # and mapping back through the backward map returns the original pixels
    back = normalized_to_pixels(
        warp.backward_points(pixels_to_normalized(mapped[:, None, :], (height, width))), (height, width)
    )[:, 0]
    assert torch.allclose(back, landmarks, atol=1e-3)


def test_seeded_sampling_repeats_and_seeds_differ() -> None:
    a = random_tps_warp(3, generator=torch.Generator().manual_seed(5))
    b = random_tps_warp(3, generator=torch.Generator().manual_seed(5))
    c = random_tps_warp(3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.affine, b.affine) and torch.equal(a.kernel_weights, b.kernel_weights)
    assert not torch.allclose(a.affine, c.affine)
    assert a.affine.dtype == torch.float32
    # images of any dtype/device follow the warp's tensors
    assert a.warp(torch.rand(3, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64
