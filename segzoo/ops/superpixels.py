"""Superpixel pre-segmentations (scikit-image wrappers) and a vectorised per-superpixel majority vote."""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage import segmentation as _seg


def _check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: expected an HxWx3 RGB image, got an array of shape {image.shape}")
    return image


def relabel_sequential(segments: np.ndarray) -> np.ndarray:
    """Renumber a label map to 0..n-1 (order of the original ids kept), as int64."""
    _, inverse = np.unique(segments, return_inverse=True)
    return inverse.reshape(segments.shape).astype(np.int64)


def slic(
    image: np.ndarray,
    n_segments: int = 100,
    compactness: float = 10.0,
    sigma: float = 0.0,
    max_num_iter: int = 10,
    **kwargs: object,
) -> np.ndarray:
    """SLIC superpixels of an HxWx3 image as an HxW int64 map with contiguous ids from 0.

    ``kwargs`` go to :func:`skimage.segmentation.slic` (e.g. ``convert2lab``, ``enforce_connectivity``).
    """
    image = _check_rgb(image, "slic")
    segments = _seg.slic(
        image,
        n_segments=int(n_segments),
        compactness=float(compactness),
        sigma=float(sigma),
        max_num_iter=int(max_num_iter),
        start_label=0,
        channel_axis=-1,
        **kwargs,
    )
    return relabel_sequential(segments)


def felzenszwalb(image: np.ndarray, scale: float = 1.0, sigma: float = 0.8, min_size: int = 20) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segmentation of an HxWx3 image as an HxW int64 map from 0."""
    image = _check_rgb(image, "felzenszwalb")
    segments = _seg.felzenszwalb(
        image, scale=float(scale), sigma=float(sigma), min_size=int(min_size), channel_axis=-1
    )
    return relabel_sequential(segments)


def superpixel_vote(
    labels: torch.Tensor, segments: torch.Tensor, num_segments: int, num_labels: int
) -> torch.Tensor:
    """Paint every segment with the majority of ``labels`` inside it (ties go to the smallest label).

    Args:
        labels: LongTensor [N] with values in [0, num_labels).
        segments: LongTensor [N] with values in [0, num_segments), on the same device.
        num_segments, num_labels: the value ranges (upper bounds; unused ids are fine).

    Returns:
        LongTensor [N] on the inputs' device: the winning label of each pixel's segment.

    One ``bincount`` over ``segment * num_labels + label`` builds the segment x label histogram; its row-wise
    argmax (first maximum, hence the smallest label on ties) is gathered back to the pixels.
    """
    if labels.shape != segments.shape or labels.ndim != 1:
        raise ValueError(
            f"superpixel_vote: labels and segments must be 1-D of equal length, got "
            f"{tuple(labels.shape)} and {tuple(segments.shape)}"
        )
    if labels.device != segments.device:
        raise ValueError(f"superpixel_vote: labels on {labels.device} but segments on {segments.device}")
    labels, segments = labels.long(), segments.long()
    counts = torch.bincount(segments * num_labels + labels, minlength=num_segments * num_labels)
    if counts.numel() != num_segments * num_labels:
        raise ValueError(
            f"superpixel_vote: a segment id >= num_segments ({num_segments}) or a label >= num_labels "
            f"({num_labels}) was given"
        )
    winner = counts.view(num_segments, num_labels).argmax(dim=1)
    return winner[segments]


def merge_small_segments(labels: np.ndarray, min_size: int, features: np.ndarray | None = None) -> np.ndarray:
    """Merge every segment smaller than ``min_size`` pixels into a 4-connected neighbour, repeating until
    none is left that has a neighbour.

    The neighbour is the one sharing the longest boundary (ties: the smallest id), or with ``features``
    (HxWxC, e.g. Lab colour) the one whose mean feature is nearest to the small segment's (ties: longest
    boundary, then smallest id). Returns an int64 map with contiguous ids from 0. Works on any HxW integer
    map (segments need not be connected); all merges of a round are applied at once through the connected
    components of the "merges into" graph, so chains of small segments collapse together.
    """
    labels = relabel_sequential(np.asarray(labels))
    if labels.ndim != 2:
        raise ValueError(f"merge_small_segments: expected an HxW label map, got shape {labels.shape}")
    flat_features = None
    if features is not None:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 3 or features.shape[:2] != labels.shape:
            raise ValueError(
                f"merge_small_segments: features must be HxWxC with HxW = {labels.shape}, got shape "
                f"{features.shape}"
            )
        flat_features = features.reshape(-1, features.shape[2])
    while True:
        n = int(labels.max()) + 1
        sizes = np.bincount(labels.ravel(), minlength=n)
        small = sizes < min_size
        if n == 1 or not small.any():
            return labels
        a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
        b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
        differ = a != b
        src = np.concatenate([a[differ], b[differ]])
        dst = np.concatenate([b[differ], a[differ]])
        from_small = small[src]
        if not from_small.any():
            return labels
        pairs, counts = np.unique(src[from_small] * n + dst[from_small], return_counts=True)
        psrc, pdst = pairs // n, pairs % n
        if flat_features is None:
            distance = np.zeros(len(pairs))
        else:
            sums = np.stack(
                [np.bincount(labels.ravel(), weights=c, minlength=n) for c in flat_features.T], axis=1
            )
            means = sums / sizes[:, None]
            distance = np.linalg.norm(means[psrc] - means[pdst], axis=1)
        # Per source: nearest mean feature (all 0 without features), longest boundary, smallest id.
        order = np.lexsort((pdst, -counts, distance, psrc))
        first = np.ones(len(order), dtype=bool)
        first[1:] = psrc[order][1:] != psrc[order][:-1]
        chosen = order[first]
        graph = coo_matrix((np.ones(len(chosen)), (psrc[chosen], pdst[chosen])), shape=(n, n))
        _, component = connected_components(graph, directed=True, connection="weak")
        labels = relabel_sequential(component[labels])
