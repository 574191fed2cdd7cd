import types

import pytest
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image

from segzoo.data.datamodule import SegDataModule, resolve_root

SMALL = {"num_classes": 3, "size": [24, 32]}


def test_metadata_before_setup_and_loaders():
    dm = SegDataModule(dataset_kwargs=SMALL, batch_size=4, eval_batch_size=2, crop_size=[16, 16])
    assert dm.num_classes == 3 and dm.class_names[0] == "background" and dm.ignore_index == 255
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 16, 16) and batch["mask"].dtype == torch.int64
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (2, 3, 24, 32) and len(val["meta"]) == 2
    assert val["meta"][0]["path"].startswith("synthetic://val/")


def test_seeded_train_loader_repeats():
    def first(seed):
        dm = SegDataModule(dataset_kwargs=SMALL, batch_size=4, seed=seed)
        return next(iter(dm.train_dataloader()))["meta"]

    assert [m["index"] for m in first(3)] == [m["index"] for m in first(3)]


def test_holdout_is_disjoint_and_deterministic():
    kw = dict(dataset_kwargs={**SMALL, "num_samples": 20}, val_split=None, holdout=0.25, seed=1)
    a, b = SegDataModule(**kw), SegDataModule(**kw)
    a.setup("fit")
    b.setup("fit")
    train_idx, val_idx = a.datasets["train"].indices, a.datasets["val"].indices
    assert len(val_idx) == 5 and len(train_idx) == 15 and not set(train_idx) & set(val_idx)
    assert val_idx == b.datasets["val"].indices
    c = SegDataModule(**kw, test_split=None)
    c.setup("test")
    assert c.datasets["test"].indices == val_idx  # no test split: the holdout is the test set too
    train_eval = [m["index"] for batch in a.train_eval_dataloader() for m in batch["meta"]]
    assert train_eval == train_idx  # training samples, in order, with evaluation transforms


def test_train_eval_loader_uses_eval_transforms():
    dm = SegDataModule(dataset_kwargs=SMALL, crop_size=[8, 8], eval_batch_size=4)
    batch = next(iter(dm.train_eval_dataloader()))
    assert batch["image"].shape == (4, 3, 24, 32)  # whole images, no training crop
    assert [m["path"] for m in batch["meta"]] == [f"synthetic://train/{i}" for i in range(4)]


def test_predict_root_reads_an_image_folder(tmp_path):
    for i in range(3):
        Image.new("RGB", (10, 7), (i, 0, 0)).save(tmp_path / f"img{i}.png")
    dm = SegDataModule(dataset_kwargs=SMALL, predict_root=str(tmp_path), eval_batch_size=3)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape == (3, 3, 7, 10) and "mask" not in batch
    assert dm.num_classes == 3  # class names still come from the configured dataset


def test_eval_loaders_never_repeat_samples_across_processes():
    dm = SegDataModule(dataset_kwargs={**SMALL, "num_samples": 7}, eval_batch_size=2)
    seen = []
    for rank in range(2):
        dm.trainer = types.SimpleNamespace(world_size=2, global_rank=rank)
        loader = dm.val_dataloader()
        assert isinstance(loader.sampler, UnrepeatedDistributedSampler)
        seen += [m["index"] for batch in loader for m in batch["meta"]]
    assert sorted(seen) == list(range(7))


def test_errors():
    with pytest.raises(KeyError, match="unknown dataset 'nope'.*synthetic"):
        SegDataModule(dataset="nope")
    with pytest.raises(ValueError, match="holdout"):
        SegDataModule(holdout=1.5)
    dm = SegDataModule(dataset_kwargs=SMALL, test_split=None)
    with pytest.raises(ValueError, match="no test split"):
        dm.setup("test")


def test_resolve_root(monkeypatch):
    monkeypatch.delenv("SEGZOO_DATA", raising=False)
    assert resolve_root("$SEGZOO_DATA/camvid").as_posix() == "../shared/data/camvid"
    monkeypatch.setenv("SEGZOO_DATA", "/data")
    assert resolve_root("${SEGZOO_DATA}/camvid").as_posix() == "/data/camvid"
    assert resolve_root(None) is None


def test_fit_without_validation_set(tmp_path):
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)

        def training_step(self, batch, idx):
            return torch.nn.functional.cross_entropy(self.conv(batch["image"]), batch["mask"])

        def validation_step(self, batch, idx):
            raise AssertionError("there is no validation set")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = SegDataModule(dataset_kwargs={**SMALL, "num_samples": 4}, val_split=None, batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.global_step == 2 and "val" not in dm.datasets
    with pytest.raises(ValueError, match="no val split"):
        dm.setup("validate")
