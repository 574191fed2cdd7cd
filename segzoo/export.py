"""Export a trained segmentation model to ONNX and TorchScript, checked against PyTorch on random inputs.

The exported graph takes a normalised image ``[B, 3, H, W]`` (float32, the datamodule's mean/std already
applied) and returns the main head's logits ``[B, num_classes, H, W]``; auxiliary heads are dropped and no
test-time augmentation is included. ``export.json`` beside the files records the input/output contract,
the normalisation (when the checkpoint holds the datamodule's), which axes are dynamic and the check
results.

Batch, height and width are dynamic where the model allows. TorchScript is scripted, so it follows the
model's Python control flow at any size. ONNX is traced, so size-dependent choices are frozen at the
sample's size. Two are rewritten before tracing (:func:`onnx_friendly`): adaptive average pooling to
several bins (PSPNet) becomes matrix products built from the run-time size, and the final resize to the
input size is always applied (models skip it when their output already has the input's size). What
remains (the output padding of the transposed convolutions of FCN-8s/16s and of the classic UNet) is
caught by checking the export at a second, odd size; such models are re-exported with a fixed height and
width (the batch stays dynamic), and ONNX Runtime then rejects other sizes instead of returning wrong
logits.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FORMATS = ("onnx", "torchscript")
FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
METADATA_NAME = "export.json"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
# Extra rows and columns of the second check size: odd, and a different remainder modulo 32 than most
# training sizes, so graphs that froze a size-dependent choice at export time are exposed.
PROBE_EXTRA = (37, 19)


class LogitsModel(nn.Module):
    """Wrap a segmentation model returning ``{"out": logits, ...}`` so it returns the logits only.

    ``always_resize`` adds a bilinear resize of the logits to the input size (the identity when they
    already match). Models skip that resize when their decoder lands exactly on the input size, and a
    traced graph keeps whichever branch the sample took, so the ONNX export always resizes.
    """

    def __init__(self, model: nn.Module, always_resize: bool = False) -> None:
        super().__init__()
        self.model = model
        self.always_resize = always_resize

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised image -> ``[B, num_classes, H, W]`` logits."""
        out = self.model(image)["out"]
        if self.always_resize:
            size = [image.shape[-2], image.shape[-1]]
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


class MatrixAdaptiveAvgPool2d(nn.Module):
    """``AdaptiveAvgPool2d`` written as two averaging matrices built from the input's size at run time.

    Equal to PyTorch's adaptive pooling (bin ``i`` of ``n`` over ``L`` covers ``[floor(i L / n),
    ceil((i + 1) L / n))``), but made of ops the ONNX exporter can trace with dynamic height and width; the
    exporter's own adaptive pooling only handles sizes divisible by the bins and fixes them.
    """

    def __init__(self, output_size: int | Sequence[int | None]) -> None:
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        if len(size) != 2 or any(s is None for s in size):
            raise ValueError(f"MatrixAdaptiveAvgPool2d: output_size={output_size}; expected int or (H, W)")
        self.output_size = (int(size[0]), int(size[1]))

    @staticmethod
    def _matrix(length: Any, bins: int, like: torch.Tensor) -> torch.Tensor:
        index = torch.arange(bins, device=like.device)
        position = torch.arange(length, device=like.device)
        start = (index * length) // bins
        end = ((index + 1) * length + bins - 1) // bins
        inside = (position[None, :] >= start[:, None]) & (position[None, :] < end[:, None])
        weights = inside.to(like.dtype)
        return weights / weights.sum(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, *output_size]`` bin averages."""
        rows = self._matrix(x.shape[-2], self.output_size[0], x)
        cols = self._matrix(x.shape[-1], self.output_size[1], x)
        return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def onnx_friendly(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every adaptive average pooling to more than one bin replaced by
    :class:`MatrixAdaptiveAvgPool2d`, so the ONNX graph keeps dynamic height and width (PSPNet), and
    with ``always_resize`` set on a :class:`LogitsModel`."""
    model = copy.deepcopy(model)
    if isinstance(model, LogitsModel):
        model.always_resize = True
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size not in (1, (1, 1)):
                setattr(parent, name, MatrixAdaptiveAvgPool2d(child.output_size))
    return model


class ExportCheckError(RuntimeError):
    """An exported model's output differs from PyTorch's by more than the tolerance."""


def _require_onnxruntime() -> Any:
    """The onnxruntime module; ONNX export needs it (and onnx) to check the file and find its dynamic axes."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"exporting to ONNX needs the {' and '.join(missing)} package(s), not installed: onnx writes the "
            "file and onnxruntime checks it against PyTorch; install them (pip install 'segzoo[export]' or "
            "pip install onnx onnxruntime), or export only TorchScript (formats=['torchscript'])"
        )
    import onnxruntime

    return onnxruntime


def _load(checkpoint_or_module: str | Path | nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """The model to export and what is known about it (source, model name, classes, normalisation)."""
    from segzoo.methods import SupervisedSegmentation

    if isinstance(checkpoint_or_module, nn.Module):
        module = checkpoint_or_module
        info: dict[str, Any] = {"source": type(module).__name__}
        if isinstance(module, SupervisedSegmentation):
            if module.model is None:
                raise ValueError(
                    "export_model: the SupervisedSegmentation has no model yet (num_classes was not given "
                    "and it was never fitted); pass num_classes or a checkpoint"
                )
            info.update(
                model=module.hparams.model if isinstance(module.hparams.model, str) else None,
                num_classes=module.num_classes,
            )
            module = module.model
        return module, info
    path = Path(checkpoint_or_module)
    if not path.is_file():
        raise FileNotFoundError(
            f"export_model: checkpoint {path} not found; expected a .ckpt from segzoo fit"
        )
    try:
        module = SupervisedSegmentation.load_from_checkpoint(path, map_location="cpu")
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise ValueError(
            f"export_model: {path} is not a loadable SupervisedSegmentation checkpoint ({error}); expected "
            "a checkpoint written by segzoo fit with model.class_path segzoo.methods.SupervisedSegmentation"
        ) from error
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    info = {
        "source": str(path),
        "model": module.hparams.model if isinstance(module.hparams.model, str) else None,
        "num_classes": module.num_classes,
        "mean": list(data["mean"]) if data.get("mean") is not None else None,
        "std": list(data["std"]) if data.get("std") is not None else None,
        "dataset": data.get("dataset"),
    }
    return module.model, info


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence torch.jit's deprecation notices: it is deprecated upstream but remains the portable
    serialised format these models support (``torch.export`` archives need the same torch to load)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        yield


def _script_or_trace(model: nn.Module, sample: torch.Tensor) -> tuple[torch.jit.ScriptModule, str]:
    """Script the model (keeps size-dependent control flow); trace it when it cannot be scripted."""
    with _quiet_jit(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        try:
            return torch.jit.script(model), "script"
        except Exception:  # noqa: BLE001  (any scripting failure falls back to tracing)
            with torch.no_grad():
                return torch.jit.trace(model, (sample,), check_trace=False), "trace"


def _export_onnx(model: nn.Module, sample: torch.Tensor, path: Path, opset: int, dynamic_hw: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    with warnings.catch_warnings():
        # The legacy (TorchScript-based) exporter needs no onnxscript package; its notices are expected.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            do_constant_folding=True,
        )


def _max_diff(actual: np.ndarray | torch.Tensor, expected: torch.Tensor) -> float:
    actual = torch.as_tensor(np.asarray(actual))
    if tuple(actual.shape) != tuple(expected.shape):
        return float("inf")
    return float((actual - expected).abs().max())


def _runner(fmt: str, path: Path) -> Any:
    """A function running the exported file on a tensor and returning its output."""
    if fmt == "torchscript":
        with _quiet_jit():
            loaded = torch.jit.load(str(path), map_location="cpu")
        loaded.eval()

        def run_ts(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return loaded(x)

        return run_ts
    ort = _require_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a rejected input is reported by the exception, not also on stderr
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_onnx(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {INPUT_NAME: x.numpy()})[0]

    return run_onnx


def _try(run: Any, x: torch.Tensor, expected: torch.Tensor) -> float:
    """Max abs difference to ``expected``; ``inf`` when the export fails on ``x``."""
    try:
        return _max_diff(run(x), expected)
    except Exception:  # noqa: BLE001  (a runtime that rejects the input counts as a mismatch)
        return float("inf")


def export_model(
    checkpoint_or_module: str | Path | nn.Module,
    output_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    input_size: Sequence[int] = (256, 256),
    opset: int = 17,
    check: bool = True,
    overwrite: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 0,
) -> dict[str, Path]:
    """Export a SupervisedSegmentation checkpoint (or module, or bare model) and check the exports.

    Writes ``model.onnx`` and/or ``model.torchscript.pt`` plus ``export.json`` into ``output_dir`` and
    returns ``{format: path}``. Each export is traced/checked on a seeded random normalised image of
    ``input_size`` (batch 2) and probed at a second, odd size (batch 1) to find out whether height and width
    can be dynamic (see the module docstring). With ``check``, an export whose max abs difference to
    PyTorch exceeds ``atol + rtol * max|logits|`` raises :class:`ExportCheckError`; nothing is written
    then. Existing files are an error unless ``overwrite``.
    """
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"export_model: unknown format(s) {unknown or formats}; expected some of {FORMATS}")
    if len(input_size) != 2 or any(int(s) < 1 for s in input_size):
        raise ValueError(f"export_model: input_size={tuple(input_size)}; expected (H, W) positive integers")
    height, width = (int(s) for s in input_size)
    output_dir = Path(output_dir)
    targets = {f: output_dir / FILE_NAMES[f] for f in formats}
    existing = [p for p in [*targets.values(), output_dir / METADATA_NAME] if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"export_model: {', '.join(str(p) for p in existing)} already exist(s); pass overwrite=True "
            "(--overwrite) to replace"
        )
    if "onnx" in formats:
        _require_onnxruntime()  # fail before any work when the ONNX check cannot run

    model, info = _load(checkpoint_or_module)
    wrapper = LogitsModel(model).eval().cpu()
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 3, height, width, generator=generator)
    probe = torch.randn(1, 3, height + PROBE_EXTRA[0], width + PROBE_EXTRA[1], generator=generator)
    with torch.no_grad():
        raw = model.eval()(sample)
        if not isinstance(raw, Mapping) or "out" not in raw:
            raise ValueError(
                f"export_model: the model returned {type(raw).__name__}; expected a dict with 'out' logits "
                "[B, C, H, W] (every segzoo model does)"
            )
        expected = wrapper(sample)
        try:
            expected_probe: torch.Tensor | None = wrapper(probe)
        except Exception:  # noqa: BLE001  (the model itself rejects the probe size: no dynamic check)
            expected_probe = None
    tolerance = atol + rtol * float(expected.abs().max())

    report: dict[str, Any] = {}
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".export-") as tmp:
        staged = {f: Path(tmp) / FILE_NAMES[f] for f in formats}
        for fmt in formats:
            entry: dict[str, Any] = {"file": FILE_NAMES[fmt]}
            if fmt == "torchscript":
                scripted, how = _script_or_trace(wrapper, sample)
                with _quiet_jit():
                    torch.jit.save(scripted, str(staged[fmt]))
                entry["method"] = how
            else:
                entry["opset"] = opset
                onnx_model = onnx_friendly(wrapper)
                try:
                    _export_onnx(onnx_model, sample, staged[fmt], opset, dynamic_hw=True)
                    exported_dynamic = True
                except Exception:  # noqa: BLE001  (e.g. adaptive pooling to a fixed grid: retry fixed size)
                    exported_dynamic = False
                    _export_onnx(onnx_model, sample, staged[fmt], opset, dynamic_hw=False)
            run = _runner(fmt, staged[fmt])
            entry["max_abs_diff"] = _try(run, sample, expected)
            probe_diff = _try(run, probe, expected_probe) if expected_probe is not None else float("inf")
            dynamic_hw = probe_diff <= tolerance
            if fmt == "onnx" and exported_dynamic and not dynamic_hw:
                _export_onnx(onnx_model, sample, staged[fmt], opset, dynamic_hw=False)
                run = _runner(fmt, staged[fmt])
                entry["max_abs_diff"] = _try(run, sample, expected)
            if dynamic_hw:
                entry["probe_size"] = [height + PROBE_EXTRA[0], width + PROBE_EXTRA[1]]
                entry["probe_max_abs_diff"] = probe_diff
            entry["dynamic_axes"] = ["batch", "height", "width"] if dynamic_hw else ["batch"]
            if not dynamic_hw:
                entry["fixed_size"] = [height, width]
            entry["passed"] = entry["max_abs_diff"] <= tolerance
            report[fmt] = entry
        failed = {f: e["max_abs_diff"] for f, e in report.items() if not e["passed"]}
        if check and failed:
            details = ", ".join(f"{f}: max abs diff {d:.3g}" for f, d in failed.items())
            raise ExportCheckError(
                f"export_model: exported output differs from PyTorch ({details}; tolerance "
                f"{tolerance:.3g} at input size {height}x{width}); nothing was written to {output_dir}"
            )
        for fmt, path in staged.items():
            shutil.move(str(path), targets[fmt])
    metadata = {
        **info,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, "height", "width"],
            "dtype": "float32",
            "normalised": "(image / 255 - mean) / std, RGB",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", info.get("num_classes") or "num_classes", "height", "width"],
        },
        "sample_size": [height, width],
        "tolerance": tolerance,
        "checked": bool(check),
        "torch": torch.__version__,
        "formats": report,
    }
    (output_dir / METADATA_NAME).write_text(json.dumps(metadata, indent=2, default=_json_default) + "\n")
    return dict(targets)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def export_command(argv: Sequence[str]) -> int:
    """``segzoo export CKPT --out DIR [--formats onnx torchscript] [--size H W] [--overwrite]``."""
    parser = argparse.ArgumentParser(
        prog="segzoo export",
        description=(
            "Export a SupervisedSegmentation checkpoint to ONNX and/or TorchScript. The exported model "
            "takes a normalised image [B, 3, H, W] (float32) and returns logits [B, C, H, W]. Each export "
            "is compared with PyTorch on a random sample; a mismatch is an error and writes nothing. "
            "export.json beside the files records the input contract, the normalisation, the dynamic axes "
            "and the check."
        ),
    )
    parser.add_argument("checkpoint", help="a .ckpt written by segzoo fit (SupervisedSegmentation)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=FORMATS,
        default=list(FORMATS),
        help="formats to write (default: both)",
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=int,
        default=[256, 256],
        metavar=("H", "W"),
        help="sample image size for export and check (default: 256 256); models that cannot "
        "take any size are fixed to it",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the check")
    parser.add_argument("--rtol", type=float, default=1e-4, help="tolerance relative to max |logits|")
    parser.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="write the files even when they differ from PyTorch",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    args = parser.parse_args(list(argv))
    try:
        paths = export_model(
            args.checkpoint,
            args.out,
            formats=args.formats,
            input_size=args.size,
            opset=args.opset,
            check=args.check,
            overwrite=args.overwrite,
            atol=args.atol,
            rtol=args.rtol,
        )
    except (FileNotFoundError, FileExistsError, ValueError, ImportError, ExportCheckError) as error:
        print(f"segzoo export: error: {error}")
        return 1
    metadata = json.loads((Path(args.out) / METADATA_NAME).read_text())
    print(
        f"exported {metadata.get('model') or 'model'} ({metadata.get('num_classes')} classes) from "
        f"{args.checkpoint}"
    )
    for fmt, path in paths.items():
        print(f"  {fmt:<12} {path}  {_describe(metadata['formats'][fmt], metadata['tolerance'])}")
    print(f"  {'metadata':<12} {Path(args.out) / METADATA_NAME}")
    return 0


def _describe(entry: Mapping[str, Any], tolerance: float) -> str:
    status = "check passed" if entry["passed"] else "CHECK FAILED"
    text = f"{status}: max abs diff {entry['max_abs_diff']:.2e} (tolerance {tolerance:.1e})"
    if "probe_max_abs_diff" in entry:
        size = "x".join(str(s) for s in entry["probe_size"])
        text += f", {entry['probe_max_abs_diff']:.2e} at {size}"
    axes = (
        "dynamic batch/height/width"
        if len(entry["dynamic_axes"]) == 3
        else ("dynamic batch, fixed {}x{}".format(*entry["fixed_size"]))
    )
    extra = {"script": ", scripted", "trace": ", traced"}.get(entry.get("method", ""), "")
    return f"{text}; {axes}{extra}"


__all__ = [
    "ExportCheckError",
    "LogitsModel",
    "MatrixAdaptiveAvgPool2d",
    "export_command",
    "export_model",
    "onnx_friendly",
]
