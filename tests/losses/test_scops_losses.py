"""SCOPS losses on hand-built part maps: values, invariants, and the fast semantic term vs its formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segzoo.losses.scops import (
    centre_equivariance_loss,
    centres_to_pixels,
    concentration_loss,
    equivariance_kl,
    orthonormality_loss,
    part_centres,
    semantic_consistency_loss,
)


def _point_masses(height: int, width: int, pixels: list[tuple[int, int]]) -> torch.Tensor:
    """[1, K, H, W] maps, part k a single 1 at pixel (x, y) = pixels[k]."""
    maps = torch.zeros(1, len(pixels), height, width)
    for k, (x, y) in enumerate(pixels):
        maps[0, k, y, x] = 1.0
    return maps


def _gaussian(height: int, width: int, sigma: float) -> torch.Tensor:
    ys = torch.arange(height, dtype=torch.float32)[:, None] - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float32)[None, :] - (width - 1) / 2
    return torch.exp(-(xs**2 + ys**2) / (2 * sigma**2))[None, None]


def test_part_centres_of_point_masses_in_pixels() -> None:
    pixels = [(0, 0), (7, 3), (12, 9)]
    maps = _point_masses(10, 13, pixels)
    centres = part_centres(maps, eps=0.0)
    assert centres.shape == (1, 3, 2)
    expected = torch.tensor(pixels, dtype=torch.float32)
    assert torch.allclose(centres_to_pixels(centres, (10, 13))[0], expected, atol=1e-5)
    # with SCOPS's eps the centres move towards the image centre but keep their order
    shifted = centres_to_pixels(part_centres(maps), (10, 13))[0]
    assert shifted[0, 0] > 0 and shifted[2, 0] < 12


def test_part_centres_respect_a_mask() -> None:
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 2, 2] = 1.0
    maps[0, 0, 6, 6] = 1.0
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :4] = 1.0
    centre = centres_to_pixels(part_centres(maps, 0.0, mask), (8, 8))[0, 0]
    assert torch.allclose(centre, torch.tensor([2.0, 2.0]), atol=1e-5)


def test_concentration_is_zero_for_point_masses_and_grows_with_spread() -> None:
    assert concentration_loss(_point_masses(16, 16, [(3, 4), (10, 12)]), eps=0.0).item() == pytest.approx(
        0.0, abs=1e-7
    )
    values = [concentration_loss(_gaussian(32, 32, s), eps=0.0).item() for s in (1.0, 2.0, 4.0, 8.0)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    # spread sigma (pixels) -> variance 2 (2 sigma / W)^2 in normalised units, while the blob fits inside
    assert values[1] == pytest.approx(2 * (2 * 2.0 / 32) ** 2, rel=1e-2)
    # a uniform map has the variance of U(-1, 1)^2: 2/3, per part, summed over parts
    assert concentration_loss(torch.ones(2, 3, 64, 64), eps=0.0).item() == pytest.approx(3 * 2 / 3, rel=1e-3)
    # SCOPS's eps keeps a point mass below a spread map
    assert concentration_loss(_point_masses(16, 16, [(8, 8)])) < concentration_loss(_gaussian(16, 16, 4.0))


def test_concentration_gradient_flows_and_shrinks_the_part() -> None:
    logits = torch.randn(1, 2, 12, 12, requires_grad=True)
    loss = concentration_loss(logits.softmax(1)[:, 1:])
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = concentration_loss((logits - 50.0 * logits.grad).softmax(1)[:, 1:])
    assert stepped < loss


def test_equivariance_kl_zero_for_equal_maps_and_positive_otherwise() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 9, 11, generator=gen)
    probs = logits.softmax(1)
    assert equivariance_kl(logits.log_softmax(1), probs).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 5, 9, 11, generator=gen).log_softmax(1)
    kl = equivariance_kl(other, probs)
    manual = (probs * (probs.log() - other)).sum(1).mean()
    assert kl.item() == pytest.approx(manual.item(), rel=1e-5) and kl > 0
    # pixels outside the valid mask do not count
    valid = torch.zeros(2, 1, 9, 11, dtype=torch.bool)
    valid[..., :4, :] = True
    mixed = logits.log_softmax(1).clone()
    mixed[..., 4:, :] = other[..., 4:, :]
    assert equivariance_kl(mixed, probs, valid).item() == pytest.approx(0.0, abs=1e-6)
    # the target branch is detached
    target = probs.clone().requires_grad_(True)
    pred = other.clone().requires_grad_(True)
    equivariance_kl(pred, target).backward()
    assert target.grad is None and pred.grad is not None
    with pytest.raises(ValueError, match="prediction .* and target .* differ"):
        equivariance_kl(other, probs[:, :4])


def test_centre_equivariance_loss_values() -> None:
    a = torch.zeros(2, 3, 2)
    b = a.clone()
    assert centre_equivariance_loss(a, b).item() == 0.0
    b[0, 1] = torch.tensor([0.3, 0.4])  # squared distance 0.25 in image 0, summed over parts, mean over B
    assert centre_equivariance_loss(a, b).item() == pytest.approx(0.125)
    with pytest.raises(ValueError, match="shapes"):
        centre_equivariance_loss(a, b[:, :2])


def _semantic_direct(parts, features, basis, saliency=None):
    v = F.interpolate(features, size=parts.shape[-2:], mode="bilinear", align_corners=False)
    if saliency is not None:
        v = v * saliency
    recon = torch.einsum("bkhw,kd->bdhw", parts, basis)
    return (recon - v).pow(2).mean()


@pytest.mark.parametrize("with_saliency", [False, True])
def test_semantic_consistency_matches_the_direct_formula(with_saliency: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    parts = torch.rand(2, 3, 12, 16, generator=gen).requires_grad_(True)
    features = torch.rand(2, 40, 3, 4, generator=gen)
    basis = torch.rand(3, 40, generator=gen).requires_grad_(True)
    saliency = torch.rand(2, 1, 12, 16, generator=gen) if with_saliency else None
    fast = semantic_consistency_loss(parts, features, basis, saliency, chunk=7)
    grads = torch.autograd.grad(fast, (parts, basis))
    direct = _semantic_direct(parts, features, basis, saliency)
    grads_direct = torch.autograd.grad(direct, (parts, basis))
    assert fast.item() == pytest.approx(direct.item(), rel=1e-4)
    for g, gd in zip(grads, grads_direct, strict=True):
        assert torch.allclose(g, gd, rtol=1e-4, atol=1e-6)


def test_semantic_consistency_zero_for_exact_reconstruction_and_shape_errors() -> None:
    parts = torch.zeros(1, 2, 4, 4)
    parts[0, 0, :, :2] = 1.0
    parts[0, 1, :, 2:] = 1.0
    basis = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    features = torch.einsum("bkhw,kd->bdhw", parts, basis)
    assert semantic_consistency_loss(parts, features, basis).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"basis must be \[K=2, D=3\]"):
        semantic_consistency_loss(parts, features, basis[:, :2])
    with pytest.raises(ValueError, match=r"features must be \[B=1, D, h, w\]"):
        semantic_consistency_loss(parts, features[0], basis)


def test_orthonormality() -> None:
    # orthogonal rows of any length: 0 (rows are normalised first)
    assert orthonormality_loss(torch.diag(torch.tensor([3.0, 0.5, 7.0]))).item() == pytest.approx(
        0.0, abs=1e-6
    )
    disjoint = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 5.0, 1.0]])
    assert orthonormality_loss(disjoint).item() == pytest.approx(0.0, abs=1e-6)
    # two identical rows: the two off-diagonal entries are 1
    assert orthonormality_loss(torch.ones(2, 5)).item() == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError, match=r"basis must be \[K, D\]"):
        orthonormality_loss(torch.ones(5))
