"""Batched, seeded K-means (Lloyd) with k-means++ initialisation and NaN-free empty-cluster handling.

``kmeans`` clusters one problem ``[N, D]`` or ``B`` independent problems ``[B, N, D]`` at once; every step is
vectorised over the batch, and everything stays on the input's device and dtype. See ``docs/kmeans.md`` for
how this differs from fast-pytorch-kmeans and for the benchmark against scikit-learn.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["KMeansResult", "kmeans"]

_METRICS = ("euclidean", "cosine")
_INITS = ("k-means++", "plain-k-means++", "random")


class KMeansResult(NamedTuple):
    """Output of :func:`kmeans`; leading batch dimensions follow the input (none for ``[N, D]``)."""

    labels: Tensor
    """LongTensor ``[..., N]``: cluster index of every point, in ``[0, k)``."""
    centroids: Tensor
    """``[..., k, D]`` cluster centres (unit vectors for ``metric="cosine"``)."""
    inertia: Tensor
    """``[...]`` sum of squared Euclidean distances of the points to their centres (for ``"cosine"``,
    of the normalised points to the unit centres, i.e. the sum of ``2 - 2 cos``)."""
    iters: int
    """Lloyd iterations run, counted as scikit-learn's ``n_iter_`` (the largest over batch and restarts)."""


def _check_x(x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"kmeans: x must be a torch.Tensor [N, D] or [B, N, D], got {type(x).__name__}")
    if x.ndim not in (2, 3):
        raise ValueError(f"kmeans: x must have shape [N, D] or [B, N, D], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"kmeans: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"kmeans: x must hold at least one point and feature, got shape {tuple(x.shape)}")
    # The sum is a cheap screen (NaN and inf propagate); the elementwise check only runs to word the error.
    total = x.sum(dtype=torch.float32) if x.element_size() < 4 else x.sum()
    if not bool(torch.isfinite(total)):
        if bool(torch.isfinite(x).all()):
            raise ValueError("kmeans: x has values so large that their sum overflows; rescale the features")
        raise ValueError("kmeans: x contains NaN or infinite values; expected finite features")
    return x if x.ndim == 3 else x.unsqueeze(0)


def _check_scalars(k: int, n: int, iters: int, tol: float, metric: str, n_init: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"kmeans: k must be a positive int, got {k!r}")
    if k > n:
        raise ValueError(f"kmeans: k={k} exceeds the number of points N={n}; expected 1 <= k <= N")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"kmeans: iters must be a positive int, got {iters!r}")
    if not (isinstance(tol, (int, float)) and 0 <= tol < float("inf")):
        raise ValueError(f"kmeans: tol must be a finite number >= 0, got {tol!r}")
    if metric not in _METRICS:
        raise ValueError(f"kmeans: metric must be one of {_METRICS}, got {metric!r}")
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise ValueError(f"kmeans: n_init must be a positive int, got {n_init!r}")


def _explicit_init(init: Tensor, x: Tensor, k: int) -> Tensor:
    """Check a user-given ``[k, D]`` / ``[B, k, D]`` init; return it as ``[B, k, D]`` on x's device."""
    b, _, d = x.shape
    if init.shape not in (torch.Size([k, d]), torch.Size([b, k, d])):
        raise ValueError(
            f"kmeans: init tensor must have shape [k, D] = [{k}, {d}] or [B, k, D] = [{b}, {k}, {d}], "
            f"got {tuple(init.shape)}"
        )
    if not init.is_floating_point() or not bool(torch.isfinite(init).all()):
        raise ValueError("kmeans: init tensor must be floating point and finite")
    return init.to(device=x.device, dtype=x.dtype).expand(b, k, d).clone()


def _sq_dist_to(x: Tensor, c: Tensor) -> Tensor:
    """Squared distances ``[B, N]`` of every point to one centre per problem ``c [B, D]``.

    Direct differences rather than the matmul expansion: duplicates of a chosen centre must get exactly 0,
    otherwise rounding noise could let k-means++ or re-seeding pick a duplicate. cdist's direct mode does
    this without a [B, N, D] temporary (about 10x faster than ``(x - c).square().sum(-1)``).
    """
    d = torch.cdist(x, c[:, None, :], compute_mode="donot_use_mm_for_euclid_dist")
    return d.squeeze(-1).square()


def _sum_sq(x: Tensor) -> Tensor:
    """Per-problem sum of squares ``[B]`` of ``x [B, ...]`` as one dot product (no temporary)."""
    flat = x.reshape(x.shape[0], 1, -1)
    return torch.bmm(flat, flat.mT).view(-1)


def _sq_dist_to_many(x: Tensor, x_sq: Tensor, c: Tensor) -> Tensor:
    """Squared distances ``[B, N, L]`` of the points to ``L`` centres per problem ``c [B, L, D]``.

    The matmul expansion (one pass over x, several times faster than direct differences), with every value
    within its rounding error of 0 set to exactly 0: duplicates of a centre must get zero sampling weight.
    """
    scale = x_sq[..., None] + c.square().sum(-1)[:, None, :]
    d2 = torch.baddbmm(scale, x, c.mT, alpha=-2.0)
    rounding = 8.0 * x.shape[-1] ** 0.5 * torch.finfo(x.dtype).eps
    return d2.masked_fill_(d2 <= rounding * scale, 0.0)


def _kmeans_pp(x: Tensor, k: int, gen: torch.Generator, trials: int) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), vectorised over the batch.

    Every centre is drawn with probability proportional to the squared distance to the nearest centre
    chosen so far. With ``trials > 1`` (greedy k-means++, scikit-learn's variant) that many candidates are
    drawn and the one that lowers the total squared distance most is kept. The uniform numbers are shared
    by all problems (inverse-CDF sampling per problem), so a problem gets the same seeds in a batch as when
    clustered alone with the same seed.
    """
    b, n, _ = x.shape
    u = torch.rand(k, trials, generator=gen, device=x.device, dtype=torch.float64)
    rows = torch.arange(b, device=x.device)
    x_sq = x.square().sum(-1)
    first = (u[0, 0] * n).long().clamp_(max=n - 1).expand(b)
    centres = [x[rows, first]]
    d2 = _sq_dist_to_many(x, x_sq, centres[0][:, None, :]).squeeze(-1)
    for j in range(1, k):
        total = d2.sum(-1, keepdim=True)
        # All points coincide with chosen centres (k > distinct points): fall back to uniform sampling.
        weights = torch.where(total > 0, d2, torch.ones_like(d2)).double()
        cdf = weights.cumsum(-1)
        # right=True skips zero-weight points, i.e. duplicates of centres already chosen.
        idx = torch.searchsorted(cdf, u[j][None, :] * cdf[:, -1:], right=True).clamp_(max=n - 1)
        candidates = x[rows[:, None], idx]
        d2_candidates = _sq_dist_to_many(x, x_sq, candidates)
        if trials > 1:
            best = torch.minimum(d2[..., None], d2_candidates).sum(1).argmin(-1)
        else:
            best = torch.zeros_like(rows)
        centres.append(candidates[rows, best])
        d2 = torch.minimum(d2, d2_candidates[rows, :, best])
    return torch.stack(centres, dim=1)


def _random_init(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k distinct points chosen uniformly, the same indices for every problem of the batch."""
    idx = torch.randperm(x.shape[1], generator=gen, device=x.device)[:k]
    return x[:, idx].clone()


def _scores(x: Tensor, c: Tensor, out: Tensor | None = None) -> Tensor:
    """``||c||^2 - 2 x.c`` ``[B, N, K]``: the squared distance minus the per-point constant ``||x||^2``.

    ``out`` lets the Lloyd loop reuse one buffer instead of allocating (and page-faulting) every step.
    """
    return torch.baddbmm(c.square().sum(-1)[:, None, :], x, c.mT, alpha=-2.0, out=out)


def _flat_labels(labels: Tensor, k: int) -> Tensor:
    """Labels ``[B, N]`` as indices into the ``B * k`` clusters of the whole batch, flattened."""
    if labels.shape[0] > 1:
        labels = labels + k * torch.arange(labels.shape[0], device=labels.device)[:, None]
    return labels.reshape(-1)


def _cluster_sums(x: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per-cluster sums ``[B, k, D]`` and counts ``[B, k]`` of the points."""
    b, n, d = x.shape
    flat = _flat_labels(labels, k)
    counts = torch.bincount(flat, minlength=b * k).view(b, k)
    if x.device.type == "cpu":
        # O(N D), deterministic on the CPU; a one-hot matmul would cost O(N k D). Scattering along dim 0 of
        # the flattened batch is several times faster than along dim 1 of [B, k, D].
        index = flat[:, None].expand(b * n, d)
        sums = x.new_zeros(b * k, d).scatter_add_(0, index, x.reshape(b * n, d))
        return sums.view(b, k, d), counts
    # Accelerators: scatter_add uses atomics there (run-to-run different sums); the one-hot matmul is
    # deterministic and cheap on matmul hardware.
    onehot = (labels[:, None, :] == torch.arange(k, device=x.device)[None, :, None]).to(x.dtype)
    return torch.bmm(onehot, x), counts


def _reseed_empty(x: Tensor, centroids: Tensor, empty: Tensor) -> Tensor:
    """Move every empty cluster's centre onto a point, farthest-first, vectorised over the batch.

    Each point is scored by its squared distance to the nearest non-empty centre; the farthest point seeds
    the first empty cluster, scores are lowered by the distance to that seed, and so on. A seed therefore
    never duplicates another centre while a point with a positive score remains (i.e. while distinct
    points are left); after that duplicates are unavoidable and harmless (labels stay valid, no NaN).
    """
    b, _, _ = x.shape
    rows = torch.arange(b, device=x.device)
    scores = _scores(x, centroids).masked_fill_(empty[:, None, :], float("inf"))
    d2 = (scores.amin(-1) + x.square().sum(-1)).clamp_min_(0)
    n_empty = empty.sum(-1)
    # Stable sort puts each problem's empty clusters first, in index order.
    order = torch.sort((~empty).to(torch.uint8), dim=-1, stable=True).indices
    centroids = centroids.clone()
    for j in range(int(n_empty.max())):
        valid = j < n_empty
        far = d2.argmax(-1)
        seed = x[rows, far]
        target = order[:, j]
        centroids[rows, target] = torch.where(valid[:, None], seed, centroids[rows, target])
        d2 = torch.where(valid[:, None], torch.minimum(d2, _sq_dist_to(x, seed)), d2)
    return centroids


def _lloyd(
    x: Tensor, init: Tensor, iters: int, threshold: Tensor | None, cosine: bool
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Lloyd iterations from ``init``; returns labels, centroids, inertia and the iterations run.

    An iteration assigns the points and moves the centres to the means. A problem stops at an exact fixed
    point (no label changed, so the centres cannot move again) or, with ``threshold`` [B], once its summed
    squared centre shift is <= it. A stopped problem keeps its centres while the others go on, all in the
    same vectorised steps.
    """
    b, n, d = x.shape
    k = init.shape[1]
    centroids = F.normalize(init, dim=-1) if cosine else init
    scores = x.new_empty(b, n, k)
    active = torch.ones(b, device=x.device, dtype=torch.bool)
    previous: Tensor | None = None
    at_fixed_point = False
    run = 0
    while run < iters:
        run += 1
        labels = _scores(x, centroids, out=scores).argmin(-1)
        if previous is not None:
            active &= (labels != previous).any(-1)
            if not bool(active.any()):
                # Labels are those of the current centres: the final assignment below would repeat this one.
                at_fixed_point = True
                break
        previous = labels
        sums, counts = _cluster_sums(x, labels, k)
        new = sums / counts.clamp_min(1)[..., None]
        empty = counts == 0
        if bool(empty.any()):
            new = _reseed_empty(x, new, empty)
        if cosine:
            new = F.normalize(new, dim=-1)
        if threshold is not None:
            shift = (new - centroids).square().sum((-1, -2))
        centroids = new if bool(active.all()) else torch.where(active[:, None, None], new, centroids)
        if threshold is not None:
            # <= rather than <: constant data has threshold 0 and must stop once nothing moves.
            active &= shift > threshold
            if not bool(active.any()):
                break
    if not at_fixed_point:
        labels = _scores(x, centroids, out=scores).argmin(-1)
    # Exact inertia from the differences (the matmul expansion loses digits to cancellation).
    residual = centroids.reshape(b * k, d).index_select(0, _flat_labels(labels, k)).view(b, n, d).sub_(x)
    return labels, centroids, _sum_sq(residual), run


def kmeans(
    x: Tensor,
    k: int,
    iters: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    init: str | Tensor = "k-means++",
    metric: str = "euclidean",
    n_init: int = 1,
) -> KMeansResult:
    """Cluster the rows of ``x`` ([N, D], or B independent problems [B, N, D]) into ``k`` clusters.

    Lloyd's algorithm, vectorised over the batch, on x's device and dtype.

    - ``init``: ``"k-means++"`` (greedy, as scikit-learn: the best of ``2 + ln k`` D^2-sampled candidates
      per centre), ``"plain-k-means++"`` (one candidate per centre, as Arthur & Vassilvitskii; about 3x
      cheaper, a few % higher inertia at k >= 64), ``"random"`` (k distinct points), or a tensor of centres
      ``[k, D]`` (shared by the batch) or ``[B, k, D]``.
    - ``metric="cosine"``: spherical K-means; points are L2-normalised and centres are unit vectors.
    - Stopping, per problem: at an exact fixed point (no label changed, so nothing can move any more), or
      once the summed squared movement of its centres is at most ``tol * mean feature variance``
      (scikit-learn's scale-free criterion). ``tol=0`` keeps only the fixed-point test, as scikit-learn.
    - Empty clusters are re-seeded with the points farthest from the current centres, so centres are never
      NaN and never duplicated while distinct points remain; ``k`` above the number of distinct points still
      gives valid labels (then some centres coincide).
    - ``n_init > 1`` runs that many seeded restarts and keeps, per problem, the one with the lowest inertia.
    - Deterministic for a given ``seed`` on the CPU.
    - float16/bfloat16 inputs are clustered in float32 (sums of many half values overflow); the centroids
      come back in x's dtype, the inertia in float32.
    """
    xb = _check_x(x)
    if xb.element_size() < 4:
        # Cluster sums of many half-precision values overflow (fp16 tops out at 65504): work in float32.
        xb = xb.float()
    b, n, _ = xb.shape
    _check_scalars(k, n, iters, tol, metric, n_init)
    if isinstance(init, Tensor):
        if n_init != 1:
            raise ValueError(f"kmeans: n_init={n_init} with an init tensor repeats one run; use n_init=1")
        given = _explicit_init(init, xb, k)
    elif init not in _INITS:
        raise ValueError(f"kmeans: init must be one of {_INITS} or a tensor of centres, got {init!r}")

    cosine = metric == "cosine"
    if cosine:
        data, offset = F.normalize(xb, dim=-1), None
    else:
        # Centring (as scikit-learn does) keeps ||x||^2 small so the matmul expansion loses fewer digits.
        offset = xb.mean(dim=1, keepdim=True)
        data = xb - offset
    threshold = None
    if tol > 0:
        # Mean feature variance = (sum ||x||^2 - N ||mean||^2) / (N D); Tensor.var is slow over dim 1.
        n_d = n * xb.shape[-1]
        centre = data.mean(dim=1)
        threshold = tol * (_sum_sq(data) - n * centre.square().sum(-1)).clamp_min(0) / n_d

    gen = torch.Generator(device=xb.device)
    gen.manual_seed(seed)
    best: tuple[Tensor, Tensor, Tensor] | None = None
    max_run = 0
    for _ in range(n_init):
        if isinstance(init, Tensor):
            start = given if cosine else given - offset
        elif init == "k-means++":
            start = _kmeans_pp(data, k, gen, trials=2 + int(math.log(k)))
        elif init == "plain-k-means++":
            start = _kmeans_pp(data, k, gen, trials=1)
        else:
            start = _random_init(data, k, gen)
        labels, centroids, inertia, run = _lloyd(data, start, iters, threshold, cosine)
        max_run = max(max_run, run)
        if best is None:
            best = (labels, centroids, inertia)
        else:
            better = inertia < best[2]
            best = (
                torch.where(better[:, None], labels, best[0]),
                torch.where(better[:, None, None], centroids, best[1]),
                torch.where(better, inertia, best[2]),
            )
    labels, centroids, inertia = best
    if offset is not None:
        centroids = centroids + offset
    centroids = centroids.to(x.dtype)
    if x.ndim == 2:
        labels, centroids, inertia = labels[0], centroids[0], inertia[0]
    return KMeansResult(labels=labels, centroids=centroids, inertia=inertia, iters=max_run)
