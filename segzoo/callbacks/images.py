"""Log input | target overlay | prediction overlay for a few fixed validation/test samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from PIL import Image

from segzoo.callbacks.context import datamodule_attr, log_dir, safe_name
from segzoo.viz import atomic_save, denormalize, grid, overlay

_STAGES = ("val", "test")


@dataclass
class _Sample:
    name: str
    image: np.ndarray  # HxWx3 uint8, cropped to the sample's input size
    pred: np.ndarray  # HxW int64
    target: np.ndarray | None


class ImageLogger(Callback):
    """Show a grid of fixed samples (input | target overlay | prediction overlay) every few epochs.

    The samples are the first ``num_samples`` of dataloader 0 of the val/test loaders, so the same images
    are shown each epoch. Methods' ``validation_step``/``test_step`` must return ``{"pred": [B, H, W]}``
    (``"target"`` optional; the batch ``mask`` is used otherwise). The grid goes to a TensorBoard logger
    (``add_image``) or a W&B logger (``log_image``); with neither, it is written as
    ``<log_dir>/images/<stage>_epoch<NNN>.png`` and, at test end, one file per sample under
    ``images/test/``. Only global rank 0 collects and writes.
    """

    def __init__(
        self,
        num_samples: int = 4,
        every_n_epochs: int = 1,
        alpha: float = 0.5,
        stages: Sequence[str] = ("val", "test"),
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"ImageLogger: num_samples={num_samples}; expected >= 1")
        if every_n_epochs < 1:
            raise ValueError(f"ImageLogger: every_n_epochs={every_n_epochs}; expected >= 1")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"ImageLogger: alpha={alpha}; expected a value in [0, 1]")
        stages = (stages,) if isinstance(stages, str) else tuple(stages)
        unknown = [s for s in stages if s not in _STAGES]
        if unknown:
            raise ValueError(f"ImageLogger: unknown stage(s) {unknown}; expected a subset of {_STAGES}")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.alpha = alpha
        self.stages = stages
        self._samples: dict[str, list[_Sample]] = {s: [] for s in _STAGES}
        self.last_paths: list[Path] = []  # files written by the last emitted grid (for callers and tests)

    # ------------------------------------------------------------------ collection
    def _active(self, stage: str, trainer: pl.Trainer) -> bool:
        if stage not in self.stages or trainer.sanity_checking or not trainer.is_global_zero:
            return False
        if stage == "val" and trainer.state.fn == TrainerFn.FITTING:
            return (trainer.current_epoch + 1) % self.every_n_epochs == 0
        return True

    def _collect(
        self, stage: str, trainer: pl.Trainer, outputs: Any, batch: Any, dataloader_idx: int
    ) -> None:
        samples = self._samples[stage]
        need = self.num_samples - len(samples)
        if need <= 0 or dataloader_idx != 0 or not self._active(stage, trainer):
            return
        if not isinstance(outputs, Mapping) or "pred" not in outputs:
            raise ValueError(
                f"ImageLogger: the {stage} step returned {type(outputs).__name__}; expected a dict with "
                "'pred' (LongTensor [B, H, W]) and optionally 'target'"
            )
        if not isinstance(batch, Mapping) or "image" not in batch:
            raise ValueError("ImageLogger: expected the batch to be a dict with 'image' [B, 3, H, W]")
        pred, images = outputs["pred"], batch["image"]
        if pred.ndim != 3:
            raise ValueError(
                f"ImageLogger: outputs['pred'] has shape {tuple(pred.shape)}; expected [B, H, W] class ids"
            )
        target = outputs.get("target")
        if target is None:
            target = batch.get("mask")
        if target is not None and target.ndim != 3:
            target = None  # several annotations per image ([B, N, H, W]): no single target to show
        k = min(need, pred.shape[0])
        size = tuple(images.shape[-2:])
        # Only the k samples shown are copied to the CPU.
        pred = self._fit(pred[:k], size)
        target = self._fit(target[:k], size) if target is not None else None
        images = images[:k].detach().cpu()
        metas = batch.get("meta") or [{} for _ in range(k)]
        mean, std = datamodule_attr(trainer, "mean"), datamodule_attr(trainer, "std")
        for i in range(k):
            meta = metas[i] if i < len(metas) else {}
            h, w = (int(v) for v in meta.get("input_size", size))
            name = Path(str(meta["path"])).stem if meta.get("path") else f"{stage}_{len(samples):03d}"
            samples.append(
                _Sample(
                    name=name,
                    image=denormalize(images[i, :, :h, :w], mean, std),
                    pred=pred[i, :h, :w],
                    target=target[i, :h, :w] if target is not None else None,
                )
            )

    @staticmethod
    def _fit(labels: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """Labels as CPU int64 numpy at the image size (nearest resize when a method predicts smaller)."""
        labels = labels.detach()
        if tuple(labels.shape[-2:]) != size:
            labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")[:, 0]
        return labels.long().cpu().numpy()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._samples["val"] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._samples["test"] = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("val", trainer, outputs, batch, dataloader_idx)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("test", trainer, outputs, batch, dataloader_idx)

    # ------------------------------------------------------------------ output
    def _row(self, sample: _Sample, palette: Any, ignore_index: int) -> list[np.ndarray]:
        row = [sample.image]
        if sample.target is not None:
            row.append(overlay(sample.image, sample.target, palette, self.alpha, ignore_index))
        row.append(overlay(sample.image, sample.pred, palette, self.alpha, ignore_index))
        return row

    def _emit(self, stage: str, trainer: pl.Trainer) -> None:
        samples, self._samples[stage] = self._samples[stage], []
        if not samples or not trainer.is_global_zero:
            return
        palette = datamodule_attr(trainer, "palette")
        ignore_index = datamodule_attr(trainer, "ignore_index", 255)
        rows = [self._row(s, palette, ignore_index) for s in samples]
        picture = grid(rows)
        tag = f"{stage}/samples"
        sent_to = []
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, picture, global_step=trainer.global_step, dataformats="HWC")
                sent_to.append(f"TensorBoard ({logger.log_dir})")
            elif isinstance(logger, WandbLogger):
                logger.log_image(key=tag, images=[picture], step=trainer.global_step)
                sent_to.append("Weights & Biases")
        self.last_paths = []
        if not sent_to:
            folder = log_dir(trainer) / "images"
            path = folder / f"{stage}_epoch{trainer.current_epoch:03d}.png"
            atomic_save(Image.fromarray(picture), path, format="PNG")
            self.last_paths.append(path)
            if stage == "test":
                used: set[str] = set()
                for i, (sample, row) in enumerate(zip(samples, rows, strict=True)):
                    name = safe_name(sample.name)
                    if name in used:  # two samples sharing a stem: keep both
                        name = f"{name}_{i}"
                    used.add(name)
                    sample_path = folder / "test" / f"{name}.png"
                    atomic_save(Image.fromarray(grid([row])), sample_path, format="PNG")
                    self.last_paths.append(sample_path)
            sent_to.append(str(folder))
        if stage == "test":
            print(f"ImageLogger: {len(samples)} test sample image(s) written to {', '.join(sent_to)}")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._emit("val", trainer)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._emit("test", trainer)
