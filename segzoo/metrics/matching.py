"""Matching arbitrary predicted cluster ids onto ground-truth classes (unsupervised evaluation).

A mapping is a LongTensor [P]: the class each cluster is assigned to, -1 for clusters left unmatched.
Matchings are computed once from the set-level confusion matrix [C, P] (rows = classes, columns = clusters).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def _check_conf(conf: Tensor) -> None:
    if conf.ndim != 2 or conf.shape[0] < 1 or conf.shape[1] < 1:
        raise ValueError(f"confusion matrix must be a non-empty [C, P] matrix, got shape {tuple(conf.shape)}")


def hungarian_match(conf: Tensor) -> Tensor:
    """One-to-one assignment of clusters to classes maximising matched pixels (LongTensor [P]).

    With more clusters than classes the surplus clusters get -1; with fewer, some classes stay unmatched.
    """
    _check_conf(conf)
    # scipy works on host memory; the matrix is tiny, so this copy is negligible.
    weights = conf.detach().cpu().numpy().astype(np.float64)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    mapping = torch.full((conf.shape[1],), -1, dtype=torch.int64)
    mapping[torch.from_numpy(cols).long()] = torch.from_numpy(rows).long()
    return mapping.to(conf.device)


def majority_match(conf: Tensor) -> Tensor:
    """Each cluster takes the class it overlaps most (many-to-one); clusters with no pixels get -1.

    Ties go to the lowest class id.
    """
    _check_conf(conf)
    mapping = conf.argmax(dim=0)
    return torch.where(conf.sum(dim=0) > 0, mapping, torch.full_like(mapping, -1))


def _check_mapping(mapping: Tensor, num_clusters: int, num_classes: int) -> None:
    if mapping.shape != (num_clusters,):
        raise ValueError(
            f"mapping must have shape ({num_clusters},) (one class per cluster), got {tuple(mapping.shape)}"
        )
    bad = (mapping < -1) | (mapping >= num_classes)
    if bool(bad.any()):
        value = int(mapping[bad][0])
        raise ValueError(
            f"mapping value {value} out of range; expected -1 (unmatched) or 0..{num_classes - 1}"
        )


def apply_matching(conf: Tensor, mapping: Tensor) -> Tensor:
    """Relabel a [C, P] cluster matrix into classes: a LongTensor [C, C + 1].

    Column c sums the clusters mapped to class c; the last column holds the pixels of unmatched clusters,
    which count as wrong: a miss (FN) for their ground-truth class but a prediction of no class (no FP).
    :func:`segzoo.metrics.confusion.scores_from_confusion` reads that column this way.
    """
    _check_conf(conf)
    num_classes, num_clusters = conf.shape
    _check_mapping(mapping, num_clusters, num_classes)
    columns = torch.where(mapping >= 0, mapping, torch.full_like(mapping, num_classes)).cpu()
    # Summed on the host: index_add_ is not deterministic on every accelerator and the matrix is tiny.
    out = torch.zeros(num_classes, num_classes + 1, dtype=conf.dtype)
    out.index_add_(1, columns, conf.detach().cpu())
    return out.to(conf.device)


def relabel(pred: Tensor, mapping: Tensor, fill: int = 255) -> Tensor:
    """Map predicted cluster ids to classes with ``mapping``; pixels of unmatched clusters get ``fill``."""
    pred = torch.as_tensor(pred)
    if pred.is_floating_point() or pred.is_complex():
        raise TypeError(f"prediction must hold integer cluster ids, got dtype {pred.dtype}")
    mapping = mapping.to(pred.device).long()
    num_clusters = mapping.numel()
    bad = (pred < 0) | (pred >= num_clusters)
    if bool(bad.any()):
        value = int(pred[bad][0])
        raise ValueError(f"cluster id {value} out of range; the mapping covers 0..{num_clusters - 1}")
    lookup = torch.where(mapping >= 0, mapping, torch.full_like(mapping, fill))
    return lookup[pred.long()]
