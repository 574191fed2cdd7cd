"""R2O pretraining on unlabelled images for a CPU budget, then R2O weights vs the same random initialisation.

One run does:

1. **Pretraining** (:class:`segzoo.methods.R2O`, Lightning) on the images of ``--sources`` under
   ``--data-root`` (``$SEGZOO_DATA``; labels are never read). The number of steps is ``--steps``, or comes
   from ``--minutes`` of wall-clock time and a timed calibration (three steps of a throwaway copy of the
   model), so the K curriculum (``k_max`` -> ``k_min``, reached at the last epoch) and the learning-rate and
   EMA schedules run to their end; epochs are shortened with ``limit_train_batches`` when needed so the
   curriculum has at least ``--min-epochs`` values. Reported: images/s over the whole fit, and the fraction
   of that time the training loop spent blocked in the loader's ``next()`` (decoding, the views and SLIC run
   in ``--num-workers`` loader processes), beside the loader work per image measured serially in the main
   process.
2. **(a) Frozen foreground segmentation of the Weizmann horses** (EVALUATION.md, R2O protocol): each image
   resized to ``--fg-size`` square, SLIC superpixels, ``--fg-layer`` features of the frozen encoder (eval
   mode) averaged inside each superpixel, L2-normalised, K-means with K = 2 per image, the cluster painted
   back and resized (nearest) to the mask, Hungarian matching to the binary ground truth per image; the
   matched confusion matrices are summed over the set for foreground IoU and mIoU over {background,
   foreground}. The "set" variant clusters all superpixels of all images jointly (K = 2) and matches once.
   Every K-means keeps the best of ``--fg-restarts`` seeded runs (lowest inertia). ``--fg-bn-images N``
   (a control, off by default) first re-estimates both encoders' BatchNorm statistics on N horse images.
3. **(b) CamVid fine-tuning**: ``--ft-model`` on the same ResNet with ``backbone_weights`` = the encoder,
   :class:`segzoo.methods.SupervisedSegmentation` (AdamW, warm-up + poly) for ``--ft-steps`` steps on
   random-scale crops of CamVid train, then val mIoU at the labels' 360x480 (inference at
   ``--ft-eval-scale``, logits upsampled). Both runs start from the same seed, so head initialisation and
   data order are identical; only the encoder weights differ.

The random-init encoder is the R2O model's own starting point (same seed, saved before the first step).
Files in ``--out-dir``: ``r2o_encoder.pth`` (the online encoder; written through a temporary file and a
rename, so readers never see a partial file), ``random_encoder.pth``, ``r2o_target_encoder.pth`` (for the
figure), ``results.json``. With ``--figure`` the target encoder's masks across the curriculum are painted
on a few images. ``--reuse`` skips the pretraining and evaluates the encoders already in ``--out-dir``
(results then go to ``results_reuse_seed<N>.json``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/r2o_pretrain.py --config configs/r2o/shared_images.yaml
    .venv/bin/python benchmarks/r2o_pretrain.py --config configs/r2o/shared_images.yaml --minutes 3 \\
        --ft-steps 20 --out-dir runs/r2o_smoke --figure runs/r2o_smoke/masks.png   # a quick check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image, ImageDraw
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from segzoo.checkpoint_io import save_atomic  # noqa: E402
from segzoo.data import SegDataModule  # noqa: E402
from segzoo.data.collate import collate_samples  # noqa: E402
from segzoo.data.datamodule import resolve_root  # noqa: E402
from segzoo.data.datasets.unlabelled import ImageFolder  # noqa: E402
from segzoo.data.datasets.weizmann import WeizmannHorses  # noqa: E402
from segzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from segzoo.data.views import R2OViews  # noqa: E402
from segzoo.methods import R2O, SupervisedSegmentation  # noqa: E402
from segzoo.methods.r2o import encoder_state, paint_clusters, superpixel_embeddings  # noqa: E402
from segzoo.metrics.confusion import confusion_matrix, scores_from_confusion  # noqa: E402
from segzoo.metrics.matching import apply_matching, hungarian_match  # noqa: E402
from segzoo.models.backbones import create_backbone  # noqa: E402
from segzoo.ops.kmeans import kmeans  # noqa: E402
from segzoo.ops.superpixels import slic  # noqa: E402
from segzoo.viz import denormalize, grid, make_palette, overlay  # noqa: E402

ENCODER = "r2o_encoder.pth"
RANDOM = "random_encoder.pth"
TARGET = "r2o_target_encoder.pth"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- data -----------------------------------------------------------------------------------------------
def unlabelled_images(root: Path, sources: Sequence[str], transforms: Any = None) -> ConcatDataset:
    """Every image of the ``sources`` folders (relative to ``root``) as one unlabelled dataset."""
    parts = []
    for source in sources:
        folder = root / source
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: pretraining source folder not found (sources are relative to data_root={root})"
            )
        parts.append(ImageFolder(folder, transforms=transforms))
    return ConcatDataset(parts)


class TimedLoader:
    """Iterate a DataLoader and record how long every ``next()`` blocks: the training loop's wait for data."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.waits: list[float] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - start)
            yield batch


class UnlabelledData(L.LightningDataModule):
    """Shuffled, seeded batches of ``dataset``; R2O reads ``batch_size`` for its learning-rate scaling."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.num_workers, self.seed = dataset, batch_size, num_workers, seed
        self.timed: TimedLoader | None = None

    def train_dataloader(self) -> TimedLoader:
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=True,
            collate_fn=collate_samples,
            generator=torch.Generator().manual_seed(self.seed),
        )
        self.timed = TimedLoader(loader)
        return self.timed


class Progress(L.Callback):
    """Wall time of the fit, images seen, and a log line every ``every`` steps."""

    def __init__(self, every: int = 20) -> None:
        self.every, self.images, self.start, self.end = every, 0, 0.0, 0.0
        self.k_seen: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.images += batch["raw"].shape[0]
        k = pl_module.current_k()
        if not self.k_seen or self.k_seen[-1] != k:
            self.k_seen.append(k)
        step = trainer.global_step
        if step % self.every == 0:
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            rate = self.images / max(1e-9, time.perf_counter() - self.start)
            log(f"  step {step} epoch {trainer.current_epoch} K {k} loss {loss:.4f} ({rate:.1f} img/s)")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()


def loader_costs(dataset: ConcatDataset, views: R2OViews, n: int) -> dict[str, float]:
    """Per-image milliseconds, serially in this process, of reading, of the whole R2O views (SLIC
    included) and of SLIC alone, on ``n`` images spread over the dataset."""
    picks = np.linspace(0, len(dataset) - 1, n).round().astype(int).tolist()
    read = full = superpixels = 0.0
    for index in picks:
        part = next(i for i, end in enumerate(dataset.cumulative_sizes) if index < end)
        local = index - (dataset.cumulative_sizes[part - 1] if part else 0)
        folder: ImageFolder = dataset.datasets[part]
        start = time.perf_counter()
        sample = folder.load(local)
        read += time.perf_counter() - start
        start = time.perf_counter()
        views(dict(sample))
        full += time.perf_counter() - start
        raw = TF.resize(
            sample["image"].as_subclass(torch.Tensor),
            [views.size, views.size],
            InterpolationMode.BICUBIC,
            antialias=True,
        )
        start = time.perf_counter()
        slic(raw.permute(1, 2, 0).numpy(), n_segments=views.n_segments, compactness=views.compactness)
        superpixels += time.perf_counter() - start
    return {"read_ms": 1e3 * read / n, "views_ms": 1e3 * full / n, "slic_ms": 1e3 * superpixels / n}


# -- pretraining ----------------------------------------------------------------------------------------
def build_r2o(args: argparse.Namespace, **overrides: Any) -> R2O:
    """The R2O model of the benchmark's settings, initialised from ``args.seed``."""
    torch.manual_seed(args.seed)
    kwargs = dict(
        backbone=args.backbone,
        projector_hidden=args.projector_hidden,
        projector_out=args.projector_out,
        predictor_hidden=args.predictor_hidden,
        k_max=args.k_max,
        k_min=args.k_min,
        kmeans_iters=args.kmeans_iters,
        base_lr=args.base_lr,
        warmup_epochs=args.warmup_epochs,
    )
    return R2O(**{**kwargs, **overrides})


def seconds_per_step(model: R2O, loader: DataLoader, k: int, steps: int = 3) -> float:
    """Median seconds of a forward + backward + EMA update of ``model``, a throwaway (its BatchNorm
    statistics and target move); the first step is untimed, and so is fetching the batches."""
    probe = model.train()
    times = []
    for i, batch in zip(range(steps + 1), loader, strict=False):
        start = time.perf_counter()
        out = probe.compute_loss(batch, k, seed=i)
        out["loss"].backward()
        probe.momentum_update(0.99)
        probe.zero_grad(set_to_none=True)
        if i > 0:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def pretrain(args: argparse.Namespace, root: Path, out_dir: Path) -> tuple[R2O, dict[str, Any]]:
    """Pretrain R2O for ``args.minutes``; writes the random-init, online and target encoders."""
    views = R2OViews(size=args.size, n_segments=args.n_segments)
    dataset = unlabelled_images(root, args.sources, views)
    log(f"pretraining images: {len(dataset)} from {', '.join(args.sources)}")
    costs = loader_costs(unlabelled_images(root, args.sources), views, n=32)
    log(f"loader work per image (serial): {costs}")

    step_s = None
    if args.steps > 0:
        total = args.steps
    else:
        calib = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collate_samples,
                           generator=torch.Generator().manual_seed(args.seed + 1))  # fmt: skip
        step_s = seconds_per_step(build_r2o(args), calib, args.k_max)
        total = max(args.min_epochs, int(0.92 * args.minutes * 60 / step_s))
    full_epoch = len(dataset) // args.batch_size
    epochs = max(args.min_epochs, round(total / full_epoch))
    per_epoch = max(1, min(full_epoch, round(total / epochs)))
    planned = f"calibration {step_s:.2f} s/step" if step_s else f"--steps {args.steps}"
    log(f"{planned} -> {epochs} epochs x {per_epoch} steps of {args.batch_size} (full epoch {full_epoch})")

    # K reaches k_min at the last epoch (K(epoch) over epochs - 1): with a dozen epochs the plain schedule
    # would end at K = 20, never at the object level
    model = build_r2o(args, k_epochs=max(1, epochs - 1))
    save_atomic(encoder_state(model.online_encoder), out_dir / RANDOM)
    data = UnlabelledData(dataset, args.batch_size, args.num_workers, args.seed)
    progress = Progress()
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=epochs,
        limit_train_batches=per_epoch,
        max_time=datetime.timedelta(minutes=1.5 * args.minutes),  # a safety net, not the plan
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out_dir / "pretrain"),
        callbacks=[progress],
    )
    L.seed_everything(args.seed, workers=True)
    trainer.fit(model, datamodule=data)
    model.save_encoder(out_dir / f".{ENCODER}.tmp")
    os.replace(out_dir / f".{ENCODER}.tmp", out_dir / ENCODER)
    save_atomic(encoder_state(model.target_encoder), out_dir / TARGET)
    log(f"encoder written to {out_dir / ENCODER}")

    wall = progress.end - progress.start
    waits = data.timed.waits if data.timed is not None else []
    stats = {
        "images": len(dataset),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "planned_steps": epochs * per_epoch,
        "steps_per_epoch": per_epoch,
        "k_values": progress.k_seen,
        "plan": planned,
        "wall_s": wall,
        "images_per_s": progress.images / wall,
        "wait_s": sum(waits),
        "wait_fraction": sum(waits) / wall,
        "wait_fraction_after_first": sum(waits[1:]) / wall,
        "loader_ms_per_image": costs,
    }
    return model, stats


# -- (a) frozen foreground ------------------------------------------------------------------------------
@torch.no_grad()
def frozen_foreground(
    encoder: torch.nn.Module,
    horses: Sequence[dict[str, Any]],
    size: int,
    layer: str,
    n_segments: int,
    seed: int,
    restarts: int = 1,
) -> dict[str, float]:
    """EVALUATION.md's R2O foreground protocol with a frozen encoder: per-image and whole-set K = 2.

    ``restarts``: seeded K-means runs per clustering, the lowest inertia kept (with one, the per-image
    scores of a random-init encoder moved from 14 to 9 foreground IoU between K-means seeds 0 and 1).
    """
    encoder.eval()
    encoder.out_features = [layer]
    device = next(encoder.parameters()).device
    per_image = torch.zeros(2, 2, dtype=torch.long)
    items = []
    for index in range(len(horses)):
        sample = horses[index]
        image, mask = sample["image"].as_subclass(torch.Tensor), sample["mask"].as_subclass(torch.Tensor)
        raw = TF.resize(image, [size, size], InterpolationMode.BICUBIC, antialias=True)
        segments = torch.from_numpy(slic(raw.permute(1, 2, 0).numpy(), n_segments=n_segments))[None]
        x = TF.normalize(TF.to_dtype(raw, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)
        features = encoder(x[None].to(device))[layer]
        embeddings, counts = superpixel_embeddings(features, segments.to(device))
        embeddings = F.normalize(embeddings.float(), dim=-1)
        labels = kmeans(embeddings, 2, iters=100, seed=seed, n_init=restarts).labels
        pred = paint_clusters(labels, counts, segments.to(device), size).cpu()
        pred = F.interpolate(pred[None].float(), size=mask.shape[-2:], mode="nearest")[0, 0].long()
        conf = confusion_matrix(pred, mask, num_classes=2, num_clusters=2, ignore_index=None)
        per_image += apply_matching(conf, hungarian_match(conf))[:, :2].cpu()
        items.append((embeddings.cpu(), counts.cpu(), segments, mask))
    # the whole set at once: one K-means over every superpixel, one matching
    joint = kmeans(torch.cat([e for e, *_ in items]), 2, iters=100, seed=seed, n_init=restarts).labels
    offsets = np.cumsum([0] + [len(e) for e, *_ in items])
    whole = torch.zeros(2, 2, dtype=torch.long)
    for i, (_, counts, segments, mask) in enumerate(items):
        pred = paint_clusters(joint[offsets[i] : offsets[i + 1]], counts, segments, size)
        pred = F.interpolate(pred[None].float(), size=mask.shape[-2:], mode="nearest")[0, 0].long()
        whole += confusion_matrix(pred, mask, num_classes=2, num_clusters=2, ignore_index=None)
    whole = apply_matching(whole, hungarian_match(whole))[:, :2]
    a, b = scores_from_confusion(per_image), scores_from_confusion(whole)
    return {
        "image_fg_iou": 100 * float(a["IoU"][1]),
        "image_miou": 100 * a["mIoU"],
        "set_fg_iou": 100 * float(b["IoU"][1]),
        "set_miou": 100 * b["mIoU"],
    }


@torch.no_grad()
def recalibrate_batchnorm(
    encoder: torch.nn.Module, horses: Sequence[dict[str, Any]], size: int, n: int
) -> None:
    """Re-estimate every BatchNorm's running statistics as plain averages over forwards (training mode) of
    the first ``n`` images at ``size``; no weight changes. A control: training moves these statistics
    towards the data's, which alone changes frozen eval-mode features."""
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the batches below
    images = []
    for index in range(min(n, len(horses))):
        image = horses[index]["image"].as_subclass(torch.Tensor)
        raw = TF.resize(image, [size, size], InterpolationMode.BICUBIC, antialias=True)
        images.append(TF.normalize(TF.to_dtype(raw, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD))
    device = next(encoder.parameters()).device
    encoder.train()
    for chunk in torch.stack(images).split(16):
        encoder(chunk.to(device))
    encoder.eval()


# -- (b) CamVid fine-tuning -----------------------------------------------------------------------------
def finetune_camvid(weights: Path, args: argparse.Namespace, root: Path) -> dict[str, float]:
    """Fine-tune ``args.ft_model`` from the encoder ``weights`` for ``args.ft_steps`` steps; val mIoU."""
    L.seed_everything(args.seed, workers=True)
    data = SegDataModule(
        dataset="camvid",
        root=str(root / "camvid"),
        train_split="train",
        val_split="val",
        test_split=None,
        predict_split=None,
        batch_size=args.ft_batch_size,
        eval_batch_size=4,
        num_workers=args.num_workers,
        scale_range=list(args.ft_scale_range),
        crop_size=list(args.ft_crop),
        hflip=0.5,
        seed=args.seed,
    )
    module = SupervisedSegmentation(
        model=args.ft_model,
        num_classes=data.num_classes,
        model_kwargs={"backbone": args.backbone, "backbone_weights": str(weights)},
        ignore_index=255,
        class_weights=list(args.ft_class_weights) if args.ft_class_weights else None,
        optimizer="adamw",
        lr=args.ft_lr,
        weight_decay=1e-4,
        warmup_steps=args.ft_warmup_steps,
        inference="whole",
        scales=[args.ft_eval_scale],
    )
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        max_steps=args.ft_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    train_s = time.perf_counter() - start
    module.eval()
    conf = torch.zeros(data.num_classes, data.num_classes, dtype=torch.long)
    with torch.inference_mode():
        for batch in data.val_dataloader():
            pred = module.predict_logits(batch["image"].to(module.device)).argmax(1)
            conf += confusion_matrix(pred, batch["mask"].to(pred.device), data.num_classes).cpu()
    scores = scores_from_confusion(conf)
    return {"miou": 100 * scores["mIoU"], "aacc": 100 * scores["aAcc"], "train_s": train_s}


# -- figure ---------------------------------------------------------------------------------------------
@torch.no_grad()
def mask_figure(
    target_state: dict[str, torch.Tensor],
    args: argparse.Namespace,
    dataset: ConcatDataset,
    ks: Sequence[int],
    path: Path,
    shown: int = 5,
) -> Path:
    """Paint the target encoder's R2O masks for every K in ``ks`` on ``shown`` images (one per source when
    possible), clustered as in training: jointly with other images up to a training batch, with the
    target in training mode. Masks are painted at the view size instead of 56x56 (same clusters)."""
    model = build_r2o(args, mask_size=args.size, k_max=max(ks), k_min=min(ks))
    model.target_encoder.load_state_dict(target_state)
    model.train()
    views = R2OViews(size=args.size, n_segments=args.n_segments)
    ends = dataset.cumulative_sizes
    # the 8th image of each source (or its last), so every kind of picture shows
    picks = [min(start + 7, end - 1) for start, end in zip([0, *ends[:-1]], ends, strict=True)][:shown]
    picks += [i for i in range(len(dataset)) if i not in picks][: max(0, shown - len(picks))]
    rest = np.linspace(0, len(dataset) - 1, args.batch_size).round().astype(int).tolist()
    picks += [i for i in rest if i not in picks][: max(0, args.batch_size - len(picks))]
    torch.manual_seed(args.seed)
    samples = [views(dict(dataset[i])) for i in picks]
    raw = torch.stack([s["raw"] for s in samples])
    superpixels = torch.stack([s["superpixels"] for s in samples])
    palette = make_palette(max(ks), seed=1)
    rows = []
    for i in range(min(shown, len(samples))):
        rows.append([denormalize(raw[i], IMAGENET_MEAN, IMAGENET_STD)])
    for k in ks:
        labels = model.predict_masks(raw, superpixels, k, seed=args.seed).argmax(1)
        for i, row in enumerate(rows):
            row.append(overlay(row[0], labels[i].numpy(), palette=palette, alpha=0.65))
    scale = max(1, 192 // args.size)
    rows = [[np.repeat(np.repeat(c, scale, 0), scale, 1) for c in row] for row in rows]
    picture = Image.fromarray(grid(rows, pad=4))
    header = Image.new("RGB", (picture.width, 18), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    cell = args.size * scale + 4
    for c, text in enumerate(["image", *(f"K = {k}" for k in ks)]):
        draw.text((4 + c * cell + 4, 3), text, fill=(0, 0, 0))
    out = Image.new("RGB", (picture.width, picture.height + header.height), (255, 255, 255))
    out.paste(header, (0, 0))
    out.paste(picture, (0, header.height))
    path.parent.mkdir(parents=True, exist_ok=True)
    # 256 median-cut colours: a third of the RGB file's size, for a figure kept in the repository
    out.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


# -- driver ---------------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The results as Markdown: pretraining line, then the comparison table with ratios."""
    p, rnd, r2o = results["pretrain"], results["random"], results["r2o"]
    costs = p["loader_ms_per_image"]
    lines = [
        f"{results['machine']}; torch {torch.__version__}; {args.threads} intra-op thread(s), "
        f"{args.num_workers} loader worker(s)",
        "",
        f"Pretraining: {args.backbone}, {args.size} px views, batch {args.batch_size}, {p['images']} "
        f"unlabelled images, {p['steps']} steps in {p['epochs']} epochs ({p['steps_per_epoch']} steps each; "
        f"planned {p['planned_steps']}, {p['plan']}), K {p['k_values'][0]} -> {p['k_values'][-1]} over "
        f"{len(p['k_values'])} values, {p['wall_s'] / 60:.1f} min wall",
        f"- {p['images_per_s']:.2f} images/s; the loop waited for data {100 * p['wait_fraction']:.1f}% of "
        f"the time ({100 * p['wait_fraction_after_first']:.1f}% without the first batch, which includes the "
        f"worker start)",
        f"- loader work per image, serial in the main process: read {costs['read_ms']:.1f} ms, views with "
        f"SLIC {costs['views_ms']:.1f} ms, of which SLIC {costs['slic_ms']:.1f} ms; the training loop took "
        f"{1e3 / p['images_per_s']:.0f} ms per image",
        "",
        "| measure | random init | R2O | R2O / random |",
        "|---|---|---|---|",
    ]
    rows = [
        (f"Weizmann horses (200), frozen {args.fg_layer}, K=2 per image: foreground IoU", "image_fg_iou"),
        ("Weizmann horses, frozen, K=2 per image: mIoU (bg, fg)", "image_miou"),
        ("Weizmann horses, frozen, K=2 over the set: foreground IoU", "set_fg_iou"),
        ("Weizmann horses, frozen, K=2 over the set: mIoU (bg, fg)", "set_miou"),
    ]
    for label, key in rows:
        a, b = rnd["foreground"][key], r2o["foreground"][key]
        lines.append(f"| {label} | {a:.2f} | {b:.2f} | {ratio(b, a)} |")
    if "camvid" in rnd:
        a, b = rnd["camvid"]["miou"], r2o["camvid"]["miou"]
        lines.append(
            f"| CamVid val (101) mIoU, {args.ft_model} {args.backbone} fine-tuned {args.ft_steps} steps x "
            f"{args.ft_batch_size} | {a:.2f} | {b:.2f} | {ratio(b, a)} |"
        )
        lines.append(
            f"| CamVid fine-tuning wall time (s) | {rnd['camvid']['train_s']:.0f} | "
            f"{r2o['camvid']['train_s']:.0f} | {ratio(r2o['camvid']['train_s'], rnd['camvid']['train_s'])} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML of flag values (keys with underscores); flags override it")
    add = parser.add_argument
    add("--seed", type=int, default=0)
    add("--threads", type=int, default=1)
    add("--data-root", default="$SEGZOO_DATA")
    add("--out-dir", default="runs/r2o_bench")
    add("--sources", nargs="+", default=["bsds500/images/train", "camvid/train", "weizmann_horses/rgb"])
    add("--minutes", type=float, default=25.0)
    add(
        "--steps",
        type=int,
        default=0,
        help="pretraining steps (0: size them from a calibration and --minutes)",
    )
    add("--min-epochs", type=int, default=12)
    add("--size", type=int, default=128)
    add("--batch-size", type=int, default=32)
    add("--num-workers", type=int, default=1)
    add("--n-segments", type=int, default=100)
    add("--backbone", default="resnet18")
    add("--projector-hidden", type=int, default=1024)
    add("--projector-out", type=int, default=256)
    add("--predictor-hidden", type=int, default=1024)
    add("--k-max", type=int, default=128)
    add("--k-min", type=int, default=4)
    add("--kmeans-iters", type=int, default=200)
    add("--base-lr", type=float, default=0.3)
    add("--warmup-epochs", type=float, default=1.0)
    add("--fg-size", type=int, default=224)
    add("--fg-layer", default="layer3")
    add("--fg-segments", type=int, default=100)
    add("--fg-restarts", type=int, default=10, help="K-means restarts per clustering (lowest inertia)")
    add(
        "--fg-bn-images",
        type=int,
        default=0,
        help="control: re-estimate both encoders' BatchNorm statistics on this many horses first (0: off)",
    )
    add("--ft-model", default="fcn")
    add("--ft-steps", type=int, default=300, help="fine-tuning steps per encoder (0: skip CamVid)")
    add("--ft-batch-size", type=int, default=8)
    add("--ft-crop", type=int, nargs=2, default=[128, 160])
    add("--ft-scale-range", type=float, nargs=2, default=[0.3, 0.45])
    add("--ft-eval-scale", type=float, default=0.375)
    add("--ft-lr", type=float, default=1e-3)
    add("--ft-warmup-steps", type=int, default=20)
    add("--ft-class-weights", type=float, nargs="*", default=None)
    add("--figure", help="write the mask-prediction figure here (PNG)")
    add("--figure-ks", type=int, nargs="+", default=[128, 64, 32, 16, 8, 4])
    add("--reuse", action="store_true", help="skip pretraining; evaluate the encoders in --out-dir")
    args, _ = parser.parse_known_args(argv)
    if args.config:
        config = yaml.safe_load(Path(args.config).read_text()) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(config) - known)
        if unknown:
            parser.error(f"{args.config}: unknown keys {unknown}; expected flag names ({sorted(known)})")
        parser.set_defaults(**config)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    root = resolve_root(args.data_root)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        "settings": vars(args),
    }
    if args.reuse:
        previous = json.loads((out_dir / "results.json").read_text())
        results["pretrain"] = previous["pretrain"]
        target_state = torch.load(out_dir / TARGET, map_location="cpu", weights_only=True)
    else:
        model, results["pretrain"] = pretrain(args, root, out_dir)
        target_state = encoder_state(model.target_encoder)
        del model
    if args.figure:
        shown = mask_figure(target_state, args, unlabelled_images(root, args.sources), args.figure_ks,
                            Path(args.figure))  # fmt: skip
        log(f"figure written to {shown}")

    horses = WeizmannHorses(root / "weizmann_horses")
    for name, file in (("random", RANDOM), ("r2o", ENCODER)):
        encoder = create_backbone(args.backbone, weights=out_dir / file)
        if args.fg_bn_images > 0:
            recalibrate_batchnorm(encoder, horses, args.fg_size, args.fg_bn_images)
        results[name] = {
            "foreground": frozen_foreground(
                encoder, horses, args.fg_size, args.fg_layer, args.fg_segments, args.seed, args.fg_restarts
            )
        }
        log(f"{name}: foreground {results[name]['foreground']}")
    if args.ft_steps > 0:
        for name, file in (("random", RANDOM), ("r2o", ENCODER)):
            results[name]["camvid"] = finetune_camvid(out_dir / file, args, root)
            log(f"{name}: camvid {results[name]['camvid']}")
    # a re-scoring keeps the pretraining run's results.json
    bn = f"_bn{args.fg_bn_images}" if args.fg_bn_images > 0 else ""
    name = f"results_reuse_seed{args.seed}{bn}.json" if args.reuse else "results.json"
    (out_dir / name).write_text(json.dumps(results, indent=2, default=str))
    print(render(results, args))
    print(f"\nR2O encoder: {out_dir / ENCODER} (random init: {out_dir / RANDOM})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
