"""Random thin-plate-spline (TPS) warps composed with a similarity, as batched tensor ops on any device.

Coordinate convention (the one of ``torch.nn.functional.grid_sample`` with ``align_corners=False``):
points are (x, y) normalised to [-1, 1] over the image *edges*, so the centre of pixel column ``j`` of a
``W``-wide image is at ``x = (2 j + 1) / W - 1`` (same for rows and ``y``); :func:`pixels_to_normalized` and
:func:`normalized_to_pixels` convert, with pixel centres at integer (x, y) = (column, row) as in the
datasets' key points.

A :class:`TPSWarp` is stored as its *backward* map ``f``: output-image point -> input-image point, because
that is what warping an image needs (each output pixel samples the input at ``f(q)``). ``f`` is the TPS that
sends the output-frame control points ``c_i`` (a regular grid) to input-frame points ``s_i``:

    f(q) = a_0 + A q + sum_i w_i U(||q - c_i||^2),   U(r^2) = r^2 log r^2,

solved exactly (interpolating, minimal bending energy) with one dense linear solve. Points are mapped
*forward* (input -> output, e.g. landmarks of the warped image) by inverting ``f`` with Newton's method,
so warped key points land exactly where the warped image shows them (up to solver tolerance), not on the
approximate inverse one would get from a second spline fitted the other way round.

The solve is written here rather than taken from kornia: ``kornia.geometry.transform.get_tps_transform``
(0.9) centres the kernels on its *destination* points, which is not the standard spline, and the control
grid here is fixed, so one small solve per batch serves every image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def pixels_to_normalized(points: Tensor, size: Sequence[int]) -> Tensor:
    """(x, y) pixel coordinates (centres at integers) of an image of ``size`` (H, W) -> normalised [-1, 1]."""
    height, width = int(size[0]), int(size[1])
    scale = points.new_tensor([2.0 / width, 2.0 / height])
    return (points + 0.5) * scale - 1.0


def normalized_to_pixels(points: Tensor, size: Sequence[int]) -> Tensor:
    """Inverse of :func:`pixels_to_normalized`: normalised (x, y) -> pixel (x, y) of an image of (H, W)."""
    height, width = int(size[0]), int(size[1])
    scale = points.new_tensor([width / 2.0, height / 2.0])
    return (points + 1.0) * scale - 0.5


def pixel_grid(height: int, width: int, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised (x, y) of every pixel centre, ``[H, W, 2]`` (the identity ``grid_sample`` grid)."""
    ys = (2.0 * torch.arange(height, device=device, dtype=dtype) + 1.0) / height - 1.0
    xs = (2.0 * torch.arange(width, device=device, dtype=dtype) + 1.0) / width - 1.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1)


def control_grid(grid_size: int, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """A ``grid_size`` x ``grid_size`` regular grid of (x, y) control points spanning [-1, 1], ``[N, 2]``."""
    if grid_size < 2:
        raise ValueError(
            f"grid_size must be >= 2 (a TPS needs at least 3 non-collinear points), got {grid_size}"
        )
    ticks = torch.linspace(-1.0, 1.0, grid_size, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack((gx.reshape(-1), gy.reshape(-1)), dim=-1)


def _radial(sq_dist: Tensor) -> Tensor:
    """The TPS kernel U = r^2 log r^2, taken as 0 at r = 0 (its limit)."""
    safe = torch.where(sq_dist > 0, sq_dist, torch.ones_like(sq_dist))
    return torch.where(sq_dist > 0, sq_dist * safe.log(), torch.zeros_like(sq_dist))


def _sq_dist(points: Tensor, centres: Tensor) -> Tensor:
    """Squared distances ``[B, P, N]`` between points ``[B, P, 2]`` and centres ``[B, N, 2]``."""
    return (points[:, :, None, :] - centres[:, None, :, :]).pow(2).sum(-1)


@dataclass(frozen=True)
class TPSWarp:
    """A batch of TPS warps, stored as the backward map ``f`` (output point -> input point), normalised.

    Attributes:
        centres: kernel centres = output-frame control points, ``[B, N, 2]``.
        kernel_weights: ``w``, ``[B, N, 2]`` (column 0 for x, 1 for y).
        affine: ``[B, 3, 2]``: row 0 is ``a_0``, rows 1-2 the linear part (``f(q) = a_0 + q @ affine[1:]``).
    """

    centres: Tensor
    kernel_weights: Tensor
    affine: Tensor

    @classmethod
    def fit(cls, centres: Tensor, targets: Tensor) -> TPSWarp:
        """The interpolating TPS with ``f(centres[b, i]) = targets[b, i]`` (both ``[B, N, 2]``)."""
        if centres.shape != targets.shape or centres.ndim != 3 or centres.shape[-1] != 2:
            raise ValueError(
                f"TPSWarp.fit: centres and targets must both be [B, N, 2], got {tuple(centres.shape)} and "
                f"{tuple(targets.shape)}"
            )
        batch, num = centres.shape[:2]
        kernel = _radial(_sq_dist(centres, centres))
        poly = torch.cat((centres.new_ones(batch, num, 1), centres), dim=-1)
        top = torch.cat((kernel, poly), dim=-1)
        bottom = torch.cat((poly.transpose(1, 2), centres.new_zeros(batch, 3, 3)), dim=-1)
        system = torch.cat((top, bottom), dim=1)
        rhs = torch.cat((targets, targets.new_zeros(batch, 3, 2)), dim=1)
        solution = torch.linalg.solve(system, rhs)
        return cls(centres, solution[:, :num], solution[:, num:])

    @property
    def batch_size(self) -> int:
        return int(self.centres.shape[0])

    def to(self, device=None, dtype: torch.dtype | None = None) -> TPSWarp:
        """The same warps with tensors on ``device`` / in ``dtype``."""
        return TPSWarp(
            *(t.to(device=device, dtype=dtype) for t in (self.centres, self.kernel_weights, self.affine))
        )

    # -- the backward map (output -> input) --------------------------------------------------------
    def backward_points(self, points: Tensor) -> Tensor:
        """``f``: output-frame points ``[B, P, 2]`` -> the input-frame points they sample from."""
        radial = _radial(_sq_dist(points, self.centres))
        return radial @ self.kernel_weights + points @ self.affine[:, 1:] + self.affine[:, None, 0]

    def jacobian(self, points: Tensor) -> Tensor:
        """``df/dq`` at output-frame points, ``[B, P, 2, 2]`` (row = output component of f, col = q's)."""
        diff = points[:, :, None, :] - self.centres[:, None, :, :]
        sq = diff.pow(2).sum(-1, keepdim=True)
        # d/dq [r^2 log r^2] = 2 (log r^2 + 1) (q - c), whose limit at r = 0 is 0
        safe = torch.where(sq > 0, sq, torch.ones_like(sq))
        grad_u = torch.where(sq > 0, 2.0 * (safe.log() + 1.0) * diff, torch.zeros_like(diff))
        kernel_part = torch.einsum("bpnk,bnj->bpjk", grad_u, self.kernel_weights)
        return kernel_part + self.affine[:, None, 1:].transpose(-1, -2)

    def grid(self, height: int, width: int) -> Tensor:
        """The ``grid_sample`` grid ``[B, H, W, 2]`` of the warp at output size (H, W)."""
        pixels = pixel_grid(height, width, device=self.centres.device, dtype=self.centres.dtype)
        flat = pixels.reshape(1, -1, 2).expand(self.batch_size, -1, -1)
        return self.backward_points(flat).reshape(self.batch_size, height, width, 2)

    def warp(self, x: Tensor, *, mode: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
        """Warp images or maps ``[B, C, H, W]`` (same size out); outside the input gives ``padding_mode``."""
        if x.ndim != 4 or x.shape[0] != self.batch_size:
            raise ValueError(
                f"TPSWarp.warp: expected [B, C, H, W] with B = {self.batch_size}, got {tuple(x.shape)}"
            )
        grid = self.grid(x.shape[-2], x.shape[-1]).to(x.dtype)
        return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)

    def valid_mask(self, height: int, width: int, threshold: float = 0.999) -> Tensor:
        """``[B, 1, H, W]`` bool: output pixels whose bilinear sample lies entirely inside the input."""
        ones = self.centres.new_ones(self.batch_size, 1, height, width)
        return self.warp(ones) >= threshold

    # -- the forward map (input -> output) -------------------------------------------------------
    def forward_points(self, points: Tensor, iterations: int = 12) -> Tensor:
        """Map input-frame points ``[B, P, 2]`` to where the warped image shows them: solves ``f(q) = p``.

        Newton's method from the inverse of the affine part; the warps sampled by :func:`random_tps_warp`
        are small non-linear perturbations of a similarity, so a few iterations reach float precision.
        """
        linear = self.affine[:, 1:]  # [B, 2, 2], f_affine(q) = a_0 + q @ linear
        q = (points - self.affine[:, None, 0]) @ torch.linalg.inv(linear)
        for _ in range(iterations):
            residual = self.backward_points(q) - points
            step = torch.linalg.solve(self.jacobian(q), residual.unsqueeze(-1)).squeeze(-1)
            q = q - step
        return q

    def warp_points(self, points: Tensor, size: Sequence[int] | None = None, iterations: int = 12) -> Tensor:
        """Forward-map key points; with ``size`` (H, W) they are pixel (x, y), otherwise normalised."""
        if size is None:
            return self.forward_points(points, iterations)
        normalised = pixels_to_normalized(points, size)
        return normalized_to_pixels(self.forward_points(normalised, iterations), size)


def random_tps_warp(
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    grid_size: int = 5,
    jitter: float = 0.01,
    rotation: float = 60.0,
    translation: float = 0.1,
    scale: Sequence[float] = (0.7, 2.0),
) -> TPSWarp:
    """Sample one warp per image: a TPS (jittered control grid) composed with a random similarity.

    Each output-frame control point ``c_i`` of a ``grid_size`` x ``grid_size`` grid over [-1, 1] is sent to
    ``s_i = R(theta) (c_i + e_i) / z + t`` in the input frame, with ``e_i ~ U(-jitter, jitter)^2``,
    ``theta ~ U(-rotation, rotation)`` degrees, ``t ~ U(-translation, translation)^2`` (normalised units,
    i.e. fractions of half the image) and a zoom ``z ~ U(scale)``: ``z > 1`` magnifies the image. These are
    the SCOPS ranges. Random numbers come from ``generator`` on the CPU (so a seed gives the same warps on
    every device); the warps are then built on ``device``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    low, high = float(scale[0]), float(scale[1])
    if not 0 < low <= high:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {tuple(scale)}")

    def uniform(*shape: int, bound: float) -> Tensor:
        return (torch.rand(*shape, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * bound

    centres = control_grid(grid_size, dtype=torch.float64).expand(batch_size, -1, -1)
    jittered = centres + uniform(batch_size, grid_size * grid_size, 2, bound=jitter)
    angle = uniform(batch_size, bound=math.radians(rotation))
    zoom = low + (high - low) * torch.rand(batch_size, generator=generator, dtype=torch.float64)
    shift = uniform(batch_size, 2, bound=translation)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # row-vector convention: s = p @ M + t with M = (R / z)^T
    matrix = torch.stack((torch.stack((cos, sin), -1), torch.stack((-sin, cos), -1)), dim=-2)
    targets = jittered @ matrix + shift[:, None, :]
    # float64 solve: the system is small and its conditioning costs float32 a few digits
    return TPSWarp.fit(centres.contiguous(), targets).to(device=device, dtype=dtype)


def identity_warp(batch_size: int, *, device=None, dtype: torch.dtype = torch.float32) -> TPSWarp:
    """Warps that leave images and points unchanged (for tests and ablations)."""
    return random_tps_warp(
        batch_size, device=device, dtype=dtype, jitter=0.0, rotation=0.0, translation=0.0, scale=(1.0, 1.0)
    )


__all__ = [
    "TPSWarp",
    "control_grid",
    "identity_warp",
    "normalized_to_pixels",
    "pixel_grid",
    "pixels_to_normalized",
    "random_tps_warp",
]
