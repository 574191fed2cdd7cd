"""SCOPS on Helen faces: 5-point landmark error of the learnt part centres against baselines.

One process, one table (the EVALUATION.md landmark protocol, segzoo.callbacks.LandmarkMetrics): the part
centres of each method on the training split are regressed (linear, no intercept, standardised) onto the 5
ground-truth landmarks; the error on the holdout is the mean distance over the 5 points divided by the
inter-ocular distance, in percent.

- ``scops``: SCOPS trained from the config for a wall-clock budget (``trainer.max_time`` or ``--minutes``);
- ``untrained``: the same network with the same seed before any training step;
- ``grid``: a fixed regular grid of K part centres (identical for every image, so the regression can only
  predict the mean landmarks: the "no parts" baseline).
- ``feature_clusters`` (when the config has a semantic feature extractor): no part training at all; the
  frozen features of the training faces are clustered into K parts by cosine K-means and every pixel takes
  its nearest cluster. It tells how much of the landmark information is already in the features' own
  clusters, i.e. what SCOPS's training adds to them.

Ratios are SCOPS's error over each baseline's (< 1 is better). The run also reports how many parts the
trained network uses on the holdout (argmax labels covering at least 1% of the pixels) and can save a figure
of the learnt parts on holdout faces.

Run (the default config: unaligned faces, hand-made features, no weights file needed; about 12 min):
      .venv/bin/python benchmarks/scops_faces.py --figure docs/figures/scops_helen_unaligned_parts.png \
          --json runs/scops_faces/result.json
      .venv/bin/python benchmarks/scops_faces.py --seed 1 --minutes 5 --set warp_translation=0.6
The aligned crops, with a frozen R2O encoder as features:
      segzoo fit --config configs/scops/helen_r2o_pretrain.yaml   # the frozen encoder the config reads
      .venv/bin/python benchmarks/scops_faces.py --config configs/scops/helen_bench.yaml
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from segzoo.callbacks.landmarks import LandmarkMetrics  # noqa: E402
from segzoo.data.datamodule import SegDataModule  # noqa: E402
from segzoo.losses.scops import centres_to_pixels, part_centres  # noqa: E402
from segzoo.methods.scops import SCOPS  # noqa: E402
from segzoo.metrics.landmarks import grid_centres  # noqa: E402
from segzoo.metrics.landmarks import part_centres as label_centres  # noqa: E402
from segzoo.ops.kmeans import kmeans  # noqa: E402
from segzoo.viz import denormalize, grid, make_palette, overlay  # noqa: E402

SCOPS_CLASS = "segzoo.methods.scops.SCOPS"
# Trainer keys of the config the benchmark honours; the rest (callbacks, logger) are its own.
TRAINER_KEYS = ("accelerator", "devices", "max_epochs", "max_steps", "max_time", "log_every_n_steps")


class GridCentres(L.LightningModule):
    """The fixed-grid baseline as a method: the same K centres (pixels) for every image of a batch."""

    def __init__(self, num_parts: int) -> None:
        super().__init__()
        self.num_parts = int(num_parts)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        images = batch["image"]
        centres = grid_centres(self.num_parts, *images.shape[-2:]).to(images.device, images.dtype)
        return {"landmarks": centres.expand(images.shape[0], -1, -1)}


class FeatureClusters(L.LightningModule):
    """Baseline without any part training: parts = cosine K-means clusters of the frozen semantic features
    (centroids fitted on the training faces by :func:`fit_feature_clusters`); each image's part centres are
    the centres of its pixels assigned to each cluster (features upsampled to the image, nearest)."""

    def __init__(self, extractor: torch.nn.Module, centroids: torch.Tensor) -> None:
        super().__init__()
        self.extractor = extractor
        self.register_buffer("centroids", torch.nn.functional.normalize(centroids, dim=1))

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """Cluster ids 1..K per pixel [B, H, W]."""
        features = torch.nn.functional.normalize(self.extractor(images), dim=1)
        ids = torch.einsum("bchw,kc->bkhw", features, self.centroids).argmax(dim=1, keepdim=True) + 1
        upsampled = torch.nn.functional.interpolate(ids.float(), size=images.shape[-2:], mode="nearest")
        return upsampled[:, 0].long()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"landmarks": label_centres(self.labels(batch["image"]), len(self.centroids))}


@torch.inference_mode()
def fit_feature_clusters(
    extractor: torch.nn.Module, datamodule: SegDataModule, k: int, seed: int
) -> FeatureClusters:
    """K-means (cosine, k-means++, 3 seeded restarts) over the feature vectors of every training face."""
    extractor.eval()
    vectors = []
    for batch in datamodule.train_eval_dataloader():
        features = extractor(batch["image"])
        vectors.append(features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]))
    result = kmeans(torch.cat(vectors), k, iters=100, seed=seed, metric="cosine", n_init=3)
    return FeatureClusters(extractor, result.centroids)


def load_config(path: Path) -> dict[str, Any]:
    """The YAML config (a ``segzoo fit`` config: ``seed_everything``, ``trainer``, ``model``, ``data``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config not found")
    config = yaml.safe_load(path.read_text())
    model = config.get("model", {})
    if model.get("class_path") != SCOPS_CLASS:
        raise ValueError(f"{path}: model.class_path is {model.get('class_path')!r}; expected {SCOPS_CLASS}")
    if "data" not in config:
        raise ValueError(f"{path}: no data section")
    return config


def evaluate(
    module: L.LightningModule,
    datamodule: SegDataModule,
    trainer_cfg: dict[str, Any],
    out_dir: Path,
    name: str,
) -> dict:
    """Landmark error of ``module`` (fit on the training split, scored on the holdout) via LandmarkMetrics;
    its report is written to ``out_dir/landmarks_<name>.json``."""
    callback = LandmarkMetrics(stages=["test"], output_name=f"landmarks_{name}")
    trainer = L.Trainer(
        default_root_dir=str(out_dir),
        accelerator=trainer_cfg.get("accelerator", "auto"),
        devices=trainer_cfg.get("devices", 1),
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.test(module, datamodule=datamodule, verbose=False)
    results = dict(callback.last_results["test"])
    results["eval_seconds"] = time.perf_counter() - start
    return results


@torch.inference_mode()
def holdout_predictions(model: SCOPS, datamodule: SegDataModule) -> dict[str, Any]:
    """Argmax labels, images, part centres (pixels) and keypoints of the holdout faces."""
    model.eval()
    images, labels, centres, keypoints = [], [], [], []
    for batch in datamodule.test_dataloader():
        batch = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        probs = model(batch["image"])
        centres_norm = part_centres(probs[:, 1:], model.hparams.concentration_eps)
        images.append(batch["image"].cpu())
        labels.append(probs.argmax(dim=1).cpu())
        centres.append(centres_to_pixels(centres_norm, probs.shape[-2:]).cpu())
        keypoints.append(batch["keypoints"].cpu())
    return {
        "image": torch.cat(images),
        "pred": torch.cat(labels),
        "centres": torch.cat(centres),
        "keypoints": torch.cat(keypoints),
    }


def part_usage(pred: torch.Tensor, num_labels: int) -> list[float]:
    """Fraction of the pixels carrying each label 0..K (0 = background)."""
    counts = torch.bincount(pred.flatten(), minlength=num_labels).double()
    return (counts / counts.sum()).tolist()


def save_figure(predictions: dict[str, Any], datamodule: SegDataModule, path: Path, per_row: int) -> Path:
    """Holdout faces (top row) and their learnt parts overlaid (bottom row, background left uncoloured)."""
    num_labels = int(predictions["pred"].max()) + 1
    palette = make_palette(max(num_labels, 2))
    palette[0] = 0  # background: black at alpha 0.5 darkens, parts stay coloured
    rows: list[list[np.ndarray]] = []
    count = len(predictions["image"])
    for start in range(0, count, per_row):
        faces, parts = [], []
        for i in range(start, min(start + per_row, count)):
            face = denormalize(predictions["image"][i], datamodule.mean, datamodule.std)
            labels = predictions["pred"][i].numpy()
            painted = overlay(face, labels, palette, alpha=0.55)
            painted[labels == 0] = (face[labels == 0] * 0.45).astype(np.uint8)
            # part centres as small white squares
            for x, y in predictions["centres"][i].round().long().tolist():
                y0, x0 = max(0, y - 1), max(0, x - 1)
                painted[y0 : y + 2, x0 : x + 2] = 255
            faces.append(face)
            parts.append(painted)
        rows += [faces, parts]
    picture = grid(rows, pad=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=REPO / "configs/scops/helen_unaligned_bench.yaml")
    parser.add_argument("--minutes", type=float, default=None, help="training budget (overrides max_time)")
    parser.add_argument("--max-epochs", type=int, default=None, help="overrides trainer.max_epochs")
    parser.add_argument("--feature-weights", default=None, help="overrides model feature_weights")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra SCOPS init args, YAML values (e.g. semantic_weight=0 features=null)",
    )
    parser.add_argument(
        "--data-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra dataset_kwargs, YAML values (e.g. saliency=null)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="overrides seed_everything: network initialisation, warps, batch order (not the holdout, "
        "which the datamodule's own seed picks)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=REPO / "runs/scops_faces")
    parser.add_argument("--figure", type=Path, default=None, help="save learnt parts on holdout faces here")
    parser.add_argument("--figure-images", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def _key_values(items: list[str]) -> dict[str, Any]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        pairs[key] = yaml.safe_load(value)
    return pairs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    model_args = dict(config["model"].get("init_args", {}))
    model_args.update(_key_values(args.set))
    if args.feature_weights is not None:
        model_args["feature_weights"] = args.feature_weights
    data_args = dict(config["data"])
    data_args["dataset_kwargs"] = {**data_args.get("dataset_kwargs", {}), **_key_values(args.data_set)}
    trainer_cfg = {k: v for k, v in config.get("trainer", {}).items() if k in TRAINER_KEYS}
    if args.minutes is not None:
        trainer_cfg["max_time"] = {"minutes": args.minutes}
    if args.max_epochs is not None:
        trainer_cfg["max_epochs"] = args.max_epochs
    seed = args.seed if args.seed is not None else int(config.get("seed_everything", 0))

    L.seed_everything(seed, workers=True)
    datamodule = SegDataModule(**data_args)
    model = SCOPS(**model_args)
    untrained = copy.deepcopy(model)
    num_parts = model.num_parts
    height, width = (
        (data_args["resize"], data_args["resize"])
        if isinstance(data_args["resize"], int)
        else tuple(data_args["resize"])
    )

    results: dict[str, Any] = {
        "config": str(args.config),
        "seed": seed,
        "model_args": model_args,
        "data_args": data_args,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results["grid"] = evaluate(GridCentres(num_parts), datamodule, trainer_cfg, args.out_dir, "grid")
    results["untrained"] = evaluate(untrained, datamodule, trainer_cfg, args.out_dir, "untrained")
    if model.feature_extractor is not None:
        clusters = fit_feature_clusters(model.feature_extractor, datamodule, num_parts, seed)
        results["feature_clusters"] = evaluate(clusters, datamodule, trainer_cfg, args.out_dir, "clusters")

    trainer = L.Trainer(
        **trainer_cfg,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=L.pytorch.loggers.CSVLogger(str(args.out_dir), name="scops_helen"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    L.seed_everything(seed, workers=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.fit(model, datamodule=datamodule)
    train_seconds, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    schedulers = model.lr_schedulers()
    batches = int((schedulers[0] if isinstance(schedulers, list) else schedulers).last_epoch)
    planned = model._total_batches()  # the poly decay's horizon, while the fit trainer is attached
    results["scops"] = evaluate(model, datamodule, trainer_cfg, args.out_dir, "scops")
    results["scops"].update(
        train_batches=batches,
        planned_batches=planned,
        train_seconds=train_seconds,
        train_cpu_seconds=train_cpu,
        log_dir=trainer.logger.log_dir,
    )
    predictions = holdout_predictions(model, datamodule)
    usage = part_usage(predictions["pred"], num_parts + 1)
    results["scops"]["label_fraction"] = usage
    results["scops"]["parts_in_use"] = sum(u >= 0.01 for u in usage[1:])
    untrained_pred = holdout_predictions(untrained.to(model.device), datamodule)["pred"]
    untrained_usage = part_usage(untrained_pred, num_parts + 1)
    results["untrained"]["parts_in_use"] = sum(u >= 0.01 for u in untrained_usage[1:])
    if args.figure is not None:
        subset = {k: v[: args.figure_images] for k, v in predictions.items()}
        results["figure"] = str(save_figure(subset, datamodule, args.figure, per_row=8))

    names = [n for n in ("scops", "untrained", "feature_clusters", "grid") if n in results]
    errors = {name: results[name]["landmark_error"] for name in names}
    size_note = f"{height}x{width}"
    print()
    print(
        f"SCOPS on {data_args.get('root')} ({data_args.get('dataset')}), K={num_parts}, {size_note}, "
        f"{model_args.get('backbone')} os{model_args.get('output_stride')}, features="
        f"{model_args.get('features')} ({model_args.get('feature_weights')}), torch {torch.__version__}, "
        f"{platform.machine()}, {args.threads} thread(s), seed {seed}"
    )
    print(
        f"trained {batches} of {results['scops']['planned_batches']} planned batches of "
        f"{data_args.get('batch_size')} in {train_seconds / 60:.1f} min wall ({train_cpu / 60:.1f} min CPU); "
        f"regression fit on {results['scops']['num_fit_images']} training faces, error on "
        f"{results['scops']['num_images']} holdout faces"
    )
    print()
    print("| method | landmark error (% IOD) | SCOPS / this | parts in use (>= 1% of holdout pixels) |")
    print("| --- | --- | --- | --- |")
    labels = {
        "scops": "SCOPS (trained)",
        "untrained": "same network, untrained",
        "feature_clusters": f"K-means of the frozen features into {num_parts} parts (no training)",
        "grid": f"fixed grid of {num_parts} centres",
    }
    for name in names:
        label = labels[name]
        in_use = results[name].get("parts_in_use", "-")
        print(f"| {label} | {errors[name]:.2f} | {errors['scops'] / errors[name]:.3f} | {in_use} |")
    print()
    print("label fractions on the holdout (background, parts 1..K):", [round(u, 3) for u in usage])
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
