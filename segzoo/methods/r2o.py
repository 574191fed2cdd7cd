"""R2O: Refine and Represent, region-to-object self-supervised pretraining (Gokul et al., 2022).

The module alternates, every step, between predicting masks from the target encoder's own features (SLIC
superpixels of the whole image, clustered with K-means) and learning region-level representations inside
those masks with a BYOL objective. The batch comes from :class:`segzoo.data.views.R2OViews`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchvision.ops import roi_align

from segzoo.checkpoint_io import save_atomic
from segzoo.distributed import gather_rows
from segzoo.losses.r2o import region_loss, region_pool
from segzoo.methods.lars import LARS, lars_param_groups
from segzoo.models.backbones import create_backbone
from segzoo.models.features import resolve_path
from segzoo.ops.kmeans import KMeansResult, kmeans
from segzoo.registry import METHODS

ENCODER_FILE = "r2o_encoder.pth"
KMEANS_SCOPES = ("process", "global")


def k_schedule(epoch: int, total: int, k_max: int = 128, k_min: int = 4) -> int:
    """Number of clusters at ``epoch``: ``floor(k_min + (k_max - k_min) * cos(pi/2 * epoch / total))``.

    ``k_max`` at epoch 0 (region level), ``k_min`` at ``epoch == total`` (object level); epochs past
    ``total`` stay at ``k_min``.
    """
    if total < 1:
        raise ValueError(f"k_schedule: total epochs must be >= 1, got {total}")
    if not 1 <= k_min <= k_max:
        raise ValueError(f"k_schedule: expected 1 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    progress = min(max(epoch, 0), total) / total
    return int(math.floor(k_min + (k_max - k_min) * math.cos(math.pi / 2 * progress) + 1e-9))


def tau(step: int, total: int, base: float = 0.99) -> float:
    """BYOL's EMA momentum at ``step`` of ``total``: ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``."""
    if total < 1:
        raise ValueError(f"tau: total steps must be >= 1, got {total}")
    progress = min(max(step, 0), total) / total
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector/predictor: Linear -> BatchNorm1d -> ReLU -> Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


def superpixel_embeddings(features: Tensor, superpixels: Tensor) -> tuple[Tensor, Tensor]:
    """Average ``features [B, C, h, w]`` inside every superpixel of ``superpixels [B, H, W]`` (ids from 0).

    Pooling happens at feature resolution: each feature cell is weighted by the number of the superpixel's
    pixels that fall inside it (the nearest cell of each pixel), which equals average-pooling the features
    nearest-upsampled to ``H x W`` without building that large map.

    Returns:
        ``embeddings [N, C]`` of the N superpixels of the whole batch (image 0's first, in id order) and
        ``counts [B]``: superpixels per image (``max id + 1``).
    """
    if superpixels.ndim != 3 or superpixels.shape[0] != features.shape[0]:
        raise ValueError(
            f"superpixel_embeddings: superpixels must be [B, H, W] with B = {features.shape[0]}, got "
            f"{tuple(superpixels.shape)}"
        )
    b, c, h, w = features.shape
    height, width = superpixels.shape[-2:]
    superpixels = superpixels.to(device=features.device, dtype=torch.long)
    counts = superpixels.flatten(1).amax(1) + 1
    n_max = int(counts.max())
    rows = (torch.arange(height, device=features.device) * h // height)[:, None]
    cols = (torch.arange(width, device=features.device) * w // width)[None, :]
    cell = (rows * w + cols).expand(b, height, width)
    offsets = torch.arange(b, device=features.device)[:, None, None] * n_max
    index = ((superpixels + offsets) * (h * w) + cell).reshape(-1)
    coverage = torch.bincount(index, minlength=b * n_max * h * w).view(b, n_max, h * w).to(features.dtype)
    sums = coverage @ features.flatten(2).transpose(1, 2)
    means = sums / coverage.sum(-1, keepdim=True).clamp_min(1.0)
    present = torch.arange(n_max, device=features.device)[None, :] < counts[:, None]
    return means[present], counts


def global_kmeans(
    embeddings: Tensor,
    k: int,
    iters: int,
    seed: int,
    all_gather: Callable[[Tensor], Tensor],
    world_size: int,
    rank: int,
) -> tuple[KMeansResult, slice]:
    """K-means over the ``[N_r, C]`` embeddings of every process at once (``min(k, sum N_r)`` clusters).

    ``all_gather`` maps one process's tensor to the stack of all processes' (``LightningModule.all_gather``).
    The points are concatenated in rank order and every rank runs the same seeded :func:`kmeans` on them,
    so all ranks hold the same result, equal to one process clustering the concatenation. Returns that
    result and the slice of its labels that belongs to this rank's points.
    """
    count = torch.tensor(embeddings.shape[0], device=embeddings.device)
    counts = all_gather(count).view(-1)
    points = gather_rows(embeddings, all_gather, world_size)
    result = kmeans(points, min(k, points.shape[0]), iters=iters, seed=seed)
    start = int(counts[:rank].sum())
    return result, slice(start, start + embeddings.shape[0])


def encoder_state(encoder: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of ``encoder``'s state dict, as :meth:`R2O.save_encoder` writes it."""
    return {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}


def paint_clusters(labels: Tensor, counts: Tensor, superpixels: Tensor, size: int) -> Tensor:
    """Cluster id of every pixel of a ``size x size`` map: ``labels [N]`` (one per superpixel, in the order
    of :func:`superpixel_embeddings`) painted through ``superpixels [B, H, W]`` sampled at pixel centres."""
    b, height, width = superpixels.shape
    n_max = int(counts.max())
    table = labels.new_zeros(b, n_max)
    present = torch.arange(n_max, device=labels.device)[None, :] < counts.to(labels.device)[:, None]
    table[present] = labels
    rows = ((torch.arange(size, device=labels.device) + 0.5) * height / size).long().clamp_(max=height - 1)
    cols = ((torch.arange(size, device=labels.device) + 0.5) * width / size).long().clamp_(max=width - 1)
    small = superpixels.to(labels.device).long()[:, rows][:, :, cols]
    return table.gather(1, small.flatten(1)).view(b, size, size)


def align_masks(
    masks: Tensor, boxes: Tensor, flips: Tensor, raw_size: tuple[int, int], out_size: tuple[int, int]
) -> Tensor:
    """Cut each view's crop out of whole-image masks and flip it like the view.

    Args:
        masks: ``[B, K, M, M']`` masks of the whole (raw) image.
        boxes: ``[B, 4]`` crop boxes ``x1, y1, x2, y2`` in raw-view pixels (``raw_size`` = (H, W)).
        flips: ``[B]`` bool, whether that view was flipped horizontally after cropping.
        out_size: ``(h, w)`` of the view's feature map.

    Returns ``[B, K, h, w]``: ``roi_align`` (pixel-aligned, 2x2 samples per bin) of every box, mirrored where
    its own view was flipped (the released code flipped both views always).
    """
    scale_x = masks.shape[-1] / raw_size[1]
    scale_y = masks.shape[-2] / raw_size[0]
    boxes = boxes.to(device=masks.device, dtype=masks.dtype)
    scaled = boxes * boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
    rois = torch.cat([torch.arange(len(boxes), device=masks.device, dtype=masks.dtype)[:, None], scaled], 1)
    aligned = roi_align(
        masks, rois, output_size=tuple(out_size), spatial_scale=1.0, sampling_ratio=2, aligned=True
    )
    flips = flips.to(device=masks.device, dtype=torch.bool).view(-1, 1, 1, 1)
    return torch.where(flips, aligned.flip(-1), aligned)


@METHODS.register("r2o")
class R2O(L.LightningModule):
    """R2O pretraining of a ResNet encoder; export the online encoder with :meth:`save_encoder`.

    Networks: online = encoder (``backbone``, output stride 32) + projector MLP (C -> ``projector_hidden``
    -> BN -> ReLU -> ``projector_out``) + predictor MLP (``projector_out`` -> ``predictor_hidden`` -> BN ->
    ReLU -> ``projector_out``); target = encoder + projector, an EMA of the online ones (parameters only,
    updated after every optimiser step with :func:`tau`). As in BYOL and R2O the target runs in training
    mode (batch statistics in its BatchNorm layers); its running statistics only follow its own forwards.

    A step, for a batch of :class:`segzoo.data.views.R2OViews`:

    1. masks (no gradient): target ``layer3`` features of the raw view, averaged inside each SLIC
       superpixel at feature resolution (:func:`superpixel_embeddings`), L2-normalised, clustered jointly
       over the whole batch into K clusters (:func:`segzoo.ops.kmeans.kmeans`, k-means++, up to
       ``kmeans_iters`` iterations, seeded by the global step, on the features' device), painted on a
       ``mask_size`` map, one-hot, cut out for each view with :func:`align_masks` at the view's feature
       size (7x7 at 224 px);
    2. regions present in both views (area > ``min_region_area``) are mask-pooled from each view's encoder
       features, projected (and predicted online); the loss is :func:`segzoo.losses.r2o.region_loss`.
       With fewer than 2 matched regions in the batch (BatchNorm needs 2) the step's loss is an exact 0.

    K follows :func:`k_schedule` over ``k_epochs`` (default: ``trainer.max_epochs``) from ``k_max`` to
    ``k_min``, and is capped by the number of superpixels in the batch. Optimiser: :class:`LARS` with
    ``lr = base_lr * global_batch / 256`` (global batch = the datamodule's ``batch_size`` x devices),
    linear warm-up over ``warmup_epochs`` then cosine to 0, per step, times ``K(epoch) / 16`` when
    ``lr_k_scaling``. Biases and BatchNorm parameters get no weight decay and no LARS adaptation.

    Args:
        backbone: ``resnet18`` / ``resnet34`` / ``resnet50`` / ``resnet101``.
        backbone_weights: optional local file to initialise both encoders.
        projector_hidden, projector_out, predictor_hidden: MLP widths (R2O: 4096, 256, 4096).
        k_max, k_min, k_epochs: the K curriculum.
        mask_size: side of the painted cluster map (56).
        kmeans_iters: K-means iteration cap (200).
        kmeans_scope: under DDP, ``"process"`` (default) clusters each process's batch on its own, like a
            single-GPU run of that batch and with no communication; ``"global"`` all-gathers the superpixel
            embeddings of every process and runs the same seeded K-means on every rank over all of them
            (the global batch, as one process with the whole batch would; cluster ids agree across ranks),
            at the price of the gather and of every rank clustering ``world_size`` times more points.
            Identical without DDP. See docs/r2o.md, "Under DDP".
        min_region_area: a region counts in a view when its mask covers more than this fraction.
        base_lr, lars_momentum, weight_decay, lars_eta, warmup_epochs, lr_k_scaling: optimisation.
        base_tau: EMA momentum at step 0 (0.99, rising to 1).
        export_encoder: where :meth:`on_fit_end` writes the online encoder (default
            ``<log_dir>/r2o_encoder.pth``); load it with ``backbone_weights:`` in any supervised model or as
            ``feature_weights:`` of SCOPS (``features: backbone``).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        backbone_weights: str | None = None,
        projector_hidden: int = 4096,
        projector_out: int = 256,
        predictor_hidden: int = 4096,
        k_max: int = 128,
        k_min: int = 4,
        k_epochs: int | None = None,
        mask_size: int = 56,
        kmeans_iters: int = 200,
        kmeans_scope: str = "process",
        min_region_area: float = 1e-3,
        base_lr: float = 0.3,
        lars_momentum: float = 0.9,
        weight_decay: float = 1e-6,
        lars_eta: float = 0.001,
        warmup_epochs: float = 3.0,
        lr_k_scaling: bool = True,
        base_tau: float = 0.99,
        export_encoder: str | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= k_min <= k_max:
            raise ValueError(f"R2O: expected 1 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
        if kmeans_scope not in KMEANS_SCOPES:
            raise ValueError(f"R2O: kmeans_scope must be one of {KMEANS_SCOPES}, got {kmeans_scope!r}")
        if not 0.0 <= base_tau <= 1.0:
            raise ValueError(f"R2O: base_tau must be in [0, 1], got {base_tau}")
        self.save_hyperparameters()
        weights = resolve_path(backbone_weights) if backbone_weights is not None else None
        # online before target: a checkpoint's first matching key prefix is then the online encoder's
        self.online_encoder = create_backbone(backbone, output_stride=32, weights=weights)
        channels = self.online_encoder.out_channels
        self.online_projector = mlp(channels, projector_hidden, projector_out)
        self.predictor = mlp(projector_out, predictor_hidden, projector_out)
        self.target_encoder = copy.deepcopy(self.online_encoder)
        self.target_projector = copy.deepcopy(self.online_projector)
        for param in self._target_parameters():
            param.requires_grad_(False)
        self._ema_step = 0

    # -- networks -------------------------------------------------------------------------------------
    def _online_parameters(self) -> list[nn.Parameter]:
        return [*self.online_encoder.parameters(), *self.online_projector.parameters()]

    def _target_parameters(self) -> list[nn.Parameter]:
        return [*self.target_encoder.parameters(), *self.target_projector.parameters()]

    def forward(self, image: Tensor) -> Tensor:
        """Online encoder features ``[B, C, H/32, W/32]``."""
        return self.online_encoder(image)["layer4"]

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """``target <- momentum * target + (1 - momentum) * online`` for encoder and projector parameters."""
        for online, target in zip(self._online_parameters(), self._target_parameters(), strict=True):
            target.mul_(momentum).add_(online.detach(), alpha=1.0 - momentum)

    def _target_layer3(self, image: Tensor) -> Tensor:
        enc = self.target_encoder
        x = enc.maxpool(enc.relu(enc.bn1(enc.conv1(image))))
        return enc.layer3(enc.layer2(enc.layer1(x)))

    # -- schedules ------------------------------------------------------------------------------------
    def _k_total(self) -> int:
        if self.hparams.k_epochs is not None:
            return int(self.hparams.k_epochs)
        epochs = self.trainer.max_epochs if self._trainer is not None else None
        if epochs is None or epochs < 1:
            raise ValueError(
                "R2O: the K curriculum needs a number of epochs: set trainer.max_epochs or model k_epochs "
                f"(got max_epochs={epochs})"
            )
        return int(epochs)

    def current_k(self, epoch: int | None = None) -> int:
        """K of the K-means at ``epoch`` (default: the current epoch)."""
        epoch = self.current_epoch if epoch is None else epoch
        return k_schedule(epoch, self._k_total(), self.hparams.k_max, self.hparams.k_min)

    # -- masks ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_masks(self, raw: Tensor, superpixels: Tensor, k: int, seed: int) -> Tensor:
        """One-hot cluster masks ``[B, K', mask_size, mask_size]`` of the raw views (``K' = min(k, N)``
        for N superpixels in the batch) from the target encoder."""
        features = self._target_layer3(raw)
        embeddings, counts = superpixel_embeddings(features, superpixels)
        embeddings = F.normalize(embeddings.float(), dim=-1)
        labels, k = self.cluster(embeddings, k, seed)
        painted = paint_clusters(labels, counts, superpixels, self.hparams.mask_size)
        return F.one_hot(painted, k).permute(0, 3, 1, 2).to(raw.dtype)

    @torch.no_grad()
    def cluster(self, embeddings: Tensor, k: int, seed: int) -> tuple[Tensor, int]:
        """K-means labels of this process's ``embeddings [N, C]`` and the K used (``min(k, points)``); with
        ``kmeans_scope="global"`` under DDP the points of all processes are clustered together (same seed,
        same result on every rank) and this process's slice of the labels is returned."""
        world_size = self.trainer.world_size if self._trainer is not None else 1
        if self.hparams.kmeans_scope == "process" or world_size <= 1:
            k = min(k, embeddings.shape[0])
            return kmeans(embeddings[None], k, iters=self.hparams.kmeans_iters, seed=seed).labels[0], k
        result, own = global_kmeans(
            embeddings, k, self.hparams.kmeans_iters, seed, self.all_gather, world_size, self.global_rank
        )
        return result.labels[own], result.centroids.shape[0]

    # -- training -------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any], k: int, seed: int) -> dict[str, Tensor]:
        """The R2O loss of a batch with ``k`` clusters; also ``regions`` (matched regions per image)."""
        raw, superpixels = batch["raw"], batch["superpixels"]
        masks = self.predict_masks(raw, superpixels, k, seed)
        raw_size = (superpixels.shape[-2], superpixels.shape[-1])
        online, target, valid = [], [], []
        for i in (1, 2):
            view = batch[f"view{i}"]
            features = self.online_encoder(view)["layer4"]
            aligned = align_masks(masks, batch[f"boxes{i}"], batch[f"flip{i}"], raw_size, features.shape[-2:])
            with torch.no_grad():
                target_features = self.target_encoder(view)["layer4"]
            online.append((features, aligned))
            target.append((target_features, aligned))
            valid.append(aligned.flatten(2).mean(-1) > self.hparams.min_region_area)
        both = valid[0] & valid[1]
        regions = both.sum()
        if int(regions) < 2:
            # Every parameter takes part (with a zero gradient), so DDP's gradient reduction sees the same
            # parameters on every rank whichever branch each rank took; no find_unused_parameters needed.
            heads = [*self.online_projector.parameters(), *self.predictor.parameters()]
            zero = (sum(f.sum() for f, _ in online) + sum(p.sum() for p in heads)) * 0.0
            return {"loss": zero, "regions": regions.float() / both.shape[0]}
        q = [self.predictor(self.online_projector(region_pool(f, m)[both])) for f, m in online]
        with torch.no_grad():
            z = [self.target_projector(region_pool(f, m)[both]) for f, m in target]
        loss = region_loss(q[0], z[1], q[1], z[0])
        return {"loss": loss, "regions": regions.float() / both.shape[0]}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        k = self.current_k()
        self._ema_step = int(self.global_step)
        out = self.compute_loss(batch, k, seed=self._ema_step)
        size = batch["raw"].shape[0]
        self.log("train/loss", out["loss"].detach(), prog_bar=True, batch_size=size)
        self.log_dict({"train/k": float(k), "train/regions": out["regions"]}, batch_size=size)
        return out["loss"]

    def _total_steps(self) -> int:
        estimate = self.trainer.estimated_stepping_batches
        if not math.isfinite(estimate):
            raise ValueError("R2O needs a finite trainer.max_epochs or max_steps for its schedules")
        return max(1, int(estimate))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        momentum = tau(self._ema_step, self._total_steps(), self.hparams.base_tau)
        self.momentum_update(momentum)
        self.log("train/tau", momentum, batch_size=batch["raw"].shape[0])

    def lr_factor(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        """Multiplier of the base learning rate at optimiser ``step``: warm-up, cosine, optional K/16."""
        warmup = int(round(self.hparams.warmup_epochs * steps_per_epoch))
        if step < warmup:
            factor = (step + 1) / warmup
        else:
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.hparams.lr_k_scaling:
            factor *= self.current_k(step // steps_per_epoch) / 16.0
        return factor

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        total = self._total_steps()
        epochs = self.trainer.max_epochs
        steps_per_epoch = max(1, math.ceil(total / epochs)) if epochs and epochs > 0 else total
        datamodule = getattr(self.trainer, "datamodule", None)
        batch = getattr(datamodule, "batch_size", None)
        # without a datamodule the batch size is unknown: no linear scaling
        global_batch = batch * self.trainer.world_size if batch else 256
        lr = hp.base_lr * global_batch / 256
        groups = lars_param_groups(
            [self.online_encoder, self.online_projector, self.predictor], hp.weight_decay
        )
        optimizer = LARS(
            groups, lr=lr, momentum=hp.lars_momentum, weight_decay=hp.weight_decay, eta=hp.lars_eta
        )
        scheduler = LambdaLR(optimizer, lambda step: self.lr_factor(step, total, steps_per_epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- export ---------------------------------------------------------------------------------------
    def save_encoder(self, path: str | Path) -> Path:
        """Write the online encoder as a plain state dict (torchvision ResNet key names, no ``fc``).

        It loads with ``segzoo.create_model(name, backbone_weights=path)``, as ``backbone_weights:`` of any
        supervised model's YAML, and as ``BackboneFeatures(weights=path)`` (SCOPS ``features: backbone``).
        """
        # Atomic: a SCOPS or fine-tuning run reading this file never sees a half-written encoder.
        return save_atomic(encoder_state(self.online_encoder), Path(path).expanduser())

    def on_fit_end(self) -> None:
        """Export the online encoder (rank 0) to ``export_encoder`` or ``<log_dir>/r2o_encoder.pth``."""
        target = self.hparams.export_encoder
        # trainer.log_dir is a broadcast from rank 0: every rank must call it, not only the one that writes.
        log_dir = self.trainer.log_dir if target is None else None
        if not self.trainer.is_global_zero:
            return
        if target is None:
            if log_dir is None:
                return
            target = Path(log_dir) / ENCODER_FILE
        written = self.save_encoder(resolve_path(target))
        rank_zero_info(f"R2O: online encoder written to {written} (use it as backbone_weights: {written})")


__all__ = [
    "R2O",
    "align_masks",
    "encoder_state",
    "global_kmeans",
    "k_schedule",
    "mlp",
    "paint_clusters",
    "superpixel_embeddings",
    "tau",
]
