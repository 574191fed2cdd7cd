"""SCOPS LightningModule and its frozen feature extractors: construction errors, losses on a synthetic
batch, a short training run (loss falls, both optimisers step with poly decay, seeded runs repeat), and the
val/test/predict outputs. Images are 32x32 on a ResNet-18 so the whole file runs in seconds."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset
from torchvision.models import vgg as tv_vgg

from segzoo.data.collate import collate_samples
from segzoo.data.datasets.synthetic import Synthetic
from segzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from segzoo.methods.scops import SCOPS, random_color_jitter
from segzoo.models.features import BackboneFeatures, VGG19Features, build_feature_extractor
from segzoo.registry import METHODS

SIZE = 32
K = 4
STEPS = 24

pytestmark = [
    # the frozen feature extractor is in eval mode on purpose; the fixed-batch runs have no validation
    pytest.mark.filterwarnings(r"ignore:Found \d+ module\(s\) in eval mode"),
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`"),
]


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    """A random-init torchvision ResNet-18 state dict (with its fc layer), as a user's file would be."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def batch() -> dict:
    """Two ImageNet-normalised synthetic part images with their parts and key points."""
    ds = Synthetic(
        mode="parts",
        size=SIZE,
        num_parts=K,
        transforms=build_transforms(False, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    )
    return collate_samples([ds[0], ds[1]])


class _Repeat(Dataset):
    """The same collated batch ``n`` times (DataLoader with batch_size=None)."""

    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return self.batch


class _Record(L.Callback):
    """Loss returned by every training step and both optimisers' learning rates after it."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.lrs: list[list[float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        self.lrs.append([opt.param_groups[-1]["lr"] for opt in trainer.optimizers])


class _Capture(L.Callback):
    def __init__(self) -> None:
        self.outputs: list = []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.outputs.append(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.outputs.append(outputs)


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _model(resnet18_file: Path, **kwargs) -> SCOPS:
    options = dict(
        num_parts=K,
        backbone="resnet18",
        features="backbone",
        feature_weights=str(resnet18_file),
        feature_kwargs={"backbone": "resnet18", "layers": ["layer3", "layer4"]},
        lr_backbone=0.01,
        lr_head=0.01,
        lr_basis=0.05,
    )
    options.update(kwargs)
    return SCOPS(**options)


def _fit(resnet18_file: Path, batch: dict, steps: int = STEPS) -> tuple[SCOPS, _Record, torch.Tensor]:
    L.seed_everything(0, verbose=False)
    # moderate rates and warps: the equivariance term varies with each step's random warp, and this keeps
    # its noise below the steady fall of the concentration term over a couple of dozen steps
    model = _model(resnet18_file, lr_backbone=0.005, lr_head=0.005, warp_rotation=20.0, warp_scale=(0.9, 1.1))
    initial_basis = model.basis.detach().clone()
    record = _Record()
    # max_steps counts optimiser steps: two per batch
    trainer = _trainer(max_steps=2 * steps, callbacks=[record])
    trainer.fit(model, DataLoader(_Repeat(batch, steps), batch_size=None))
    assert trainer.global_step == 2 * steps
    return model, record, initial_basis


@pytest.fixture(scope="module")
def fitted(resnet18_file, batch):
    return _fit(resnet18_file, batch)


# -- registration and construction ------------------------------------------------------------------------


def test_registered() -> None:
    assert METHODS.get("scops") is SCOPS


def test_semantic_term_without_weights_is_a_clear_error() -> None:
    # the default extractor is VGG-19, whose weights must be a local file: never silently random
    with pytest.raises(ValueError, match=r"weights=None given.*semantic_weight: 0 and features: null"):
        SCOPS(num_parts=2, backbone="resnet18")
    with pytest.raises(ValueError, match="semantic_weight > 0 needs a feature extractor"):
        SCOPS(num_parts=2, backbone="resnet18", features=None)
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        SCOPS(num_parts=2, backbone="resnet18", features=None, semantic_weight=0.0, centre_weight=-1.0)
    model = SCOPS(num_parts=2, backbone="resnet18", features=None, semantic_weight=0.0)
    assert model.feature_extractor is None and model.basis is None
    assert model.net.num_classes == 3


def test_feature_extractor_errors(tmp_path, monkeypatch) -> None:
    assert build_feature_extractor(None, None) is None
    with pytest.raises(ValueError, match=r"'vgg19' needs a local weights file.*semantic_weight: 0"):
        build_feature_extractor("vgg19", None)
    missing = tmp_path / "nope" / "vgg19.pth"
    with pytest.raises(
        FileNotFoundError, match=r"weights file not found: .*nope/vgg19\.pth.*semantic_weight: 0"
    ):
        build_feature_extractor("vgg19", missing)
    monkeypatch.delenv("SEGZOO_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="SEGZOO_WEIGHTS is not set"):
        build_feature_extractor("vgg19", "$SEGZOO_WEIGHTS/vgg19.pth")
    with pytest.raises(ValueError, match="unknown feature extractor 'alexnet'"):
        build_feature_extractor("alexnet", missing)


def test_vgg19_features_from_a_local_state_dict(tmp_path) -> None:
    torch.manual_seed(0)
    features = tv_vgg.make_layers(tv_vgg.cfgs["E"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.6.weight"] = torch.zeros(3, 4)  # a classifier key, ignored
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    extractor = build_feature_extractor("vgg19", path)
    assert isinstance(extractor, VGG19Features)
    assert extractor.indices == (31, 35) and extractor.out_channels == 1024
    x = torch.randn(1, 3, 48, 64)
    out = extractor(x)
    assert out.shape == (1, 1024, 3, 4)
    with torch.no_grad():
        relu5_2 = features[:32](x)
        relu5_4 = features[32:36](relu5_2)
    assert torch.allclose(out[:, :512], relu5_2, atol=1e-5) and torch.allclose(
        out[:, 512:], relu5_4, atol=1e-5
    )
    # frozen: no trainable parameters, eval mode whatever train() says
    assert not any(p.requires_grad for p in extractor.parameters())
    assert not extractor.train().training
    with pytest.raises(ValueError, match="unknown layers"):
        VGG19Features(path, layers=("relu9_9",))


def test_backbone_features_from_a_checkpoint(resnet18_file) -> None:
    extractor = BackboneFeatures("resnet18", resnet18_file, layers=("layer3", "layer4"))
    assert extractor.out_channels == 256 + 512
    out = extractor(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 768, 4, 4)  # output stride 16 for both stages
    assert not any(p.requires_grad for p in extractor.parameters()) and not extractor.train().training
    with pytest.raises(ValueError, match="unknown layers"):
        BackboneFeatures("resnet18", resnet18_file, layers=("layer7",))


# -- losses on a batch --------------------------------------------------------------------------------------


def test_equivariance_losses_vanish_for_the_identity_warp_without_jitter(resnet18_file, batch) -> None:
    torch.manual_seed(0)
    identity = dict(
        tps_jitter=0.0,
        warp_rotation=0.0,
        warp_translation=0.0,
        warp_scale=(1.0, 1.0),
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
    )
    model = _model(resnet18_file, **identity)
    losses = model.compute_losses(batch, torch.Generator().manual_seed(0))
    assert losses["equivariance"].item() == pytest.approx(0.0, abs=1e-5)
    assert losses["centre"].item() == pytest.approx(0.0, abs=1e-8)
    # a real warp gives positive values, and every term enters the total with its weight
    model = _model(resnet18_file)
    losses = model.compute_losses(batch, torch.Generator().manual_seed(0))
    assert set(losses) == {"concentration", "equivariance", "centre", "semantic", "orthonormal", "loss"}
    assert losses["equivariance"] > 1e-4 and losses["centre"] > 0
    total = sum(model.loss_weights[k] * v for k, v in losses.items() if k != "loss")
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_saliency_masks_the_features(resnet18_file, batch) -> None:
    torch.manual_seed(0)
    model = _model(resnet18_file, equivariance_weight=0.0, centre_weight=0.0)
    plain = model.compute_losses(batch)["semantic"]
    masked = model.compute_losses({**batch, "saliency": torch.zeros(2, SIZE, SIZE)})["semantic"]
    # S = 0: only ||sum_k R_k w_k||^2 remains
    with torch.no_grad():
        parts = model(batch["image"])[:, 1:]
        recon = torch.einsum("bkhw,kd->bdhw", parts, model.part_basis())
    assert masked.item() == pytest.approx(recon.pow(2).mean().item(), rel=1e-4)
    assert masked.item() != pytest.approx(plain.item(), rel=1e-3)
    model.hparams.use_saliency = False
    ignored = model.compute_losses({**batch, "saliency": torch.zeros(2, SIZE, SIZE)})["semantic"]
    assert ignored.item() == pytest.approx(plain.item(), rel=1e-6)


def test_term_gradient_norms(resnet18_file, batch) -> None:
    torch.manual_seed(0)
    model = _model(resnet18_file)
    losses = model.compute_losses(batch, torch.Generator().manual_seed(0))
    norms = model.term_gradient_norms(losses)
    assert set(norms) == {
        "concentration",
        "equivariance",
        "centre",
        "semantic",
        "semantic_basis",
        "orthonormal_basis",
    }
    assert all(torch.isfinite(v) and v > 0 for v in norms.values())


def test_color_jitter() -> None:
    images = torch.rand(3, 3, 8, 8)
    assert torch.allclose(random_color_jitter(images, None, 0.0, 0.0, 0.0, 0.0), images)
    a = random_color_jitter(images, torch.Generator().manual_seed(1))
    b = random_color_jitter(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, images)
    assert a.min() >= 0 and a.max() <= 1
    # brightness alone scales each image by one factor in [0.7, 1.3]
    dim = torch.full((2, 3, 4, 4), 0.5)
    ratio = random_color_jitter(dim, torch.Generator().manual_seed(2), 0.3, 0.0, 0.0, 0.0) / dim
    assert (
        torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio))
        and ((ratio >= 0.7) & (ratio <= 1.3)).all()
    )


# -- training ------------------------------------------------------------------------------------------------


def test_training_lowers_the_loss(fitted) -> None:
    _, record, _ = fitted
    assert len(record.losses) == STEPS and all(np.isfinite(record.losses))
    first, last = np.mean(record.losses[:6]), np.mean(record.losses[-6:])
    assert last < 0.8 * first, record.losses


def test_basis_stays_non_negative_and_both_optimisers_step(fitted) -> None:
    model, _, initial_basis = fitted
    assert (model.part_basis() >= 0).all()
    assert not torch.allclose(model.basis.detach(), initial_basis)


def test_learning_rates_follow_poly_decay(fitted) -> None:
    _, record, _ = fitted
    lrs = np.array(record.lrs)  # [steps, 2]: the network head group and the basis
    expected = np.array([(1 - (n + 1) / STEPS) ** 0.9 for n in range(STEPS)])
    assert np.allclose(lrs[:, 0], 0.005 * expected, atol=1e-9)
    assert np.allclose(lrs[:, 1], 0.05 * expected, atol=1e-9)


def test_seeded_runs_repeat(fitted, resnet18_file, batch) -> None:
    _, again, _ = _fit(resnet18_file, batch, steps=4)
    _, once_more, _ = _fit(resnet18_file, batch, steps=4)
    assert again.losses == once_more.losses
    assert again.losses[0] == fitted[1].losses[0]  # same seed, same first step, whatever the run length


# -- evaluation and prediction -------------------------------------------------------------------------------


def test_validation_and_test_outputs(resnet18_file, batch) -> None:
    torch.manual_seed(0)
    model = _model(resnet18_file)
    model.eval()
    capture = _Capture()
    loader = DataLoader(_Repeat(batch, 1), batch_size=None)
    _trainer(callbacks=[capture]).validate(model, loader, verbose=False)
    _trainer(callbacks=[capture]).test(model, loader, verbose=False)
    assert len(capture.outputs) == 2
    for out in capture.outputs:
        assert set(out) == {"pred", "target", "landmarks", "keypoints"}
        assert out["pred"].dtype == torch.long and out["pred"].shape == (2, SIZE, SIZE)
        assert out["pred"].min() >= 0 and out["pred"].max() <= K
        assert out["landmarks"].shape == (2, K, 2)
        assert ((out["landmarks"] > -0.5) & (out["landmarks"] < SIZE - 0.5)).all()
        assert torch.equal(out["target"], batch["parts"]) and torch.equal(
            out["keypoints"], batch["keypoints"]
        )
    # the landmarks are the part centres in pixels (eval mode: BatchNorm running statistics)
    model.eval()
    with torch.no_grad():
        probs = model(batch["image"])[:, 1:]
    columns = torch.arange(SIZE, dtype=torch.float32)
    dist = (probs + 1e-3) / (probs + 1e-3).sum(dim=(-2, -1), keepdim=True)
    centre_x = (dist * columns[None, None, None, :]).sum(dim=(-2, -1))
    assert torch.allclose(capture.outputs[0]["landmarks"][..., 0], centre_x, atol=1e-3)


def test_predict_with_and_without_crf(resnet18_file, batch, monkeypatch) -> None:
    torch.manual_seed(0)
    model = _model(resnet18_file, semantic_weight=0.0, features=None)
    model.eval()
    with torch.no_grad():
        out = model.predict_step(batch, 0)
        assert out["pred"].shape == (2, SIZE, SIZE) and out["meta"] is batch["meta"]
        calls = []

        def fake_dense_crf(image, probs, **kwargs):
            calls.append((image, probs, kwargs))
            return np.zeros(probs.shape[1:], dtype=np.int64) + 1

        monkeypatch.setitem(sys.modules, "segzoo.ops.crf", types.SimpleNamespace(dense_crf=fake_dense_crf))
        model.hparams.predict_crf = True
        model.hparams.crf_kwargs = {"iterations": 5}
        refined = model.predict_step(batch, 0)
    assert (refined["pred"] == 1).all() and refined["pred"].dtype == torch.long
    image, probs, kwargs = calls[0]
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
    assert probs.shape == (K + 1, SIZE, SIZE) and np.allclose(probs.sum(0), 1.0, atol=1e-5)
    assert kwargs == {"iterations": 5}
    # the uint8 image is the batch image with the normalisation undone
    expected = torch.tensor(image).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(expected, (batch["image"][0] * std + mean).clamp(0, 1), atol=1 / 255)


def test_checkpoints_leave_out_the_frozen_extractor(resnet18_file) -> None:
    torch.manual_seed(0)
    model = _model(resnet18_file)
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("feature_extractor.") for k in checkpoint["state_dict"])
    assert "basis" in checkpoint["state_dict"]
    restored = _model(resnet18_file)
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"])  # strict: the extractor comes from its own file
    assert torch.equal(restored.basis, model.basis)
    # evaluated without the semantic term, the stored basis is dropped
    plain = _model(resnet18_file, semantic_weight=0.0, features=None)
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    plain.on_load_checkpoint(checkpoint)
    plain.load_state_dict(checkpoint["state_dict"])


def test_dense_sift_features_need_no_file(batch) -> None:
    torch.manual_seed(0)
    model = SCOPS(num_parts=K, backbone="resnet18", features="dense_sift", feature_kwargs={"bin_size": 4})
    assert model.basis.shape == (K, 128)
    losses = model.compute_losses(batch, torch.Generator().manual_seed(0))
    assert float(losses["semantic"].detach()) > 0
    grads = torch.autograd.grad(losses["semantic"], [model.basis])
    assert float(grads[0].abs().sum()) > 0
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("feature_extractor.") for k in checkpoint["state_dict"])
    restored = SCOPS(num_parts=K, backbone="resnet18", features="dense_sift", feature_kwargs={"bin_size": 4})
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"])
    assert torch.equal(restored.basis, model.basis)


# -- configs ------------------------------------------------------------------------------------------------

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "scops"


@pytest.mark.parametrize("name", ["synthetic", "helen"])
def test_configs_parse(name, capsys) -> None:
    import yaml

    from segzoo.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    init = config["model"]["init_args"]
    assert config["model"]["class_path"] == "segzoo.methods.scops.SCOPS" and init["backbone"] == "resnet18"
    if name == "synthetic":
        # no pretrained weights on a fresh machine: the semantic term is off explicitly
        assert (init["semantic_weight"], init["features"]) == (0.0, None)
        assert config["data"]["dataset_kwargs"]["mode"] == "parts"
        assert config["metrics"]["matching"] == "hungarian" and config["metrics"]["num_classes"] == 5
    else:
        assert init["num_parts"] == 8 and init["semantic_weight"] > 0
        assert (init["features"], init["feature_weights"]) == ("vgg19", "$SEGZOO_WEIGHTS/vgg19.pth")
        assert config["data"]["dataset"] == "face_landmarks" and config["data"]["holdout"] == 0.1
        assert config["data"]["resize"] == [128, 128]


def test_synthetic_config_trains_and_validates(tmp_path) -> None:
    from segzoo.cli import main

    main(
        [
            "fit",
            "--config", str(CONFIGS / "synthetic.yaml"),
            "--test_after_fit=false",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--trainer.log_every_n_steps=1",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--data.dataset_kwargs={mode: parts, num_parts: 4, size: [32, 32], num_samples: 2}",
            "--data.batch_size=2",
            "--data.eval_batch_size=2",
        ]
    )  # fmt: skip
    run = tmp_path / "scops_synthetic" / "version_0"
    metrics = (run / "metrics.csv").read_text()
    assert "val/mIoU" in metrics and "train/loss_concentration" in metrics
    assert list((run / "checkpoints").glob("*.ckpt"))
