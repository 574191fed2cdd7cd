"""Tensor-level building blocks shared by the methods."""

from segzoo.ops.crf import dense_crf
from segzoo.ops.kmeans import KMeansResult, kmeans
from segzoo.ops.superpixels import (
    felzenszwalb,
    merge_small_segments,
    relabel_sequential,
    slic,
    superpixel_vote,
)

__all__ = [
    "KMeansResult",
    "dense_crf",
    "felzenszwalb",
    "kmeans",
    "merge_small_segments",
    "relabel_sequential",
    "slic",
    "superpixel_vote",
]
