"""LandmarkMetrics on the real SegDataModule (synthetic objects made of parts, tiny sizes)."""

from __future__ import annotations

import json
import sys
import threading

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from segzoo.callbacks.landmarks import LandmarkMetrics
from segzoo.data import SegDataModule
from segzoo.distributed import gather_rows
from segzoo.launch import run_isolated
from segzoo.metrics.landmarks import grid_centres, normalised_error

NUM_PARTS = 4
# An invertible affine map of the ground-truth part centres, with the parts in another order: a perfect
# part detector whose centres are not the landmarks themselves.
MAP = torch.tensor([[0.8, -0.3], [0.4, 1.2]])
SHIFT = torch.tensor([5.0, -7.0])


def _datamodule(num_samples: int = 16) -> SegDataModule:
    kwargs = {"mode": "parts", "num_parts": NUM_PARTS, "size": [32, 32], "num_samples": num_samples}
    return SegDataModule(dataset="synthetic", dataset_kwargs=kwargs, batch_size=4, eval_batch_size=4)


class AffineParts(L.LightningModule):
    """Returns an affine function of the batch's own keypoints as its part centres."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def _outputs(self, batch, idx):
        keypoints = batch["keypoints"]
        landmarks = keypoints.flip(1) @ MAP.to(keypoints).T + SHIFT.to(keypoints)
        pred = torch.zeros(batch["image"].shape[0], *batch["image"].shape[-2:], dtype=torch.long)
        return {"pred": pred, "landmarks": landmarks, "keypoints": keypoints}

    def test_step(self, batch, idx):
        # Per-step logging is refused in epoch-start hooks, where the fitting pass runs: the callback must
        # silence it there. The epoch sum counts evaluated images only.
        self.log("test/images_seen", float(len(batch["image"])), on_step=True, on_epoch=True, reduce_fx="sum")
        return self._outputs(batch, idx)

    def validation_step(self, batch, idx):
        return self._outputs(batch, idx)

    def training_step(self, batch, idx):
        return (self.weight**2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class NoisyParts(AffineParts):
    """Part centres unrelated to the object: seeded noise per batch."""

    def _outputs(self, batch, idx):
        out = super()._outputs(batch, idx)
        g = torch.Generator().manual_seed(1000 * len(batch["image"]) + idx + int(batch["meta"][0]["index"]))
        out["landmarks"] = torch.rand(out["landmarks"].shape, generator=g) * 32
        return out


class GridParts(AffineParts):
    """The "no parts" baseline: the same fixed grid of centres for every image."""

    def _outputs(self, batch, idx):
        height, width = batch["image"].shape[-2:]
        centres = grid_centres(NUM_PARTS, height, width).expand(len(batch["image"]), NUM_PARTS, 2)
        return {"landmarks": centres}


class NoLandmarks(AffineParts):
    def _outputs(self, batch, idx):
        return {"pred": super()._outputs(batch, idx)["pred"]}


def _trainer(tmp_path, callback, logger=True, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(tmp_path) if logger else False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_perfect_parts_give_zero_error_and_a_report(tmp_path, capsys):
    callback = LandmarkMetrics()
    results = _trainer(tmp_path, callback).test(AffineParts(), datamodule=_datamodule())[0]
    assert results["test/landmark_error"] == pytest.approx(0.0, abs=1e-3)
    assert results["test/images_seen_epoch"] == 16  # the fitting pass logged nothing
    assert "landmark error (test): 0.00 %" in capsys.readouterr().out
    report = json.loads((tmp_path / "lightning_logs" / "version_0" / "landmark_metrics.json").read_text())
    assert report["landmark_error"] == pytest.approx(0.0, abs=1e-3)
    assert report["num_images"] == 16 and report["num_fit_images"] == 16
    assert report["num_parts"] == NUM_PARTS and report["num_landmarks"] == NUM_PARTS
    assert report["eye_indices"] == [0, 1] and report["ridge"] == 0.0


def test_noise_gives_a_large_error(tmp_path):
    callback = LandmarkMetrics(max_fit_batches=3)
    results = _trainer(tmp_path, callback, logger=False).test(NoisyParts(), datamodule=_datamodule())[0]
    assert results["test/landmark_error"] > 20.0
    assert callback.regressors["test"].num_samples == 12  # 3 batches of 4
    assert callback.last_results["test"]["landmark_error"] == pytest.approx(results["test/landmark_error"])


def test_validation_stage_refits_each_epoch_and_skips_the_sanity_check(tmp_path):
    callback = LandmarkMetrics(stages=("val",))
    fits = []
    original = callback.fit
    callback.fit = lambda trainer, module, stage: fits.append(stage) or original(trainer, module, stage)
    trainer = _trainer(
        tmp_path, callback, logger=False, max_epochs=2, limit_train_batches=1, num_sanity_val_steps=1
    )
    trainer.fit(AffineParts(), datamodule=_datamodule())
    assert fits == ["val", "val"]
    assert float(trainer.callback_metrics["val/landmark_error"]) == pytest.approx(0.0, abs=1e-3)
    # Not a test stage here: testing reports nothing.
    assert "test/landmark_error" not in trainer.test(AffineParts(), datamodule=_datamodule())[0]


def test_fixed_grid_baseline_predicts_the_mean_training_landmarks(tmp_path):
    datamodule = _datamodule()
    results = _trainer(tmp_path, LandmarkMetrics(), logger=False).test(GridParts(), datamodule=datamodule)[0]
    train = datamodule.datasets["train_eval"]
    test = datamodule.datasets["test"]
    mean = torch.stack([train[i]["keypoints"] for i in range(len(train))]).double().mean(0)
    truth = torch.stack([test[i]["keypoints"] for i in range(len(test))]).double()
    expected = normalised_error(mean.expand_as(truth), truth).mean() * 100
    assert results["test/landmark_error"] == pytest.approx(float(expected), rel=1e-5)
    assert results["test/landmark_error"] > 20.0


def test_a_method_without_landmarks_is_named(tmp_path):
    with pytest.raises(
        ValueError, match=r"NoLandmarks\.test_step returned no 'landmarks' \(got \['pred'\]\)"
    ):
        _trainer(tmp_path, LandmarkMetrics(), logger=False).test(NoLandmarks(), datamodule=_datamodule())


def test_too_few_training_images_say_what_is_needed(tmp_path):
    with pytest.raises(ValueError, match="needs at least 9 training samples, got 8"):
        _trainer(tmp_path, LandmarkMetrics(), logger=False).test(AffineParts(), datamodule=_datamodule(8))


def test_a_dataset_without_keypoints_is_an_error(tmp_path):
    datamodule = SegDataModule(dataset="synthetic", dataset_kwargs={"size": 16, "num_samples": 4})
    with pytest.raises(ValueError, match=r"synthetic://train/0\) has no 'keypoints'"):
        _trainer(tmp_path, LandmarkMetrics(), logger=False).test(GridParts(), datamodule=datamodule)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"stages \('train',\)"):
        LandmarkMetrics(stages=("train",))
    with pytest.raises(ValueError, match="eye_indices"):
        LandmarkMetrics(eye_indices=(1, 1))


def test_gather_rows_with_uneven_counts_across_processes():
    """Three simulated processes (threads with a barrier-based all_gather) holding 2, 0 and 3 rows."""
    world = 3
    data = [torch.arange(n * 3, dtype=torch.float64).view(n, 3) + 100 * r for r, n in enumerate((2, 0, 3))]
    slots: list[torch.Tensor | None] = [None] * world
    barrier = threading.Barrier(world)
    results: list[torch.Tensor | None] = [None] * world

    def all_gather(tensor, rank):
        slots[rank] = tensor
        barrier.wait()
        stacked = torch.stack(list(slots))
        barrier.wait()  # nobody overwrites a slot before everyone has read
        return stacked

    def run(rank):
        results[rank] = gather_rows(data[rank], lambda t: all_gather(t, rank), world)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    for result in results:
        torch.testing.assert_close(result, torch.cat(data), rtol=0, atol=0)


DDP_SCRIPT = '''
import json
import os
import sys

import lightning as L
import torch

from segzoo.callbacks.landmarks import LandmarkMetrics
from segzoo.data import SegDataModule


class Noisy(L.LightningModule):
    """Keypoints plus noise seeded by the sample, so the outputs do not depend on the process layout."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def test_step(self, batch, idx):
        out = []
        for kp, meta in zip(batch["keypoints"], batch["meta"]):
            seed = int(meta["index"]) + (0 if "train" in meta["path"] else 10000)
            out.append(kp + torch.randn(kp.shape, generator=torch.Generator().manual_seed(seed)) * 2)
        return {"landmarks": torch.stack(out)}


if __name__ == "__main__":
    devices = int(sys.argv[1])
    torch.set_num_threads(1)
    callback = LandmarkMetrics()
    kwargs = {"mode": "parts", "num_parts": 4, "size": [32, 32], "num_samples": 13}
    datamodule = SegDataModule(dataset="synthetic", dataset_kwargs=kwargs, eval_batch_size=4)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
        callbacks=[callback], enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=f"out{devices}",
    )
    trainer.test(Noisy(), datamodule=datamodule, verbose=False)
    result = dict(callback.last_results["test"], weight=callback.regressors["test"].weight.flatten().tolist())
    os.makedirs(f"out{devices}", exist_ok=True)
    with open(f"out{devices}/rank{trainer.global_rank}.json", "w") as fh:
        json.dump(result, fh)
'''


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    """13 images in batches of 4 on 2 gloo processes (7 + 6): the gathered fit and the error are exact."""
    (tmp_path / "run.py").write_text(DDP_SCRIPT)
    for devices in (1, 2):
        # own process group, free port, clean environment, killed as a whole on timeout (segzoo.launch)
        done = run_isolated([sys.executable, "run.py", str(devices)], cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    single = json.loads((tmp_path / "out1" / "rank0.json").read_text())
    assert single["num_images"] == 13 and single["num_fit_images"] == 13
    assert 10 < single["landmark_error"] < 100
    for rank in (0, 1):  # every process fitted the very same regressor and reports the same error
        assert json.loads((tmp_path / "out2" / f"rank{rank}.json").read_text()) == single
    report = json.loads((tmp_path / "out2" / "landmark_metrics.json").read_text())
    assert report["landmark_error"] == single["landmark_error"]
