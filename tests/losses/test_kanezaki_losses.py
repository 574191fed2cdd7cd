"""Kanezaki losses on hand-built inputs."""

from __future__ import annotations

import math

import pytest
import torch

from segzoo.losses.kanezaki import continuity_loss, scribble_loss, similarity_loss


def test_continuity_zero_on_constant_map() -> None:
    assert continuity_loss(torch.full((2, 5, 7, 9), 3.25)).item() == 0.0


def test_continuity_hand_computed() -> None:
    r = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]], requires_grad=True)
    # vertical |3-0|, |5-1| -> mean 3.5; horizontal |1-0|, |5-3| -> mean 1.5
    loss = continuity_loss(r)
    assert loss.item() == pytest.approx(5.0)
    loss.backward()
    assert r.grad is not None and r.grad.abs().sum() > 0


def test_continuity_single_row_uses_horizontal_only() -> None:
    r = torch.tensor([[[[0.0, 2.0, 6.0]]]])
    assert continuity_loss(r).item() == pytest.approx(3.0)
    assert continuity_loss(torch.ones(1, 2, 1, 1)).item() == 0.0


def test_continuity_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        continuity_loss(torch.zeros(3, 4, 5))


def test_similarity_is_cross_entropy_to_own_argmax() -> None:
    # Two pixels: logits (2, 0) -> argmax 0, (0, 1) -> argmax 1.
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]], requires_grad=True)
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    loss = similarity_loss(logits)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad is not None


def test_similarity_with_explicit_target_and_ignore() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])
    target = torch.tensor([[[1, -100]]])
    # Only the first pixel counts, against label 1: -log softmax(2, 0)[1] = log(1 + e^2).
    assert similarity_loss(logits, target).item() == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-6)
    assert similarity_loss(logits, torch.full((1, 1, 2), -100)).item() == 0.0
    with pytest.raises(ValueError, match=r"target shape \(1, 2\)"):
        similarity_loss(logits, torch.zeros(1, 2, dtype=torch.long))


def test_scribble_loss_counts_scribbled_pixels_only() -> None:
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, -5.0]]]])
    scribbles = torch.tensor([[[1, 255, 255]]])
    assert scribble_loss(logits, scribbles).item() == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-6)
    assert scribble_loss(logits, torch.full((1, 1, 3), 255)).item() == 0.0
    with pytest.raises(ValueError, match="scribble label 4 needs more than the 2 output channels"):
        scribble_loss(logits, torch.tensor([[[4, 255, 255]]]))
