"""Dataset-level evaluation metrics: confusion-matrix scores, cluster matching and BSDS500 scores."""

from segzoo.metrics.bsds import (
    BSDSMetrics,
    bsds_scores,
    contingency,
    num_segments,
    relabel_connected_components,
)
from segzoo.metrics.confusion import ConfusionMetrics, confusion_matrix, scores_from_confusion
from segzoo.metrics.landmarks import (
    LandmarkError,
    LandmarkRegressor,
    fit_landmark_regressor,
    grid_centres,
    normalised_error,
    part_centres,
)
from segzoo.metrics.matching import apply_matching, hungarian_match, majority_match, relabel

__all__ = [
    "BSDSMetrics",
    "ConfusionMetrics",
    "LandmarkError",
    "LandmarkRegressor",
    "apply_matching",
    "bsds_scores",
    "confusion_matrix",
    "contingency",
    "fit_landmark_regressor",
    "grid_centres",
    "hungarian_match",
    "majority_match",
    "normalised_error",
    "num_segments",
    "part_centres",
    "relabel",
    "relabel_connected_components",
    "scores_from_confusion",
]
