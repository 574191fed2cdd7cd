"""R2O region pooling and the symmetric BYOL region loss."""

from __future__ import annotations

import pytest
import torch

from segzoo.losses.r2o import region_loss, region_pool, regression_loss


def test_loss_is_zero_when_online_and_target_coincide() -> None:
    gen = torch.Generator().manual_seed(0)
    q1, q2 = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    assert region_loss(q1, q1.clone(), q2, q2.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # only directions count: a positive rescaling of the targets changes nothing
    assert region_loss(q1, 3.0 * q1, q2, 0.5 * q2).item() == pytest.approx(0.0, abs=1e-6)


def test_loss_values_for_orthogonal_and_opposite_vectors() -> None:
    e = torch.eye(2)
    assert regression_loss(e[0], e[1]).item() == pytest.approx(2.0)
    assert regression_loss(e[0], -e[0]).item() == pytest.approx(4.0)
    # symmetrised: the sum of the two directional means
    q = torch.stack([e[0], e[0]])
    z_same, z_opposite = q.clone(), -q
    assert region_loss(q, z_opposite, q, z_same).item() == pytest.approx(4.0)


def test_loss_gradient_flows_to_predictions_only() -> None:
    q1 = torch.randn(3, 4, requires_grad=True)
    z2 = torch.randn(3, 4, requires_grad=True)
    region_loss(q1, z2, q1, z2).backward()
    assert q1.grad is not None and q1.grad.abs().sum() > 0
    assert z2.grad is None


def test_no_region_gives_a_connected_zero() -> None:
    q = torch.zeros(0, 4, requires_grad=True)
    loss = region_loss(q, torch.zeros(0, 4), q, torch.zeros(0, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert q.grad is not None


def test_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"same shape \[M, D\]"):
        region_loss(torch.zeros(3, 4), torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(3, 4))


def test_region_pool_averages_inside_each_mask() -> None:
    features = torch.arange(8.0).view(1, 2, 2, 2)  # channel 0: 0..3, channel 1: 4..7
    masks = torch.zeros(1, 3, 2, 2)
    masks[0, 0, 0, :] = 1.0  # top row
    masks[0, 1, :, 1] = 1.0  # right column
    pooled = region_pool(features, masks)
    assert pooled.shape == (1, 3, 2)
    torch.testing.assert_close(pooled[0, 0], torch.tensor([0.5, 4.5]), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled[0, 1], torch.tensor([2.0, 6.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled[0, 2], torch.zeros(2))  # empty mask: zero vector, no NaN


def test_region_pool_rejects_mismatched_sizes() -> None:
    with pytest.raises(ValueError, match="batch size and spatial size"):
        region_pool(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 2, 2))
