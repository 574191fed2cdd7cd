"""R2O's K-means under DDP: ``kmeans_scope="global"`` clusters the superpixel embeddings of all processes
together, identically on every rank; ``"process"`` clusters each process's own."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.strategies import DDPStrategy

from segzoo.data.collate import collate_samples
from segzoo.data.datasets.synthetic import Synthetic
from segzoo.data.views import R2OViews
from segzoo.launch import free_port
from segzoo.methods.r2o import R2O, global_kmeans
from segzoo.ops.kmeans import kmeans

COUNTS = (37, 23)  # superpixels per process: unequal, as with images of different content
K, ITERS, SEED = 6, 50, 11


def _points(rank: int) -> torch.Tensor:
    """Unit vectors around 4 directions, different on each rank (some directions only on one rank)."""
    gen = torch.Generator().manual_seed(100 + rank)
    centres = torch.eye(8)[rank * 2 : rank * 2 + 4]
    idx = torch.randint(0, 4, (COUNTS[rank],), generator=gen)
    return torch.nn.functional.normalize(
        centres[idx] + 0.1 * torch.randn(COUNTS[rank], 8, generator=gen), dim=-1
    )


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    """The stack of every process's tensor (what ``LightningModule.all_gather`` returns)."""
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor.contiguous())
    return torch.stack(out)


class _Trainer:
    """What ``R2O.cluster`` reads from its trainer: the world and the real DDP strategy's collectives."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.global_rank, self.world_size, self.strategy = rank, world_size, DDPStrategy()


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        points = _points(rank)
        result, own = global_kmeans(points, K, ITERS, SEED, _gather, 2, rank)
        module = R2O(backbone="resnet18", projector_hidden=8, projector_out=4, predictor_hidden=8)
        module._trainer = _Trainer(rank, 2)
        by_scope = {}
        for scope in ("global", "process"):
            module.hparams.kmeans_scope = scope
            by_scope[scope] = module.cluster(points, K, SEED)
        torch.save(
            {"centroids": result.centroids, "labels": result.labels, "own": own, "by_scope": by_scope},
            os.path.join(folder, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters that import torch: ~10-20 s on a shared 2-core machine
def test_global_kmeans_agrees_across_ranks_and_with_one_process(tmp_path):
    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn", join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    single = kmeans(torch.cat([_points(0), _points(1)]), K, iters=ITERS, seed=SEED)
    for rank, got in enumerate(ranks):
        assert torch.equal(got["centroids"], single.centroids)  # bit-identical on every rank
        assert torch.equal(got["labels"], single.labels)
        start = sum(COUNTS[:rank])
        assert got["own"] == slice(start, start + COUNTS[rank])
        labels, k = got["by_scope"]["global"]
        assert k == K and torch.equal(labels, single.labels[got["own"]])
        # per process: this rank's points alone, as without DDP
        alone = kmeans(_points(rank)[None], K, iters=ITERS, seed=SEED).labels[0]
        labels, k = got["by_scope"]["process"]
        assert k == K and torch.equal(labels, alone)
    # the two scopes really differ here (otherwise the test could not tell them apart)
    assert not torch.equal(torch.cat([r["by_scope"]["process"][0] for r in ranks]), single.labels)


def test_k_is_capped_by_all_points_and_scope_is_checked():
    points = _points(0)[:5]
    result, own = global_kmeans(points, 16, ITERS, SEED, lambda t: t[None], 1, 0)
    assert result.centroids.shape[0] == 5 and own == slice(0, 5)
    assert torch.equal(result.labels, kmeans(points, 5, iters=ITERS, seed=SEED).labels)
    with pytest.raises(ValueError, match="kmeans_scope must be one of"):
        R2O(backbone="resnet18", kmeans_scope="node")


def test_a_step_without_regions_still_gives_every_parameter_a_gradient():
    """With fewer than 2 matched regions the loss is an exact 0, yet every trainable parameter must get a
    gradient: under DDP another rank may take the other branch, and the gradient reduction needs the same
    parameters on every rank (otherwise 'Expected to have finished reduction' / find_unused_parameters)."""
    torch.manual_seed(0)
    module = R2O(backbone="resnet18", projector_hidden=8, projector_out=4, predictor_hidden=8)
    views = R2OViews(size=64, n_segments=10)
    sample = Synthetic(split="train", mode="shapes", size=(64, 64), num_samples=1, transforms=views)[0]
    batch = collate_samples([sample])
    loss = module.compute_loss(batch, k=1, seed=0)  # 1 image, 1 cluster: 1 region < 2
    assert loss["loss"].item() == 0.0
    loss["loss"].backward()
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable), [
        n for n, p in trainable if p.grad is None
    ]
