"""ONNX and TorchScript export of trained models: files, reloading, dynamic sizes, checks, refusals, CLI."""

from __future__ import annotations

import json
import sys

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segzoo.data import SegDataModule
from segzoo.export import (
    ExportCheckError,
    LogitsModel,
    MatrixAdaptiveAvgPool2d,
    export_command,
    export_model,
    onnx_friendly,
)
from segzoo.methods import SupervisedSegmentation

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP threads waiting on each other cost 10-50x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny classic UNet fitted for one step on synthetic data, saved by the Trainer."""
    torch.manual_seed(0)
    module = SupervisedSegmentation("unet", model_kwargs={"base_channels": 4, "depth": 2})
    data = SegDataModule(dataset_kwargs={"num_classes": 3, "size": [32, 32], "num_samples": 4}, batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    path = tmp_path_factory.mktemp("ckpt") / "unet.ckpt"
    trainer.save_checkpoint(path)
    return path


def _reference(path, image: torch.Tensor) -> torch.Tensor:
    module = SupervisedSegmentation.load_from_checkpoint(path, map_location="cpu").eval()
    with torch.no_grad():
        return module(image)["out"]


def _session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_checkpoint_exports_reload_and_match_pytorch(checkpoint, tmp_path):
    out = tmp_path / "export"
    paths = export_model(checkpoint, out, input_size=(32, 40))
    assert paths == {"onnx": out / "model.onnx", "torchscript": out / "model.torchscript.pt"}
    assert all(p.is_file() for p in paths.values())
    metadata = json.loads((out / "export.json").read_text())
    assert metadata["model"] == "unet" and metadata["num_classes"] == 3
    assert metadata["mean"] == pytest.approx([0.485, 0.456, 0.406])  # the datamodule's normalisation
    assert all(entry["passed"] for entry in metadata["formats"].values())

    # TorchScript is scripted: any batch and size, here a different one from the export sample.
    other = torch.randn(3, 3, 36, 52)
    expected = _reference(checkpoint, other)
    scripted = torch.jit.load(str(paths["torchscript"]))
    with torch.no_grad():
        torch.testing.assert_close(scripted(other), expected, atol=1e-5, rtol=1e-5)
    assert metadata["formats"]["torchscript"]["dynamic_axes"] == ["batch", "height", "width"]

    # ONNX of the classic UNet: its transposed convolutions fix the size (output padding depends on it),
    # so the batch is dynamic and other sizes are rejected rather than answered wrongly.
    session = _session(paths["onnx"])
    assert metadata["formats"]["onnx"]["dynamic_axes"] == ["batch"]
    assert metadata["formats"]["onnx"]["fixed_size"] == [32, 40]
    same_size = torch.randn(3, 3, 32, 40)
    logits = session.run(None, {"image": same_size.numpy()})[0]
    np.testing.assert_allclose(logits, _reference(checkpoint, same_size).numpy(), atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="(?i)invalid dimensions|got invalid"):
        session.run(None, {"image": other.numpy()})


# PSPNet: adaptive pooling to 2x2/3x3/6x6 bins, rewritten as matrix products (at 57x90 it pools an 8x12
# grid, whose 8 rows do not divide into 3 or 6 bins). ResNet UNet: its decoder lands exactly on 64x64
# inputs, where the model skips the final resize; the export must still resize at 57x90, where the decoder
# gives 58x90. GloRe: its node features are divided by the number of positions, which must stay a graph
# value (its zero-initialised output BatchNorm is randomised here, or the unit would hide any error).
@pytest.mark.parametrize("name", ["pspnet", "unet", "glore"])
def test_onnx_keeps_dynamic_height_and_width(name, tmp_path):
    torch.manual_seed(0)
    module = SupervisedSegmentation(name, num_classes=3, model_kwargs={"backbone": "resnet18"}).eval()
    with torch.no_grad():
        for param in module.model.head.parameters():
            if not param.any():
                param.normal_(std=0.1)
    paths = export_model(module, tmp_path, formats=["onnx"], input_size=(64, 64))
    metadata = json.loads((tmp_path / "export.json").read_text())
    assert metadata["formats"]["onnx"]["dynamic_axes"] == ["batch", "height", "width"]
    other = torch.randn(1, 3, 57, 90)
    with torch.no_grad():
        expected = module(other)["out"]
    logits = _session(paths["onnx"]).run(None, {"image": other.numpy()})[0]
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(7, 11), (6, 6), (1, 5), (13, 2)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 5)])
def test_matrix_adaptive_pool_equals_adaptive_avg_pool(size, bins):
    x = torch.randn(2, 4, *size)
    torch.testing.assert_close(MatrixAdaptiveAvgPool2d(bins)(x), F.adaptive_avg_pool2d(x, bins))


def test_onnx_friendly_replaces_only_multi_bin_pooling_and_always_resizes():
    model = LogitsModel(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Sequential(nn.AdaptiveAvgPool2d(3))))
    friendly = onnx_friendly(model)
    assert isinstance(friendly.model[0], nn.AdaptiveAvgPool2d)
    assert isinstance(friendly.model[1][0], MatrixAdaptiveAvgPool2d)
    assert friendly.always_resize
    assert isinstance(model.model[1][0], nn.AdaptiveAvgPool2d) and not model.always_resize  # untouched


def test_refuses_to_overwrite_unless_asked(checkpoint, tmp_path):
    export_model(checkpoint, tmp_path, formats=["torchscript"], input_size=(32, 32))
    before = (tmp_path / "model.torchscript.pt").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="model.torchscript.pt.*overwrite=True"):
        export_model(checkpoint, tmp_path, formats=["torchscript"], input_size=(32, 32))
    assert (tmp_path / "model.torchscript.pt").stat().st_mtime_ns == before
    export_model(checkpoint, tmp_path, formats=["torchscript"], input_size=(32, 32), overwrite=True)
    assert (tmp_path / "model.torchscript.pt").stat().st_mtime_ns != before


class NoisyNet(nn.Module):
    """Different output on every call: no export can match it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.conv(x) + torch.rand_like(x[:, :2])}


def test_mismatch_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ExportCheckError, match="torchscript: max abs diff .*nothing was written"):
        export_model(NoisyNet(), tmp_path, formats=["torchscript"], input_size=(8, 8))
    assert not any(tmp_path.iterdir())
    # Without the check the files are written and the failure is recorded.
    export_model(NoisyNet(), tmp_path, formats=["torchscript"], input_size=(8, 8), check=False)
    metadata = json.loads((tmp_path / "export.json").read_text())
    assert metadata["formats"]["torchscript"]["passed"] is False


def test_bad_arguments(checkpoint, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown format.*'tflite'"):
        export_model(checkpoint, tmp_path, formats=["tflite"])
    with pytest.raises(FileNotFoundError, match="missing.ckpt not found"):
        export_model(tmp_path / "missing.ckpt", tmp_path)
    with pytest.raises(ValueError, match="expected a dict with 'out'"):
        export_model(nn.Conv2d(3, 2, 1), tmp_path, formats=["torchscript"], input_size=(8, 8))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # importing it now fails, as when not installed
    with pytest.raises(ImportError, match="needs the onnxruntime package.*install"):
        export_model(checkpoint, tmp_path, formats=["onnx"])
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="needs the onnx and onnxruntime package"):
        export_model(checkpoint, tmp_path, formats=["onnx"])
    assert not (tmp_path / "model.onnx").exists()


def test_export_command_writes_files_and_reports_the_check(checkpoint, tmp_path, capsys):
    out = tmp_path / "cli"
    code = export_command(
        [str(checkpoint), "--out", str(out), "--formats", "torchscript", "--size", "32", "48"]
    )
    assert code == 0
    assert (out / "model.torchscript.pt").is_file() and not (out / "model.onnx").exists()
    text = capsys.readouterr().out
    assert "model.torchscript.pt" in text and "check passed" in text and "scripted" in text

    assert export_command([str(checkpoint), "--out", str(out), "--formats", "torchscript"]) == 1
    assert "already exist" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        export_command(["--help"])
    assert exit_info.value.code == 0
    assert "--overwrite" in capsys.readouterr().out
