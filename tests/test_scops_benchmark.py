"""benchmarks/scops_faces.py: the feature-cluster baseline and the benchmark configs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("scops_faces")


class FirstTwoChannels(torch.nn.Module):
    """A stand-in feature extractor: the first two image channels at half resolution."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(images[:, :2], 2)


def _halves(batch: int = 2) -> torch.Tensor:
    """Channel 0 on in the left half, channel 1 in the right half of 8x8 images."""
    images = torch.zeros(batch, 3, 8, 8)
    images[:, 0, :, :4] = 1.0
    images[:, 1, :, 4:] = 1.0
    return images


def test_feature_clusters_assign_pixels_and_centres(bench) -> None:
    clusters = bench.FeatureClusters(FirstTwoChannels(), torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
    images = _halves()
    labels = clusters.labels(images)
    assert labels.shape == (2, 8, 8)
    assert (labels[:, :, :4] == 2).all() and (labels[:, :, 4:] == 1).all()
    centres = clusters.test_step({"image": images}, 0)["landmarks"]
    # part 1 = right half (x 4..7), part 2 = left half (x 0..3); every row, so y = 3.5
    expected = torch.tensor([[5.5, 3.5], [1.5, 3.5]]).expand(2, -1, -1)
    torch.testing.assert_close(centres, expected, check_dtype=False)


def test_fit_feature_clusters_finds_the_two_feature_directions(bench) -> None:
    batches = [{"image": _halves(3)}, {"image": _halves(1)}]
    datamodule = SimpleNamespace(train_eval_dataloader=lambda: batches)
    clusters = bench.fit_feature_clusters(FirstTwoChannels(), datamodule, k=2, seed=0)
    found = sorted(tuple(round(v, 3) for v in row.tolist()) for row in clusters.centroids)
    assert found == [(0.0, 1.0), (1.0, 0.0)]
    labels = clusters.labels(_halves(1))
    assert labels[0, 0, 0] != labels[0, 0, 7] and len(labels.unique()) == 2


def test_unaligned_config_builds_without_weight_files(bench) -> None:
    from segzoo.methods.scops import SCOPS

    config = bench.load_config(bench.REPO / "configs/scops/helen_unaligned_bench.yaml")
    model = SCOPS(**config["model"]["init_args"])
    assert model.feature_extractor.out_channels == 128 and model.hparams.warp_translation == 0.4
    assert config["data"]["dataset_kwargs"]["unalign"] == 0.3
    # the aligned benchmark config differs only in data, features and warps
    aligned = bench.load_config(bench.REPO / "configs/scops/helen_bench.yaml")
    init, aligned_init = config["model"]["init_args"], aligned["model"]["init_args"]
    differing = {k for k, v in init.items() if aligned_init.get(k) != v}
    assert differing == {"features", "feature_weights", "feature_kwargs", "warp_translation"}
