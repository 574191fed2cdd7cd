"""Dataset-level evaluation metrics: confusion-matrix scores, cluster matching and BSDS500 scores."""

from segzoo.metrics.bsds import (
    BSDSMetrics,
    bsds_scores,
    contingency,
    num_segments,
    relabel_connected_components,
)
from segzoo.metrics.confusion import ConfusionMetrics, confusion_matrix, scores_from_confusion
from segzoo.metrics.matching import apply_matching, hungarian_match, majority_match, relabel

__all__ = [
    "BSDSMetrics",
    "ConfusionMetrics",
    "apply_matching",
    "bsds_scores",
    "confusion_matrix",
    "contingency",
    "hungarian_match",
    "majority_match",
    "num_segments",
    "relabel",
    "relabel_connected_components",
    "scores_from_confusion",
]
