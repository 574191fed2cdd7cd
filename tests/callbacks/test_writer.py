"""PredictionWriter end to end through ``trainer.predict`` on tiny image files."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from segzoo.callbacks.writer import SOURCE_KEY, PredictionWriter
from segzoo.data.datamodule import SegDataModule
from segzoo.data.io import read_image, read_image_array, read_label_array
from segzoo.viz import overlay

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
PALETTE = [(0, 0, 0), (200, 0, 50), (10, 200, 30)]


def write_images(folder: Path, sizes: dict[str, tuple[int, int]], seed: int = 0) -> list[Path]:
    """Smooth random RGB gradients named ``<name>`` (suffix picks the format) of the given (H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name, (h, w) in sizes.items():
        start, end = rng.uniform(0, 255, size=(2, 3))
        t = (np.arange(h)[:, None, None] / h + np.arange(w)[None, :, None] / w) / 2
        path = folder / name
        Image.fromarray((start + t * (end - start)).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


class Files(Dataset):
    """Images read from disk, optionally downscaled by ``scale``, normalised; ``meta`` as datasets give."""

    def __init__(self, paths: list[Path | str], scale: int = 1, synthetic_size: tuple[int, int] = (6, 8)):
        self.paths, self.scale, self.synthetic_size = paths, scale, synthetic_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.paths[i]
        if Path(path).is_file():
            image = read_image(path).float() / 255.0
        else:  # synthetic sample: the image exists only in memory
            g = torch.Generator().manual_seed(i)
            image = torch.rand(3, *self.synthetic_size, generator=g)
        size = tuple(image.shape[-2:])
        if self.scale > 1:
            image = F.interpolate(image[None], scale_factor=1 / self.scale, mode="bilinear")[0]
        image = (image - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        return {"image": image, "meta": {"path": str(path), "index": i, "size": size}}


def collate(samples: list[dict]) -> dict:
    """Pad images with 0 to the largest size; keep meta (with input_size) as a list of dicts."""
    h = max(s["image"].shape[-2] for s in samples)
    w = max(s["image"].shape[-1] for s in samples)
    images = torch.zeros(len(samples), 3, h, w)
    metas = []
    for i, s in enumerate(samples):
        sh, sw = s["image"].shape[-2:]
        images[i, :, :sh, :sw] = s["image"]
        metas.append({**s["meta"], "input_size": (sh, sw)})
    return {"image": images, "meta": metas}


class Data(pl.LightningDataModule):
    def __init__(self, paths: list, scale: int = 1) -> None:
        super().__init__()
        self.dataset = Files(paths, scale)
        self.mean, self.std, self.palette, self.ignore_index = MEAN, STD, PALETTE, 255
        self.class_names = ["bg", "a", "b"]

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=2, shuffle=False, collate_fn=collate)


class TinySeg(pl.LightningModule):
    """A 1x1 convolution; ``constant`` makes every pixel that class instead. Records its predictions."""

    def __init__(self, constant: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.constant = constant
        self.recorded: dict[str, torch.Tensor] = {}

    def predict_step(self, batch, batch_idx):
        pred = self.conv(batch["image"]).argmax(1)
        if self.constant is not None:
            pred = torch.full_like(pred, self.constant)
        for p, meta in zip(pred, batch["meta"], strict=True):
            h, w = meta["input_size"]
            self.recorded[meta["path"]] = p[:h, :w].clone()
        return {"pred": pred, "meta": batch["meta"]}


def predict(
    writer: PredictionWriter,
    paths: list,
    model: TinySeg | None = None,
    scale: int = 1,
    datamodule: pl.LightningDataModule | None = None,
    **trainer_kwargs,
) -> TinySeg:
    model = model or TinySeg()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[writer],
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.predict(model, datamodule=datamodule or Data(paths, scale), return_predictions=False)
    return model


SIZES = {"a.png": (10, 12), "b.jpg": (7, 9), "c.png": (8, 8)}


def test_writes_label_pngs_and_overlays_at_the_original_size(tmp_path, capsys):
    paths = write_images(tmp_path / "in", SIZES)
    out = tmp_path / "out"
    writer = PredictionWriter(out)
    model = predict(writer, paths)

    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.png", "b.png", "c.png"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]
    for path in paths:
        label_file = out / "labels" / f"{path.stem}.png"
        img = Image.open(label_file)
        assert img.mode == "P"
        assert np.asarray(img.getpalette(), dtype=np.uint8).reshape(-1, 3)[:3].tolist() == [
            list(c) for c in PALETTE
        ]
        assert img.info[SOURCE_KEY] == str(path.resolve())
        labels = read_label_array(label_file)
        expected = model.recorded[str(path)].numpy()  # b.jpg was padded in its batch: cropped back
        np.testing.assert_array_equal(labels, expected)
        shown = read_image_array(out / "overlays" / f"{path.stem}.jpg")
        assert shown.shape[:2] == SIZES[path.name]
        blend = overlay(read_image_array(path), labels, PALETTE, alpha=0.5).astype(float)
        assert np.abs(shown.astype(float) - blend).mean() < 8  # JPEG loss only
    assert writer.written == 3 and writer.skipped == 0
    assert f"PredictionWriter: wrote 3 prediction(s) to {out}" in capsys.readouterr().out


def test_predictions_are_resized_nearest_to_the_size_on_disk(tmp_path):
    paths = write_images(tmp_path / "in", {"big.png": (8, 12), "small.png": (4, 6)})
    out = tmp_path / "out"
    model = predict(PredictionWriter(out, overlay=False), paths, scale=2)
    assert not (out / "overlays").exists()
    for path in paths:
        labels = read_label_array(out / "labels" / f"{path.stem}.png")
        small = model.recorded[str(path)].numpy()
        h, w = Image.open(path).size[::-1]
        assert labels.shape == (h, w) and small.shape == (h // 2, w // 2)
        np.testing.assert_array_equal(labels, small.repeat(2, axis=0).repeat(2, axis=1))


def test_refuses_to_write_into_the_input_folder(tmp_path):
    folder = tmp_path / "in"
    paths = write_images(folder, SIZES)
    before = {p: p.read_bytes() for p in paths}
    with pytest.raises(ValueError, match=rf"output_dir {folder} is the input folder of {folder}/a.png"):
        predict(PredictionWriter(folder), paths)

    labelled = write_images(tmp_path / "out" / "labels", {"x.png": (5, 5)})
    with pytest.raises(ValueError, match=rf"outputs in {tmp_path}/out/labels would overwrite input images"):
        predict(PredictionWriter(tmp_path / "out", overwrite=True), labelled)
    with pytest.raises(ValueError, match=rf"output_dir {tmp_path} contains the input folder {folder} of"):
        predict(PredictionWriter(tmp_path), paths)
    assert {p: p.read_bytes() for p in paths} == before
    assert [p.name for p in (tmp_path / "out" / "labels").iterdir()] == ["x.png"]


def test_existing_outputs_are_skipped_and_counted(tmp_path, capsys):
    paths = write_images(tmp_path / "in", SIZES)
    out = tmp_path / "out"
    predict(PredictionWriter(out), paths)
    (out / "labels" / "b.png").unlink()  # as if the run had been interrupted
    (out / "overlays" / "c.jpg").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "labels").iterdir()}
    capsys.readouterr()

    writer = PredictionWriter(out)
    predict(writer, paths, TinySeg(constant=2))
    assert (writer.written, writer.skipped) == (2, 1)
    assert "skipped 1 already written (pass overwrite=True to replace them)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # a and c labels untouched
    assert (read_label_array(out / "labels" / "b.png") == 2).all()  # the missing one was written
    assert (out / "overlays" / "c.jpg").is_file()


def test_overwrite_replaces_existing_outputs(tmp_path):
    paths = write_images(tmp_path / "in", SIZES)
    out = tmp_path / "out"
    predict(PredictionWriter(out), paths, TinySeg(constant=1))
    predict(PredictionWriter(out), paths, TinySeg(constant=2))
    assert (read_label_array(out / "labels" / "a.png") == 1).all()
    writer = PredictionWriter(out, overwrite=True)
    predict(writer, paths, TinySeg(constant=2))
    assert (writer.written, writer.skipped) == (3, 0)
    for path in paths:
        assert (read_label_array(out / "labels" / f"{path.stem}.png") == 2).all()
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.png", "b.png", "c.png"]


def test_stem_collisions_get_distinct_stable_names(tmp_path, capsys):
    first = write_images(tmp_path / "one", {"x.png": (5, 6)})
    second = write_images(tmp_path / "two", {"x.png": (7, 4)}, seed=1)
    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    Image.new("L", (3, 3)).save(out / "labels" / "y.png")  # a file this writer did not write
    third = write_images(tmp_path / "three", {"y.png": (4, 4)})
    paths = first + second + third
    writer = PredictionWriter(out)
    predict(writer, paths)

    names = sorted(p.name for p in (out / "labels").iterdir())
    assert len(names) == 4 and "x.png" in names and "y.png" in names
    renamed = {n for n in names if n not in ("x.png", "y.png")}
    assert {n.split("_")[0] for n in renamed} == {"x", "y"} and writer.renamed == 2
    sizes = {Image.open(out / "labels" / n).size[::-1] for n in names if n.startswith("x")}
    assert sizes == {(5, 6), (7, 4)}  # both inputs kept
    assert Image.open(out / "labels" / "y.png").size == (3, 3)  # the foreign file is untouched
    assert "2 renamed <stem>_<hash>" in capsys.readouterr().out

    again = PredictionWriter(out)
    predict(again, paths)  # a rerun finds the same names: everything is already written
    assert (again.written, again.skipped) == (0, 3)
    assert sorted(p.name for p in (out / "labels").iterdir()) == names


def test_synthetic_inputs_use_the_batch_image(tmp_path):
    paths = ["synthetic://val/3", "synthetic://val/4"]
    out = tmp_path / "out"
    model = predict(PredictionWriter(out), paths)
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["3.png", "4.png"]
    labels = read_label_array(out / "labels" / "3.png")
    np.testing.assert_array_equal(labels, model.recorded["synthetic://val/3"].numpy())
    image = Files(paths)[0]["image"] * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    shown = read_image_array(out / "overlays" / "3.jpg")
    assert np.abs(shown.astype(float) - overlay(rgb, labels, PALETTE).astype(float)).mean() < 8


def test_rejects_predictions_not_following_the_convention(tmp_path):
    class Bad(TinySeg):
        def predict_step(self, batch, batch_idx):
            return self.conv(batch["image"])

    paths = write_images(tmp_path / "in", {"a.png": (4, 4)})
    with pytest.raises(ValueError, match="predict_step returned Tensor; expected a dict with 'pred'"):
        predict(PredictionWriter(tmp_path / "out"), paths, Bad())
    with pytest.raises(ValueError, match="alpha=2"):
        PredictionWriter(tmp_path / "out", alpha=2)


def _folder_data(folder: Path) -> SegDataModule:
    """The CLI's predict data: every image of ``folder`` (``--data.predict_root``), two per batch."""
    return SegDataModule(
        dataset="synthetic", dataset_kwargs={"num_classes": 3}, predict_root=str(folder), eval_batch_size=2
    )


def _outputs(out: Path) -> dict[str, bytes]:
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


FOLDER = {f"img{i}.png": (6 + i, 9) for i in range(5)}


def test_an_interrupted_folder_run_resumes_without_predicting_finished_images_again(tmp_path, capsys):
    paths = write_images(tmp_path / "in", FOLDER)
    predict(PredictionWriter(tmp_path / "whole"), paths, datamodule=_folder_data(tmp_path / "in"))
    out = tmp_path / "out"
    first = predict(
        PredictionWriter(out), paths, datamodule=_folder_data(tmp_path / "in"), limit_predict_batches=2
    )  # interrupted after two batches
    assert sorted(Path(p).name for p in first.recorded) == ["img0.png", "img1.png", "img2.png", "img3.png"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.*")}
    assert len(stamps) == 8
    capsys.readouterr()

    writer = PredictionWriter(out)
    again = predict(writer, paths, datamodule=_folder_data(tmp_path / "in"))
    assert list(again.recorded) == [str(paths[4])]  # the model ran on the unfinished image only
    assert (writer.skipped_before_model, writer.written, writer.skipped) == (4, 1, 0)
    assert "4 input(s) already written were not predicted again" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert _outputs(out) == _outputs(tmp_path / "whole")  # the same files as one uninterrupted run

    (out / "overlays" / "img1.jpg").unlink()  # an input without its overlay is not finished
    partial = PredictionWriter(out)
    assert list(predict(partial, paths, datamodule=_folder_data(tmp_path / "in")).recorded) == [str(paths[1])]
    assert _outputs(out) == _outputs(tmp_path / "whole")

    everything = PredictionWriter(out, overwrite=True)
    model = predict(everything, paths, TinySeg(constant=2), datamodule=_folder_data(tmp_path / "in"))
    assert len(model.recorded) == 5 and everything.skipped_before_model == 0 and everything.written == 5
    assert all((read_label_array(out / "labels" / f"img{i}.png") == 2).all() for i in range(5))


def test_a_folder_run_refuses_an_output_dir_holding_its_inputs_before_predicting(tmp_path):
    paths = write_images(tmp_path / "data" / "in", FOLDER)
    for output_dir in (tmp_path / "data" / "in", tmp_path / "data"):
        model = TinySeg()
        with pytest.raises(ValueError, match="choose an output_dir outside the input folder"):
            predict(PredictionWriter(output_dir), paths, model, datamodule=_folder_data(paths[0].parent))
        assert model.recorded == {}  # refused before the model ran
    assert sorted(p.name for p in (tmp_path / "data" / "in").iterdir()) == sorted(FOLDER)
