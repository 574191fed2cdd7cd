"""Tensor-level building blocks shared by the methods."""

from segzoo.ops.superpixels import (
    felzenszwalb,
    merge_small_segments,
    relabel_sequential,
    slic,
    superpixel_vote,
)

__all__ = ["felzenszwalb", "merge_small_segments", "relabel_sequential", "slic", "superpixel_vote"]
