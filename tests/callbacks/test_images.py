"""ImageLogger: fixed val/test samples drawn as input | target | prediction, sent to the logger or to PNGs."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from torch.utils.data import DataLoader

from segzoo.callbacks.images import ImageLogger
from segzoo.viz import overlay

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
PALETTE = [(0, 0, 0), (200, 0, 50), (10, 200, 30)]
SIZES = [(8, 10), (6, 10), (8, 7), (5, 5), (8, 10)]  # (H, W): batches get padded
PAD = 2


def make_samples(normalise: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    samples = []
    for i, (h, w) in enumerate(SIZES):
        rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
        if normalise:
            image = (image - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        mask = torch.from_numpy(rng.integers(0, 3, size=(h, w))).long()
        mask[0, 0] = 255
        meta = {"path": f"/data/val/img_{i}.png", "index": i, "size": (h, w)}
        samples.append({"image": image, "mask": mask, "meta": meta, "rgb": rgb})
    return samples


def collate(samples: list[dict]) -> dict:
    """Pad images with 0 and masks with 255 to the largest size; keep meta (with input_size) as a list."""
    h = max(s["image"].shape[-2] for s in samples)
    w = max(s["image"].shape[-1] for s in samples)
    images = torch.zeros(len(samples), 3, h, w)
    masks = torch.full((len(samples), h, w), 255, dtype=torch.long)
    metas = []
    for i, s in enumerate(samples):
        sh, sw = s["image"].shape[-2:]
        images[i, :, :sh, :sw] = s["image"]
        masks[i, :sh, :sw] = s["mask"]
        metas.append({**s["meta"], "input_size": (sh, sw)})
    return {"image": images, "mask": masks, "meta": metas}


class TinySeg(pl.LightningModule):
    """A 1x1 convolution over RGB: enough to produce per-pixel class ids."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch["image"]), batch["mask"], ignore_index=255)

    def _eval(self, batch):
        return {"pred": self(batch["image"]).argmax(1), "target": batch["mask"]}

    def validation_step(self, batch, batch_idx):
        return self._eval(batch)

    def test_step(self, batch, batch_idx):
        return self._eval(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TinyData(pl.LightningDataModule):
    def __init__(self, normalise: bool = True) -> None:
        super().__init__()
        self.samples = make_samples(normalise)
        if normalise:
            self.mean, self.std = MEAN, STD
        self.class_names = ["bg", "a", "b"]
        self.palette = PALETTE
        self.ignore_index = 255

    def _loader(self) -> DataLoader:
        return DataLoader(self.samples, batch_size=2, shuffle=False, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.samples, batch_size=2, shuffle=True, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()


def make_trainer(tmp_path: Path, logger, callback: ImageLogger, epochs: int = 1) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=1,
        limit_val_batches=3,
        limit_test_batches=3,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback],
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def expected_grid_size(n: int, columns: int = 3) -> tuple[int, int]:
    """(H, W) of the grid of the first n samples: rows as tall as the sample, columns as the widest."""
    height = sum(h for h, _ in SIZES[:n]) + PAD * (n + 1)
    width = columns * max(w for _, w in SIZES[:n]) + PAD * (columns + 1)
    return height, width


def cell(picture: np.ndarray, row: int, col: int, n_cols_width: int) -> np.ndarray:
    """The (row, col) cell of the grid, cropped to that sample's size."""
    h, w = SIZES[row]
    y = PAD + sum(SIZES[r][0] + PAD for r in range(row))
    x = PAD + col * (n_cols_width + PAD)
    return picture[y : y + h, x : x + w]


def test_csv_logger_writes_a_grid_of_fixed_samples(tmp_path):
    data, model = TinyData(), TinySeg()
    callback = ImageLogger(num_samples=3)
    logger = CSVLogger(tmp_path)
    make_trainer(tmp_path, logger, callback).fit(model, datamodule=data)

    folder = Path(logger.log_dir) / "images"
    assert sorted(p.name for p in folder.iterdir()) == ["val_epoch000.png"]  # sanity check not logged
    picture = np.asarray(Image.open(folder / "val_epoch000.png").convert("RGB"))
    assert picture.shape[:2] == expected_grid_size(3)

    width = max(w for _, w in SIZES[:3])
    model.eval()
    for row in range(3):
        sample = data.samples[row]
        rgb = sample["rgb"]
        # input denormalised back to the original pixels (padding cropped away)
        assert np.abs(cell(picture, row, 0, width).astype(int) - rgb).max() <= 1
        target = overlay(rgb, sample["mask"], PALETTE, alpha=0.5)
        assert np.abs(cell(picture, row, 1, width).astype(int) - target).max() <= 1
        with torch.no_grad():
            pred = model(sample["image"][None]).argmax(1)[0]
        assert np.abs(cell(picture, row, 2, width).astype(int) - overlay(rgb, pred, PALETTE)).max() <= 1
    # the ignored pixel of the target shows the plain image
    assert np.abs(cell(picture, 0, 1, width)[0, 0].astype(int) - data.samples[0]["rgb"][0, 0]).max() <= 1


def test_test_stage_writes_per_sample_files_and_says_where(tmp_path, capsys):
    data, model = TinyData(normalise=False), TinySeg()  # no mean/std: images taken as [0, 1]
    callback = ImageLogger(num_samples=2, stages=("test",))
    trainer = make_trainer(tmp_path, CSVLogger(tmp_path), callback)
    trainer.test(model, datamodule=data)

    folder = Path(trainer.loggers[0].log_dir) / "images"
    assert (folder / "test_epoch000.png").is_file()
    files = sorted(p.name for p in (folder / "test").iterdir())
    assert files == ["img_0.png", "img_1.png"]
    one = np.asarray(Image.open(folder / "test" / "img_1.png").convert("RGB"))
    h, w = SIZES[1]
    assert one.shape[:2] == (h + 2 * PAD, 3 * w + 4 * PAD)
    assert np.abs(one[PAD : PAD + h, PAD : PAD + w].astype(int) - data.samples[1]["rgb"]).max() <= 1
    out = capsys.readouterr().out
    assert "ImageLogger: 2 test sample image(s) written to" in out and str(folder) in out


def test_tensorboard_logger_gets_the_image(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path)
    make_trainer(tmp_path, logger, ImageLogger(num_samples=4)).fit(TinySeg(), datamodule=TinyData())

    events = list(Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(logger.log_dir), size_guidance={"images": 0})
    acc.Reload()
    assert "val/samples" in acc.Tags()["images"]
    (image,) = acc.Images("val/samples")
    assert (image.height, image.width) == expected_grid_size(4)
    assert not (Path(logger.log_dir) / "images").exists()  # the logger had it: no PNG files


def test_every_n_epochs_and_stages_limit_logging(tmp_path):
    logger = CSVLogger(tmp_path)
    trainer = make_trainer(tmp_path, logger, ImageLogger(num_samples=1, every_n_epochs=2), epochs=2)
    trainer.fit(TinySeg(), datamodule=TinyData())
    folder = Path(logger.log_dir) / "images"
    assert sorted(p.name for p in folder.iterdir()) == ["val_epoch001.png"]
    picture = Image.open(folder / "val_epoch001.png")
    assert (picture.height, picture.width) == expected_grid_size(1)

    logger = CSVLogger(tmp_path / "only_test")
    trainer = make_trainer(tmp_path, logger, ImageLogger(stages=["test"]))
    trainer.fit(TinySeg(), datamodule=TinyData())
    assert not (Path(logger.log_dir) / "images").exists()


def test_no_logger_writes_under_default_root_dir(tmp_path):
    data = TinyData()
    loader = DataLoader(data.samples, batch_size=2, collate_fn=collate)
    trainer = make_trainer(tmp_path, False, ImageLogger(num_samples=2))
    trainer.validate(TinySeg(), dataloaders=loader)  # no datamodule: nothing to read mean/std from
    assert (tmp_path / "images" / "val_epoch000.png").is_file()


def test_rejects_outputs_without_pred_and_bad_arguments(tmp_path):
    class NoPred(TinySeg):
        def validation_step(self, batch, batch_idx):
            return None

    trainer = make_trainer(tmp_path, False, ImageLogger())
    with pytest.raises(ValueError, match="the val step returned NoneType; expected a dict with 'pred'"):
        trainer.validate(NoPred(), datamodule=TinyData())
    with pytest.raises(ValueError, match="num_samples=0"):
        ImageLogger(num_samples=0)
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['train'\]"):
        ImageLogger(stages=("train",))


def test_wandb_logger_gets_log_image(tmp_path):
    from types import SimpleNamespace

    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.trainer.states import TrainerFn

    class RecordingWandb(WandbLogger):
        """A WandbLogger that records log_image calls instead of starting a W&B run."""

        def __init__(self) -> None:
            self.calls: list[dict] = []

        def log_image(self, key, images, step=None, **kwargs):
            self.calls.append({"key": key, "images": images, "step": step})

    logger = RecordingWandb()
    data = TinyData()
    trainer = SimpleNamespace(
        loggers=[logger],
        datamodule=data,
        sanity_checking=False,
        is_global_zero=True,
        state=SimpleNamespace(fn=TrainerFn.VALIDATING),
        current_epoch=0,
        global_step=7,
        default_root_dir=tmp_path,
    )
    callback = ImageLogger(num_samples=2)
    batch = collate(data.samples[:2])
    outputs = {"pred": torch.zeros(2, *batch["image"].shape[-2:], dtype=torch.long)}  # no target: mask used
    callback.on_validation_epoch_start(trainer, None)
    callback.on_validation_batch_end(trainer, None, outputs, batch, 0)
    callback.on_validation_epoch_end(trainer, None)

    (call,) = logger.calls
    assert call["key"] == "val/samples" and call["step"] == 7
    (picture,) = call["images"]
    assert picture.shape[:2] == expected_grid_size(2)
    assert not (tmp_path / "images").exists()
