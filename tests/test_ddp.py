"""Metrics under DDP: 2 CPU processes (gloo) report exactly what 1 process does."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _validate(tmp_path: Path, name: str, *extra: str) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "segzoo",
        "test",
        "--config",
        str(REPO / "configs" / "quickstart.yaml"),
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        # 13 samples in batches of 4: 2 processes get 7 and 6, so a padding sampler would repeat one.
        "--data.dataset_kwargs={num_classes: 4, size: [40, 56], num_samples: 13}",
        "--data.eval_batch_size=4",
        "--model.init_args.model_kwargs.base_channels=8",
        *extra,
    ]
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    run = tmp_path / name / "version_0"
    with open(run / "metrics.csv") as fh:
        row = next(csv.DictReader(fh))
    logged = {k: float(v) for k, v in row.items() if k in ("test/aAcc", "test/mIoU", "test/mAcc")}
    report = json.loads((run / "test_metrics.json").read_text())  # written by rank 0 only
    assert {f"test/{k}": report[k] for k in ("aAcc", "mIoU", "mAcc")} == pytest.approx(logged, rel=1e-6)
    return logged


@pytest.mark.slow  # intermittently hangs on the shared dev machine (see the cluster issue); run with -m slow
def test_two_processes_equal_one(tmp_path):
    single = _validate(tmp_path, "single", "--trainer.devices=1")
    double = _validate(tmp_path, "ddp", "--trainer.devices=2", "--trainer.strategy=ddp")
    assert len(single) == 3
    assert double == single
    assert 0.0 < single["test/mIoU"] < 1.0
