"""R2O: schedules, EMA, mask prediction and alignment, LARS, a few CPU steps and the encoder export."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

import segzoo
from segzoo.data import SegDataModule
from segzoo.data.views import R2OViews
from segzoo.methods import R2O
from segzoo.methods.lars import LARS, lars_param_groups
from segzoo.methods.r2o import align_masks, k_schedule, paint_clusters, superpixel_embeddings, tau
from segzoo.models.features import BackboneFeatures
from segzoo.registry import METHODS

TINY = dict(backbone="resnet18", projector_hidden=16, projector_out=8, predictor_hidden=16, k_max=8)


def _model(**kwargs) -> R2O:
    torch.manual_seed(0)
    return R2O(**{**TINY, "k_epochs": 2, **kwargs})


def test_registered() -> None:
    assert METHODS.get("r2o") is R2O


def test_momentum_schedule_values() -> None:
    assert tau(0, 100) == pytest.approx(0.99)
    assert tau(50, 100) == pytest.approx(0.995)
    assert tau(100, 100) == pytest.approx(1.0)
    assert tau(25, 100, base=0.9) == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)
    assert tau(500, 100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="total steps must be >= 1, got 0"):
        tau(0, 0)


def test_k_schedule_values() -> None:
    assert k_schedule(0, 300) == 128
    assert k_schedule(100, 300) == 111  # 4 + 124 cos(pi/6) = 111.39
    assert k_schedule(150, 300) == 91  # 4 + 124 cos(pi/4) = 91.68
    assert k_schedule(299, 300) == 4  # 4.65
    assert k_schedule(300, 300) == 4
    assert k_schedule(1, 2, k_max=16) == 12  # 4 + 12 cos(pi/4) = 12.49
    values = [k_schedule(e, 300) for e in range(301)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    with pytest.raises(ValueError, match="k_min=8, k_max=4"):
        k_schedule(0, 10, k_max=4, k_min=8)


def test_ema_update_follows_the_rule() -> None:
    model = _model()
    with torch.no_grad():
        for p in model.online_encoder.parameters():
            p.add_(1.0)
    online = [p.clone() for p in model._online_parameters()]
    target = [p.clone() for p in model._target_parameters()]
    model.momentum_update(0.9)
    for o, t, new in zip(online, target, model._target_parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * t + 0.1 * o)
    assert all(not p.requires_grad for p in model._target_parameters())


def test_superpixel_embeddings_pool_at_feature_resolution() -> None:
    features = torch.arange(8.0).view(1, 2, 2, 2)
    superpixels = torch.zeros(2, 4, 4, dtype=torch.long)
    superpixels[0, :, 2:] = 1  # image 0: left half 0, right half 1
    superpixels[1, :1] = 0  # image 1: top quarter 0, the rest 1
    superpixels[1, 1:] = 1
    features = torch.cat([features, features])
    emb, counts = superpixel_embeddings(features, superpixels)
    assert counts.tolist() == [2, 2] and emb.shape == (4, 2)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 5.0]))  # cells (0,0), (1,0)
    torch.testing.assert_close(emb[1], torch.tensor([2.0, 6.0]))
    torch.testing.assert_close(emb[2], torch.tensor([0.5, 4.5]))  # top cells only
    # 4 pixels of the top cells, 8 of the bottom ones: (4 * 0.5 + 8 * 2.5) / 12
    torch.testing.assert_close(emb[3], torch.tensor([22.0 / 12, 70.0 / 12]))


def test_paint_clusters_maps_superpixels_to_labels() -> None:
    superpixels = torch.zeros(2, 4, 4, dtype=torch.long)
    superpixels[0, :, 2:] = 1
    superpixels[1, 2:] = 2  # image 1 has ids 0 and 2 (id 1 empty)
    counts = torch.tensor([2, 3])
    labels = torch.tensor([5, 6, 7, 8, 9])  # image 0: 5, 6; image 1: 7, 8, 9
    painted = paint_clusters(labels, counts, superpixels, size=2)
    assert painted.tolist() == [[[5, 6], [5, 6]], [[7, 7], [9, 9]]]


def test_mask_painted_on_the_whole_image_lands_in_each_crop_and_flip() -> None:
    # a 64x64 raw view with a square at x in [16, 32), y in [8, 24); the crop box (16, 8, 48, 40) shows it in
    # its top-left quarter; a flipped view shows it top-right
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 8:24, 16:32] = 1.0
    boxes = torch.tensor([[16.0, 8.0, 48.0, 40.0], [16.0, 8.0, 48.0, 40.0], [0.0, 0.0, 64.0, 64.0]])
    masks = mask.expand(3, 1, 64, 64)
    flips = torch.tensor([False, True, False])
    out = align_masks(masks, boxes, flips, raw_size=(64, 64), out_size=(4, 4))
    expected = torch.zeros(4, 4)
    expected[:2, :2] = 1.0
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[1, 0], expected.flip(-1))
    whole = torch.zeros(4, 4)
    # 16 px bins: x [16, 32) is all of column 1; y [8, 24) covers half of rows 0 and 1
    whole[0:2, 1] = 0.5
    torch.testing.assert_close(out[2, 0], whole)
    # the same on a coarser (56x56-like) mask map: boxes are rescaled from raw pixels to the map
    small = torch.nn.functional.interpolate(mask, size=(32, 32), mode="nearest").expand(3, 1, 32, 32)
    torch.testing.assert_close(align_masks(small, boxes, flips, (64, 64), (4, 4))[:2, 0], out[:2, 0])


def test_predict_masks_are_one_hot_with_capped_k() -> None:
    model = _model()
    raw = torch.randn(2, 3, 32, 32)
    superpixels = torch.arange(16).repeat_interleave(64).view(1, 32, 32).expand(2, 32, 32)
    masks = model.predict_masks(raw, superpixels, k=8, seed=0)
    assert masks.shape == (2, 8, 56, 56)
    torch.testing.assert_close(masks.sum(1), torch.ones(2, 56, 56))
    # K above the number of superpixels in the batch (2 x 16) is capped
    assert model.predict_masks(raw, superpixels, k=100, seed=0).shape[1] == 32
    again = model.predict_masks(raw, superpixels, k=8, seed=0)
    assert torch.equal(masks, again)


def test_lars_excluded_parameters_follow_momentum_sgd() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    groups = lars_param_groups([net], weight_decay=0.1)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0.0
    excluded = groups[1]["params"]
    reference = [p.detach().clone().requires_grad_(True) for p in excluded]
    lars = LARS(groups, lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.001)
    sgd = torch.optim.SGD(reference, lr=0.5, momentum=0.9)
    weight = groups[0]["params"][0]
    w0 = weight.detach().clone()
    for step in range(3):
        for p, r in zip(excluded, reference, strict=True):
            g = torch.randn(p.shape)
            p.grad, r.grad = g.clone(), g.clone()
        weight.grad = torch.full_like(weight, 1.0 + step)
        lars.step()
        sgd.step()
        if step == 0:
            g = weight.grad + 0.1 * w0
            trust = 0.001 * w0.norm() / g.norm()
            torch.testing.assert_close(weight.detach(), w0 - 0.5 * trust * g)
    for p, r in zip(excluded, reference, strict=True):
        torch.testing.assert_close(p.detach(), r.detach())


def _datamodule() -> SegDataModule:
    return SegDataModule(
        dataset="synthetic",
        dataset_kwargs={"mode": "shapes", "size": [64, 64], "num_samples": 8},
        batch_size=4,
        train_transforms=R2OViews(size=64, n_segments=50),
    )


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader` but have no `validation_step`")
def test_cpu_steps_change_online_weights_and_target_only_by_ema(tmp_path: Path) -> None:
    model = _model(base_lr=1.0, warmup_epochs=0.0, lr_k_scaling=False)
    online0 = [p.detach().clone() for p in model._online_parameters()]
    target0 = [p.detach().clone() for p in model._target_parameters()]
    trainer = L.Trainer(
        max_epochs=1,
        max_steps=1,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=_datamodule())
    assert trainer.global_step == 1
    online1 = [p.detach() for p in model._online_parameters()]
    changed = sum(not torch.equal(a, b) for a, b in zip(online0, online1, strict=True))
    assert changed > len(online0) // 2
    t = tau(0, 1)
    for t0, o1, t1 in zip(target0, online1, model._target_parameters(), strict=True):
        torch.testing.assert_close(t1.detach(), t * t0 + (1 - t) * o1)
    assert (tmp_path / "r2o_encoder.pth").is_file()


def test_exported_encoder_loads_in_supervised_models_and_scops_features(tmp_path: Path) -> None:
    model = _model()
    with torch.no_grad():
        for p in model.online_encoder.parameters():
            p.add_(0.5)  # online differs from target
    path = model.save_encoder(tmp_path / "enc.pth")
    reference = model.online_encoder.state_dict()
    for name in ("fcn", "deeplabv3", "unet"):
        seg = segzoo.create_model(name, num_classes=3, backbone="resnet18", backbone_weights=path)
        torch.testing.assert_close(seg.backbone.conv1.weight, reference["conv1.weight"])
    features = BackboneFeatures(backbone="resnet18", weights=path)
    torch.testing.assert_close(features.backbone.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])
    # a whole R2O Lightning checkpoint works too: the online encoder's prefix is chosen
    ckpt = tmp_path / "r2o.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    seg = segzoo.create_model("pspnet", num_classes=3, backbone="resnet18", backbone_weights=ckpt)
    torch.testing.assert_close(seg.backbone.conv1.weight, reference["conv1.weight"])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="k_min=9, k_max=8"):
        R2O(**{**TINY, "k_min": 9})
    with pytest.raises(ValueError, match="base_tau must be in"):
        R2O(**{**TINY, "base_tau": 1.5})


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader` but have no `validation_step`")
def test_synthetic_config_fits_and_exports(tmp_path: Path) -> None:
    from segzoo.cli import main

    config = Path(__file__).resolve().parents[2] / "configs" / "r2o" / "synthetic.yaml"
    main(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.max_steps=1",
            "--trainer.limit_train_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--data.batch_size=2",
            "--data.dataset_kwargs.num_samples=2",
        ]
    )
    exported = list(tmp_path.rglob("r2o_encoder.pth"))
    assert len(exported) == 1
    seg = segzoo.create_model("deeplabv3", num_classes=2, backbone="resnet18", backbone_weights=exported[0])
    assert torch.equal(seg.backbone.conv1.weight, torch.load(exported[0])["conv1.weight"])


# -- benchmarks/r2o_pretrain.py: the pieces the benchmark adds around the method -----------------------------
def _benchmark():
    """Import the benchmark script (``benchmarks/`` is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "r2o_pretrain.py"
    spec = importlib.util.spec_from_file_location("r2o_pretrain_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _benchmark()


def _write_images(folder: Path, count: int, size: tuple[int, int] = (40, 48)) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(count)
    for i in range(count):
        pixels = torch.randint(0, 256, (*size, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"img{i}.png")


def test_benchmark_config_sets_flags_and_rejects_unknown_keys(bench, tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "configs" / "r2o" / "shared_images.yaml"
    args = bench.parse_args(["--config", str(config), "--minutes", "3"])
    assert args.minutes == 3.0  # the flag wins over the file
    assert args.backbone == "resnet18" and args.k_max == 128 and args.k_min == 4
    assert "camvid/train" in args.sources and "camvid/val" not in args.sources
    assert args.figure_ks == [128, 64, 32, 16, 8, 4] and args.steps == 0  # steps sized from the minutes
    bad = tmp_path / "bad.yaml"
    bad.write_text("minutes: 1\nminuets: 2\n")
    with pytest.raises(SystemExit):
        bench.parse_args(["--config", str(bad)])


def test_unlabelled_images_concatenate_sources_without_labels(bench, tmp_path: Path) -> None:
    _write_images(tmp_path / "a", 2)
    _write_images(tmp_path / "b" / "images", 3)
    data = bench.unlabelled_images(tmp_path, ["a", "b/images"], R2OViews(size=32, n_segments=20))
    assert len(data) == 5
    sample = data[3]
    assert sample["view1"].shape == (3, 32, 32) and sample["superpixels"].shape == (32, 32)
    assert "mask" not in sample and sample["meta"]["path"].endswith("img1.png")
    with pytest.raises(FileNotFoundError, match="missing: pretraining source folder not found"):
        bench.unlabelled_images(tmp_path, ["a", "missing"])


def test_timed_loader_yields_every_batch_and_records_one_wait_each(bench) -> None:
    timed = bench.TimedLoader(torch.utils.data.DataLoader(list(range(10)), batch_size=3))
    batches = list(timed)
    assert [b.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert len(timed) == 4 and len(timed.waits) == 4 and all(w >= 0 for w in timed.waits)
    list(timed)  # a second epoch appends
    assert len(timed.waits) == 8


class _ColourFeatures(torch.nn.Module):
    """A stand-in encoder: its ``layer3`` is the image's colour at stride 4, so K = 2 separates colours."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.out_features = ["layer3"]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"layer3": torch.nn.functional.avg_pool2d(x, 4) + 3.0}


def _square_samples(label_half: bool) -> list[dict]:
    """Blue 64x64 images with a red square [16, 48); the mask is the square, or only its left half."""
    samples = []
    for shift in (0, 8):
        image = torch.zeros(3, 64, 64, dtype=torch.uint8)
        image[2] = 200
        red = torch.tensor([220, 20, 20], dtype=torch.uint8)[:, None, None]
        image[:, 16 + shift : 48 + shift, 16:48] = red
        mask = torch.zeros(64, 64, dtype=torch.long)
        mask[16 + shift : 48 + shift, 16 : 32 if label_half else 48] = 1
        samples.append({"image": image, "mask": mask})
    return samples


def test_frozen_foreground_protocol_scores(bench) -> None:
    encoder = _ColourFeatures()
    perfect = bench.frozen_foreground(encoder, _square_samples(False), 64, "layer3", 30, seed=0, restarts=3)
    for key in ("image_fg_iou", "set_fg_iou"):
        assert perfect[key] == pytest.approx(100.0, abs=0.5)
    # only the square's left half is foreground: the square-shaped prediction gets IoU 1/2; background IoU
    # is (64^2 - 32^2) / (64^2 - 32^2 / 2), so mIoU is their mean
    half = bench.frozen_foreground(encoder, _square_samples(True), 64, "layer3", 30, seed=0)
    bg = (64**2 - 32**2) / (64**2 - 32**2 / 2)
    assert half["image_fg_iou"] == pytest.approx(50.0, abs=1.0)
    assert half["image_miou"] == pytest.approx(100 * (0.5 + bg) / 2, abs=1.0)
    # a smaller working size: prediction painted at 32x32 and resized to the 64x64 mask
    small = bench.frozen_foreground(encoder, _square_samples(False), 32, "layer3", 30, seed=0)
    assert small["image_fg_iou"] == pytest.approx(100.0, abs=1.0)


def test_atomic_save_and_mask_figure(bench, tmp_path: Path) -> None:
    path = bench.save_atomic({"w": torch.ones(2)}, tmp_path / "sub" / "enc.pth")
    assert torch.equal(torch.load(path)["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["enc.pth"]  # no temporary file left
    _write_images(tmp_path / "imgs", 3)
    args = bench.parse_args(
        ["--size", "32", "--batch-size", "3", "--n-segments", "20", "--projector-hidden", "8",
         "--projector-out", "4", "--predictor-hidden", "8"]
    )  # fmt: skip
    model = bench.build_r2o(args)
    figure = bench.mask_figure(
        model.target_encoder.state_dict(), args, bench.unlabelled_images(tmp_path, ["imgs"]), [8, 2],
        tmp_path / "fig.png", shown=2,
    )  # fmt: skip
    from PIL import Image

    picture = Image.open(figure)
    scale = 192 // 32
    # 3 columns (image, K = 8, K = 2) and 2 rows of 32 x scale cells, 4 px padding, an 18 px header
    assert picture.size == (3 * 32 * scale + 4 * 4, 18 + 2 * 32 * scale + 3 * 4)


def test_batchnorm_recalibration_averages_the_images_statistics(bench) -> None:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from segzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.BatchNorm2d(2))
    weights = [p.detach().clone() for p in net.parameters()]
    samples = _square_samples(False) * 10  # 20 images
    bench.recalibrate_batchnorm(net, samples, size=16, n=18)  # batches of 16 and 2
    assert not net.training and int(net[1].num_batches_tracked) == 2
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters(), strict=True))
    resized = [
        TF.resize(s["image"], [16, 16], InterpolationMode.BICUBIC, antialias=True) for s in samples[:18]
    ]
    x = TF.normalize(
        TF.to_dtype(torch.stack(resized), torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD
    )
    with torch.no_grad():
        features = net[0](x)
    # momentum None: the running mean is the plain average of the two batch means
    expected = (features[:16].mean((0, 2, 3)) + features[16:].mean((0, 2, 3))) / 2
    torch.testing.assert_close(net[1].running_mean, expected, atol=1e-5, rtol=1e-4)
