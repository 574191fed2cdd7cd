"""Callbacks shared by every method: metrics, image logging, prediction writing."""

from segzoo.callbacks.images import ImageLogger
from segzoo.callbacks.landmarks import LandmarkMetrics
from segzoo.callbacks.metrics import SegmentationMetrics
from segzoo.callbacks.writer import PredictionWriter

__all__ = ["ImageLogger", "LandmarkMetrics", "PredictionWriter", "SegmentationMetrics"]
