"""DDP on the CPU: training samples/s of 1 vs 2 processes (gloo) for a supervised head and for R2O,
through the real CLI, plus the check that testing the same weights gives identical metrics on 1 and 2
processes.

Every run is ``segzoo fit`` in a subprocess (:func:`segzoo.launch.run_isolated`: own process group, free
port, hard timeout) with the same per-process batch, so 2 processes train on twice the samples per step
(weak scaling, as when adding GPUs). The :class:`SampleClock` callback in every rank times the training
batches after ``--warmup`` batches, in wall and in process CPU seconds; samples/s = samples of all ranks /
the slowest rank's wall time. CPU seconds per sample show the cost DDP adds (gradient all-reduce, the
second process) independently of how busy the machine is; wall-time speed-up needs a free core per process.

    .venv/bin/python benchmarks/ddp.py                 # both workloads + metric check, ~6 min on 2 busy cores
    .venv/bin/python benchmarks/ddp.py --workloads r2o --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent


class SampleClock(L.Callback):
    """Times training batches ``warmup`` .. ``warmup + steps - 1`` of this rank; writes
    ``<folder>/clock_rank<R>.json`` with samples, wall and process-CPU seconds."""

    def __init__(self, folder: str, warmup: int = 2, steps: int = 8) -> None:
        self.folder, self.warmup, self.steps = Path(folder), warmup, steps
        self.seen = 0
        self.samples = 0
        self.start: tuple[float, float] | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        if self.seen == self.warmup:
            self.start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.start is None or self.seen > self.warmup + self.steps:
            return
        self.samples += _batch_size(batch)
        if self.seen == self.warmup + self.steps:
            wall, cpu = time.perf_counter() - self.start[0], time.process_time() - self.start[1]
            record = {"rank": trainer.global_rank, "samples": self.samples, "wall": wall, "cpu": cpu}
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / f"clock_rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _batch_size(batch: Any) -> int:
    """Images in a batch: the first 4-d tensor of the batch dict (``image`` or R2O's ``raw``)."""
    for value in batch.values():
        if hasattr(value, "ndim") and value.ndim == 4:
            return int(value.shape[0])
    raise ValueError(f"SampleClock: no image tensor [B, C, H, W] in the batch (keys {sorted(batch)})")


WORKLOADS = {
    "deeplabv3": (
        "supervised DeepLab v3 (ResNet-18, aux), 96x128",
        [
            "--config",
            str(REPO / "configs/supervised/synthetic/deeplabv3.yaml"),
            "--test_after_fit=false",
            "--trainer.limit_val_batches=0",
        ],
        "--data.dataset_kwargs={{num_classes: 4, size: [96, 128], num_samples: {n}}}",
    ),
    "r2o": (
        "R2O (ResNet-18, 64 px views, SLIC in the loader, K=16)",
        ["--config", str(REPO / "configs/r2o/synthetic.yaml")],
        "--data.dataset_kwargs={{mode: shapes, size: [64, 64], num_samples: {n}}}",
    ),
}


def fit(
    workload: str, devices: int, batch: int, warmup: int, steps: int, folder: Path, timeout: float
) -> dict:
    """One ``segzoo fit`` of ``warmup + steps`` batches per process; returns throughput and CPU cost."""
    from segzoo.launch import run_isolated

    _, args, data = WORKLOADS[workload]
    total = warmup + steps
    run = folder / f"{workload}_{devices}"
    clock = f"{{class_path: ddp.SampleClock, init_args: {{folder: {run}, warmup: {warmup}, steps: {steps}}}}}"
    cmd = [
        sys.executable,
        "-m",
        "segzoo",
        "fit",
        *args,
        data.format(n=2 * batch * total),  # every process gets `total` full batches, also with 2
        f"--data.batch_size={batch}",
        "--trainer.max_epochs=1",
        f"--trainer.limit_train_batches={total}",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={folder}",
        f"--trainer.logger.init_args.name={workload}_{devices}",
        f"--trainer.callbacks+={clock}",
    ]
    pythonpath = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)
    result = run_isolated(cmd, cwd=folder, timeout=timeout, env={"PYTHONPATH": pythonpath})
    result.check(f"segzoo fit ({workload}, {devices} processes)")
    clocks = [json.loads((run / f"clock_rank{r}.json").read_text()) for r in range(devices)]
    samples = sum(c["samples"] for c in clocks)
    wall = max(c["wall"] for c in clocks)
    cpu = sum(c["cpu"] for c in clocks)
    ckpt = folder / f"{workload}_{devices}" / "version_0" / "checkpoints" / "last.ckpt"
    return {
        "samples": samples,
        "samples_per_s": samples / wall,
        "cpu_per_sample": cpu / samples,
        "ckpt": ckpt,
    }


def test_metrics(ckpt: Path, devices: int, folder: Path, timeout: float) -> dict[str, float]:
    """``segzoo test`` of the supervised checkpoint on 37 synthetic images with ``devices`` processes."""
    from segzoo.launch import run_isolated

    name = f"test_{devices}"
    cmd = [
        sys.executable,
        "-m",
        "segzoo",
        "test",
        "--config",
        str(REPO / "configs/supervised/synthetic/deeplabv3.yaml"),
        f"--ckpt_path={ckpt}",
        # 37 images in batches of 8: 2 processes get 19 and 18, so repeated padding samples would show
        "--data.dataset_kwargs={num_classes: 4, size: [96, 128], num_samples: 37}",
        "--data.eval_batch_size=8",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={folder}",
        f"--trainer.logger.init_args.name={name}",
    ]
    run_isolated(cmd, cwd=folder, timeout=timeout).check(f"segzoo test ({devices} processes)")
    return json.loads((folder / name / "version_0" / "test_metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--batch", type=int, default=8, help="per-process batch size (8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (2)")
    parser.add_argument("--steps", type=int, default=8, help="timed batches per process (8)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per CLI run before it is killed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    opts = parser.parse_args()
    import torch

    print(
        f"CPU {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, "
        f"torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1 (set by segzoo.launch)')} per process, "
        f"per-process batch {opts.batch}, {opts.warmup} warm-up + {opts.steps} timed batches per process\n"
    )
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="segzoo_ddp_") as tmp:
        folder = Path(tmp)
        for workload in opts.workloads:
            measured = {
                d: fit(workload, d, opts.batch, opts.warmup, opts.steps, folder, opts.timeout) for d in (1, 2)
            }
            one = measured[1]
            for devices, m in measured.items():
                rows.append(
                    f"| {WORKLOADS[workload][0]} | {devices} | {m['samples']} | {m['samples_per_s']:.2f} | "
                    f"{m['samples_per_s'] / one['samples_per_s']:.2f} | {m['cpu_per_sample']:.3f} | "
                    f"{m['cpu_per_sample'] / one['cpu_per_sample']:.2f} |"
                )
            results[workload] = {d: {k: v for k, v in m.items() if k != "ckpt"} for d, m in measured.items()}
            if workload == "deeplabv3":
                ckpt = measured[2]["ckpt"]
                single, double = (test_metrics(ckpt, d, folder, opts.timeout) for d in (1, 2))
                results["equality"] = {"single": single, "double": double, "equal": single == double}
    print("| workload | processes | timed samples | samples/s | speed-up | CPU s / sample | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if "equality" in results:
        eq = results["equality"]
        keys = ("aAcc", "mIoU", "mAcc")
        shown = ", ".join(f"{k} {eq['single'][k] * 100:.4f} vs {eq['double'][k] * 100:.4f}" for k in keys)
        verdict = "identical" if eq["equal"] else "DIFFERENT"
        print(
            "\nTest metrics of the 2-process DeepLab v3 weights on 37 images, 1 vs 2 processes: "
            f"{shown} ({verdict})"
        )
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2) + "\n")
    if "equality" in results and not results["equality"]["equal"]:
        sys.exit("metrics of 1 and 2 processes differ")


if __name__ == "__main__":
    main()
