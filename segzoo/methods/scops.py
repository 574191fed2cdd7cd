"""SCOPS: self-supervised co-part segmentation (Hung et al., CVPR 2019) as a LightningModule."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from kornia.enhance import adjust_hue
from torch import Tensor, nn

from segzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from segzoo.losses.scops import (
    centre_equivariance_loss,
    centres_to_pixels,
    concentration_loss,
    equivariance_kl,
    orthonormality_loss,
    part_centres,
    semantic_consistency_loss,
)
from segzoo.methods.schedules import poly_with_warmup
from segzoo.models import create_model
from segzoo.models.features import build_feature_extractor, resolve_path
from segzoo.ops.tps import random_tps_warp
from segzoo.registry import METHODS

LOSS_NAMES = ("concentration", "equivariance", "centre", "semantic", "orthonormal")
_EXTRACTOR_PREFIX = "feature_extractor."


def random_color_jitter(
    images: Tensor,
    generator: torch.Generator | None = None,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.2,
    hue: float = 0.2,
) -> Tensor:
    """Per-image colour jitter of RGB images ``[B, 3, H, W]`` in [0, 1], batched on the images' device.

    torchvision's ColorJitter semantics in a fixed order (brightness, contrast, saturation, hue): factors
    ``U(1 - x, 1 + x)`` (clamped at 0) for the first three, a hue shift of ``U(-hue, hue)`` turns of the
    colour wheel. Random numbers come from ``generator`` on the CPU, so a seed repeats on every device.
    """
    batch = images.shape[0]

    def draw(bound: float, low: float = 0.0) -> Tensor:
        values = (torch.rand(batch, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * bound
        return values.clamp_min(low - 1.0).to(device=images.device, dtype=images.dtype)

    def gray(x: Tensor) -> Tensor:
        weights = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)

    x = images
    if brightness > 0:
        x = (x * (1.0 + draw(brightness)).view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    if contrast > 0:
        mean = gray(x).mean(dim=(-2, -1), keepdim=True)
        x = (mean + (x - mean) * (1.0 + draw(contrast)).view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    if saturation > 0:
        g = gray(x)
        x = (g + (x - g) * (1.0 + draw(saturation)).view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    if hue > 0:
        x = adjust_hue(x, draw(hue) * (2.0 * math.pi)).clamp(0.0, 1.0)
    return x


@METHODS.register("scops")
class SCOPS(L.LightningModule):
    """SCOPS: K part maps plus background learnt from an unlabelled collection of one object category.

    Network: ``create_model("deeplabv2", num_classes=num_parts + 1, backbone=..., output_stride=...)``
    (ASPP-v2 on a dilated ResNet), logits at the input size, softmax over channels; channel 0 is the
    background, channels 1..K the part maps ``R``. Losses (see :mod:`segzoo.losses.scops` for formulas):

    - ``concentration``: sum over parts of each part's spatial variance (normalised coordinates);
    - ``equivariance``: ``KL(T(R(I)) || R(T'(I)))`` per pixel over the valid warped pixels, where ``T`` is a
      random TPS + similarity warp (:func:`segzoo.ops.tps.random_tps_warp`) and ``T'`` adds a colour
      jitter; the ``T(R(I))`` branch is detached;
    - ``centre``: squared distance between the part centres of ``R(T'(I))`` and of ``T(R(I))`` (both
      restricted to the pixels the warp keeps inside the image);
    - ``semantic``: reconstruction of frozen features ``V`` (optionally ``S * V`` with the batch's
      ``saliency`` map ``S``) by ``sum_k R_k w_k`` with a non-negative basis ``W = ReLU(basis)``;
    - ``orthonormal``: ``sum((W_hat W_hat^T - I)^2)`` on the row-normalised basis.

    Reductions: means over the batch, pixels and feature channels; sums over parts and over the K x K
    Gram entries (per-image quantities, so the weights do not depend on batch size, image size or the
    feature width).

    Default weights (concentration 1, equivariance 2, centre 1, semantic 1, orthonormal 0.1) give the terms
    comparable gradient scales. Measured at initialisation on synthetic parts (3 batches of 4; unweighted
    gradient norms on the network): concentration 4.3-6.8, KL 2.1-2.7, centre 3.0-5.0, semantic 5.6-6.4 at
    64 px with K=4 (ResNet-18, VGG-19 features of random init); 14-19, 2.7-3.6, 6-12 and 3.9-6.6 at 128 px
    with K=8; ResNet-50 makes them 10-80x larger (clipping absorbs a common scale; the semantic term is then
    the weakest, ~5x below the others). On the basis: semantic 0.013-0.025, orthonormal 0.28-0.85. The
    released weights converted to these reductions (concentration 10/B ~ 1.7, KL 1000/(K+1) ~ 111,
    centre 100/(2K) ~ 6, semantic 1e4, orthonormal 0.1) make the weighted KL gradient ~30x and the
    semantic one ~7000x the concentration's at initialisation with these features; and without the
    semantic term, on a network without pretrained weights, that KL-heavy balance drove every pixel to one
    part within 30 steps (measured; docs/scops.md), while the defaults kept all parts in use. The semantic
    weight was calibrated on random-init features: with pretrained VGG-19 or another extractor,
    log the gradient norms (``grad_norm_interval``) and re-balance ``semantic_weight``.

    Optimisation (manual): SGD for the network (``lr_backbone`` on the backbone, ``lr_head`` on the
    classifier) and SGD for the basis (``lr_basis``), each with momentum, weight decay, its own
    gradient-norm clip (``clip_norm`` / ``basis_clip_norm``, None disables) and its own poly decay
    ``(1 - t / T) ** power`` over the training batches ``T``. Lightning counts every optimiser step in
    ``trainer.global_step``, so with the basis active ``global_step`` = 2 x batches; the schedules count
    batches. Random warps and jitters come from a generator seeded by (``warp_seed`` or the global seed,
    process rank, batch index), so seeded runs repeat.

    Args:
        num_parts: K (parts besides the background).
        backbone, output_stride, backbone_weights, backbone_weights_prefix, freeze_bn: the DeepLab v2
            network (see :func:`segzoo.models.create_model`); ``backbone_weights`` is a local ImageNet (or
            self-supervised) ResNet file (``~`` and variables such as ``$SEGZOO_WEIGHTS`` are expanded).
        features, feature_weights, feature_kwargs: frozen extractor for the semantic term, built by
            :func:`segzoo.models.features.build_feature_extractor` (``"vgg19"`` with a local torchvision
            VGG-19 file, ``"backbone"`` with a segzoo/R2O checkpoint, or ``"dense_sift"``, hand-made
            and without a file). Only built when ``semantic_weight > 0``; then a missing file is an
            error, never silent random features.
        concentration_weight, equivariance_weight, centre_weight, semantic_weight, orthonormal_weight:
            loss weights (0 disables a term and skips its computation).
        concentration_eps: the ``eps`` added to part maps before normalising them to distributions.
        use_saliency: multiply the features by ``batch["saliency"]`` when the batch has it.
        lr_backbone, lr_head, lr_basis, momentum, weight_decay, poly_power, basis_poly_power, clip_norm,
            basis_clip_norm: optimisation (released: 1e-5, 1e-4, 0.01, 0.9, 5e-4, 0.9, constant basis
            lr = power 0, clip 5 and 5).
        tps_grid_size, tps_jitter, warp_rotation, warp_translation, warp_scale: the random warp (5x5
            control grid, +-0.01, +-60 degrees, +-0.1, zoom U(0.7, 2.0)).
        brightness, contrast, saturation, hue: the colour jitter of the warped branch.
        image_mean, image_std: the normalisation of the batch images (to undo it for the colour jitter and
            the CRF); None takes the datamodule's, ImageNet's without one.
        predict_crf: refine ``predict`` labels with a dense CRF (:func:`segzoo.ops.crf.dense_crf`).
        crf_kwargs: keyword arguments of ``dense_crf`` (its defaults are SCOPS's display CRF: Gaussian
            pairwise term ``sxy_gaussian=3``, ``compat_gaussian=5``, ``iterations=5``).
        warp_seed: seed of the warp/jitter generator; None uses the global seed (``PL_GLOBAL_SEED``).
        grad_norm_interval: every this many batches, log ``train/grad_norm_<term>``: the norm of each
            weighted term's gradient (see :meth:`term_gradient_norms`); 0 disables. Use it to re-balance the
            weights for another feature extractor or dataset.
    """

    def __init__(
        self,
        num_parts: int = 8,
        backbone: str = "resnet50",
        output_stride: int = 8,
        backbone_weights: str | None = None,
        backbone_weights_prefix: str | None = None,
        freeze_bn: bool = False,
        features: str | None = "vgg19",
        feature_weights: str | None = None,
        feature_kwargs: dict[str, Any] | None = None,
        concentration_weight: float = 1.0,
        equivariance_weight: float = 2.0,
        centre_weight: float = 1.0,
        semantic_weight: float = 1.0,
        orthonormal_weight: float = 0.1,
        concentration_eps: float = 1e-3,
        use_saliency: bool = True,
        lr_backbone: float = 1e-5,
        lr_head: float = 1e-4,
        lr_basis: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        poly_power: float = 0.9,
        basis_poly_power: float = 0.9,
        clip_norm: float | None = 5.0,
        basis_clip_norm: float | None = 5.0,
        tps_grid_size: int = 5,
        tps_jitter: float = 0.01,
        warp_rotation: float = 60.0,
        warp_translation: float = 0.1,
        warp_scale: Sequence[float] = (0.7, 2.0),
        brightness: float = 0.3,
        contrast: float = 0.3,
        saturation: float = 0.2,
        hue: float = 0.2,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        predict_crf: bool = False,
        crf_kwargs: dict[str, Any] | None = None,
        warp_seed: int | None = None,
        grad_norm_interval: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(num_parts, int) or num_parts < 1:
            raise ValueError(f"SCOPS: num_parts must be a positive int, got {num_parts!r}")
        weights = dict(
            zip(
                LOSS_NAMES,
                (
                    concentration_weight,
                    equivariance_weight,
                    centre_weight,
                    semantic_weight,
                    orthonormal_weight,
                ),
                strict=True,
            )
        )
        negative = {k: v for k, v in weights.items() if v < 0}
        if negative:
            raise ValueError(f"SCOPS: loss weights must be >= 0, got {negative}")
        if len(warp_scale) != 2:
            raise ValueError(f"SCOPS: warp_scale must be [low, high], got {warp_scale!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.loss_weights = weights
        self.net = create_model(
            "deeplabv2",
            num_classes=num_parts + 1,
            backbone=backbone,
            output_stride=output_stride,
            backbone_weights=resolve_path(backbone_weights) if backbone_weights is not None else None,
            backbone_weights_prefix=backbone_weights_prefix,
            freeze_bn=freeze_bn,
        )
        self.feature_extractor: nn.Module | None = None
        self.basis: nn.Parameter | None = None
        if semantic_weight > 0:
            if features is None:
                raise ValueError(
                    "SCOPS: semantic_weight > 0 needs a feature extractor, but features is None. Set "
                    "features: vgg19 with feature_weights: <local torchvision vgg19 file> (or features: "
                    "backbone with a segzoo/R2O checkpoint, or features: dense_sift, which needs no file), "
                    "or disable the term with semantic_weight: 0."
                )
            self.feature_extractor = build_feature_extractor(
                features, feature_weights, **(feature_kwargs or {})
            )
            # |N(0, 1)| as in the released code; ReLU in part_basis() keeps the used basis non-negative
            self.basis = nn.Parameter(torch.randn(num_parts, self.feature_extractor.out_channels).abs())
        self._mean = tuple(image_mean) if image_mean is not None else None
        self._std = tuple(image_std) if image_std is not None else None

    # -- model ----------------------------------------------------------------------------------------
    def forward(self, image: Tensor) -> Tensor:
        """Part probabilities ``[B, K + 1, H, W]`` (softmax; channel 0 = background)."""
        return self.net(image)["out"].softmax(dim=1)

    def part_basis(self) -> Tensor:
        """The non-negative part basis ``W = ReLU(basis)`` ``[K, D]``."""
        if self.basis is None:
            raise RuntimeError("SCOPS: no part basis (the semantic consistency term is disabled)")
        return torch.relu(self.basis)

    @property
    def num_parts(self) -> int:
        return int(self.hparams.num_parts)

    def setup(self, stage: str) -> None:
        """Take the image normalisation from the datamodule when it was not given."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self._mean is None:
            self._mean = tuple(getattr(datamodule, "mean", None) or IMAGENET_MEAN)
        if self._std is None:
            self._std = tuple(getattr(datamodule, "std", None) or IMAGENET_STD)

    def _normalisation(self, like: Tensor) -> tuple[Tensor, Tensor]:
        mean = like.new_tensor(self._mean if self._mean is not None else IMAGENET_MEAN).view(1, -1, 1, 1)
        std = like.new_tensor(self._std if self._std is not None else IMAGENET_STD).view(1, -1, 1, 1)
        return mean, std

    def _warp_generator(self, step: int) -> torch.Generator:
        seed = self.hparams.warp_seed
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        rank = self.global_rank if self._trainer is not None else 0
        state = np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(1, dtype=np.uint64)
        return torch.Generator().manual_seed(int(state[0]))

    # -- losses ---------------------------------------------------------------------------------------
    def compute_losses(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Every active (unweighted) loss term of a batch, plus ``loss``: their weighted sum."""
        hp = self.hparams
        images = batch["image"]
        size = images.shape[-2:]
        probs = self(images)
        eps = hp.concentration_eps
        losses: dict[str, Tensor] = {}
        if self.loss_weights["concentration"] > 0:
            losses["concentration"] = concentration_loss(probs[:, 1:], eps)
        if self.loss_weights["equivariance"] > 0 or self.loss_weights["centre"] > 0:
            warp = random_tps_warp(
                images.shape[0],
                generator=generator,
                device=images.device,
                dtype=images.dtype,
                grid_size=hp.tps_grid_size,
                jitter=hp.tps_jitter,
                rotation=hp.warp_rotation,
                translation=hp.warp_translation,
                scale=tuple(hp.warp_scale),
            )
            mean, std = self._normalisation(images)
            rgb = random_color_jitter(
                (images * std + mean).clamp(0.0, 1.0),
                generator,
                hp.brightness,
                hp.contrast,
                hp.saturation,
                hp.hue,
            )
            # zero padding in normalised space is the mean colour, as in the released code
            log_warped_pred = self.net(warp.warp((rgb - mean) / std))["out"].log_softmax(dim=1)
            warped_probs = warp.warp(probs)
            valid = warp.valid_mask(*size)
            if self.loss_weights["equivariance"] > 0:
                losses["equivariance"] = equivariance_kl(log_warped_pred, warped_probs, valid)
            if self.loss_weights["centre"] > 0:
                losses["centre"] = centre_equivariance_loss(
                    part_centres(log_warped_pred.exp()[:, 1:], eps, valid),
                    part_centres(warped_probs[:, 1:], eps, valid),
                )
        if self.feature_extractor is not None:
            with torch.no_grad():
                features = self.feature_extractor(images)
            saliency = batch.get("saliency") if hp.use_saliency else None
            basis = self.part_basis()
            losses["semantic"] = semantic_consistency_loss(probs[:, 1:], features, basis, saliency)
            if self.loss_weights["orthonormal"] > 0:
                losses["orthonormal"] = orthonormality_loss(basis)
        losses["loss"] = sum(self.loss_weights[name] * value for name, value in losses.items())
        return losses

    def term_gradient_norms(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """L2 norm of each *weighted* term's gradient on the network (and ``<term>_basis`` on the basis).

        One extra backward pass per term (the graph is kept): a diagnostic for choosing loss weights, enabled
        every ``grad_norm_interval`` training batches.
        """
        net = [p for p in self.net.parameters() if p.requires_grad]
        norms: dict[str, Tensor] = {}
        for name in LOSS_NAMES:
            if name not in losses or not losses[name].requires_grad:
                continue
            targets = ([] if name == "orthonormal" else net) + (
                [self.basis] if self.basis is not None else []
            )
            grads = torch.autograd.grad(
                self.loss_weights[name] * losses[name], targets, retain_graph=True, allow_unused=True
            )
            on_net = [g for g, p in zip(grads, targets, strict=True) if g is not None and p is not self.basis]
            if name != "orthonormal":
                norms[name] = (
                    torch.linalg.vector_norm(torch.stack([g.norm() for g in on_net]))
                    if on_net
                    else (losses[name].new_zeros(()))
                )
            if self.basis is not None and grads[-1] is not None:
                norms[f"{name}_basis"] = grads[-1].norm()
        return norms

    # -- training -------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        step = int(schedulers[0].last_epoch)
        losses = self.compute_losses(batch, self._warp_generator(step))
        interval = self.hparams.grad_norm_interval
        if interval and step % interval == 0:
            self.log_dict(
                {f"train/grad_norm_{k}": v for k, v in self.term_gradient_norms(losses).items()},
                batch_size=batch["image"].shape[0],
            )
        for optimizer in optimizers:
            optimizer.zero_grad()
        self.manual_backward(losses["loss"])
        clips = (self.hparams.clip_norm, self.hparams.basis_clip_norm)
        for optimizer, scheduler, clip in zip(optimizers, schedulers, clips, strict=False):
            if clip is not None and clip > 0:
                self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
            optimizer.step()
            scheduler.step()
        terms = {f"train/loss_{k}": v.detach() for k, v in losses.items() if k != "loss"}
        self.log_dict(terms, batch_size=batch["image"].shape[0])
        self.log("train/loss", losses["loss"].detach(), prog_bar=True, batch_size=batch["image"].shape[0])
        return losses["loss"].detach()

    def _total_batches(self) -> int:
        trainer = self.trainer
        num_optimizers = 2 if self.basis is not None else 1
        estimate = trainer.estimated_stepping_batches
        if trainer.max_steps != -1 and estimate == trainer.max_steps:
            # max_steps counts optimiser steps; each batch steps every optimiser once
            estimate = math.ceil(trainer.max_steps / num_optimizers)
        if not math.isfinite(estimate):
            raise ValueError(
                "SCOPS needs a finite trainer.max_epochs or trainer.max_steps for its poly learning-rate "
                "decay"
            )
        return max(1, int(estimate))

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        hp = self.hparams
        backbone_ids = {id(p) for p in self.net.backbone.parameters()}
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in trainable if id(p) in backbone_ids], "lr": hp.lr_backbone},
            {"params": [p for p in trainable if id(p) not in backbone_ids], "lr": hp.lr_head},
        ]
        sgd = dict(momentum=hp.momentum, weight_decay=hp.weight_decay)
        total = self._total_batches()
        optimizers = [torch.optim.SGD([g for g in groups if g["params"]], lr=hp.lr_head, **sgd)]
        schedulers = [poly_with_warmup(optimizers[0], total, power=hp.poly_power)]
        if self.basis is not None:
            optimizers.append(torch.optim.SGD([self.basis], lr=hp.lr_basis, **sgd))
            schedulers.append(poly_with_warmup(optimizers[1], total, power=hp.basis_poly_power))
        return optimizers, schedulers

    # -- evaluation -----------------------------------------------------------------------------------
    def _unpadded(self, batch: dict[str, Any]) -> Tensor | None:
        """``[B, 1, H, W]`` mask of each image's own pixels when the collate padded the batch, else None."""
        images = batch["image"]
        height, width = images.shape[-2:]
        sizes = [m.get("input_size", (height, width)) for m in batch.get("meta", [])]
        if all(tuple(s) == (height, width) for s in sizes):
            return None
        mask = images.new_zeros(images.shape[0], 1, height, width)
        for i, (h, w) in enumerate(sizes):
            mask[i, :, :h, :w] = 1.0
        return mask

    def _eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, Any]:
        images = batch["image"]
        probs = self(images)
        mask = self._unpadded(batch)
        eps = self.hparams.concentration_eps
        centres = part_centres(probs[:, 1:], eps, mask)
        self.log(
            f"{stage}/loss_concentration",
            concentration_loss(probs[:, 1:], eps, mask),
            # float: Lightning averages the summed sample counts over processes, an int count truncates
            batch_size=float(images.shape[0]),
            sync_dist=True,
        )
        out: dict[str, Any] = {
            "pred": probs.argmax(dim=1),
            "landmarks": centres_to_pixels(centres, images.shape[-2:]),
        }
        for out_key, batch_key in (("target", "parts"), ("keypoints", "keypoints")):
            if batch.get(batch_key) is not None:
                out[out_key] = batch[batch_key]
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Argmax labels (0 = background), refined by a dense CRF when ``predict_crf`` is set."""
        images = batch["image"]
        probs = self(images)
        if not self.hparams.predict_crf:
            return {"pred": probs.argmax(dim=1), "meta": batch["meta"]}
        try:
            from segzoo.ops.crf import dense_crf
        except ImportError as err:
            raise ImportError(
                f"SCOPS: predict_crf=True needs segzoo.ops.crf and pydensecrf ({err}); install segzoo[crf] "
                "or set predict_crf: false"
            ) from err
        mean, std = self._normalisation(images)
        rgb = ((images * std + mean).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        rgb = rgb.permute(0, 2, 3, 1).cpu().numpy()
        scores = probs.float().cpu().numpy()
        kwargs = self.hparams.crf_kwargs or {}
        labels = [
            np.asarray(dense_crf(np.ascontiguousarray(img), p, **kwargs))
            for img, p in zip(rgb, scores, strict=True)
        ]
        pred = torch.as_tensor(np.stack(labels), dtype=torch.long, device=images.device)
        return {"pred": pred, "meta": batch["meta"]}

    # -- checkpoints: the frozen extractor is rebuilt from its file, not stored -------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(_EXTRACTOR_PREFIX)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if state is None:
            return
        for key in [k for k in state if k.startswith(_EXTRACTOR_PREFIX)]:
            del state[key]
        if self.feature_extractor is not None:
            state.update({_EXTRACTOR_PREFIX + k: v for k, v in self.feature_extractor.state_dict().items()})
        elif "basis" in state:
            # a run trained with the semantic term, evaluated without it: the basis is not needed
            del state["basis"]


__all__ = ["SCOPS", "random_color_jitter"]
