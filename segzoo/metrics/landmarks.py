"""Landmarks from unsupervised parts (SCOPS protocol, docs EVALUATION.md).

Part centres [N, K, 2] on the training split are regressed onto ground-truth landmarks [N, L, 2] with a
linear map WITHOUT intercept after standardising both sides with the training statistics; on the evaluated
split the error of an image is the mean Euclidean distance over its L landmarks divided by its inter-ocular
distance (the distance between two ground-truth points, by default rows 0 and 1: the eyes of the 5-point
face convention). The reported number is the mean over images, in percent.

All coordinates are (x, y) in pixels of the evaluated image.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from segzoo.metrics.confusion import float_dtype

# A standard deviation below this (in pixels) means the coordinate is constant over the training set: it
# carries no information and is left unscaled instead of blowing up to inf.
_CONSTANT_STD = 1e-8
# Inter-ocular distances at or below this (pixels) make the normalised error meaningless.
_MIN_INTER_OCULAR = 1e-6


def _check_points(points: Tensor, what: str, num_points: int | None = None) -> Tensor:
    """``points`` as a tensor [N, P, 2] with finite values, else a ValueError naming what was expected."""
    points = torch.as_tensor(points)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"{what} must have shape [N, P, 2] (x, y in pixels), got {tuple(points.shape)}")
    if num_points is not None and points.shape[1] != num_points:
        raise ValueError(f"{what} must have {num_points} points per image, got shape {tuple(points.shape)}")
    if points.is_complex() or points.dtype == torch.bool:
        raise TypeError(f"{what} must hold real coordinates, got dtype {points.dtype}")
    if not points.is_floating_point():
        return points
    finite = torch.isfinite(points)
    if not bool(finite.all()):
        sample, point = (int(i) for i in torch.nonzero(~finite.all(dim=-1))[0])
        raise ValueError(
            f"{what}: sample {sample}, point {point} is not finite: {points[sample, point].tolist()}"
        )
    return points


def _name(sources: Sequence[str] | None, index: int) -> str:
    """The source path of sample ``index`` when known, else its position."""
    if sources is not None and index < len(sources):
        return f"sample {index} ({sources[index]})"
    return f"sample {index}"


@dataclass
class LandmarkRegressor:
    """A fitted linear map from standardised part centres to standardised landmarks (no intercept).

    ``weight`` is [2K, 2L]; the means/stds are the training statistics of the flattened coordinates
    (x0, y0, x1, y1, ...). Everything is float64 on the CPU: the fit is tiny and exactness matters more.
    """

    weight: Tensor
    x_mean: Tensor
    x_std: Tensor
    y_mean: Tensor
    y_std: Tensor
    num_parts: int
    num_landmarks: int
    num_samples: int
    ridge: float = 0.0

    def predict(self, centres: Tensor) -> Tensor:
        """Landmarks [N, L, 2] for part centres [N, K, 2], on the centres' device (float64 where the
        backend has it)."""
        centres = _check_points(centres, "part centres", self.num_parts)
        device = centres.device
        x = centres.detach().to("cpu", torch.float64).reshape(len(centres), -1)
        y = ((x - self.x_mean) / self.x_std) @ self.weight * self.y_std + self.y_mean
        return y.reshape(len(centres), self.num_landmarks, 2).to(device, float_dtype(device))


def fit_landmark_regressor(centres: Tensor, landmarks: Tensor, ridge: float = 0.0) -> LandmarkRegressor:
    """Fit the SCOPS landmark regressor on training part centres [N, K, 2] and landmarks [N, L, 2].

    Both sides are standardised per coordinate with the training mean and standard deviation, then a
    least-squares map without intercept is solved in float64 (``torch.linalg.lstsq``; rank-deficient inputs,
    e.g. a part whose centre never moves, get the minimum-norm solution). ``ridge`` > 0 adds
    ``ridge * ||W||^2`` (in standardised units). Without ridge, at least 2K + 1 samples are needed (the
    centring uses one degree of freedom, the map has 2K inputs); fewer is a ValueError saying so. With a
    ridge, fewer samples only warn.
    """
    centres = _check_points(centres, "part centres")
    landmarks = _check_points(landmarks, "landmarks")
    if len(centres) != len(landmarks):
        raise ValueError(
            f"{len(centres)} samples of part centres {tuple(centres.shape)} but {len(landmarks)} of "
            f"landmarks {tuple(landmarks.shape)}; expected one row of each per training image"
        )
    if ridge < 0 or not math.isfinite(ridge):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge}")
    num_samples, num_parts, num_landmarks = len(centres), centres.shape[1], landmarks.shape[1]
    needed = 2 * num_parts + 1
    if num_samples < 2:
        raise ValueError(f"the landmark regressor needs at least 2 training samples, got {num_samples}")
    if num_samples < needed:
        message = (
            f"the landmark regressor maps {num_parts} part centres ({2 * num_parts} coordinates) and "
            f"needs at least {needed} training samples, got {num_samples}"
        )
        if ridge == 0:
            raise ValueError(f"{message}; use more training images or set ridge > 0")
        warnings.warn(f"{message}; the fit relies on ridge={ridge}", stacklevel=2)

    x = centres.detach().to("cpu", torch.float64).reshape(num_samples, -1)
    y = landmarks.detach().to("cpu", torch.float64).reshape(num_samples, -1)
    x_mean, x_std = x.mean(0), x.std(0, correction=0)
    y_mean, y_std = y.mean(0), y.std(0, correction=0)
    x_std = torch.where(x_std > _CONSTANT_STD, x_std, torch.ones_like(x_std))
    y_std = torch.where(y_std > _CONSTANT_STD, y_std, torch.ones_like(y_std))
    xs, ys = (x - x_mean) / x_std, (y - y_mean) / y_std
    if ridge > 0:
        # Ridge as ordinary least squares on rows sqrt(ridge) * I appended to the design (targets 0).
        xs = torch.cat([xs, math.sqrt(ridge) * torch.eye(xs.shape[1], dtype=xs.dtype)])
        ys = torch.cat([ys, torch.zeros(xs.shape[1], ys.shape[1], dtype=ys.dtype)])
    weight = torch.linalg.lstsq(xs, ys, driver="gelsd").solution
    return LandmarkRegressor(
        weight=weight,
        x_mean=x_mean,
        x_std=x_std,
        y_mean=y_mean,
        y_std=y_std,
        num_parts=num_parts,
        num_landmarks=num_landmarks,
        num_samples=num_samples,
        ridge=float(ridge),
    )


def normalised_error(
    pred: Tensor,
    gt: Tensor,
    eye_indices: tuple[int, int] = (0, 1),
    sources: Sequence[str] | None = None,
) -> Tensor:
    """Per-image landmark error [N]: mean over the L points of ||pred - gt||_2 divided by the distance
    between the ground-truth points ``eye_indices`` (a fraction; x100 for percent).

    ``pred`` and ``gt`` are [N, L, 2] (x, y) pixels. A zero (or non-finite) inter-ocular distance is a
    ValueError naming the sample (its path when ``sources`` gives one per image).
    """
    gt = _check_points(gt, "ground-truth landmarks")
    pred = _check_points(pred, "predicted landmarks")
    if pred.shape != gt.shape:
        raise ValueError(
            f"predicted landmarks {tuple(pred.shape)} do not match ground-truth landmarks {tuple(gt.shape)}"
        )
    left, right = (int(i) for i in eye_indices)
    num_points = gt.shape[1]
    if left == right or not (0 <= left < num_points and 0 <= right < num_points):
        raise ValueError(
            f"eye_indices {tuple(eye_indices)} must be two different point indices in 0..{num_points - 1}"
        )
    dtype = float_dtype(gt.device)
    gt = gt.to(dtype)
    pred = pred.to(gt.device, dtype)
    inter_ocular = torch.linalg.vector_norm(gt[:, left] - gt[:, right], dim=-1)
    bad = ~(inter_ocular > _MIN_INTER_OCULAR)
    if bool(bad.any()):
        index = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"{_name(sources, index)}: inter-ocular distance {float(inter_ocular[index])} between landmarks "
            f"{left} {gt[index, left].tolist()} and {right} {gt[index, right].tolist()} is degenerate; "
            "expected distinct eye points"
        )
    return torch.linalg.vector_norm(pred - gt, dim=-1).mean(dim=-1) / inter_ocular


class LandmarkError(Metric):
    """Mean normalised landmark error over a set (a fraction; the callback reports percent).

    States: the sum of per-image errors and the image count, both summed across processes, so the mean is
    exact under DDP when no sample is repeated. ``dtype`` is that of the sum (float32 for backends without
    float64, such as MPS).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    error_sum: Tensor
    count: Tensor

    def __init__(
        self, eye_indices: tuple[int, int] = (0, 1), dtype: torch.dtype = torch.float64, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.eye_indices = (int(eye_indices[0]), int(eye_indices[1]))
        self.add_state("error_sum", default=torch.zeros((), dtype=dtype), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, gt: Tensor, sources: Sequence[str] | None = None) -> None:
        """Add a batch of predicted and ground-truth landmarks [B, L, 2]; ``sources`` names the images."""
        errors = normalised_error(pred, gt, self.eye_indices, sources)
        self.error_sum += errors.sum().to(self.error_sum.device, self.error_sum.dtype)
        self.count += len(errors)

    def compute(self) -> Tensor:
        """The mean error (NaN when nothing was added)."""
        if int(self.count) == 0:
            return torch.tensor(float("nan"), dtype=self.error_sum.dtype, device=self.error_sum.device)
        return self.error_sum / self.count


def grid_centres(num_parts: int, height: int, width: int) -> Tensor:
    """A fixed regular grid of ``num_parts`` centres [K, 2] (x, y) in pixels of an image H x W.

    The grid has about as many columns per row as the image's aspect ratio asks for; cells are filled
    row-major and each centre sits in the middle of its cell (pixel (i, j) has its centre at (x, y) = (j, i)).
    As a method's output it is the "no parts" baseline: the regressor can only predict the mean landmarks.
    """
    if int(num_parts) != num_parts or num_parts < 1:
        raise ValueError(f"grid_centres: num_parts must be a positive integer, got {num_parts!r}")
    if height < 1 or width < 1:
        raise ValueError(f"grid_centres: image size must be positive, got height={height}, width={width}")
    num_parts = int(num_parts)
    rows = max(1, min(num_parts, round(math.sqrt(num_parts * height / width))))
    cols = math.ceil(num_parts / rows)
    rows = math.ceil(num_parts / cols)
    k = torch.arange(num_parts, dtype=torch.float64)
    x = (k % cols + 0.5) * width / cols - 0.5
    y = (torch.div(k, cols, rounding_mode="floor") + 0.5) * height / rows - 0.5
    return torch.stack([x, y], dim=-1).float()


def part_centres(maps: Tensor, num_parts: int | None = None) -> Tensor:
    """Centre of mass (x, y) in pixels of each foreground part: [B, K, 2].

    ``maps`` is either soft part responses [B, K + 1, H, W] (channel 0 = background, e.g. a softmax) or a
    label map [B, H, W] with ids 0 (background) .. ``num_parts`` (needed then; other ids, such as the
    ignore index of padding, count for no part). A part with no mass in an image takes the image centre,
    so the regression stays defined (the method pays for a missing part in the error). On the ``parts`` of
    a dataset this is the oracle baseline.
    """
    maps = torch.as_tensor(maps)
    if maps.ndim == 3 and not maps.is_floating_point():
        if num_parts is None or num_parts < 1:
            raise ValueError(f"part_centres: a label map {tuple(maps.shape)} needs num_parts >= 1")
        ids = torch.arange(1, num_parts + 1, device=maps.device).view(1, -1, 1, 1)
        weights = (maps.unsqueeze(1) == ids).to(float_dtype(maps.device))
    elif maps.ndim == 4 and maps.is_floating_point():
        if maps.shape[1] < 2:
            raise ValueError(
                f"part_centres: soft maps need background + parts channels, got {tuple(maps.shape)}"
            )
        if num_parts is not None and maps.shape[1] != num_parts + 1:
            raise ValueError(
                f"part_centres: soft maps {tuple(maps.shape)} do not have num_parts + 1 = {num_parts + 1} "
                "channels"
            )
        weights = maps[:, 1:].to(float_dtype(maps.device)).clamp(min=0)
    else:
        raise ValueError(
            "part_centres: expected soft maps [B, K + 1, H, W] (float) or a label map [B, H, W] (integer), "
            f"got shape {tuple(maps.shape)} dtype {maps.dtype}"
        )
    height, width = weights.shape[-2:]
    ys = torch.arange(height, dtype=weights.dtype, device=weights.device).view(1, 1, -1, 1)
    xs = torch.arange(width, dtype=weights.dtype, device=weights.device).view(1, 1, 1, -1)
    mass = weights.sum(dim=(-2, -1))
    cx = (weights * xs).sum(dim=(-2, -1)) / mass.clamp(min=torch.finfo(weights.dtype).tiny)
    cy = (weights * ys).sum(dim=(-2, -1)) / mass.clamp(min=torch.finfo(weights.dtype).tiny)
    empty = mass <= 0
    cx = torch.where(empty, torch.full_like(cx, (width - 1) / 2), cx)
    cy = torch.where(empty, torch.full_like(cy, (height - 1) / 2), cy)
    return torch.stack([cx, cy], dim=-1)
