"""segzoo's K-means vs scikit-learn KMeans and fast-pytorch-kmeans on R2O-sized inputs.

R2O clusters the superpixel embeddings of a whole batch jointly: images x superpixels points of the layer3
width (1024), for K = 128 down to 4 over training. The points here are synthetic stand-ins with the same
shape and statistics class (non-negative, L2-normalised, loosely clustered), so Lloyd needs tens of
iterations, as on real features.

All three libraries start from the same k-means++ centres (scikit-learn's ``kmeans_plusplus``) and run the
same number of Lloyd iterations: scikit-learn runs first with ``tol=0`` (it still stops at strict
convergence, i.e. when no label changes), and its ``n_iter_`` is then given to the other two with early
stopping disabled, so all do the same work. Times are the best of ``--repeats`` runs after one warm-up.
The inertia of every result is computed the same way (final centres, points assigned to the nearest).

    .venv/bin/python benchmarks/kmeans.py                      # R2O sizes, about a minute on 2 cores
    .venv/bin/python benchmarks/kmeans.py --ks 16 --repeats 1  # quicker
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from fast_pytorch_kmeans import KMeans as FastKMeans
from sklearn.cluster import KMeans as SkKMeans
from sklearn.cluster import kmeans_plusplus
from threadpoolctl import threadpool_limits

from segzoo.ops.kmeans import kmeans


def r2o_like_points(n: int, dim: int, n_modes: int, noise: float, seed: int) -> torch.Tensor:
    """``[n, dim]`` float32 points: noisy copies of ``n_modes`` directions, ReLU'd and L2-normalised."""
    gen = torch.Generator().manual_seed(seed)
    modes = torch.randn(n_modes, dim, generator=gen)
    which = torch.randint(0, n_modes, (n,), generator=gen)
    x = modes[which] + noise * torch.randn(n, dim, generator=gen)
    return torch.nn.functional.normalize(x.clamp_min(0), dim=-1)


def inertia_of(x: torch.Tensor, centroids: torch.Tensor) -> float:
    """Sum of squared distances of the points to their nearest centre (float64, exact differences)."""
    x64, c64 = x.double(), centroids.double()
    return float(torch.cdist(x64, c64).amin(-1).square().sum())


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best wall-clock seconds over ``repeats`` calls after one untimed warm-up; returns the last output."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def run(args: argparse.Namespace) -> None:
    """Print one table row per K: seconds, inertia and the ratios."""
    n = args.images * args.superpixels
    x = r2o_like_points(n, args.dim, args.modes, args.noise, args.seed)
    xn = x.numpy()
    print(
        f"points: {args.images} images x {args.superpixels} superpixels = {n} x {args.dim} float32; "
        f"max iters {args.iters}; best of {args.repeats}; torch threads {torch.get_num_threads()}"
    )
    header = (
        f"{'K':>4} {'iters':>5} | {'sklearn s':>9} {'fast-pt s':>9} {'segzoo s':>9} | "
        f"{'sk/segzoo':>9} {'fpk/segzoo':>10} | {'inertia sk':>10} {'fpk':>10} {'segzoo':>10} {'segzoo/sk':>9}"
    )
    print(header)
    print("-" * len(header))
    for k in args.ks:
        init_np, _ = kmeans_plusplus(xn, k, random_state=args.seed)
        init = torch.from_numpy(init_np)

        def sk_fit(k: int = k, init_np: np.ndarray = init_np) -> SkKMeans:
            return SkKMeans(
                n_clusters=k, init=init_np, n_init=1, max_iter=args.iters, tol=0.0, algorithm="lloyd"
            ).fit(xn)

        t_sk, sk = best_time(sk_fit, args.repeats)
        iters = int(sk.n_iter_)

        def fpk_fit(k: int = k, iters: int = iters, init: torch.Tensor = init) -> torch.Tensor:
            # tol=-1: its stop test is `error <= tol`, so this never stops early.
            model = FastKMeans(n_clusters=k, max_iter=iters, tol=-1.0, mode="euclidean")
            model.fit_predict(x, centroids=init.clone())
            return model.centroids

        t_fpk, fpk_centroids = best_time(fpk_fit, args.repeats)

        def sz_fit(k: int = k, iters: int = iters, init: torch.Tensor = init) -> torch.Tensor:
            return kmeans(x, k, iters=iters, tol=0.0, init=init).centroids

        t_sz, sz_centroids = best_time(sz_fit, args.repeats)

        i_sk = inertia_of(x, torch.from_numpy(sk.cluster_centers_))
        i_fpk = inertia_of(x, fpk_centroids)
        i_sz = inertia_of(x, sz_centroids)
        print(
            f"{k:>4} {iters:>5} | {t_sk:>9.3f} {t_fpk:>9.3f} {t_sz:>9.3f} | "
            f"{t_sk / t_sz:>8.1f}x {t_fpk / t_sz:>9.1f}x | {i_sk:>10.3f} {i_fpk:>10.3f} {i_sz:>10.3f} "
            f"{i_sz / i_sk:>9.4f}"
        )


def main() -> None:
    """Parse the sizes and run the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32, help="images per batch")
    parser.add_argument("--superpixels", type=int, default=100, help="superpixels per image")
    parser.add_argument("--dim", type=int, default=1024, help="feature width (R2O: layer3, 1024)")
    parser.add_argument("--ks", type=int, nargs="+", default=[128, 64, 16, 4], help="cluster counts")
    parser.add_argument("--iters", type=int, default=50, help="maximum Lloyd iterations")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per library (best is kept)")
    parser.add_argument("--modes", type=int, default=48, help="directions the synthetic points scatter around")
    parser.add_argument("--noise", type=float, default=1.0, help="noise around the directions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for every library (torch, OpenMP, BLAS); see docs"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        run(args)


if __name__ == "__main__":
    main()
