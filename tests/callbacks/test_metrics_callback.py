import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from segzoo.callbacks import SegmentationMetrics
from segzoo.data.collate import collate_samples
from segzoo.metrics import ConfusionMetrics


def _samples(n=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        h, w = 6 + i % 3, 7 + i % 2  # different sizes: the collate pads with ignore_index
        mask = torch.randint(0, classes, (h, w), generator=g)
        mask[0, 0] = 255
        out.append({"image": torch.rand(3, h, w, generator=g), "mask": mask, "meta": {"path": f"s{i}.png"}})
    return out


class Shift(L.LightningModule):
    """Predicts (target + 1) % C on pixels where the image's first channel > 0.7, the target elsewhere."""

    def __init__(self, classes=3):
        super().__init__()
        self.classes = classes
        self.p = torch.nn.Parameter(torch.zeros(1))

    def _pred(self, batch):
        target = batch["mask"].clamp(max=self.classes - 1)
        wrong = batch["image"][:, 0] > 0.7
        return torch.where(wrong, (target + 1) % self.classes, target)

    def validation_step(self, batch, idx):
        return {"pred": self._pred(batch), "target": batch["mask"]}

    test_step = validation_step


class DM(L.LightningDataModule):
    class_names = ["a", "b", "c"]
    ignore_index = 255

    def __init__(self, samples):
        super().__init__()
        self.samples = samples

    def val_dataloader(self):
        return DataLoader(self.samples, batch_size=2, collate_fn=collate_samples)

    test_dataloader = val_dataloader


def _quiet_trainer(folder, callback):
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        default_root_dir=folder,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _expected(samples):
    metric = ConfusionMetrics(3)
    model = Shift()
    for s in samples:
        batch = {"image": s["image"][None], "mask": s["mask"][None]}
        metric.update(model._pred(batch), s["mask"][None])
    return metric.compute()


def test_test_report_matches_a_direct_computation(tmp_path, capsys):
    samples = _samples()
    callback = SegmentationMetrics()
    trainer = L.Trainer(
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    results = trainer.test(Shift(), datamodule=DM(samples))[0]
    expected = _expected(samples)
    for key in ("aAcc", "mIoU", "mAcc"):
        assert results[f"test/{key}"] == pytest.approx(expected[key], abs=1e-6)
    assert 0.3 < expected["mIoU"] < 0.9  # the fixture really makes mistakes
    printed = capsys.readouterr().out
    assert "per-class results" in printed and "b" in printed
    folder = tmp_path / "lightning_logs" / "version_0"
    report = json.loads((folder / "test_metrics.json").read_text())
    assert report["mIoU"] == pytest.approx(expected["mIoU"])
    rows = (folder / "test_metrics.csv").read_text().splitlines()
    assert rows[0] == "class,IoU,Acc" and len(rows) == 4 and rows[2].startswith("b,")


def test_validation_logs_each_epoch_and_resets(tmp_path):
    samples = _samples()
    callback = SegmentationMetrics()
    trainer = _quiet_trainer(tmp_path, callback)
    first = trainer.validate(Shift(), datamodule=DM(samples))[0]["val/mIoU"]
    second = trainer.validate(Shift(), datamodule=DM(samples))[0]["val/mIoU"]
    assert first == pytest.approx(second) == pytest.approx(_expected(samples)["mIoU"])


def test_out_of_range_target_names_the_file(tmp_path):
    samples = _samples()
    samples[3]["mask"][1, 1] = 7
    trainer = _quiet_trainer(tmp_path, SegmentationMetrics())
    with pytest.raises(ValueError, match=r"7.*s3\.png|s3\.png.*7"):
        trainer.test(Shift(), datamodule=DM(samples))


def test_bsds_scores_from_several_annotations(tmp_path):
    class Regions(Shift):
        def test_step(self, batch, idx):
            pred = (batch["image"][:, 0] > 0.5).long()
            return {
                "pred": pred,
                "masks": [pred[i : i + 1, :4, :5].repeat(2, 1, 1) for i in range(len(pred))],
            }

    trainer = _quiet_trainer(tmp_path, SegmentationMetrics())
    results = trainer.test(Regions(), datamodule=DM(_samples()))[0]
    assert results["test/bsds_covering"] == pytest.approx(1.0)
    assert results["test/bsds_voi"] == pytest.approx(0.0, abs=1e-9)


def test_reports_never_replace_an_earlier_one(tmp_path):
    samples = _samples()
    for _ in range(2):
        trainer = _quiet_trainer(tmp_path, SegmentationMetrics())
        trainer.test(Shift(), datamodule=DM(samples))
    assert sorted(p.name for p in tmp_path.glob("test_metrics*")) == [
        "test_metrics.csv",
        "test_metrics.json",
        "test_metrics_1.csv",
        "test_metrics_1.json",
    ]
