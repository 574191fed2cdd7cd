"""The shared landmark callback: any method returning part centres as ``outputs["landmarks"]`` gets the
SCOPS landmark error (regressor fitted on the training split, error normalised by the inter-ocular
distance, in percent)."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from rich.console import Console
from torch import Tensor

from segzoo.callbacks.context import free_stem, log_dir
from segzoo.distributed import gather_rows
from segzoo.metrics.confusion import float_dtype
from segzoo.metrics.landmarks import LandmarkError, LandmarkRegressor, fit_landmark_regressor

STAGES = ("val", "test")


@contextlib.contextmanager
def _logging_suppressed(pl_module: L.LightningModule) -> Iterator[None]:
    """Silence ``self.log``/``self.log_dict`` while the step runs on the training split: those values are not
    results of the evaluated stage, and logging from an epoch-start hook may be refused by Lightning."""
    pl_module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    pl_module.log_dict = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del pl_module.log
        del pl_module.log_dict


class LandmarkMetrics(L.Callback):
    """Landmark error from part centres (SCOPS protocol, docs EVALUATION.md), exact under DDP.

    At the start of each evaluated stage's epoch the method's own ``test_step`` (``validation_step`` for
    val) runs over ``trainer.datamodule.train_eval_dataloader()`` (the training split with evaluation
    transforms); its ``outputs["landmarks"]`` [B, K, 2] (part centres, (x, y) pixels) and the batches'
    ``keypoints`` [B, L, 2] are gathered from all processes and a :class:`LandmarkRegressor` is fitted.
    Each evaluated batch then adds the normalised error of the regressed landmarks; ``{stage}/landmark_error``
    (percent) is logged at epoch end, and at test end one line is printed and ``landmark_metrics.json`` is
    written to the log folder.

    Args:
        stages: which of ``"val"``, ``"test"`` to evaluate (val skips the sanity check).
        eye_indices: the two ground-truth landmarks whose distance normalises the error.
        ridge: ridge penalty of the regressor (standardised units; 0 = plain least squares as in SCOPS).
        max_fit_batches: fit on at most this many training batches per process (None: the whole split).
        output_name: file stem of the saved test report.
    """

    def __init__(
        self,
        stages: tuple[str, ...] | list[str] = ("test",),
        eye_indices: tuple[int, int] | list[int] = (0, 1),
        ridge: float = 0.0,
        max_fit_batches: int | None = None,
        output_name: str = "landmark_metrics",
    ) -> None:
        stages = (stages,) if isinstance(stages, str) else tuple(stages)
        unknown = [s for s in stages if s not in STAGES]
        if unknown or not stages:
            raise ValueError(f"LandmarkMetrics: stages {stages!r}; expected a non-empty subset of {STAGES}")
        if len(eye_indices) != 2 or int(eye_indices[0]) == int(eye_indices[1]):
            raise ValueError(f"LandmarkMetrics: eye_indices {eye_indices!r}; expected two different indices")
        if ridge < 0 or not math.isfinite(ridge):
            raise ValueError(f"LandmarkMetrics: ridge must be a finite number >= 0, got {ridge}")
        if max_fit_batches is not None and max_fit_batches < 1:
            raise ValueError(f"LandmarkMetrics: max_fit_batches must be None or >= 1, got {max_fit_batches}")
        self.stages = stages
        self.eye_indices = (int(eye_indices[0]), int(eye_indices[1]))
        self.ridge = float(ridge)
        self.max_fit_batches = max_fit_batches
        self.output_name = output_name
        self.regressors: dict[str, LandmarkRegressor] = {}
        self.metrics: dict[str, LandmarkError] = {}
        self.last_results: dict[str, dict[str, Any]] = {}

    # -- fitting on the training split ------------------------------------------------------------------
    def fit(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> LandmarkRegressor:
        """Run the method over the training split, gather centres and keypoints, fit the regressor."""
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_eval_dataloader"):
            raise RuntimeError(
                "LandmarkMetrics fits its regressor on the training split and needs a datamodule with "
                f"train_eval_dataloader() (segzoo.SegDataModule); got {type(datamodule).__name__}"
            )
        loader = datamodule.train_eval_dataloader()
        step_name = "test_step" if stage == "test" else "validation_step"
        step = getattr(pl_module, step_name)
        precision = trainer.precision_plugin
        step_context = precision.test_step_context if stage == "test" else precision.val_step_context
        rows: list[Tensor] = []
        sizes: tuple[int, int] | None = None  # (K part centres, L keypoints) of the first batch
        with torch.inference_mode(), _logging_suppressed(pl_module):
            for i, batch in enumerate(loader):
                if self.max_fit_batches is not None and i >= self.max_fit_batches:
                    break
                batch = trainer.strategy.batch_to_device(batch, pl_module.device)
                with step_context():
                    outputs = step(batch, i)
                centres = self._landmarks(outputs, pl_module, step_name)
                keypoints = self._keypoints(batch, len(centres), "training")
                if sizes is None:
                    sizes = (centres.shape[1], keypoints.shape[1])
                elif sizes != (centres.shape[1], keypoints.shape[1]):
                    raise ValueError(
                        f"LandmarkMetrics: training batch {i} has {centres.shape[1]} part centres and "
                        f"{keypoints.shape[1]} keypoints per image, earlier batches {sizes[0]} and "
                        f"{sizes[1]}; {type(pl_module).__name__}.{step_name} and the dataset must agree"
                    )
                indices = [m.get("index", -1) for m in batch.get("meta", [{}] * len(centres))]
                rows.append(_pack(centres, keypoints, indices))
        # Under DDP a process may have no training sample at all: it learns K and L from the others, and
        # every process takes part in the same collectives (a process raising alone would hang the rest).
        device, world_size = pl_module.device, trainer.world_size
        local_sizes = torch.tensor([sizes] if sizes else [], dtype=torch.int64, device=device).view(-1, 2)
        all_sizes = gather_rows(local_sizes, pl_module.all_gather, world_size).unique(dim=0)
        if len(all_sizes) == 0:
            raise ValueError("LandmarkMetrics: the training split (train_eval_dataloader) yielded no batch")
        if len(all_sizes) > 1:
            raise ValueError(
                f"LandmarkMetrics: processes disagree on (part centres, keypoints) per image: "
                f"{all_sizes.tolist()}"
            )
        num_parts, num_points = (int(v) for v in all_sizes[0])
        width = 1 + 2 * num_parts + 2 * num_points
        local = torch.cat(rows) if rows else torch.zeros(0, width, dtype=float_dtype(device), device=device)
        gathered = gather_rows(local, pl_module.all_gather, world_size).to("cpu", torch.float64)
        gathered = _in_dataset_order(gathered)
        centres = gathered[:, 1 : 1 + 2 * num_parts].reshape(-1, num_parts, 2)
        keypoints = gathered[:, 1 + 2 * num_parts :].reshape(-1, num_points, 2)
        regressor = fit_landmark_regressor(centres, keypoints, ridge=self.ridge)
        self.regressors[stage] = regressor
        return regressor

    def _landmarks(self, outputs: Any, pl_module: L.LightningModule, step_name: str) -> Tensor:
        if not isinstance(outputs, dict) or outputs.get("landmarks") is None:
            got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            raise ValueError(
                f"LandmarkMetrics: {type(pl_module).__name__}.{step_name} returned no 'landmarks' "
                f"(got {got}); it must return part centres as outputs['landmarks'] = FloatTensor[B, K, 2] "
                "(x, y) in pixels"
            )
        landmarks = outputs["landmarks"]
        if not isinstance(landmarks, Tensor) or landmarks.ndim != 3 or landmarks.shape[-1] != 2:
            shape = tuple(landmarks.shape) if isinstance(landmarks, Tensor) else type(landmarks).__name__
            raise ValueError(
                f"LandmarkMetrics: {type(pl_module).__name__}.{step_name} returned landmarks {shape}; "
                "expected FloatTensor[B, K, 2] (x, y) in pixels"
            )
        return landmarks

    def _keypoints(self, batch: Any, batch_size: int, split: str) -> Tensor:
        paths = [m.get("path") for m in batch.get("meta", [])] if isinstance(batch, dict) else []
        where = f" (first sample {paths[0]})" if paths else ""
        keypoints = batch.get("keypoints") if isinstance(batch, dict) else None
        if keypoints is None:
            raise ValueError(
                f"LandmarkMetrics: a {split} batch{where} has no 'keypoints'; the dataset must provide "
                "ground-truth landmarks (e.g. face_landmarks, celeba, synthetic in mode 'parts')"
            )
        if not isinstance(keypoints, Tensor) or keypoints.ndim != 3 or keypoints.shape[-1] != 2:
            raise ValueError(
                f"LandmarkMetrics: {split} batch{where} keypoints must stack to [B, L, 2] (the same L for "
                f"every image), got {type(keypoints).__name__}"
                + (f" {tuple(keypoints.shape)}" if isinstance(keypoints, Tensor) else "")
            )
        if len(keypoints) != batch_size:
            raise ValueError(
                f"LandmarkMetrics: {split} batch{where} has {len(keypoints)} keypoint sets but the method "
                f"returned landmarks for {batch_size} images"
            )
        return keypoints

    # -- evaluation -------------------------------------------------------------------------------------
    def _update(self, stage: str, pl_module: L.LightningModule, outputs: Any, batch: Any) -> None:
        step_name = "test_step" if stage == "test" else "validation_step"
        centres = self._landmarks(outputs, pl_module, step_name)
        keypoints = self._keypoints(batch, len(centres), stage)
        pred = self.regressors[stage].predict(centres)
        if stage not in self.metrics:
            self.metrics[stage] = LandmarkError(self.eye_indices, dtype=float_dtype(pred.device))
        metric = self.metrics[stage].to(pred.device)
        sources = [m.get("path", "?") for m in batch["meta"]] if "meta" in batch else None
        metric.update(pred, keypoints.to(pred.device), sources=sources)

    def _compute(self, stage: str, pl_module: L.LightningModule) -> dict[str, Any]:
        metric = self.metrics.get(stage)
        if metric is None or not metric.update_called:
            return {}
        error = float(metric.compute()) * 100
        with metric.sync_context():  # the image count over all processes
            count = int(metric.count)
        metric.reset()
        regressor = self.regressors[stage]
        # Already reduced across processes by the metric: every rank holds the same value.
        pl_module.log(f"{stage}/landmark_error", error, sync_dist=True)
        results = {
            "landmark_error": error,
            "num_images": count,
            "num_fit_images": regressor.num_samples,
            "num_parts": regressor.num_parts,
            "num_landmarks": regressor.num_landmarks,
            "eye_indices": list(self.eye_indices),
            "ridge": self.ridge,
        }
        self.last_results[stage] = results
        return results

    # -- hooks ------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "val" in self.stages and not trainer.sanity_checking:
            self.fit(trainer, pl_module, "val")

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if "val" in self.stages and not trainer.sanity_checking:
            self._update("val", pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "val" in self.stages and not trainer.sanity_checking:
            self._compute("val", pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "test" in self.stages:
            self.fit(trainer, pl_module, "test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if "test" in self.stages:
            self._update("test", pl_module, outputs, batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "test" not in self.stages:
            return
        results = self._compute("test", pl_module)
        # trainer.log_dir broadcasts from rank 0: every rank must ask, not only the one that writes.
        folder = log_dir(trainer)
        if results and trainer.is_global_zero:
            self._report(results, folder)

    def _report(self, results: dict[str, Any], folder: Path) -> None:
        Console().print(
            f"landmark error (test): {results['landmark_error']:.2f} % of the inter-ocular distance over "
            f"{results['num_images']} images; regressor {results['num_parts']} parts -> "
            f"{results['num_landmarks']} landmarks fitted on {results['num_fit_images']} training images"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{free_stem(folder, self.output_name, ('.json',))}.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        rank_zero_info(f"landmark report written to {path}")


def _pack(centres: Tensor, keypoints: Tensor, indices: list[int]) -> Tensor:
    """One float64 row per image: (dataset index, centres flattened, keypoints flattened)."""
    dtype = float_dtype(centres.device)
    index = torch.tensor(indices, dtype=dtype, device=centres.device).view(-1, 1)
    return torch.cat(
        [index, centres.reshape(len(centres), -1).to(dtype), keypoints.to(centres.device, dtype).flatten(1)],
        dim=1,
    )


def _in_dataset_order(rows: Tensor) -> Tensor:
    """Rows sorted by dataset index (column 0): the gathered rows of several processes arrive interleaved,
    and least squares is only bit-identical to one process's fit when it sees the rows in the same order.
    Rows without an index (-1) keep their order."""
    index = rows[:, 0]
    if len(rows) == 0 or bool((index < 0).any()):
        return rows
    return rows[torch.argsort(index, stable=True)]
