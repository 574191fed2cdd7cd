"""Write each prediction as a palette label PNG and a colour overlay on the original image."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from segzoo.callbacks.context import datamodule_attr, safe_name
from segzoo.data.io import read_image_array
from segzoo.viz import atomic_save, denormalize, overlay, save_label_png

# PNG text chunk naming the input a label file was predicted from: it tells our earlier outputs (skip or
# replace) from another input's file of the same stem (choose another name).
SOURCE_KEY = "segzoo:source"


def _recorded_source(path: Path) -> str | None:
    """The input recorded in a label PNG written by this writer; None for any other file."""
    try:
        with Image.open(path) as img:
            value = img.info.get(SOURCE_KEY)
    except (OSError, ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def _publish(tmp: Path, path: Path, replace: bool) -> bool:
    """Move ``tmp`` to ``path``; without ``replace``, only when ``path`` does not exist yet (atomically,
    so two DDP ranks never both take one name). Returns whether ``path`` now holds ``tmp``."""
    try:
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # filesystems without hard links: check then rename
            if path.exists():
                return False
            os.replace(tmp, path)
            return True
    finally:
        tmp.unlink(missing_ok=True)


class PredictionWriter(BasePredictionWriter):
    """Write ``<output_dir>/labels/<stem>.png`` and ``<output_dir>/overlays/<stem>.jpg`` per prediction.

    Labels are palette PNGs (:func:`segzoo.viz.save_label_png`) holding the class ids at the original image
    size: predictions are cropped to ``meta["input_size"]`` (undoing the batch padding) and resized
    (nearest) to ``meta["size"]``. Overlays are drawn on the original image re-read from ``meta["path"]``;
    for inputs that are not files (``"synthetic://val/3"``) on the batch image, denormalised.

    It never writes over an input: an ``output_dir`` that is or contains an input's folder, or whose
    ``labels/`` or ``overlays/`` is one, is a ``ValueError``. With ``overwrite=False`` an interrupted run
    resumes: when the datamodule can list its predict inputs without reading them
    (:meth:`SegDataModule.predict_sources`, e.g. ``data.predict_root``), inputs whose label and overlay are
    already written are left out of the predict set before the model runs; any other existing output is
    skipped at write time. Both counts are reported at the end. ``overwrite=True`` recomputes and replaces
    everything. Two inputs with one stem get distinct names: the second takes ``<stem>_<hash of its path>``;
    each label PNG records its input so reruns find the same names. Each DDP rank writes its own samples.
    """

    def __init__(
        self, output_dir: str | Path, overlay: bool = True, alpha: float = 0.5, overwrite: bool = False
    ) -> None:
        super().__init__(write_interval="batch")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"PredictionWriter: alpha={alpha}; expected a value in [0, 1]")
        self.output_dir = Path(output_dir)
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise ValueError(f"PredictionWriter: output_dir {self.output_dir} exists and is not a folder")
        self.overlay = overlay
        self.alpha = alpha
        self.overwrite = overwrite
        self.label_dir = self.output_dir / "labels"
        self.overlay_dir = self.output_dir / "overlays"
        self.written = 0
        self.skipped = 0
        self.skipped_before_model = 0
        self.renamed = 0
        self._checked_folders: set[Path] = set()
        self._style: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Before any prediction: refuse unsafe output folders and leave finished inputs out of the predict
        set (the datamodule's ``setup`` has run; its predict loader has not been built yet)."""
        self._checked_folders = set()
        self.skipped_before_model = 0
        if stage != "predict":
            return
        datamodule = getattr(trainer, "datamodule", None)
        sources = getattr(datamodule, "predict_sources", lambda: None)()
        if sources is None:
            return
        for raw in sources:
            if Path(raw).is_file():
                self._check_input_folder(Path(raw))
        if self.overwrite:
            return
        # Rank 0 decides and broadcasts, so every rank drops the same samples; no rank writes before it
        # has received the list, so rank 0's view of the folder is the state before this run.
        done = (
            [i for i, raw in enumerate(sources) if self.is_done(raw, i)] if trainer.is_global_zero else None
        )
        done = trainer.strategy.broadcast(done, src=0)
        if done:
            datamodule.skip_predict(done)
        self.skipped_before_model = len(done)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.written = self.skipped = self.renamed = 0
        self._style = None

    def _settings(self, trainer: pl.Trainer) -> dict[str, Any]:
        """Palette, ignore index and normalisation of the datamodule, read once per predict run."""
        if self._style is None:
            self._style = {
                "palette": datamodule_attr(trainer, "palette"),
                "ignore_index": datamodule_attr(trainer, "ignore_index", 255),
                "mean": datamodule_attr(trainer, "mean"),
                "std": datamodule_attr(trainer, "std"),
            }
        return self._style

    # ------------------------------------------------------------------ safety and naming
    def _check_input_folder(self, source: Path) -> None:
        """Refuse an input that lives where outputs go, naming both paths."""
        folder = source.resolve().parent
        if folder in self._checked_folders:
            return
        for out in (self.label_dir, self.overlay_dir):
            if folder == out.resolve():
                raise ValueError(
                    f"PredictionWriter: outputs in {out} would overwrite input images such as {source}; "
                    "choose an output_dir outside the input folder"
                )
        output_dir = self.output_dir.resolve()
        if folder == output_dir:
            raise ValueError(
                f"PredictionWriter: output_dir {self.output_dir} is the input folder of {source}; "
                "choose an output_dir outside the input folder"
            )
        if folder.is_relative_to(output_dir):
            raise ValueError(
                f"PredictionWriter: output_dir {self.output_dir} contains the input folder {folder} of "
                f"{source}; choose an output_dir outside the input folder"
            )
        self._checked_folders.add(folder)

    def _names(self, stem: str, source: str) -> list[str]:
        digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:8]
        return [stem, f"{stem}_{digest}"]

    @staticmethod
    def _identity(raw: str, index: int | None) -> tuple[str, str, bool]:
        """``(source, stem, is_file)`` of an input: the resolved path of a file, else ``raw`` or its index."""
        is_file = bool(raw) and Path(raw).is_file()
        source = str(Path(raw).resolve()) if is_file else raw or f"index://{index}"
        stem = safe_name(Path(raw).stem if raw else f"{int(index or 0):06d}", "prediction")
        return source, stem, is_file

    def is_done(self, raw: str, index: int | None = None) -> bool:
        """Whether the outputs of input ``raw`` (its label PNG, and its overlay when overlays are on) were
        already written by this writer into ``output_dir``."""
        source, stem, _ = self._identity(raw, index)
        for name in self._names(stem, source):
            label_path = self.label_dir / f"{name}.png"
            if label_path.exists() and _recorded_source(label_path) == source:
                return not self.overlay or (self.overlay_dir / f"{name}.jpg").exists()
        return False

    # ------------------------------------------------------------------ writing
    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(prediction, Mapping) or "pred" not in prediction:
            raise ValueError(
                f"PredictionWriter: predict_step returned {type(prediction).__name__}; expected a dict "
                "with 'pred' (LongTensor [B, H, W]) and 'meta' (list of dicts)"
            )
        pred = prediction["pred"]
        if pred.ndim != 3:
            raise ValueError(
                f"PredictionWriter: 'pred' has shape {tuple(pred.shape)}; expected [B, H, W] class ids"
            )
        metas = prediction.get("meta")
        if metas is None and isinstance(batch, Mapping):
            metas = batch.get("meta")
        if metas is None or len(metas) != pred.shape[0]:
            raise ValueError(
                f"PredictionWriter: batch {batch_idx} has {pred.shape[0]} predictions but "
                f"{'no' if metas is None else len(metas)} 'meta' entries; expected one dict per prediction"
            )
        images = batch.get("image") if isinstance(batch, Mapping) else None
        pred = pred.detach().cpu()
        for i, meta in enumerate(metas):
            image = images[i] if images is not None else None
            self._write_one(trainer, pred[i], meta, image, batch_indices[i] if batch_indices else None)

    def _write_one(
        self,
        trainer: pl.Trainer,
        pred: torch.Tensor,
        meta: Mapping[str, Any],
        image: torch.Tensor | None,
        index: int | None,
    ) -> None:
        raw = str(meta.get("path") or "")
        source, stem, is_file = self._identity(raw, meta.get("index", index))
        if is_file:
            self._check_input_folder(Path(raw))

        for n, name in enumerate(self._names(stem, source)):
            label_path = self.label_dir / f"{name}.png"
            overlay_path = self.overlay_dir / f"{name}.jpg"
            if label_path.exists():
                if _recorded_source(label_path) != source:
                    continue  # another input's file (or not ours): never touched
                if not self.overwrite:
                    if self.overlay and not overlay_path.exists():
                        self._write_overlay(
                            trainer, overlay_path, self._labels(pred, meta), raw, is_file, image, meta
                        )
                        self.written += 1
                    else:
                        self.skipped += 1
                    return
            labels = self._labels(pred, meta)
            if not self._write_label(trainer, label_path, labels, source, replace=label_path.exists()):
                continue  # another rank took this name between the check and the write
            if self.overlay and (self.overwrite or not overlay_path.exists()):
                self._write_overlay(trainer, overlay_path, labels, raw, is_file, image, meta)
            self.written += 1
            self.renamed += n > 0
            return
        raise ValueError(
            f"PredictionWriter: cannot name the output of {raw or source}: {self.label_dir} already holds "
            f"other inputs' files named {', '.join(self._names(stem, source))}.png"
        )

    @staticmethod
    def _labels(pred: torch.Tensor, meta: Mapping[str, Any]) -> np.ndarray:
        """Crop the batch padding away and resize (nearest) to the size read from disk."""
        h, w = (int(v) for v in meta.get("input_size", pred.shape[-2:]))
        pred = pred[:h, :w]
        size = tuple(int(v) for v in meta.get("size", (h, w)))
        if size != (h, w):
            pred = F.interpolate(pred[None, None].float(), size=size, mode="nearest-exact")[0, 0]
        return pred.long().numpy()

    def _write_label(
        self, trainer: pl.Trainer, path: Path, labels: np.ndarray, source: str, replace: bool
    ) -> bool:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.claim.png")
        save_label_png(
            labels,
            tmp,
            self._settings(trainer)["palette"],
            ignore_index=self._settings(trainer)["ignore_index"],
            text={SOURCE_KEY: source},
        )
        return _publish(tmp, path, replace)

    def _write_overlay(
        self,
        trainer: pl.Trainer,
        path: Path,
        labels: np.ndarray,
        raw: str,
        is_file: bool,
        image: torch.Tensor | None,
        meta: Mapping[str, Any],
    ) -> None:
        if is_file:
            picture = read_image_array(raw)
            if picture.shape[:2] != labels.shape:
                raise ValueError(
                    f"{raw}: image is {picture.shape[:2]} (H, W) on disk but meta['size'] is "
                    f"{labels.shape}; expected the size the dataset read"
                )
        else:
            if image is None:
                raise ValueError(
                    f"PredictionWriter: {raw or 'input'} is not a file and the batch has no 'image' "
                    "to draw the overlay on; pass overlay=False or keep 'image' in the batch"
                )
            picture = self._batch_image(trainer, image, meta, labels.shape)
        blended = overlay(
            picture,
            labels,
            self._settings(trainer)["palette"],
            alpha=self.alpha,
            ignore_index=self._settings(trainer)["ignore_index"],
        )
        atomic_save(Image.fromarray(blended), path, format="JPEG", quality=95, subsampling=0)

    def _batch_image(
        self, trainer: pl.Trainer, image: torch.Tensor, meta: Mapping[str, Any], size: tuple[int, int]
    ) -> np.ndarray:
        """The batch image of a non-file input: padding cropped, denormalised, resized to ``size``."""
        h, w = (int(v) for v in meta.get("input_size", image.shape[-2:]))
        picture = denormalize(
            image[:, :h, :w].detach().cpu(), self._settings(trainer)["mean"], self._settings(trainer)["std"]
        )
        if picture.shape[:2] != tuple(size):
            picture = np.asarray(Image.fromarray(picture).resize((size[1], size[0]), Image.BILINEAR))
        return picture

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = torch.tensor([self.written, self.skipped, self.renamed], device=pl_module.device)
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        self.written, self.skipped, self.renamed = (int(v) for v in counts.tolist())
        if trainer.is_global_zero:
            message = f"PredictionWriter: wrote {self.written} prediction(s) to {self.output_dir}"
            if self.skipped_before_model:
                message += (
                    f"; {self.skipped_before_model} input(s) already written were not predicted again "
                    "(pass overwrite=True, or --overwrite_predictions=true, to recompute them)"
                )
            if self.skipped:
                message += f"; skipped {self.skipped} already written (pass overwrite=True to replace them)"
            if self.renamed:
                message += f"; {self.renamed} renamed <stem>_<hash> because another input has the same stem"
            print(message)
