"""Matching predicted clusters onto classes: Hungarian (one-to-one) and majority (many-to-one)."""

from __future__ import annotations

import pytest
import torch

from segzoo.metrics import (
    ConfusionMetrics,
    apply_matching,
    confusion_matrix,
    hungarian_match,
    majority_match,
    relabel,
    scores_from_confusion,
)

# Rows = classes, columns = clusters. Cluster 1 overlaps class 0 most (3 > 2), so majority sends both
# clusters to class 0, while the one-to-one optimum pairs cluster 1 with class 1 (5 + 2 > 3 + 0).
DIFFER = torch.tensor([[5, 3], [0, 2]])

# Three clusters for two classes: cluster 2 is split 2 / 1.
EXTRA = torch.tensor([[4, 0, 2], [0, 3, 1]])


def test_hungarian_and_majority_differ_on_a_hand_built_matrix() -> None:
    assert hungarian_match(DIFFER).tolist() == [0, 1]
    assert majority_match(DIFFER).tolist() == [0, 0]

    hungarian = scores_from_confusion(apply_matching(DIFFER, hungarian_match(DIFFER)))
    # TP = [5, 2], FP = [0, 3], FN = [3, 0]
    assert hungarian["IoU"].tolist() == pytest.approx([5 / 8, 2 / 5])
    assert hungarian["Acc"].tolist() == pytest.approx([5 / 8, 1.0])
    assert hungarian["aAcc"] == pytest.approx(7 / 10)

    majority = scores_from_confusion(apply_matching(DIFFER, majority_match(DIFFER)))
    # Everything predicted as class 0: TP = [8, 0], FP = [2, 0], FN = [0, 2]
    assert majority["IoU"].tolist() == pytest.approx([8 / 10, 0.0])
    assert majority["Acc"].tolist() == pytest.approx([1.0, 0.0])
    assert majority["aAcc"] == pytest.approx(8 / 10)


def test_apply_matching_puts_unmatched_clusters_in_a_miss_column() -> None:
    mapping = hungarian_match(EXTRA)
    assert mapping.tolist() == [0, 1, -1]
    matched = apply_matching(EXTRA, mapping)
    assert matched.dtype == torch.int64
    assert torch.equal(matched, torch.tensor([[4, 0, 2], [0, 3, 1]]))
    assert torch.equal(apply_matching(EXTRA, torch.tensor([1, -1, 1])), torch.tensor([[0, 6, 0], [0, 1, 3]]))


def test_extra_unmatched_clusters_lower_accuracy_but_add_no_false_positives() -> None:
    scores = scores_from_confusion(apply_matching(EXTRA, hungarian_match(EXTRA)))
    # TP = [4, 3], FP = [0, 0], FN = [2, 1]: the unmatched cluster's pixels are misses only.
    assert scores["IoU"].tolist() == pytest.approx([4 / 6, 3 / 4])
    assert scores["Acc"].tolist() == pytest.approx([4 / 6, 3 / 4])
    assert scores["aAcc"] == pytest.approx(7 / 10)

    majority = scores_from_confusion(apply_matching(EXTRA, majority_match(EXTRA)))
    assert majority_match(EXTRA).tolist() == [0, 1, 0]
    # [[6, 0], [1, 3]]: TP = [6, 3], FP = [1, 0], FN = [0, 1]
    assert majority["IoU"].tolist() == pytest.approx([6 / 7, 3 / 4])
    assert majority["aAcc"] == pytest.approx(9 / 10)


def test_fewer_clusters_than_classes_leaves_classes_unmatched() -> None:
    conf = torch.tensor([[5, 0], [1, 1], [0, 4]])
    mapping = hungarian_match(conf)
    assert mapping.tolist() == [0, 2]
    scores = scores_from_confusion(apply_matching(conf, mapping))
    assert scores["IoU"].tolist() == pytest.approx([5 / 6, 0.0, 4 / 5])


def test_majority_gives_minus_one_to_empty_clusters_and_breaks_ties_low() -> None:
    conf = torch.tensor([[2, 0, 1], [2, 0, 3]])
    assert majority_match(conf).tolist() == [0, -1, 1]


@pytest.mark.parametrize("matching", ["hungarian", "majority"])
def test_permuted_cluster_ids_give_perfect_scores(matching: str) -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 6, 7), generator=gen)
    target[0, :2] = 255
    perm = torch.tensor([5, 2, 0, 3])  # class c is predicted as cluster perm[c]; clusters 1 and 4 unused
    pred = perm[target.clamp(max=3)]
    metric = ConfusionMetrics(4, matching=matching, num_clusters=6)
    metric.update(pred, target)
    scores = metric.compute()
    assert scores["mIoU"] == 1.0 and scores["mAcc"] == 1.0 and scores["aAcc"] == 1.0
    mapping = scores["mapping"]
    assert mapping.dtype == torch.int64 and mapping.shape == (6,)
    assert mapping[perm].tolist() == [0, 1, 2, 3]
    if matching == "majority":
        assert mapping[torch.tensor([1, 4])].tolist() == [-1, -1]


def test_metric_with_extra_clusters_matches_the_hand_computation() -> None:
    # One row per pixel column: realise EXTRA as a 1 x 10 image.
    target = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1, 1]])
    pred = torch.tensor([[0, 0, 0, 0, 2, 2, 1, 1, 1, 2]])
    assert torch.equal(confusion_matrix(pred, target, 2, num_clusters=3), EXTRA)
    metric = ConfusionMetrics(2, matching="hungarian", num_clusters=3)
    metric.update(pred, target)
    scores = metric.compute()
    assert scores["mapping"].tolist() == [0, 1, -1]
    assert scores["mIoU"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert scores["aAcc"] == pytest.approx(7 / 10)


def test_merged_halves_match_before_matching() -> None:
    gen = torch.Generator().manual_seed(3)
    target = torch.randint(0, 3, (4, 5, 5), generator=gen)
    pred = torch.randint(0, 5, (4, 5, 5), generator=gen)
    whole = ConfusionMetrics(3, matching="hungarian", num_clusters=5)
    whole.update(pred, target)
    first = ConfusionMetrics(3, matching="hungarian", num_clusters=5)
    second = ConfusionMetrics(3, matching="hungarian", num_clusters=5)
    first.update(pred[:2], target[:2])
    second.update(pred[2:], target[2:])
    first.merge_state(second)
    merged, single = first.compute(), whole.compute()
    assert torch.equal(merged["mapping"], single["mapping"])
    assert merged["mIoU"] == single["mIoU"]


def test_relabel_maps_ids_and_fills_unmatched() -> None:
    pred = torch.tensor([[0, 1, 2], [2, 1, 0]])
    mapping = torch.tensor([1, -1, 0])
    assert relabel(pred, mapping).tolist() == [[1, 255, 0], [0, 255, 1]]
    assert relabel(pred, mapping, fill=-1).tolist() == [[1, -1, 0], [0, -1, 1]]
    # With a full one-to-one mapping, relabelling the pixels equals relabelling the matrix.
    target = torch.tensor([[1, 0, 0], [0, 0, 1]])
    swapped = torch.tensor([[0, 1, 1], [1, 0, 0]])
    swap = torch.tensor([1, 0])
    matched = apply_matching(confusion_matrix(swapped, target, 2), swap)
    assert torch.equal(matched[:, :2], confusion_matrix(relabel(swapped, swap), target, 2))
    assert matched[:, 2].tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"cluster id 3 out of range; the mapping covers 0\.\.2"):
        relabel(torch.tensor([0, 3]), mapping)


def test_invalid_inputs() -> None:
    with pytest.raises(
        ValueError, match=r"mapping must have shape \(2,\) \(one class per cluster\), got \(3,\)"
    ):
        apply_matching(DIFFER, torch.tensor([0, 1, 1]))
    with pytest.raises(
        ValueError, match=r"mapping value 2 out of range; expected -1 \(unmatched\) or 0\.\.1"
    ):
        apply_matching(DIFFER, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"non-empty \[C, P\] matrix, got shape \(4,\)"):
        hungarian_match(torch.zeros(4, dtype=torch.long))
