"""Supervised semantic segmentation: any registered model trained with cross-entropy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from segzoo.methods.inference import infer_logits
from segzoo.methods.schedules import poly_with_warmup


class SupervisedSegmentation(L.LightningModule):
    """Train, evaluate and predict with a segmentation model returning ``{"out", "aux"?}``.

    Args:
        model: a registered model name (built with ``num_classes`` and ``model_kwargs``) or a module.
        num_classes: number of classes; taken from the datamodule when omitted.
        ignore_index: target value excluded from the loss.
        class_weights: optional per-class cross-entropy weights.
        aux_weight: weight of the auxiliary head's loss (when the model returns ``aux``).
        optimizer: ``"sgd"`` or ``"adamw"``; ``lr`` applies to the backbone, ``lr * head_lr_mult`` to the
            rest (heads, auxiliary head).
        warmup_steps, warmup_ratio, poly_power: linear warm-up from ``lr * warmup_ratio``, then poly decay
            over the trainer's total steps.
        inference: ``"whole"`` or ``"slide"`` (windows of ``slide_crop_size`` every ``slide_stride`` pixels)
            for val/test/predict; ``scales`` and ``flip`` add multi-scale and flipped views. (Not named
            ``crop_size``: Lightning merges the module's and the datamodule's hyperparameters and refuses
            one key with two values, and the datamodule's ``crop_size`` is the training crop.)
    """

    def __init__(
        self,
        model: str | nn.Module = "unet",
        num_classes: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        ignore_index: int = 255,
        class_weights: list[float] | None = None,
        aux_weight: float = 0.4,
        optimizer: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        head_lr_mult: float = 1.0,
        warmup_steps: int = 0,
        warmup_ratio: float = 0.1,
        poly_power: float = 0.9,
        inference: str = "whole",
        slide_crop_size: list[int] | None = None,
        slide_stride: list[int] | None = None,
        scales: list[float] = (1.0,),  # type: ignore[assignment]
        flip: bool = False,
    ) -> None:
        super().__init__()
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        if inference not in ("whole", "slide"):
            raise ValueError(f"inference must be 'whole' or 'slide', got {inference!r}")
        if inference == "slide" and (slide_crop_size is None or slide_stride is None):
            raise ValueError(
                f"inference='slide' needs slide_crop_size and slide_stride, got {slide_crop_size!r} and "
                f"{slide_stride!r}"
            )
        self.save_hyperparameters(ignore=["model"] if isinstance(model, nn.Module) else None)
        self.model: nn.Module | None = model if isinstance(model, nn.Module) else None
        if class_weights is not None:
            self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32))
        else:
            self.class_weights = None
        if self.model is None and num_classes is not None:
            self._build_model(num_classes)

    # -- model ----------------------------------------------------------------------------------------
    def _build_model(self, num_classes: int) -> None:
        from segzoo.models import create_model

        kwargs = self.hparams.model_kwargs or {}
        self.model = create_model(self.hparams.model, num_classes=num_classes, **kwargs)
        self.hparams.num_classes = num_classes

    def configure_model(self) -> None:
        """Build the model from the datamodule's number of classes when it was not given."""
        if self.model is not None:
            return
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        num_classes = getattr(datamodule, "num_classes", 0)
        if not num_classes:
            raise ValueError(
                "SupervisedSegmentation needs num_classes (none given and the datamodule has none)"
            )
        self._build_model(num_classes)

    @property
    def num_classes(self) -> int:
        return int(self.hparams.num_classes)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(image)

    # -- steps ----------------------------------------------------------------------------------------
    def _loss(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = dict(weight=self.class_weights, ignore_index=self.hparams.ignore_index)
        losses = {"loss_ce": F.cross_entropy(outputs["out"], target, **ce)}
        if outputs.get("aux") is not None and self.hparams.aux_weight > 0:
            losses["loss_aux"] = self.hparams.aux_weight * F.cross_entropy(outputs["aux"], target, **ce)
        losses["loss"] = sum(losses.values())
        return losses

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self._loss(self(batch["image"]), batch["mask"])
        self.log_dict(
            {f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=batch["image"].shape[0]
        )
        return losses["loss"]

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits at the image's size with the configured inference mode."""
        hp = self.hparams
        return infer_logits(
            lambda x: self.model(x)["out"],
            image,
            self.num_classes,
            mode=hp.inference,
            crop_size=hp.slide_crop_size,
            stride=hp.slide_stride,
            scales=tuple(hp.scales),
            flip=hp.flip,
        )

    def _eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        logits = self.predict_logits(batch["image"])
        out = {"pred": logits.argmax(dim=1)}
        if "mask" in batch:
            out["target"] = batch["mask"]
            loss = F.cross_entropy(logits, batch["mask"], ignore_index=self.hparams.ignore_index)
            # A float batch size: Lightning averages the summed sample counts over processes, and an
            # integer count would be truncated (13 samples on 2 processes -> 6), inflating the loss.
            self.log(f"{stage}/loss", loss, batch_size=float(batch["image"].shape[0]), sync_dist=True)
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return {"pred": self.predict_logits(batch["image"]).argmax(dim=1), "meta": batch["meta"]}

    # -- optimisation ---------------------------------------------------------------------------------
    def _param_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        backbone = getattr(self.model, "backbone", None)
        backbone_ids = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in trainable if id(p) in backbone_ids], "lr": hp.lr},
            {"params": [p for p in trainable if id(p) not in backbone_ids], "lr": hp.lr * hp.head_lr_mult},
        ]
        return [g for g in groups if g["params"]]

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                self._param_groups(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
            )
        else:
            opt = torch.optim.AdamW(self._param_groups(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = poly_with_warmup(opt, total, hp.warmup_steps, hp.warmup_ratio, hp.poly_power)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
