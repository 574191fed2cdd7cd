"""Confusion matrix and the mmseg-convention scores computed from it."""

from __future__ import annotations

import math

import pytest
import torch

from segzoo.metrics import ConfusionMetrics, confusion_matrix, scores_from_confusion

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# A 2x3 image, 3 classes: class 2 is absent from the ground truth but predicted once, and one pixel is
# ignored (its prediction must not count).
TARGET = torch.tensor([[0, 0, 1], [255, 1, 0]])
PRED = torch.tensor([[0, 2, 1], [1, 1, 0]])
# Labelled pixels: (t0,p0) (t0,p2) (t1,p1) (t1,p1) (t0,p0).
EXPECTED = torch.tensor(
    [
        [2, 0, 1],
        [0, 2, 0],
        [0, 0, 0],
    ]
)
# TP = [2, 2, 0], FP = [0, 0, 1], FN = [1, 0, 0].
EXPECTED_IOU = [2 / 3, 1.0, 0.0]  # class 2: 0 / (0 + 1 + 0), counted in the mean (predicted, never right)
EXPECTED_ACC = [2 / 3, 1.0, math.nan]  # class 2 absent from the ground truth: undefined, skipped
EXPECTED_MIOU = (2 / 3 + 1.0 + 0.0) / 3
EXPECTED_MACC = (2 / 3 + 1.0) / 2
EXPECTED_AACC = 4 / 5


def assert_close_nan(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual.cpu(), torch.tensor(expected, dtype=actual.dtype), equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_hand_computed_matrix_and_scores(device: str) -> None:
    conf = confusion_matrix(PRED.to(device), TARGET.to(device), num_classes=3)
    assert conf.dtype == torch.int64
    assert conf.device.type == device
    assert torch.equal(conf.cpu(), EXPECTED)

    scores = scores_from_confusion(conf)
    assert scores["aAcc"] == pytest.approx(EXPECTED_AACC)
    assert scores["mIoU"] == pytest.approx(EXPECTED_MIOU)
    assert scores["mAcc"] == pytest.approx(EXPECTED_MACC)
    assert all(isinstance(scores[k], float) for k in ("aAcc", "mIoU", "mAcc"))
    assert scores["IoU"].device.type == device
    assert_close_nan(scores["IoU"], EXPECTED_IOU)
    assert_close_nan(scores["Acc"], EXPECTED_ACC)


def test_class_absent_everywhere_is_left_out_of_the_means() -> None:
    conf = confusion_matrix(PRED, TARGET, num_classes=4)
    assert conf.shape == (4, 4)
    scores = scores_from_confusion(conf)
    assert math.isnan(scores["IoU"][3]) and math.isnan(scores["Acc"][3])
    assert scores["mIoU"] == pytest.approx(EXPECTED_MIOU)
    assert scores["mAcc"] == pytest.approx(EXPECTED_MACC)


def test_matches_brute_force_counts_on_a_random_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 7, 9), generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.2] = 255
    pred = torch.randint(0, 5, (3, 7, 9), generator=gen)
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist(), strict=True):
        if t != 255:
            expected[t, p] += 1
    assert torch.equal(confusion_matrix(pred, target, 5), expected)
    # A batch is the sum of its images.
    per_image = sum(confusion_matrix(pred[i], target[i], 5) for i in range(3))
    assert torch.equal(per_image, expected)


def test_ignore_index_none_and_custom() -> None:
    target = torch.tensor([[0, 1], [11, 1]])
    pred = torch.tensor([[0, 0], [1, 1]])
    conf = confusion_matrix(pred, target, num_classes=2, ignore_index=11)
    assert torch.equal(conf, torch.tensor([[1, 0], [1, 1]]))
    with pytest.raises(
        ValueError, match=r"ground-truth label 11 at pixel \(1, 0\) out of range; expected 0\.\.1$"
    ):
        confusion_matrix(pred, target, num_classes=2, ignore_index=None)


def test_out_of_range_target_names_value_range_and_source() -> None:
    target = TARGET.clone()
    target[1, 2] = 7
    with pytest.raises(
        ValueError,
        match=r"^labels/a\.png: ground-truth label 7 at pixel \(1, 2\) out of range; expected 0\.\.2 or 255",
    ):
        confusion_matrix(PRED, target, num_classes=3, source="labels/a.png")
    target[1, 2] = -1
    with pytest.raises(ValueError, match=r"ground-truth label -1 .* expected 0\.\.2 or 255 \(ignore\)"):
        confusion_matrix(PRED, target, num_classes=3)


def test_out_of_range_prediction_raises_but_not_under_ignored_pixels() -> None:
    pred = PRED.clone()
    pred[0, 1] = 3
    with pytest.raises(
        ValueError, match=r"^x\.png: predicted label 3 at pixel \(0, 1\) out of range; expected 0\.\.2"
    ):
        confusion_matrix(pred, TARGET, num_classes=3, source="x.png")
    # With 4 clusters, 3 is a legal column.
    assert confusion_matrix(pred, TARGET, num_classes=3, num_clusters=4).shape == (3, 4)
    pred = PRED.clone()
    pred[1, 0] = 99  # under the ignored pixel: never counted, so not an error
    assert torch.equal(confusion_matrix(pred, TARGET, num_classes=3), EXPECTED)


def test_batched_error_names_the_offending_image() -> None:
    target = torch.stack([TARGET, TARGET])
    target[1, 0, 0] = 4
    pred = torch.stack([PRED, PRED])
    with pytest.raises(ValueError, match=r"^b\.png: ground-truth label 4 at pixel \(0, 0\)"):
        confusion_matrix(pred, target, 3, source=["a.png", "b.png"])
    with pytest.raises(ValueError, match=r"^image 1 of the batch: ground-truth label 4"):
        confusion_matrix(pred, target, 3)


def test_shape_and_dtype_errors() -> None:
    with pytest.raises(ValueError, match=r"prediction shape \(2, 2\) does not match target shape \(2, 3\)"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), TARGET, 3)
    with pytest.raises(TypeError, match="prediction must hold integer labels, got dtype torch.float32"):
        confusion_matrix(PRED.float(), TARGET, 3)


def test_empty_matrix_gives_nan_not_a_crash() -> None:
    conf = confusion_matrix(PRED, torch.full_like(TARGET, 255), 3)
    assert int(conf.sum()) == 0
    scores = scores_from_confusion(conf)
    assert math.isnan(scores["aAcc"]) and math.isnan(scores["mIoU"]) and math.isnan(scores["mAcc"])
    assert torch.isnan(scores["IoU"]).all() and torch.isnan(scores["Acc"]).all()


def test_scores_reject_matrices_with_fewer_columns_than_rows() -> None:
    with pytest.raises(ValueError, match=r"must be \[C, P\] with P >= C, got shape \(3, 2\)"):
        scores_from_confusion(torch.zeros(3, 2, dtype=torch.long))


def test_extra_unmatched_column_is_a_miss_not_a_prediction() -> None:
    # Row 0: 3 right, 1 in the "no class" column; row 1: 2 right.
    scores = scores_from_confusion(torch.tensor([[3, 0, 1], [0, 2, 0]]))
    assert_close_nan(scores["IoU"], [3 / 4, 1.0])
    assert_close_nan(scores["Acc"], [3 / 4, 1.0])
    assert scores["aAcc"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("device", DEVICES)
def test_metric_accumulates_like_the_function(device: str) -> None:
    metric = ConfusionMetrics(num_classes=3).to(device)
    metric.update(PRED.to(device), TARGET.to(device))  # [H, W]
    metric.update(PRED[None].to(device), TARGET[None].to(device))  # [B, H, W]
    assert metric.confmat.dtype == torch.int64
    assert torch.equal(metric.confmat.cpu(), 2 * EXPECTED)
    scores = metric.compute()
    assert scores["mIoU"] == pytest.approx(EXPECTED_MIOU)
    assert scores["mAcc"] == pytest.approx(EXPECTED_MACC)
    assert scores["aAcc"] == pytest.approx(EXPECTED_AACC)
    assert "mapping" not in scores
    metric.reset()
    assert int(metric.confmat.sum()) == 0


def test_metric_takes_argmax_of_logits() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, generator=gen)
    target = torch.randint(0, 3, (2, 4, 5), generator=gen)
    from_logits = ConfusionMetrics(3)
    from_logits.update(logits, target)
    from_ids = ConfusionMetrics(3)
    from_ids.update(logits.argmax(1), target)
    assert torch.equal(from_logits.confmat, from_ids.confmat)
    single = ConfusionMetrics(3)
    single.update(logits[0], target[0])  # [C, H, W] logits for one [H, W] image
    assert torch.equal(single.confmat, confusion_matrix(logits[0].argmax(0), target[0], 3))
    with pytest.raises(ValueError, match=r"logits of shape \(2, 4, 4, 5\) .* with 3 channels"):
        ConfusionMetrics(3).update(torch.randn(2, 4, 4, 5), target)


def test_metric_update_names_the_source_in_errors() -> None:
    target = torch.stack([TARGET, TARGET])
    target[1, 0, 2] = 3
    metric = ConfusionMetrics(3)
    with pytest.raises(ValueError, match=r"^data/val/b\.png: ground-truth label 3 .* expected 0\.\.2 or 255"):
        metric.update(torch.stack([PRED, PRED]), target, sources=["data/val/a.png", "data/val/b.png"])


def test_halves_merged_equal_the_whole_set() -> None:
    """DDP-style: per-process matrices summed give exactly the single-process result."""
    gen = torch.Generator().manual_seed(2)
    target = torch.randint(0, 4, (6, 5, 5), generator=gen)
    target[:, 0, 0] = 255
    pred = torch.randint(0, 4, (6, 5, 5), generator=gen)
    whole = ConfusionMetrics(4)
    whole.update(pred, target)
    first, second = ConfusionMetrics(4), ConfusionMetrics(4)
    first.update(pred[:3], target[:3])
    second.update(pred[3:], target[3:])
    manual = first.confmat + second.confmat
    first.merge_state(second)
    assert torch.equal(first.confmat, whole.confmat)
    assert torch.equal(manual, whole.confmat)
    assert first.compute()["mIoU"] == whole.compute()["mIoU"]


def test_metric_declares_its_state_and_flags() -> None:
    metric = ConfusionMetrics(3, matching="hungarian", num_clusters=5)
    assert metric.confmat.shape == (3, 5)
    assert metric._reductions["confmat"].__name__ == "dim_zero_sum"
    assert ConfusionMetrics.full_state_update is False
    assert ConfusionMetrics.higher_is_better is True
    assert ConfusionMetrics.is_differentiable is False


def test_metric_argument_errors() -> None:
    with pytest.raises(
        ValueError, match=r"unknown matching 'best'; expected None or one of hungarian, majority"
    ):
        ConfusionMetrics(3, matching="best")
    with pytest.raises(
        ValueError, match="num_clusters=4 differs from num_classes=3: cluster ids need a matching"
    ):
        ConfusionMetrics(3, num_clusters=4)
    with pytest.raises(ValueError, match="num_classes must be positive, got 0"):
        ConfusionMetrics(0)
