"""The stage profiler and the paired-difference table of benchmarks/kanezaki_bsds.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("kanezaki_bsds")


def test_profile_times_every_stage_and_obeys_the_update_cap(bench, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, 32:] = 200
    image = np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "two_halves.png"
    Image.fromarray(image).save(path)
    times = bench.profile(str(path), iterations=2)
    stages = ("presegmentation", "forward", "targets", "backward", "predict")
    assert all(times[k] > 0 for k in stages)
    assert times["total"] == pytest.approx(sum(times[k] for k in stages))
    assert 1 <= times["iterations"] <= 2
    assert times["fit_pixels"] == 24 * 32  # fast fits at half resolution
    assert times["update_gflop"] == pytest.approx(3 * times["forward_gflop"])


def test_paired_differences(bench, capsys: pytest.CaptureFixture[str]) -> None:
    def row(values: list[tuple[float, float, float, float]]) -> dict:
        keys = ("covering", "pri", "voi", "best_miou")
        per_image = [dict(zip(keys, v, strict=True), image=f"{i}.jpg") for i, v in enumerate(values)]
        return {"per_image": per_image}

    rows = {
        "fast": row([(0.6, 0.8, 1.0, 0.4), (0.5, 0.7, 2.0, 0.3), (0.4, 0.9, 1.5, 0.2)]),
        "other": row([(0.5, 0.8, 1.2, 0.5), (0.3, 0.8, 1.0, 0.2)]),  # only the first two images
    }
    text = bench.print_paired(rows, "fast")
    line = next(x for x in text.splitlines() if x.startswith("| other"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:2] == ["other", "2"]
    # covering: differences +0.1, +0.2 -> mean +0.15, SE 0.05, fast better on both
    assert cells[2] == "+0.150 (0.050), 2"
    # PRI: 0.0 and -0.1 -> fast better on neither; VoI: -0.2 and +1.0 -> lower is better, so 1
    assert cells[3].endswith(", 0") and cells[4].startswith("+0.400") and cells[4].endswith(", 1")
    assert cells[5] == "+0.000 (0.100), 1"
    assert "| fast |" not in text and text in capsys.readouterr().out
