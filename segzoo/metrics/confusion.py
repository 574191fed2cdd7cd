"""Confusion-matrix metrics (aAcc, mIoU, mAcc) with the conventions of docs EVALUATION.md.

One int64 matrix is accumulated over the whole evaluated set (rows = ground truth, columns = prediction);
scores are derived from it once, so they are exact under DDP (matrices are summed across processes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from segzoo.metrics.matching import apply_matching, hungarian_match, majority_match

MATCHINGS = ("hungarian", "majority")


def float_dtype(device: torch.device) -> torch.dtype:
    """float64 where the backend has it (exact ratios of large counts); MPS has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _where(sources: str | Sequence[str] | None, index: tuple[int, ...], batched: bool) -> str:
    """Name the input holding the offending pixel: its source path, else its position in the batch."""
    if isinstance(sources, str):
        return sources
    if sources is not None:
        position = index[0] if batched else 0
        if position < len(sources):
            return str(sources[position])
    return f"image {index[0]} of the batch" if batched else "image"


def _check_range(
    values: Tensor,
    bad: Tensor,
    what: str,
    allowed: str,
    sources: str | Sequence[str] | None,
) -> None:
    """Raise a ValueError naming the first value flagged in ``bad``, where it is and what was allowed."""
    if not bool(bad.any()):
        return
    index = tuple(int(i) for i in torch.nonzero(bad)[0])
    batched = values.ndim >= 3
    pixel = index[-2:] if values.ndim >= 2 else index
    where = _where(sources, index, batched)
    value = int(values[index])
    raise ValueError(f"{where}: {what} {value} at pixel {pixel} out of range; expected {allowed}")


def confusion_matrix(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    ignore_index: int | None = 255,
    num_clusters: int | None = None,
    source: str | Sequence[str] | None = None,
) -> Tensor:
    """Count (ground truth, prediction) pairs into a LongTensor [C, P] on the inputs' device.

    ``pred`` and ``target`` are integer tensors of the same shape ([H, W] or [B, H, W]); P is
    ``num_clusters`` or ``num_classes``. Pixels whose target equals ``ignore_index`` are skipped. A target
    outside [0, C) that is not ``ignore_index``, or a prediction outside [0, P) on a counted pixel, raises a
    ValueError naming the value, its pixel, the allowed range and ``source`` (a path, or one path per image).
    """
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target, device=pred.device)
    prefix = f"{source}: " if isinstance(source, str) else ""
    if pred.shape != target.shape:
        raise ValueError(
            f"{prefix}prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}"
        )
    for name, t in (("prediction", pred), ("target", target)):
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"{prefix}{name} must hold integer labels, got dtype {t.dtype}")
    num_cols = num_clusters if num_clusters is not None else num_classes
    if num_classes < 1 or num_cols < 1:
        raise ValueError(f"num_classes ({num_classes}) and num_clusters ({num_cols}) must be positive")
    pred = pred.long()
    target = target.long()

    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    ignore_text = "" if ignore_index is None else f" or {ignore_index} (ignore)"
    _check_range(
        target,
        valid & ((target < 0) | (target >= num_classes)),
        "ground-truth label",
        f"0..{num_classes - 1}{ignore_text}",
        source,
    )
    _check_range(
        pred, valid & ((pred < 0) | (pred >= num_cols)), "predicted label", f"0..{num_cols - 1}", source
    )

    # Ignored pixels go to one extra bin that is dropped: no boolean indexing, so no data-dependent shape.
    size = num_classes * num_cols
    codes = torch.where(valid, target * num_cols + pred, torch.full_like(target, size))
    counts = torch.bincount(codes.reshape(-1), minlength=size + 1)
    return counts[:size].reshape(num_classes, num_cols)


def scores_from_confusion(conf: Tensor) -> dict[str, Any]:
    """aAcc, mIoU, mAcc (python floats) and per-class IoU, Acc (float tensors [C], NaN where undefined).

    ``conf`` is [C, C] (rows = ground truth, columns = prediction). It may carry extra columns beyond C
    (e.g. the "unmatched" column of :func:`segzoo.metrics.matching.apply_matching`): their pixels are misses
    of their ground-truth class (FN) but predictions of no class (no FP).

    IoU_c = TP / (TP + FP + FN), NaN when the denominator is 0; Acc_c = TP / (TP + FN), NaN for classes absent
    from the ground truth; means skip NaNs; aAcc = sum TP / labelled pixels. An empty matrix gives NaNs.
    """
    if conf.ndim != 2 or conf.shape[1] < conf.shape[0]:
        raise ValueError(f"confusion matrix must be [C, P] with P >= C, got shape {tuple(conf.shape)}")
    num_classes = conf.shape[0]
    conf = conf.to(float_dtype(conf.device))
    tp = conf.diagonal()
    gt_pixels = conf.sum(dim=1)
    pred_pixels = conf[:, :num_classes].sum(dim=0)
    union = gt_pixels + pred_pixels - tp
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    acc = torch.where(gt_pixels > 0, tp / gt_pixels.clamp(min=1), nan)
    labelled = gt_pixels.sum()
    aacc = float(tp.sum() / labelled) if bool(labelled > 0) else float("nan")
    return {
        "aAcc": aacc,
        "mIoU": float(torch.nanmean(iou)),
        "mAcc": float(torch.nanmean(acc)),
        "IoU": iou,
        "Acc": acc,
    }


class ConfusionMetrics(Metric):
    """aAcc / mIoU / mAcc over a whole set from one accumulated confusion matrix (state ``confmat``).

    Args:
        num_classes: number of ground-truth classes C.
        ignore_index: target value skipped (None: no pixel is skipped).
        matching: None for supervised predictions; ``"hungarian"`` (one-to-one) or ``"majority"``
            (many-to-one) to relabel arbitrary cluster ids onto classes at :meth:`compute`.
        num_clusters: number of predicted ids P (default C); only a matching may use P != C.

    :meth:`compute` returns ``aAcc``, ``mIoU``, ``mAcc`` (floats), ``IoU``, ``Acc`` (tensors [C]) and, with a
    matching, ``mapping`` (LongTensor [P]: class per cluster, -1 for unmatched).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    confmat: Tensor

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        matching: str | None = None,
        num_clusters: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if matching is not None and matching not in MATCHINGS:
            raise ValueError(f"unknown matching {matching!r}; expected None or one of {', '.join(MATCHINGS)}")
        num_cols = num_clusters if num_clusters is not None else num_classes
        if num_cols < 1:
            raise ValueError(f"num_clusters must be positive, got {num_clusters}")
        if matching is None and num_cols != num_classes:
            raise ValueError(
                f"num_clusters={num_clusters} differs from num_classes={num_classes}: "
                "cluster ids need a matching ('hungarian' or 'majority')"
            )
        self.num_classes = num_classes
        self.num_clusters = num_cols
        self.ignore_index = ignore_index
        self.matching = matching
        self.add_state(
            "confmat", default=torch.zeros(num_classes, num_cols, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(self, pred: Tensor, target: Tensor, sources: Sequence[str] | None = None) -> None:
        """Add a batch: ``pred`` [B, H, W] / [H, W] ids, or logits [B, P, H, W] / [P, H, W] (argmax taken);
        ``target`` [B, H, W] / [H, W]; ``sources`` names each image in error messages (e.g. its path)."""
        if pred.is_floating_point():
            if pred.ndim != target.ndim + 1 or pred.shape[-3] != self.num_clusters:
                raise ValueError(
                    f"logits of shape {tuple(pred.shape)} do not fit target shape {tuple(target.shape)} "
                    f"with {self.num_clusters} channels"
                )
            pred = pred.argmax(dim=-3)
        conf = confusion_matrix(
            pred,
            target.to(pred.device),
            self.num_classes,
            ignore_index=self.ignore_index,
            num_clusters=self.num_clusters,
            source=sources,
        )
        self.confmat += conf.to(self.confmat.device)

    def compute(self) -> dict[str, Any]:
        """Scores of the accumulated matrix, after relabelling clusters when a matching is set."""
        if self.matching is None:
            return scores_from_confusion(self.confmat)
        match = hungarian_match if self.matching == "hungarian" else majority_match
        mapping = match(self.confmat)
        scores = scores_from_confusion(apply_matching(self.confmat, mapping))
        scores["mapping"] = mapping
        return scores
