"""The shared metric callback: any method that returns ``{"pred", "target"}`` gets aAcc/mIoU/mAcc."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from rich.console import Console
from rich.table import Table

from segzoo.callbacks.context import datamodule_attr, free_stem, log_dir
from segzoo.metrics import BSDSMetrics, ConfusionMetrics


class SegmentationMetrics(L.Callback):
    """Confusion-matrix metrics per epoch (val) and at test end, plus BSDS scores when a batch carries
    several human annotations (``outputs["masks"]``).

    Methods return ``{"pred": LongTensor[B, H, W], "target": LongTensor[B, H, W]}`` from
    ``validation_step``/``test_step``; padded pixels carry ``ignore_index`` in the target and are skipped.
    The confusion matrix is summed across processes and the datamodule's val/test samplers never repeat a
    sample, so the numbers under DDP equal those of one process.

    Args:
        num_classes, class_names, ignore_index: default to the datamodule's.
        matching: ``None``, ``"hungarian"`` or ``"majority"`` for methods whose ids are arbitrary clusters.
        num_clusters: number of predicted ids when ``matching`` is set (default ``num_classes``).
        output_name: file stem of the saved test report in the log directory.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        ignore_index: int | None = None,
        matching: str | None = None,
        num_clusters: int | None = None,
        output_name: str = "test_metrics",
    ) -> None:
        self.num_classes = num_classes
        self.class_names = class_names
        self.ignore_index = ignore_index
        self.matching = matching
        self.num_clusters = num_clusters
        self.output_name = output_name
        self.confusion: dict[str, ConfusionMetrics] = {}
        self.bsds: dict[str, BSDSMetrics] = {}
        self.last_results: dict[str, dict[str, Any]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.class_names is None and datamodule_attr(trainer, "class_names"):
            self.class_names = list(datamodule_attr(trainer, "class_names"))
        if self.num_classes is None and self.class_names:
            self.num_classes = len(self.class_names)
        if self.ignore_index is None:
            self.ignore_index = int(datamodule_attr(trainer, "ignore_index", 255))

    def _metric(self, stage: str, device: torch.device) -> ConfusionMetrics | None:
        if not self.num_classes:
            return None
        if stage not in self.confusion:
            self.confusion[stage] = ConfusionMetrics(
                self.num_classes,
                ignore_index=self.ignore_index,
                matching=self.matching,
                num_clusters=self.num_clusters,
            )
        return self.confusion[stage].to(device)

    def _update(self, stage: str, pl_module: L.LightningModule, outputs: Any, batch: Any) -> None:
        if not isinstance(outputs, dict) or "pred" not in outputs:
            return
        pred = outputs["pred"]
        sources = (
            [m.get("path") for m in batch["meta"]] if isinstance(batch, dict) and "meta" in batch else None
        )
        target = outputs.get("target")
        metric = self._metric(stage, pred.device) if target is not None else None
        if metric is not None:
            metric.update(pred, target.to(pred.device), sources=sources)
        if outputs.get("masks") is not None:
            crops = [p[: g.shape[-2], : g.shape[-1]] for p, g in zip(pred, outputs["masks"], strict=True)]
            bsds = self.bsds.setdefault(stage, BSDSMetrics()).to(pred.device)
            bsds.update(crops, outputs["masks"], sources=sources)

    def _compute(self, stage: str, pl_module: L.LightningModule) -> dict[str, Any]:
        results: dict[str, Any] = {}
        if stage in self.confusion and self.confusion[stage].update_called:
            results.update(self.confusion[stage].compute())
            self.confusion[stage].reset()
        if stage in self.bsds and self.bsds[stage].update_called:
            results.update({f"bsds_{k}": v for k, v in self.bsds[stage].compute().items()})
            self.bsds[stage].reset()
        scalars = {f"{stage}/{k}": float(v) for k, v in results.items() if isinstance(v, float | int)}
        if scalars:
            # Already reduced across processes by the metric: every rank holds the same values.
            pl_module.log_dict(scalars, sync_dist=True)
        self.last_results[stage] = results
        return results

    # -- hooks ----------------------------------------------------------------------------------------
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not trainer.sanity_checking:
            self._update("val", pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._compute("val", pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("test", pl_module, outputs, batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        results = self._compute("test", pl_module)
        if results and trainer.is_global_zero:
            self._report(results, log_dir(trainer))

    # -- report ---------------------------------------------------------------------------------------
    def _rows(self, results: dict[str, Any]) -> list[tuple[str, float, float]]:
        if "IoU" not in results:
            return []
        names = self.class_names or [f"class_{i}" for i in range(len(results["IoU"]))]
        return [
            (name, float(iou) * 100, float(acc) * 100)
            for name, iou, acc in zip(names, results["IoU"].tolist(), results["Acc"].tolist(), strict=True)
        ]

    def _report(self, results: dict[str, Any], folder: Path) -> None:
        rows = self._rows(results)
        summary = {k: float(v) for k, v in results.items() if isinstance(v, float | int)}
        console = Console()
        if rows:
            table = Table(title="per-class results (test)")
            table.add_column("class")
            table.add_column("IoU", justify="right")
            table.add_column("Acc", justify="right")
            for name, iou, acc in rows:
                table.add_row(name, _fmt(iou), _fmt(acc))
            console.print(table)
        console.print(
            "  ".join(
                f"{k}: {_fmt(v * 100 if k in ('aAcc', 'mIoU', 'mAcc') else v)}" for k, v in summary.items()
            )
        )
        folder.mkdir(parents=True, exist_ok=True)
        stem = free_stem(folder, self.output_name, (".csv", ".json"))
        with open(folder / f"{stem}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["class", "IoU", "Acc"])
            writer.writerows(rows)
        (folder / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
        rank_zero_info(f"test report written to {folder / stem}.{{csv,json}}")


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"
