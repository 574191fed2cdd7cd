"""Behaviour of SupervisedSegmentation: loss, optimiser groups, schedule, model building, step contracts."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
from torch import nn

from segzoo.data import SegDataModule
from segzoo.methods import SupervisedSegmentation
from segzoo.methods.schedules import poly_with_warmup

TINY_UNET = {"base_channels": 4, "depth": 2}
TINY_DATA = {"num_classes": 3, "size": [32, 32], "num_samples": 8}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP threads waiting on each other cost 10-50x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def quiet_logging_without_trainer():
    """Steps called directly (no Trainer) warn that ``self.log`` has nowhere to go; that is expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        yield


class FixedNet(nn.Module):
    """A 1x1 conv with known weights, optionally returning an auxiliary output (a second 1x1 conv)."""

    def __init__(self, num_classes: int = 3, aux: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.aux = nn.Conv2d(3, num_classes, 1) if aux else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"out": self.conv(x)}
        if self.aux is not None:
            out["aux"] = self.aux(x)
        return out


def _batch(height: int = 4, width: int = 5, batch: int = 2) -> dict:
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(batch, 3, height, width, generator=generator)
    mask = torch.randint(0, 3, (batch, height, width), generator=generator)
    mask[0, 0, :3] = 255  # some ignored pixels
    meta = [{"path": f"synthetic://test/{i}", "index": i, "size": (height, width)} for i in range(batch)]
    return {"image": image, "mask": mask, "meta": meta}


def _hand_ce(logits: torch.Tensor, target: torch.Tensor, weights: list[float], ignore: int) -> torch.Tensor:
    """Weighted cross-entropy written out: sum_i w[y_i] * -log p_i(y_i) / sum_i w[y_i] over kept pixels."""
    log_p = logits.log_softmax(dim=1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    y = target.reshape(-1)
    keep = y != ignore
    w = torch.tensor(weights)[y[keep]]
    picked = log_p[keep].gather(1, y[keep, None]).squeeze(1)
    return -(w * picked).sum() / w.sum()


def _trainer(max_steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **kwargs,
    )


def _datamodule(**kwargs) -> SegDataModule:
    return SegDataModule(dataset_kwargs=TINY_DATA, batch_size=2, eval_batch_size=2, hflip=0.0, **kwargs)


# -- loss -----------------------------------------------------------------------------------------------
def test_loss_is_weighted_cross_entropy_with_ignore_index():
    weights = [1.0, 2.5, 0.5]
    module = SupervisedSegmentation(FixedNet(), num_classes=3, class_weights=weights, ignore_index=255)
    batch = _batch()
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        logits = module.model(batch["image"])["out"]
    expected = _hand_ce(logits, batch["mask"], weights, 255)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    unweighted = SupervisedSegmentation(FixedNet(), num_classes=3).training_step(batch, 0)
    assert unweighted.item() == pytest.approx(
        _hand_ce(logits, batch["mask"], [1.0] * 3, 255).item(), rel=1e-5
    )
    assert unweighted.item() != pytest.approx(loss.item(), rel=1e-3)


def test_aux_loss_is_added_with_its_weight():
    batch = _batch()
    net = FixedNet(aux=True)
    with torch.no_grad():
        out = net(batch["image"])
    main = _hand_ce(out["out"], batch["mask"], [1.0] * 3, 255)
    aux = _hand_ce(out["aux"], batch["mask"], [1.0] * 3, 255)
    for weight in (0.4, 1.5):
        loss = SupervisedSegmentation(net, num_classes=3, aux_weight=weight).training_step(batch, 0)
        assert loss.item() == pytest.approx((main + weight * aux).item(), rel=1e-5)
    no_aux = SupervisedSegmentation(net, num_classes=3, aux_weight=0.0).training_step(batch, 0)
    assert no_aux.item() == pytest.approx(main.item(), rel=1e-5)


# -- optimisation ---------------------------------------------------------------------------------------
class LrRecorder(L.Callback):
    """Learning rate of every parameter group at the start of every training batch."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def test_head_lr_multiplier_and_poly_warmup_schedule_per_batch():
    lr, mult, steps = 0.01, 10.0, 5
    module = SupervisedSegmentation(
        "deeplabv3",
        num_classes=3,
        model_kwargs={"backbone": "resnet18", "aux": True},
        lr=lr,
        head_lr_mult=mult,
        warmup_steps=2,
        warmup_ratio=0.1,
        poly_power=0.9,
    )
    recorder = LrRecorder()
    _trainer(steps, callbacks=[recorder]).fit(module, datamodule=_datamodule())

    optimizer = module.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD)
    backbone, heads = optimizer.param_groups
    assert {id(p) for p in backbone["params"]} == {id(p) for p in module.model.backbone.parameters()}
    head_params = [*module.model.head.parameters(), *module.model.aux_head.parameters()]
    assert {id(p) for p in heads["params"]} == {id(p) for p in head_params}

    # The same schedule driven by hand gives the factors the Trainer must have applied, one per batch.
    probe = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = poly_with_warmup(probe, steps, warmup_steps=2, warmup_ratio=0.1, power=0.9)
    factors = []
    for _ in range(steps):
        factors.append(probe.param_groups[0]["lr"])
        probe.step()
        schedule.step()
    assert factors[0] == pytest.approx(0.1)  # warm-up starts at warmup_ratio * lr
    assert factors[2] == pytest.approx((1 - 2 / steps) ** 0.9)  # then poly decay
    assert len(recorder.lrs) == steps
    for (lr_backbone, lr_head), factor in zip(recorder.lrs, factors, strict=True):
        assert lr_backbone == pytest.approx(lr * factor)
        assert lr_head == pytest.approx(lr * mult * factor)


def test_adamw_and_bad_names_raise():
    module = SupervisedSegmentation(FixedNet(), num_classes=3, optimizer="adamw", lr=0.003, weight_decay=0.01)
    _trainer(1).fit(module, datamodule=_datamodule())
    optimizer = module.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adamw', got 'adam'"):
        SupervisedSegmentation(FixedNet(), num_classes=3, optimizer="adam")
    with pytest.raises(ValueError, match="inference must be 'whole' or 'slide', got 'tiles'"):
        SupervisedSegmentation(FixedNet(), num_classes=3, inference="tiles")
    with pytest.raises(ValueError, match="inference='slide' needs slide_crop_size and slide_stride"):
        SupervisedSegmentation(FixedNet(), num_classes=3, inference="slide", slide_crop_size=[8, 8])


# -- building the model ---------------------------------------------------------------------------------
def test_num_classes_from_datamodule_is_saved_and_rebuilt_by_load_from_checkpoint(tmp_path):
    module = SupervisedSegmentation("unet", model_kwargs=TINY_UNET)
    assert module.model is None
    trainer = _trainer(2)
    trainer.fit(module, datamodule=_datamodule())
    assert module.hparams.num_classes == 3
    assert module.model.num_classes == 3
    path = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(path)

    loaded = SupervisedSegmentation.load_from_checkpoint(path, map_location="cpu")
    assert loaded.num_classes == 3
    image = torch.randn(1, 3, 20, 28)
    module.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(image)["out"], module(image)["out"])


def test_missing_num_classes_without_a_datamodule_is_an_error():
    module = SupervisedSegmentation("unet", model_kwargs=TINY_UNET)
    with pytest.raises(ValueError, match="needs num_classes"):
        module.configure_model()


def test_bf16_mixed_precision_through_the_trainer():
    module = SupervisedSegmentation("unet", model_kwargs=TINY_UNET)
    recorder = LrRecorder()
    trainer = _trainer(2, precision="bf16-mixed", callbacks=[recorder])
    trainer.fit(module, datamodule=_datamodule())
    assert len(recorder.lrs) == 2
    assert math.isfinite(trainer.callback_metrics["train/loss"].item())
    assert next(module.model.parameters()).dtype == torch.float32  # autocast, weights stay float32


# -- evaluation and prediction --------------------------------------------------------------------------
def _unet(**kwargs) -> SupervisedSegmentation:
    torch.manual_seed(0)
    module = SupervisedSegmentation("unet", num_classes=3, model_kwargs=TINY_UNET, **kwargs)
    return module.eval()


@pytest.mark.parametrize("stage", ["validation", "test"])
def test_eval_steps_return_pred_and_target_at_the_input_size(stage):
    module = _unet()
    batch = _batch(height=13, width=19)
    with torch.no_grad():
        out = getattr(module, f"{stage}_step")(batch, 0)
    assert set(out) == {"pred", "target"}
    assert out["pred"].shape == (2, 13, 19) and out["pred"].dtype == torch.int64
    assert out["pred"].min() >= 0 and out["pred"].max() < 3
    assert out["target"] is batch["mask"]
    with torch.no_grad():
        expected = module(batch["image"])["out"].argmax(1)
    assert torch.equal(out["pred"], expected)


def test_slide_inference_with_one_window_covering_the_image_equals_whole():
    whole = _unet()
    slide = _unet(inference="slide", slide_crop_size=[64, 64], slide_stride=[32, 32])
    slide.load_state_dict(whole.state_dict())
    image = _batch(height=21, width=30)["image"]
    with torch.no_grad():
        a, b = whole.predict_logits(image), slide.predict_logits(image)
    assert a.shape == (2, 3, 21, 30)
    assert torch.allclose(a, b, atol=1e-6)
    # Several overlapping windows still give logits at the input size.
    several = _unet(inference="slide", slide_crop_size=[8, 12], slide_stride=[6, 8])
    with torch.no_grad():
        assert several.predict_logits(image).shape == (2, 3, 21, 30)


def test_multi_scale_flip_inference_gives_log_probabilities_at_the_input_size():
    module = _unet(scales=[0.5, 1.0], flip=True)
    image = _batch(height=16, width=24)["image"]
    with torch.no_grad():
        logits = module.predict_logits(image)
    assert logits.shape == (2, 3, 16, 24)
    assert torch.allclose(logits.exp().sum(1), torch.ones(2, 16, 24), atol=1e-5)


def test_predict_step_returns_pred_and_meta():
    module = _unet()
    batch = _batch(height=12, width=16)
    del batch["mask"]
    with torch.no_grad():
        out = module.predict_step(batch, 0)
    assert set(out) == {"pred", "meta"}
    assert out["pred"].shape == (2, 12, 16) and out["pred"].dtype == torch.int64
    assert out["meta"] == batch["meta"]
