"""Tensor-level building blocks shared by the methods."""

from segzoo.ops.superpixels import felzenszwalb, relabel_sequential, slic, superpixel_vote

__all__ = ["felzenszwalb", "relabel_sequential", "slic", "superpixel_vote"]
