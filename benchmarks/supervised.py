"""Speed and memory of every registered segmentation model on a CPU, beside torchvision's FCN and DeepLabV3.

For each model at its default configuration (ResNet-50 where that is the default; ``--backbone`` swaps the
ResNet of every ResNet model) on a fixed input (default ``2x3x256x256``, 21 classes):

- train step images/s: forward, cross-entropy on ``out`` (+ 0.4 x ``aux`` when the model has an auxiliary
  head, as ``SupervisedSegmentation`` does), backward and an SGD (momentum 0.9) step, ``model.train()``;
- inference images/s: ``model.eval()`` forward under ``torch.inference_mode()``;
- peak memory of each: how far the process's resident set size rises above its size just before the
  iterations, i.e. activations, gradients, optimiser state and allocator slack on top of the already-built
  model and input. CPU tensors have no allocator statistics like ``torch.cuda.max_memory_allocated`` and
  ``torch.profiler``'s memory view would slow the timed iterations, so the operating system's peak is
  read: on Linux the peak (``VmHWM``) is reset through ``/proc/self/clear_refs`` right before the
  iterations, so model construction does not count; elsewhere ``ru_maxrss``, which never goes down, is
  used, and a measurement could then hide below the construction peak. Either way every measurement runs
  in a fresh subprocess, so no earlier model's memory or allocator cache is counted.

Each measurement does ``--warmup`` untimed iterations, then reports the median of ``--iters`` timed ones.
torchvision's ``fcn_resnet50`` and ``deeplabv3_resnet50`` (``weights=None, weights_backbone=None``) are
measured in the same run. The same-architecture ratios (segzoo / torchvision images/s; >= 1.0 means segzoo
is at least as fast) compare segzoo's ``fcn`` and ``deeplabv3`` in torchvision's exact configuration
(ResNet-50, output stride 8, no aux) with torchvision's model *in one process*, alternating single
iterations of the two (and which one goes first) for ``--pair-iters`` rounds: on a shared machine the load
changes by tens of percent within minutes, and alternation gives both models the same load, which
separate runs cannot. The ratio is the median of the per-round ratios. Every model's row also shows its
speed relative to both torchvision models from the separate runs (noisier).

    .venv/bin/python benchmarks/supervised.py                             # all models, 256x256, 1 thread
    .venv/bin/python benchmarks/supervised.py --models --pair-iters 16    # only the same-architecture pairs
    .venv/bin/python benchmarks/supervised.py --size 512 512 --threads 4 --backbone resnet101

``--threads`` defaults to 1: on a shared 2-core machine, OpenMP threads waiting for each other make two
threads several times slower than one; give it your core count on a machine of your own.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TORCHVISION = ("tv:fcn_resnet50", "tv:deeplabv3_resnet50")
# segzoo models in torchvision's configuration, each measured beside its torchvision counterpart
SAME_ARCH = {
    "tv:fcn_resnet50": ("fcn", {"backbone": "resnet50", "output_stride": 8, "aux": False}),
    "tv:deeplabv3_resnet50": ("deeplabv3", {"backbone": "resnet50", "output_stride": 8, "aux": False}),
}
RESNET_MODELS = ("fcn", "unet", "pspnet", "deeplabv2", "deeplabv3", "deeplabv3plus", "glore")


@dataclass
class Job:
    """One model configuration to measure (``name`` is a segzoo model or ``tv:<torchvision builder>``)."""

    label: str
    name: str
    kwargs: dict[str, Any]


# -- worker (runs in a fresh process) -------------------------------------------------------------------
def _status_mb(key: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmHWM`` peak, ``VmRSS`` current) in MB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> float:
    """Start a peak-memory window; returns the baseline (MB) to subtract from :func:`_peak_mb`."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS
        current = _status_mb("VmRSS")
        if current is not None:
            return current
    except OSError:
        pass
    return _peak_mb()


def _peak_mb() -> float:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    peak_raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak_raw / 1024 / 1024 if sys.platform == "darwin" else peak_raw / 1024  # bytes on macOS, else KiB


def _build(name: str, kwargs: dict[str, Any], num_classes: int):
    if name.startswith("tv:"):
        from torchvision.models import segmentation

        builder = getattr(segmentation, name[3:])
        return builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    from segzoo.models import create_model

    return create_model(name, num_classes=num_classes, **kwargs)


def _stepper(model, mode: str, spec: dict[str, Any]) -> Callable[[], None]:
    """One train step (forward, CE (+0.4 aux), backward, SGD) or one inference forward of ``model``."""
    import torch
    import torch.nn.functional as F

    batch, height, width = spec["batch"], *spec["size"]
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, height, width, generator=generator)
    target = torch.randint(0, spec["num_classes"], (batch, height, width), generator=generator)
    if mode == "train":
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def train_step() -> None:
            out = model(image)
            loss = F.cross_entropy(out["out"], target)
            if out.get("aux") is not None:
                loss = loss + 0.4 * F.cross_entropy(out["aux"], target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return train_step
    model.eval()

    def infer_step() -> None:
        with torch.inference_mode():
            model(image)

    return infer_step


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Time and peak memory of one mode of one model; called in its own process."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = _build(spec["name"], spec["kwargs"], spec["num_classes"])
    step = _stepper(model, spec["mode"], spec)
    baseline = _reset_peak()
    times = []
    for i in range(spec["warmup"] + spec["iters"]):
        start = time.perf_counter()
        step()
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "images_per_s": spec["batch"] / seconds,
        "peak_mb": _peak_mb() - baseline,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def measure_pair(spec: dict[str, Any]) -> dict[str, Any]:
    """Time torchvision's model and segzoo's in one process, alternating iterations (and which goes first),
    so both see the same machine load; the ratio is the median of the per-iteration ratios."""
    import torch

    torch.set_num_threads(spec["threads"])
    steps = []
    for name, kwargs in (spec["reference"], spec["candidate"]):
        torch.manual_seed(0)
        steps.append(_stepper(_build(name, kwargs, spec["num_classes"]), spec["mode"], spec))
    times: list[list[float]] = [[], []]
    for i in range(spec["warmup"] + spec["iters"]):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            start = time.perf_counter()
            steps[which]()
            if i >= spec["warmup"]:
                times[which].append(time.perf_counter() - start)
    ratios = [ref / cand for ref, cand in zip(times[0], times[1], strict=True)]
    return {
        "reference_images_per_s": spec["batch"] / statistics.median(times[0]),
        "candidate_images_per_s": spec["batch"] / statistics.median(times[1]),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


# -- driver ---------------------------------------------------------------------------------------------
def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec`` in a fresh Python process and return its JSON result."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring {spec} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def base_spec(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "threads": args.threads,
        "batch": args.batch,
        "size": args.size,
        "num_classes": args.num_classes,
        "warmup": args.warmup,
    }


def default_jobs(args: argparse.Namespace) -> list[Job]:
    """The torchvision references, segzoo's deeplabv3 in their configuration, then every requested model."""
    from segzoo.models import list_models

    jobs = []
    if not args.no_torchvision:
        jobs += [Job(name[3:], name, {}) for name in TORCHVISION]
        jobs.append(Job("deeplabv3 (tv config)", *SAME_ARCH["tv:deeplabv3_resnet50"]))
    for name in list_models() if args.models is None else args.models:
        kwargs = {"backbone": args.backbone} if args.backbone and name in RESNET_MODELS else {}
        jobs.append(Job(name, name, kwargs))
    return jobs


def describe(job: Job) -> str:
    """Backbone and output stride of a job's model, built once for the table."""
    if job.name.startswith("tv:"):
        return "resnet50 os8"
    from segzoo.models import create_model

    model = create_model(job.name, num_classes=2, **job.kwargs)
    backbone = model.backbone
    if hasattr(backbone, "depth") and hasattr(backbone, "output_stride"):
        kind = f"resnet{backbone.depth} os{backbone.output_stride}"
    elif type(backbone).__name__ == "VGG16Backbone":
        kind = f"vgg16 fc{backbone.out_channels}"
    elif type(backbone).__name__ == "UNetEncoder":
        kind = f"classic, {backbone.channels['enc0']} ch, depth {backbone.depth}"
    else:
        kind = type(backbone).__name__
    return kind + (" +aux" if getattr(model, "aux_head", None) is not None else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument(
        "--models",
        nargs="*",
        help="segzoo models to measure (default: every registered one; none: only pairs)",
    )
    parser.add_argument(
        "--backbone", help="ResNet for every ResNet model, e.g. resnet18 (default: each default)"
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1; see docstring)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per measurement (median)")
    parser.add_argument(
        "--pair-iters", type=int, default=8, help="timed alternations per same-architecture pair"
    )
    parser.add_argument("--no-torchvision", action="store_true", help="skip the torchvision references")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(measure_pair(spec) if "reference" in spec else measure(spec)))
        return 0
    if args.batch < 2:
        parser.error(
            f"--batch {args.batch}: training needs at least 2 images (BatchNorm after global pooling)"
        )

    import torch

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    shape = f"{args.batch}x3x{args.size[0]}x{args.size[1]}"
    log(f"measuring on {shape}, {args.threads} thread(s)")
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    if not args.no_torchvision:
        for reference, (name, kwargs) in SAME_ARCH.items():
            for mode in ("train", "infer"):
                spec = {**base_spec(args), "iters": args.pair_iters, "mode": mode}
                spec.update(reference=[reference, {}], candidate=[name, kwargs])
                out = pairs.setdefault(name, {})[mode] = run_worker(spec)
                log(f"  pair {name:<10} {mode:<5} segzoo/torchvision {out['ratio']:.3f}")
    table: dict[str, dict[str, float]] = {}
    kinds: dict[str, str] = {}
    for job in default_jobs(args):
        kinds[job.label] = describe(job)
        row = table.setdefault(job.label, {})
        for mode in ("train", "infer"):
            out = run_worker(
                {**base_spec(args), "iters": args.iters, "mode": mode, "name": job.name, "kwargs": job.kwargs}
            )
            row.update(
                {
                    f"{mode}_images_per_s": out["images_per_s"],
                    f"{mode}_peak_mb": out["peak_mb"],
                    "params_m": out["params_m"],
                }
            )
            log(f"  {job.label:<24} {mode:<5} {out['images_per_s']:7.2f} img/s  {out['peak_mb']:7.0f} MB")

    cpu = platform.processor() or platform.machine()
    header = (
        f"CPU {cpu}, {args.threads} thread(s), input {shape}, {args.num_classes} classes, torch "
        f"{torch.__version__}"
    )
    print(render(header, table, kinds, pairs, args))
    if args.json:
        payload = {"header": header, "rows": table, "kinds": kinds, "pairs": pairs}
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


def render(
    header: str,
    table: dict[str, dict[str, float]],
    kinds: dict[str, str],
    pairs: dict[str, dict[str, dict[str, Any]]],
    args: argparse.Namespace,
) -> str:
    """Markdown tables: same-architecture ratios, then speed, memory and ratios of every model."""
    lines = [header, ""]
    if pairs:
        lines += [
            f"Same architecture, timed in one process with alternating iterations (median of "
            f"{args.pair_iters} after {args.warmup} warm-up; ratio = segzoo / torchvision images/s, median "
            "of the per-iteration ratios, [min, max]):",
            "",
            "| segzoo (config) | torchvision | train ratio | inference ratio | train peak memory ratio |",
            "|---|---|---|---|---|",
        ]
        for reference, (name, kwargs) in SAME_ARCH.items():
            train, infer = pairs[name]["train"], pairs[name]["infer"]
            label = "fcn" if name == "fcn" else f"{name} (tv config)"
            memory = "n/a"
            same_backbone = args.backbone in (None, "resnet50")  # the "fcn" row is torchvision's config
            if label in table and reference[3:] in table and (name != "fcn" or same_backbone):
                memory = f"{table[label]['train_peak_mb'] / table[reference[3:]]['train_peak_mb']:.2f}"
            config = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            lines.append(
                f"| {name} ({config}) | {reference[3:]} | {train['ratio']:.2f} "
                f"[{train['ratio_min']:.2f}, {train['ratio_max']:.2f}] | {infer['ratio']:.2f} "
                f"[{infer['ratio_min']:.2f}, {infer['ratio_max']:.2f}] | {memory} |"
            )
        lines.append("")
    refs = {"fcn": "fcn_resnet50", "dlv3": "deeplabv3_resnet50"}
    have_refs = all(r in table for r in refs.values())
    columns = [
        "model",
        "backbone",
        "params (M)",
        "train img/s",
        "infer img/s",
        "train peak MB",
        "infer peak MB",
    ]
    if have_refs:
        columns += ["train / tv fcn", "infer / tv fcn", "train / tv dlv3", "infer / tv dlv3"]
    lines += [
        f"Every model in a fresh process (median of {args.iters} iterations after {args.warmup} warm-up; "
        "peak MB = rise of the resident set over the built model and input):",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for label, row in table.items():
        cells = [
            label,
            kinds[label],
            f"{row['params_m']:.1f}",
            f"{row['train_images_per_s']:.2f}",
            f"{row['infer_images_per_s']:.2f}",
            f"{row['train_peak_mb']:.0f}",
            f"{row['infer_peak_mb']:.0f}",
        ]
        if have_refs:
            for ref in refs.values():
                for mode in ("train", "infer"):
                    cells.append(f"{row[f'{mode}_images_per_s'] / table[ref][f'{mode}_images_per_s']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
