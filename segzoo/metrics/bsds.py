"""Per-image segmentation scores against several human annotations (BSDS500 protocol).

For each image the prediction S is compared with every annotation G_j and each score is averaged over j:
segmentation covering of G by S, Probabilistic Rand Index, Variation of Information (natural log) and
best-match mIoU. All scores come from the contingency table of (S, G) region pairs, never pixel-pair loops.
Region ids are arbitrary integers; they are compacted first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from skimage.measure import label as connected_label
from torch import Tensor
from torchmetrics import Metric

SCORES = ("covering", "pri", "voi", "best_miou")
# What BSDSMetrics reports: the scores and the segment count, plain and on connected components.
REPORTED = (*SCORES, "segments", *(f"cc_{k}" for k in (*SCORES, "segments")))

ArrayLike = np.ndarray | Tensor


def _to_numpy(labels: Any, what: str) -> np.ndarray:
    """Integer labels as a host numpy array (torch tensors are moved to the CPU explicitly)."""
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{what} must hold integer region ids, got dtype {array.dtype}")
    return array


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Flat region codes 0..n-1 (in sorted order of the original ids) and the number of regions n."""
    flat = labels.reshape(-1).astype(np.int64, copy=False)
    if flat.size == 0:
        return flat, 0
    low, high = int(flat.min()), int(flat.max())
    if low >= 0 and high < max(4 * flat.size, 1 << 16):
        # Small non-negative ids (the usual case): a lookup table is much faster than sorting.
        present = np.bincount(flat, minlength=high + 1) > 0
        lookup = np.cumsum(present) - 1
        return lookup[flat], int(present.sum())
    ids, inverse = np.unique(flat, return_inverse=True)
    return inverse.reshape(-1), int(ids.size)


def _sparse_table(
    s_codes: np.ndarray, num_s: int, g_codes: np.ndarray, num_g: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero cells of the contingency table: (S region, G region, pixel count) arrays."""
    joint = s_codes * num_g + g_codes
    if num_s * num_g <= max(4 * joint.size, 1 << 16):
        counts = np.bincount(joint, minlength=num_s * num_g)
        cells = np.flatnonzero(counts)
        counts = counts[cells]
    else:
        # Many regions on both sides (e.g. per-pixel ids): only the occupied cells are materialised.
        cells, counts = np.unique(joint, return_counts=True)
    return cells // num_g, cells % num_g, counts


def contingency(seg: ArrayLike, gt: ArrayLike) -> np.ndarray:
    """Dense contingency table [regions of seg, regions of gt] of pixel counts (ids in sorted order)."""
    seg_np, gt_np = _to_numpy(seg, "segmentation"), _to_numpy(gt, "ground truth")
    if seg_np.shape != gt_np.shape:
        raise ValueError(f"segmentation shape {seg_np.shape} does not match ground-truth shape {gt_np.shape}")
    s_codes, num_s = _compact(seg_np)
    g_codes, num_g = _compact(gt_np)
    return np.bincount(s_codes * num_g + g_codes, minlength=num_s * num_g).reshape(num_s, num_g)


def _pairs(counts: np.ndarray) -> int:
    """Number of unordered pixel pairs inside regions of the given sizes (exact integer)."""
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _scores_one(s_codes: np.ndarray, num_s: int, g_codes: np.ndarray, num_g: int) -> dict[str, float]:
    """The four scores of S against one annotation G, from the sparse contingency table."""
    total = s_codes.size
    rows, cols, joint = _sparse_table(s_codes, num_s, g_codes, num_g)
    size_s = np.bincount(s_codes, minlength=num_s)
    size_g = np.bincount(g_codes, minlength=num_g)

    iou = joint / (size_s[rows] + size_g[cols] - joint)
    best = np.zeros(num_g, dtype=np.float64)
    np.maximum.at(best, cols, iou)
    covering = float((size_g * best).sum() / total)
    best_miou = float(best.mean())

    # Disagreeing pairs = pairs together in exactly one of S, G; a single pixel has no pair to disagree on.
    all_pairs = total * (total - 1) // 2
    disagree = _pairs(size_s) + _pairs(size_g) - 2 * _pairs(joint)
    pri = 1.0 - disagree / all_pairs if all_pairs > 0 else 1.0

    # VoI = H(S|G) + H(G|S) = sum p_ij (log(a_i / n_ij) + log(b_j / n_ij)); every term is >= 0.
    voi = float((joint / total * (np.log(size_s[rows] / joint) + np.log(size_g[cols] / joint))).sum())
    return {"covering": covering, "pri": float(pri), "voi": voi, "best_miou": best_miou}


def _as_annotations(ground_truths: Any) -> list[np.ndarray]:
    if isinstance(ground_truths, (np.ndarray, Tensor)):
        array = _to_numpy(ground_truths, "ground truth")
        return [array] if array.ndim == 2 else list(array)
    return [_to_numpy(g, "ground truth") for g in ground_truths]


def bsds_scores(
    segmentation: ArrayLike,
    ground_truths: Sequence[ArrayLike] | ArrayLike,
    ignore_index: int | None = None,
    source: str | None = None,
) -> dict[str, float]:
    """Covering, PRI, VoI and best-match mIoU of ``segmentation`` averaged over the annotations.

    ``segmentation`` is an [H, W] integer array (any ids, numpy or torch); ``ground_truths`` a sequence of
    [H, W] arrays or one [N, H, W] array. Pixels where an annotation equals ``ignore_index`` (e.g. batch
    padding) are left out of the comparison with that annotation. ``source`` names the image in errors.
    """
    prefix = f"{source}: " if source else ""
    seg = _to_numpy(segmentation, "segmentation")
    annotations = _as_annotations(ground_truths)
    if seg.ndim != 2:
        raise ValueError(f"{prefix}segmentation must be [H, W], got shape {seg.shape}")
    if not annotations:
        raise ValueError(f"{prefix}no ground-truth annotation given")
    s_codes, num_s = _compact(seg)
    totals = dict.fromkeys(SCORES, 0.0)
    for j, gt in enumerate(annotations):
        if gt.shape != seg.shape:
            raise ValueError(
                f"{prefix}segmentation shape {seg.shape} does not match ground truth {j} shape {gt.shape}"
            )
        s_j, g_j = s_codes, gt.reshape(-1)
        if ignore_index is not None:
            valid = g_j != ignore_index
            if not valid.any():
                raise ValueError(f"{prefix}ground truth {j} has no labelled pixel (all {ignore_index})")
            s_j, g_j = s_j[valid], g_j[valid]
        g_codes, num_g = _compact(g_j)
        for key, value in _scores_one(s_j, num_s, g_codes, num_g).items():
            totals[key] += value
    return {key: value / len(annotations) for key, value in totals.items()}


def relabel_connected_components(seg: ArrayLike) -> np.ndarray:
    """Split every region into its 4-connected components; ids 0..K-1 in raster order (int64 [H, W])."""
    array = _to_numpy(seg, "segmentation")
    codes, _ = _compact(array)
    # Shifted to start at 1 so that no region is taken for skimage's background (0).
    components = connected_label(codes.reshape(array.shape) + 1, background=0, connectivity=1)
    return components.astype(np.int64) - 1


def num_segments(seg: ArrayLike) -> int:
    """Number of distinct region ids in ``seg``."""
    return _compact(_to_numpy(seg, "segmentation"))[1]


class BSDSMetrics(Metric):
    """Means over images of covering, PRI, VoI, best-match mIoU and segment counts (BSDS500 protocol).

    Each score is also computed on the connected-component relabelling of the prediction (keys prefixed
    ``cc_``). States are per-image sums and the image count, all summed across processes. The sums are
    integers (scores in fixed point, 2**-36 per image; segment counts as they are), so they do not depend on
    how the images were split over processes or batches: the means under DDP equal a single process's to
    the last bit, which float sums in a different order would not. ``ignore_index`` marks unannotated
    (padded) pixels in the annotations: they are left out of the scores, and segments are counted on pixels
    annotated in at least one annotation.
    """

    is_differentiable = False
    higher_is_better = None  # VoI and segment counts are lower-is-better, the others higher-is-better
    full_state_update = False
    KEYS = REPORTED
    # Fixed-point scale of the score sums: 2**-36 resolution per image, and room in int64 for about 2
    # million images of scores up to 64 (VoI is the largest, below 2 ln(pixels)).
    SCALE = 2**36
    COUNTS = ("segments", "cc_segments")

    count: Tensor

    def __init__(self, ignore_index: int | None = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        for key in self.KEYS:
            self.add_state(key, default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(
        self,
        preds: Tensor | Sequence[ArrayLike],
        ground_truths: Sequence[ArrayLike],
        sources: Sequence[str] | None = None,
    ) -> None:
        """Add a batch: ``preds`` [B, H, W] (or B arrays [H, W]), ``ground_truths`` B arrays [N, H, W];
        ``sources`` names each image in error messages."""
        if len(preds) != len(ground_truths):
            raise ValueError(
                f"{len(preds)} predictions but {len(ground_truths)} ground-truth stacks; "
                "expected one stack per image"
            )
        if isinstance(preds, Tensor):
            preds = preds.detach().cpu()  # scored with numpy/scikit-image: one copy for the whole batch
        sums = dict.fromkeys(self.KEYS, 0)
        for i, (pred, gts) in enumerate(zip(preds, ground_truths, strict=True)):
            named = sources is not None and i < len(sources)
            source = str(sources[i]) if named else f"image {i} of the batch"
            seg = _to_numpy(pred, "segmentation")
            annotations = _as_annotations(gts)
            # The plain variant is scored first: it validates the shapes before anything else uses them.
            plain = bsds_scores(seg, annotations, self.ignore_index, source)
            components = relabel_connected_components(seg)
            cc = bsds_scores(components, annotations, self.ignore_index, source)
            if self.ignore_index is not None:
                annotated = np.any(np.stack(annotations) != self.ignore_index, axis=0)
                seg, components = seg[annotated], components[annotated]
            for key in SCORES:
                sums[key] += round(plain[key] * self.SCALE)
                sums[f"cc_{key}"] += round(cc[key] * self.SCALE)
            sums["segments"] += num_segments(seg)
            sums["cc_segments"] += num_segments(components)
        for key, value in sums.items():
            state = getattr(self, key)
            setattr(self, key, state + torch.tensor(value, dtype=state.dtype, device=state.device))
        self.count += len(preds)

    def compute(self) -> dict[str, float]:
        """Mean of every score over the images seen (NaN before any update)."""
        count = int(self.count)
        if not count:
            return dict.fromkeys(self.KEYS, float("nan"))
        scale = {key: 1 if key in self.COUNTS else self.SCALE for key in self.KEYS}
        return {key: int(getattr(self, key)) / (scale[key] * count) for key in self.KEYS}
