"""Batched, seeded K-means: recovery, exact inertia, NaN safety, batching, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans

from segzoo.ops.kmeans import KMeansResult, _kmeans_pp, _sq_dist_to_many, kmeans

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def blobs(n_per: int, k: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` Gaussian blobs (unit noise) around centres ``spread`` apart; points and true labels, shuffled."""
    gen = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(k, dim, generator=gen)
    truth = torch.arange(k).repeat_interleave(n_per)
    x = centres[truth] + torch.randn(k * n_per, dim, generator=gen)
    perm = torch.randperm(k * n_per, generator=gen)
    return x[perm], truth[perm]


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when two labelings are equal up to a renaming of the clusters."""
    pairs = torch.unique(torch.stack([a, b]), dim=1)
    return pairs.shape[1] == len(torch.unique(a)) == len(torch.unique(b))


def direct_inertia(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return (x.double() - centroids.double()[labels]).square().sum()


def assert_valid(result: KMeansResult, n: int, k: int) -> None:
    assert torch.isfinite(result.centroids).all()
    assert torch.isfinite(result.inertia).all()
    assert result.labels.dtype == torch.int64
    assert result.labels.shape[-1] == n
    assert int(result.labels.min()) >= 0 and int(result.labels.max()) < k


@pytest.mark.parametrize("init", ["k-means++", "plain-k-means++", "random"])
def test_recovers_well_separated_blobs(init: str) -> None:
    x, truth = blobs(n_per=40, k=4, dim=8, spread=20.0, seed=1)
    result = kmeans(x, 4, init=init, n_init=3 if init == "random" else 1)
    assert isinstance(result, KMeansResult)
    assert result.labels.shape == (160,) and result.centroids.shape == (4, 8) and result.inertia.shape == ()
    assert same_partition(result.labels, truth)
    assert 1 <= result.iters < 100  # converged early with the default tol


def test_inertia_and_labels_match_a_direct_computation() -> None:
    gen = torch.Generator().manual_seed(3)
    # Far from the origin: the matmul expansion alone would lose digits here.
    x = 1000.0 + torch.randn(300, 5, generator=gen)
    result = kmeans(x, 7, iters=30)
    expected = direct_inertia(x, result.labels, result.centroids)
    torch.testing.assert_close(result.inertia.double(), expected, rtol=1e-6, atol=0)
    nearest = torch.cdist(x.double(), result.centroids.double()).argmin(-1)
    assert torch.equal(result.labels, nearest)
    # Centres are the means of their points (Lloyd fixed point up to the last update).
    for j in range(7):
        members = x[result.labels == j]
        if len(members):
            torch.testing.assert_close(result.centroids[j], members.mean(0), rtol=0, atol=1e-3)


def test_all_duplicate_points_give_no_nan() -> None:
    x = torch.full((10, 3), 2.5)
    result = kmeans(x, 4)
    assert_valid(result, 10, 4)
    assert torch.equal(result.centroids, torch.full((4, 3), 2.5))
    assert float(result.inertia) == 0.0
    assert result.iters == 1  # constant data: nothing moves, stops at once


@pytest.mark.parametrize("init", ["k-means++", "plain-k-means++", "random"])
def test_more_clusters_than_distinct_points(init: str) -> None:
    distinct = torch.tensor([[0.0, 0.0], [5.0, 1.0], [-3.0, 4.0]])
    x = distinct.repeat(4, 1)  # 12 points, 3 distinct
    result = kmeans(x, 6, init=init)
    assert_valid(result, 12, 6)
    assert float(result.inertia) == 0.0
    # Every distinct point is a centre; the extra centres duplicate some of them.
    assert torch.equal(torch.unique(result.centroids, dim=0), torch.unique(distinct, dim=0))
    torch.testing.assert_close(result.centroids[result.labels], x)


def test_bad_init_empty_clusters_are_reseeded_distinct() -> None:
    x, truth = blobs(n_per=30, k=5, dim=4, spread=15.0, seed=2)
    # Every centre on the same far point: after the first assignment four clusters are empty.
    bad = torch.full((5, 4), 100.0)
    one = kmeans(x, 5, iters=1, init=bad)
    assert_valid(one, 150, 5)
    assert len(torch.unique(one.centroids, dim=0)) == 5
    full = kmeans(x, 5, iters=50, init=bad)
    assert_valid(full, 150, 5)
    assert len(torch.unique(full.centroids, dim=0)) == 5
    assert len(torch.unique(full.labels)) == 5


def test_reseeding_never_duplicates_when_distinct_points_remain() -> None:
    # Exactly k distinct points, many copies of one of them: any duplicate centre would leave a point alone.
    x = torch.cat([torch.zeros(20, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])])
    result = kmeans(x, 4, iters=5, init=torch.full((4, 2), -7.0))
    assert_valid(result, 23, 4)
    assert len(torch.unique(result.centroids, dim=0)) == 4
    assert float(result.inertia) == pytest.approx(0.0, abs=1e-10)


def test_empty_clusters_in_one_problem_of_a_batch() -> None:
    x = torch.stack([blobs(20, 3, 4, 12.0, seed)[0] for seed in (0, 1)])
    start = torch.stack([torch.full((3, 4), 50.0), x[1, :3]])  # only problem 0 gets empty clusters
    batched = kmeans(x, 3, iters=20, init=start)
    assert_valid(batched, 60, 3)
    for b in range(2):
        single = kmeans(x[b], 3, iters=20, init=start[b])
        assert torch.equal(batched.labels[b], single.labels)
        torch.testing.assert_close(batched.centroids[b], single.centroids)
        assert len(torch.unique(single.centroids, dim=0)) == 3


def test_cosine_with_a_zero_init_gives_no_nan() -> None:
    x, _ = blobs(n_per=15, k=3, dim=5, spread=5.0, seed=3)
    result = kmeans(x, 3, metric="cosine", init=torch.zeros(3, 5))
    assert_valid(result, 45, 3)
    torch.testing.assert_close(result.centroids.norm(dim=-1), torch.ones(3))


@pytest.mark.parametrize("trials", [1, 5])
def test_kmeans_pp_never_seeds_a_duplicate_while_distinct_points_remain(trials: int) -> None:
    # Far from the origin, so the matmul expansion has rounding noise well above 0 for exact duplicates.
    gen = torch.Generator().manual_seed(0)
    distinct = 100.0 + 10.0 * torch.randn(6, 64, generator=gen)
    x = distinct.repeat(50, 1)[torch.randperm(300, generator=gen)]
    d2 = _sq_dist_to_many(x[None], x.square().sum(-1)[None], x[None, :1])[0, :, 0]
    duplicate = (x == x[0]).all(-1)
    assert torch.equal(d2[duplicate], torch.zeros(50))  # exactly 0, not rounding noise
    torch.testing.assert_close(d2[~duplicate], (x[~duplicate] - x[0]).square().sum(-1), rtol=1e-4, atol=0)
    for seed in range(5):
        seeds = _kmeans_pp(x[None], 6, torch.Generator().manual_seed(seed), trials)[0]
        assert torch.equal(torch.unique(seeds, dim=0), torch.unique(distinct, dim=0))


def test_k_equal_to_n_puts_every_point_in_its_own_cluster() -> None:
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(0))
    result = kmeans(x, 9)
    assert sorted(result.labels.tolist()) == list(range(9))
    assert float(result.inertia) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("init", ["k-means++", "plain-k-means++", "random", "tensor"])
def test_batched_equals_per_problem(init: str) -> None:
    # Problems of different difficulty: with tol > 0 they stop at different iterations.
    problems = [blobs(n_per=25, k=3, dim=6, spread=s, seed=s)[0] for s in (3, 8, 30)]
    x = torch.stack(problems)
    start = x[:, :3].clone()
    arg = start if init == "tensor" else init
    batched = kmeans(x, 3, iters=40, tol=1e-6, init=arg, seed=5)
    assert batched.labels.shape == (3, 75) and batched.centroids.shape == (3, 3, 6)
    assert batched.inertia.shape == (3,)
    runs = []
    for b, xb in enumerate(problems):
        single = kmeans(xb, 3, iters=40, tol=1e-6, init=start[b] if init == "tensor" else init, seed=5)
        assert torch.equal(batched.labels[b], single.labels)
        torch.testing.assert_close(batched.centroids[b], single.centroids, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batched.inertia[b], single.inertia, rtol=1e-5, atol=1e-5)
        runs.append(single.iters)
    assert batched.iters == max(runs)


def test_shared_tensor_init_is_broadcast_over_the_batch() -> None:
    x = torch.stack([blobs(20, 2, 3, 10.0, seed)[0] for seed in (0, 1)])
    start = torch.zeros(2, 3)
    start[1] = 1.0
    batched = kmeans(x, 2, iters=10, init=start)
    for b in range(2):
        assert torch.equal(batched.labels[b], kmeans(x[b], 2, iters=10, init=start).labels)


def test_seeded_runs_are_identical_and_seeds_matter() -> None:
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(7))
    a = kmeans(x, 10, iters=20, seed=11)
    b = kmeans(x, 10, iters=20, seed=11)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
    assert torch.equal(a.inertia, b.inertia)
    starts = {tuple(kmeans(x, 10, iters=1, seed=s).centroids[0].tolist()) for s in range(4)}
    assert len(starts) > 1


def test_more_restarts_never_do_worse() -> None:
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(8))
    one = kmeans(x, 12, iters=15, seed=3, init="random")
    five = kmeans(x, 12, iters=15, seed=3, init="random", n_init=5)
    assert float(five.inertia) <= float(one.inertia)
    expected = direct_inertia(x, five.labels, five.centroids)
    torch.testing.assert_close(five.inertia.double(), expected, rtol=1e-6, atol=0)


def test_stopping_at_the_fixed_point_and_by_tolerance() -> None:
    x, _ = blobs(n_per=50, k=4, dim=3, spread=2.0, seed=4)  # overlapping: several iterations needed
    start = x[:4].clone()
    assert kmeans(x, 4, iters=2, tol=0.0, init=start).iters == 2
    free = kmeans(x, 4, iters=100, tol=0.0, init=start)
    assert 2 < free.iters < 100  # tol=0 still stops once no label changes
    longer = kmeans(x, 4, iters=free.iters + 5, tol=0.0, init=start)
    assert torch.equal(longer.labels, free.labels) and torch.equal(longer.centroids, free.centroids)
    assert kmeans(x, 4, iters=100, tol=0.5, init=start).iters < free.iters


def test_cosine_metric_clusters_directions_not_magnitudes() -> None:
    gen = torch.Generator().manual_seed(5)
    directions = torch.nn.functional.normalize(torch.randn(3, 16, generator=gen), dim=-1)
    truth = torch.arange(3).repeat(30)
    # Same direction at wildly different lengths: Euclidean K-means would split by length instead.
    scale = torch.logspace(-1, 2, 90)[torch.randperm(90, generator=gen)]
    x = (directions[truth] + 0.05 * torch.randn(90, 16, generator=gen)) * scale[:, None]
    result = kmeans(x, 3, metric="cosine")
    assert same_partition(result.labels, truth)
    torch.testing.assert_close(result.centroids.norm(dim=-1), torch.ones(3))
    unit = torch.nn.functional.normalize(x, dim=-1)
    cos = (unit * result.centroids[result.labels]).sum(-1)
    torch.testing.assert_close(result.inertia, (2 - 2 * cos).sum(), rtol=1e-4, atol=1e-4)
    assert not same_partition(kmeans(x, 3, metric="euclidean").labels, truth)


def test_cosine_agrees_with_euclidean_on_normalised_data() -> None:
    x, _ = blobs(n_per=30, k=4, dim=10, spread=4.0, seed=6)
    unit = torch.nn.functional.normalize(x, dim=-1)
    start = unit[:4].clone()
    cos = kmeans(unit, 4, iters=1, tol=0.0, init=start, metric="cosine")
    euc = kmeans(unit, 4, iters=1, tol=0.0, init=start, metric="euclidean")
    # One step from the same unit centres assigns identically; the centres differ only by normalisation.
    assert torch.equal(cos.labels, kmeans(unit, 4, iters=1, tol=0.0, init=start).labels)
    torch.testing.assert_close(cos.centroids, torch.nn.functional.normalize(euc.centroids, dim=-1))


def test_inertia_within_one_percent_of_scikit_learn() -> None:
    x, _ = blobs(n_per=60, k=6, dim=5, spread=3.0, seed=9)  # overlapping blobs: Lloyd needs a few steps
    start = x[torch.randperm(360, generator=torch.Generator().manual_seed(0))[:6]].clone()
    sk = SkKMeans(6, init=start.numpy(), n_init=1, max_iter=25, tol=0.0, algorithm="lloyd").fit(x.numpy())
    ours = kmeans(x, 6, iters=25, tol=0.0, init=start)
    assert ours.iters == sk.n_iter_  # the same fixed point, counted the same way
    assert float(ours.inertia) == pytest.approx(float(sk.inertia_), rel=0.01)
    np.testing.assert_allclose(ours.centroids.numpy(), sk.cluster_centers_, rtol=0, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_follow_the_input_device_and_dtype(device: str, dtype: torch.dtype) -> None:
    x = blobs(10, 2, 3, 10.0, 0)[0].to(device=device, dtype=dtype)
    result = kmeans(torch.stack([x, x + 1]), 2, init="k-means++")
    for t in (result.labels, result.centroids, result.inertia):
        assert t.device.type == device
    assert result.centroids.dtype == dtype and result.inertia.dtype == dtype
    # An init on another device (here the CPU) is moved to x's device.
    assert kmeans(x, 2, init=x[:2].cpu()).centroids.device.type == device


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_clustered_in_float32(dtype: torch.dtype) -> None:
    # Sums of these values overflow float16 (max 65504): computed in half precision they would become inf.
    x = (blobs(n_per=400, k=3, dim=8, spread=20.0, seed=0)[0] + 300.0).to(dtype)
    result = kmeans(x, 3, iters=20)
    assert result.centroids.dtype == dtype and result.inertia.dtype == torch.float32
    assert_valid(result, 1200, 3)
    reference = kmeans(x.float(), 3, iters=20)
    assert torch.equal(result.labels, reference.labels)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": torch.randn(5, 2), "k": 6}, ValueError, r"k=6 exceeds the number of points N=5"),
        ({"x": torch.randn(5, 2), "k": 0}, ValueError, r"k must be a positive int, got 0"),
        ({"x": torch.randn(5, 2), "k": 2, "metric": "manhattan"}, ValueError, r"metric must be one of"),
        ({"x": torch.randn(5, 2), "k": 2, "init": "kmeans++"}, ValueError, r"init must be one of"),
        ({"x": torch.randn(5), "k": 2}, ValueError, r"shape \[N, D\] or \[B, N, D\], got shape \(5,\)"),
        ({"x": torch.randn(1, 2, 5, 2), "k": 2}, ValueError, r"got shape \(1, 2, 5, 2\)"),
        ({"x": torch.zeros(0, 3), "k": 1}, ValueError, r"at least one point"),
        ({"x": torch.ones(5, 2, dtype=torch.long), "k": 2}, ValueError, r"floating-point tensor"),
        ({"x": torch.tensor([[0.0], [float("nan")]]), "k": 1}, ValueError, r"NaN or infinite"),
        ({"x": np.zeros((5, 2)), "k": 2}, TypeError, r"must be a torch.Tensor.*ndarray"),
        ({"x": torch.randn(5, 2), "k": 2, "iters": 0}, ValueError, r"iters must be a positive int"),
        ({"x": torch.randn(5, 2), "k": 2, "tol": -1.0}, ValueError, r"tol must be a finite number >= 0"),
        ({"x": torch.randn(5, 2), "k": 2, "n_init": 0}, ValueError, r"n_init must be a positive int"),
        (
            {"x": torch.randn(5, 2), "k": 2, "init": torch.zeros(3, 2)},
            ValueError,
            r"\[k, D\] = \[2, 2\] or \[B, k, D\] = \[1, 2, 2\], got \(3, 2\)",
        ),
        (
            {"x": torch.randn(5, 2), "k": 2, "init": torch.zeros(2, 2), "n_init": 2},
            ValueError,
            r"n_init=2 with an init tensor",
        ),
    ],
)
def test_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        kmeans(**kwargs)
