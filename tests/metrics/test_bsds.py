"""BSDS500 per-image scores against several annotations, checked against brute-force definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from segzoo.metrics import BSDSMetrics, bsds_scores, contingency, num_segments, relabel_connected_components

KEYS = ("covering", "pri", "voi", "best_miou")


def brute_force(seg: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The definitions, computed the slow way: every pixel pair, every region pair."""
    s, g = seg.ravel().tolist(), gt.ravel().tolist()
    n = len(s)
    pairs = list(itertools.combinations(range(n), 2))
    agree = sum((s[i] == s[j]) == (g[i] == g[j]) for i, j in pairs)

    seg_regions = [seg == r for r in np.unique(seg)]
    gt_regions = [gt == r for r in np.unique(gt)]
    best = [max((a & b).sum() / (a | b).sum() for b in seg_regions) for a in gt_regions]
    covering = sum(a.sum() * m for a, m in zip(gt_regions, best, strict=True)) / n

    def entropy(counts: list[int]) -> float:
        return -sum(c / n * math.log(c / n) for c in counts if c > 0)

    h_s = entropy([int(a.sum()) for a in seg_regions])
    h_g = entropy([int(b.sum()) for b in gt_regions])
    h_joint = entropy([int((a & b).sum()) for a in seg_regions for b in gt_regions])
    mutual = h_s + h_g - h_joint
    return {
        "covering": float(covering),
        "pri": agree / len(pairs),
        "voi": h_s + h_g - 2 * mutual,
        "best_miou": float(np.mean(best)),
    }


def brute_force_mean(seg: np.ndarray, gts: list[np.ndarray]) -> dict[str, float]:
    per = [brute_force(seg, gt) for gt in gts]
    return {k: float(np.mean([p[k] for p in per])) for k in KEYS}


def random_case(seed: int, annotators: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    # Arbitrary, non-contiguous, negative ids: the scores must not depend on the id values.
    seg = rng.choice(np.array([-4, 3, 17, 1000]), size=(6, 7))
    gts = [rng.integers(1, rng.integers(2, 6), size=(6, 7)) for _ in range(annotators)]
    return seg, gts


@pytest.mark.parametrize(("seed", "annotators"), [(0, 2), (1, 3), (2, 3), (3, 1)])
def test_scores_match_brute_force(seed: int, annotators: int) -> None:
    seg, gts = random_case(seed, annotators)
    scores = bsds_scores(seg, gts)
    expected = brute_force_mean(seg, gts)
    for key in KEYS:
        assert isinstance(scores[key], float)
        assert scores[key] == pytest.approx(expected[key], abs=1e-12), key


def test_huge_ids_take_the_sorting_path_with_the_same_result() -> None:
    rng = np.random.default_rng(5)
    seg = rng.integers(0, 30, size=(6, 7)) * 10**9 - 5  # ids far beyond the lookup-table range
    gt = np.arange(42).reshape(6, 7)[::-1]  # every pixel its own region
    scores = bsds_scores(seg, [gt])
    expected = brute_force(seg, gt)
    for key in KEYS:
        assert scores[key] == pytest.approx(expected[key], abs=1e-12), key


def test_many_regions_on_both_sides_match_closed_forms() -> None:
    """S = one region per pixel against G with 50 regions: 1600 x 50 cells, the sparse-table path."""
    rng = np.random.default_rng(9)
    gt = rng.integers(0, 50, size=(40, 40))
    seg = np.arange(gt.size).reshape(gt.shape)
    sizes = np.bincount(gt.ravel())
    sizes = sizes[sizes > 0]
    n = gt.size
    scores = bsds_scores(seg, [gt])
    # Each G region of size b is best covered by any of its pixels: IoU 1/b.
    assert scores["covering"] == pytest.approx(len(sizes) / n)
    assert scores["best_miou"] == pytest.approx(np.mean(1 / sizes))
    # Only pairs together in G disagree; G is a function of S, so VoI = H(S) - H(G).
    assert scores["pri"] == pytest.approx(1 - (sizes * (sizes - 1) / 2).sum() / (n * (n - 1) / 2))
    h_g = -(sizes / n * np.log(sizes / n)).sum()
    assert scores["voi"] == pytest.approx(math.log(n) - h_g)


def test_identical_segmentations_score_perfectly_whatever_the_ids() -> None:
    _, gts = random_case(7, 2)
    gt = gts[0]
    renamed = gt * 13 - 100
    scores = bsds_scores(renamed, [gt, gt])
    assert scores["covering"] == pytest.approx(1.0)
    assert scores["pri"] == pytest.approx(1.0)
    assert scores["voi"] == pytest.approx(0.0, abs=1e-12)
    assert scores["best_miou"] == pytest.approx(1.0)


def test_hand_case_one_region_against_two_halves() -> None:
    seg = np.zeros((2, 2), dtype=np.int64)
    gt = np.array([[0, 0], [1, 1]])
    scores = bsds_scores(seg, [gt])
    # VoI = H(G) = log 2 (S carries no information); each half has IoU 2/4 with the single region;
    # of the 6 pixel pairs, the 4 crossing the halves disagree.
    assert scores["voi"] == pytest.approx(math.log(2))
    assert scores["covering"] == pytest.approx(0.5)
    assert scores["best_miou"] == pytest.approx(0.5)
    assert scores["pri"] == pytest.approx(2 / 6)


def test_best_miou_is_unweighted_while_covering_weights_by_area() -> None:
    gt = np.array([[0, 0, 0, 1]])
    seg = np.array([[0, 0, 0, 0]])
    scores = bsds_scores(seg, [gt])
    assert scores["covering"] == pytest.approx((3 * 3 / 4 + 1 * 1 / 4) / 4)
    assert scores["best_miou"] == pytest.approx((3 / 4 + 1 / 4) / 2)


def test_accepts_torch_and_stacked_annotations() -> None:
    seg, gts = random_case(4, 3)
    expected = bsds_scores(seg, gts)
    assert bsds_scores(torch.from_numpy(seg), torch.from_numpy(np.stack(gts))) == pytest.approx(expected)
    assert bsds_scores(seg, np.stack(gts)) == pytest.approx(expected)
    assert bsds_scores(seg, gts[0]) == pytest.approx(bsds_scores(seg, gts[:1]))


def test_ignored_pixels_are_left_out() -> None:
    seg, gts = random_case(6, 2)
    padded_seg = np.pad(seg, ((0, 2), (0, 3)), constant_values=0)
    padded_gts = [np.pad(g, ((0, 2), (0, 3)), constant_values=255) for g in gts]
    assert bsds_scores(padded_seg, padded_gts, ignore_index=255) == pytest.approx(bsds_scores(seg, gts))
    with pytest.raises(ValueError, match="ground truth 0 has no labelled pixel"):
        bsds_scores(seg, [np.full_like(seg, 255)], ignore_index=255)


def test_size_mismatch_names_both_shapes() -> None:
    with pytest.raises(
        ValueError,
        match=r"^img\.jpg: segmentation shape \(6, 7\) does not match ground truth 1 shape \(7, 6\)",
    ):
        bsds_scores(
            np.zeros((6, 7), dtype=int),
            [np.zeros((6, 7), dtype=int), np.zeros((7, 6), dtype=int)],
            source="img.jpg",
        )
    with pytest.raises(
        ValueError, match=r"segmentation shape \(2, 3\) does not match ground-truth shape \(3, 2\)"
    ):
        contingency(np.zeros((2, 3), dtype=int), np.zeros((3, 2), dtype=int))
    with pytest.raises(TypeError, match="segmentation must hold integer region ids, got dtype float64"):
        bsds_scores(np.zeros((2, 2)), [np.zeros((2, 2), dtype=int)])


def test_contingency_counts_region_pairs() -> None:
    seg = np.array([[5, 5, 2], [2, 2, 9]])
    gt = np.array([[1, 0, 0], [1, 1, 1]])
    # rows: seg ids 2, 5, 9; columns: gt ids 0, 1
    assert contingency(seg, gt).tolist() == [[1, 2], [1, 1], [0, 1]]
    seg, gts = random_case(8, 1)
    table = contingency(seg, gts[0])
    for (i, a), (j, b) in itertools.product(enumerate(np.unique(seg)), enumerate(np.unique(gts[0]))):
        assert table[i, j] == ((seg == a) & (gts[0] == b)).sum()


def test_connected_components_and_segment_counts() -> None:
    seg = np.array([[0, 1, 0], [0, 1, 0]])
    assert relabel_connected_components(seg).tolist() == [[0, 1, 2], [0, 1, 2]]
    diagonal = np.array([[7, 3], [3, 7]])  # 4-connectivity: diagonal neighbours are separate
    assert relabel_connected_components(torch.from_numpy(diagonal)).tolist() == [[0, 1], [2, 3]]
    assert num_segments(diagonal) == 2
    assert num_segments(relabel_connected_components(diagonal)) == 4
    assert relabel_connected_components(seg).dtype == np.int64


def test_metric_means_match_per_image_scores() -> None:
    cases = [random_case(seed, 2 + seed % 2) for seed in range(4)]
    metric = BSDSMetrics()
    metric.update(
        torch.stack([torch.from_numpy(c[0]) for c in cases[:2]]), [np.stack(c[1]) for c in cases[:2]]
    )
    metric.update([c[0] for c in cases[2:]], [torch.from_numpy(np.stack(c[1])) for c in cases[2:]])
    result = metric.compute()
    assert set(result) == set(BSDSMetrics.KEYS)
    for key in KEYS:
        plain = np.mean([bsds_scores(seg, gts)[key] for seg, gts in cases])
        cc = np.mean([bsds_scores(relabel_connected_components(seg), gts)[key] for seg, gts in cases])
        # Fixed-point sums: within 2**-36 of the float mean.
        assert result[key] == pytest.approx(plain, abs=2**-35), key
        assert result[f"cc_{key}"] == pytest.approx(cc, abs=2**-35), key
    assert result["segments"] == pytest.approx(np.mean([num_segments(seg) for seg, _ in cases]))
    assert result["cc_segments"] == pytest.approx(
        np.mean([num_segments(relabel_connected_components(seg)) for seg, _ in cases])
    )
    assert int(metric.count) == 4


def test_metric_merge_of_halves_equals_whole_and_padding_is_ignored() -> None:
    cases = [random_case(seed, 2) for seed in range(10, 14)]
    whole = BSDSMetrics()
    whole.update([c[0] for c in cases], [np.stack(c[1]) for c in cases])
    first, second = BSDSMetrics(), BSDSMetrics()
    first.update([c[0] for c in cases[:1]], [np.stack(c[1]) for c in cases[:1]])
    second.update([c[0] for c in cases[1:]], [np.stack(c[1]) for c in cases[1:]])
    first.merge_state(second)
    assert first.compute() == whole.compute()  # exact: integer sums do not depend on the split
    for key in BSDSMetrics.KEYS:
        assert whole._reductions[key].__name__ == "dim_zero_sum"

    # Padded as a collate would pad: prediction 0 and annotations 255 outside the image.
    padded = BSDSMetrics(ignore_index=255)
    preds = torch.stack([torch.from_numpy(np.pad(c[0], ((0, 1), (0, 2)))) for c in cases])
    gts = [
        torch.from_numpy(np.pad(np.stack(c[1]), ((0, 0), (0, 1), (0, 2)), constant_values=255)) for c in cases
    ]
    padded.update(preds, gts, sources=[f"{i}.jpg" for i in range(4)])
    assert padded.compute() == pytest.approx(whole.compute())


def test_metric_errors_and_empty_state() -> None:
    metric = BSDSMetrics()
    with pytest.warns(UserWarning, match="called before the ``update`` method"):
        assert all(math.isnan(v) for v in metric.compute().values())
    with pytest.raises(ValueError, match="2 predictions but 1 ground-truth stacks"):
        metric.update(torch.zeros(2, 3, 3, dtype=torch.long), [torch.zeros(1, 3, 3, dtype=torch.long)])
    with pytest.raises(
        ValueError, match=r"^b\.jpg: segmentation shape \(3, 3\) does not match ground truth 0"
    ):
        metric.update(
            torch.zeros(2, 3, 3, dtype=torch.long),
            [torch.zeros(1, 3, 3, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long)],
            sources=["a.jpg", "b.jpg"],
        )


def test_metric_is_exact_for_any_split_and_order() -> None:
    """What DDP does: images spread over processes in another order, states summed. Float sums of these
    scores differ in the last bit for this split (checked); the metric's must not."""
    cases = [random_case(seed, 2) for seed in range(20, 32)]
    whole = BSDSMetrics()
    whole.update([c[0] for c in cases], [np.stack(c[1]) for c in cases])
    perm = [5, 2, 11, 0, 7, 3, 9, 1, 10, 4, 8, 6]
    first, second = BSDSMetrics(), BSDSMetrics()
    for metric, part in ((first, perm[:4]), (second, perm[4:])):
        metric.update([cases[i][0] for i in part], [np.stack(cases[i][1]) for i in part])
    first.merge_state(second)
    assert first.compute() == whole.compute()
