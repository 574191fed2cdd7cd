"""segzoo's K-means vs scikit-learn KMeans and fast-pytorch-kmeans on R2O-sized inputs.

R2O clusters the superpixel embeddings of a whole batch jointly: images x superpixels points of the layer3
width (1024), for K = 128 down to 4 over training. The points here are synthetic stand-ins with the same
shape and statistics class (non-negative, L2-normalised, loosely clustered), so Lloyd needs tens of
iterations, as on real features.

Sections "joint" (R2O's problem) and "per-image" (32 problems at once) compare equal work. All three
libraries start from the same k-means++ centres (scikit-learn's ``kmeans_plusplus``) and do the same number
of Lloyd iterations: scikit-learn runs with ``tol=0`` (it then stops only at strict convergence, when no
label changes) and its ``n_iter_`` becomes the iteration budget of the other two, also without a tolerance
(segzoo ``tol=0``, which likewise stops only at that fixed point; fast-pytorch-kmeans ``tol=-1``, which
never stops early). The tables show both iteration counts. Section "own-init" instead runs each library as
R2O would call it (its own k-means++, ``tol=1e-4``, up to 200 iterations), initialisation included.

Times are the best of ``--repeats`` rounds after a warm-up, the libraries taking turns within a round; by
default they are process CPU seconds with one thread per library, because wall time on a shared,
oversubscribed machine mostly measures the other jobs. Inertia is recomputed the same way for every result
(final centres, each point to its nearest).

    .venv/bin/python benchmarks/kmeans.py                      # R2O sizes, about 75 s on 2 busy cores
    .venv/bin/python benchmarks/kmeans.py --ks 16 --repeats 1  # quicker
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from fast_pytorch_kmeans import KMeans as FastKMeans
from fast_pytorch_kmeans import MultiKMeans as FastMultiKMeans
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


Clock = Callable[[], float]
CLOCKS: dict[str, Clock] = {"cpu": time.process_time, "wall": time.perf_counter}


def race(fns: dict[str, Callable[[], object]], repeats: int, clock: Clock) -> dict[str, tuple[float, object]]:
    """Best time of every function over ``repeats`` rounds after one untimed warm-up each.

    The functions take turns within a round, so a change in the machine's load hits all of them alike.
    Returns ``{name: (seconds, last output)}``.
    """
    outputs = {name: fn() for name, fn in fns.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            outputs[name] = fn()
            best[name] = min(best[name], clock() - start)
    return {name: (best[name], outputs[name]) for name in fns}


def header() -> str:
    """Table header shared by both sections."""
    line = (
        f"{'K':>4} {'iters sk/sz':>11} | {'sklearn s':>9} {'fast-pt s':>9} {'segzoo s':>9} | "
        f"{'sk/segzoo':>9} {'fpk/segzoo':>10} | "
        f"{'inertia sk':>10} {'fpk':>10} {'segzoo':>10} {'segzoo/sk':>9}"
    )
    return f"{line}\n{'-' * len(line)}"


def row(k: int, iters: str, times: tuple[float, float, float], inertias: tuple[float, float, float]) -> str:
    """One table line: seconds, speed ratios (higher = segzoo faster), inertias and their ratio."""
    (t_sk, t_fpk, t_sz), (i_sk, i_fpk, i_sz) = times, inertias
    return (
        f"{k:>4} {iters:>11} | {t_sk:>9.3f} {t_fpk:>9.3f} {t_sz:>9.3f} | "
        f"{t_sk / t_sz:>8.1f}x {t_fpk / t_sz:>9.1f}x | {i_sk:>10.3f} {i_fpk:>10.3f} {i_sz:>10.3f} "
        f"{i_sz / i_sk:>9.4f}"
    )


def sklearn_fit(x: np.ndarray, init: np.ndarray, max_iter: int) -> SkKMeans:
    """scikit-learn's Lloyd from the given centres; tol=0 leaves only its strict-convergence stop."""
    model = SkKMeans(n_clusters=len(init), init=init, n_init=1, max_iter=max_iter, tol=0.0, algorithm="lloyd")
    return model.fit(x)


def joint(args: argparse.Namespace) -> None:
    """R2O's case: one K-means over all superpixels of the batch, for every K."""
    n = args.images * args.superpixels
    x = r2o_like_points(n, args.dim, args.modes, args.noise, args.seed)
    xn = x.numpy()
    print(f"\njoint: one problem of {args.images} images x {args.superpixels} superpixels = {n} x {args.dim}")
    print(header())
    for k in args.ks:
        init_np, _ = kmeans_plusplus(xn, k, random_state=args.seed)
        init = torch.from_numpy(init_np)
        iters = int(sklearn_fit(xn, init_np, args.iters).n_iter_)

        def fpk_fit(k: int = k, iters: int = iters, init: torch.Tensor = init) -> torch.Tensor:
            # tol=-1: its stop test is `error <= tol`, so it runs exactly `iters` iterations.
            model = FastKMeans(n_clusters=k, max_iter=iters, tol=-1.0, mode="euclidean")
            model.fit_predict(x, centroids=init.clone())
            return model.centroids

        results = race(
            {
                "sklearn": lambda init_np=init_np: sklearn_fit(xn, init_np, args.iters).cluster_centers_,
                "fpk": fpk_fit,
                "segzoo": lambda k=k, iters=iters, init=init: kmeans(x, k, iters=iters, tol=0.0, init=init),
            },
            args.repeats,
            CLOCKS[args.clock],
        )
        segzoo = results["segzoo"][1]
        centres = (torch.from_numpy(results["sklearn"][1]), results["fpk"][1], segzoo.centroids)
        print(
            row(
                k,
                f"{iters}/{segzoo.iters}",
                tuple(results[name][0] for name in ("sklearn", "fpk", "segzoo")),
                tuple(inertia_of(x, c) for c in centres),
            )
        )


def per_image(args: argparse.Namespace) -> None:
    """Batched case: one K-means per image, all images at once (segzoo, fast-pytorch-kmeans' MultiKMeans)
    against a loop of scikit-learn fits."""
    b, n = args.images, args.superpixels
    x = r2o_like_points(b * n, args.dim, args.modes, args.noise, args.seed).view(b, n, args.dim)
    print(f"\nper image: {b} problems of {n} x {args.dim}, batched (scikit-learn: a loop over the images)")
    print(header())
    for k in (k for k in args.ks if k <= n):
        inits = np.stack([kmeans_plusplus(p.numpy(), k, random_state=args.seed)[0] for p in x])
        init = torch.from_numpy(inits)
        runs = [int(sklearn_fit(x[i].numpy(), inits[i], args.iters).n_iter_) for i in range(b)]
        # The others run scikit-learn's longest run: never less work than scikit-learn does.
        iters = max(runs)

        def sk_fit(inits: np.ndarray = inits) -> np.ndarray:
            return np.stack(
                [sklearn_fit(x[i].numpy(), inits[i], args.iters).cluster_centers_ for i in range(b)]
            )

        def fpk_fit(k: int = k, iters: int = iters, init: torch.Tensor = init) -> torch.Tensor:
            model = FastMultiKMeans(n_clusters=k, max_iter=iters, tol=-1.0, mode="euclidean")
            model.fit_predict(x, centroids=init.clone())
            return model.centroids

        results = race(
            {
                "sklearn": sk_fit,
                "fpk": fpk_fit,
                "segzoo": lambda k=k, iters=iters, init=init: kmeans(x, k, iters=iters, tol=0.0, init=init),
            },
            args.repeats,
            CLOCKS[args.clock],
        )
        segzoo = results["segzoo"][1]
        centres = (torch.from_numpy(results["sklearn"][1]), results["fpk"][1], segzoo.centroids)
        print(
            row(
                k,
                f"{min(runs)}-{iters}/{segzoo.iters}",
                tuple(results[name][0] for name in ("sklearn", "fpk", "segzoo")),
                tuple(sum(inertia_of(x[i], c[i]) for i in range(b)) for c in centres),
            )
        )


def own_init(args: argparse.Namespace) -> None:
    """R2O's call as each library does it by default: its own k-means++ and tolerance stop (up to 200 iters).

    Not equal work (different seeds, inits and stopping rules): this shows the cost of one R2O K-means
    call end to end, initialisation included, and the inertia each library reaches.
    """
    n = args.images * args.superpixels
    x = r2o_like_points(n, args.dim, args.modes, args.noise, args.seed)
    xn = x.numpy()
    print(f"\nown init, as R2O calls it: k-means++ then up to 200 iterations with tol=1e-4; {n} x {args.dim}")
    print(header())
    for k in args.ks:

        def fpk_fit(k: int = k) -> torch.Tensor:
            torch.manual_seed(args.seed)  # it draws from the global generator
            model = FastKMeans(n_clusters=k, max_iter=200, tol=1e-4, init_method="kmeans++")
            model.fit_predict(x)
            return model.centroids

        def sk_fit(k: int = k) -> SkKMeans:
            return SkKMeans(n_clusters=k, n_init=1, max_iter=200, tol=1e-4, random_state=args.seed).fit(xn)

        results = race(
            {
                "sklearn": sk_fit,
                "fpk": fpk_fit,
                "segzoo": lambda k=k: kmeans(x, k, iters=200, tol=1e-4, seed=args.seed),
            },
            args.repeats,
            CLOCKS[args.clock],
        )
        sk, segzoo = results["sklearn"][1], results["segzoo"][1]
        centres = (torch.from_numpy(sk.cluster_centers_), results["fpk"][1], segzoo.centroids)
        print(
            row(
                k,
                f"{sk.n_iter_}/{segzoo.iters}",
                tuple(results[name][0] for name in ("sklearn", "fpk", "segzoo")),
                tuple(inertia_of(x, c) for c in centres),
            )
        )


def main() -> None:
    """Parse the sizes and run the comparison."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=32, help="images per batch")
    parser.add_argument("--superpixels", type=int, default=100, help="superpixels per image")
    parser.add_argument("--dim", type=int, default=1024, help="feature width (R2O: layer3, 1024)")
    parser.add_argument("--ks", type=int, nargs="+", default=[128, 64, 16, 4], help="cluster counts")
    parser.add_argument("--iters", type=int, default=50, help="maximum Lloyd iterations")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per library (best is kept)")
    parser.add_argument(
        "--modes", type=int, default=200, help="directions the synthetic points scatter around"
    )
    parser.add_argument("--noise", type=float, default=1.0, help="noise around the directions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for every library (torch, OpenMP, BLAS); see docs"
    )
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="cpu", help="cpu: process CPU time; wall: elapsed time"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=["joint", "per-image", "own-init"],
        default=["joint", "per-image", "own-init"],
        help="joint: R2O's problem at equal work; per-image: batched; own-init: each library's defaults",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"float32; max iters {args.iters}; best {args.clock} seconds of {args.repeats} interleaved rounds "
        f"after a warm-up; {args.threads} thread(s) for torch, OpenMP and BLAS"
    )
    with threadpool_limits(limits=args.threads):
        for section in args.sections:
            {"joint": joint, "per-image": per_image, "own-init": own_init}[section](args)


if __name__ == "__main__":
    main()
