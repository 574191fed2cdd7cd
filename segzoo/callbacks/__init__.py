"""Callbacks shared by every method: metrics, image logging, prediction writing, per-epoch seeding."""

from segzoo.callbacks.images import ImageLogger
from segzoo.callbacks.landmarks import LandmarkMetrics
from segzoo.callbacks.metrics import SegmentationMetrics
from segzoo.callbacks.resume import EpochSeeding, ResumeCheckpoint
from segzoo.callbacks.writer import PredictionWriter

__all__ = [
    "EpochSeeding",
    "ImageLogger",
    "LandmarkMetrics",
    "PredictionWriter",
    "ResumeCheckpoint",
    "SegmentationMetrics",
]
