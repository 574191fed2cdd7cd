import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segzoo.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _tiny(tmp_path, *extra):
    return [
        "--config",
        str(QUICKSTART),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--data.dataset_kwargs={num_classes: 3, size: [24, 32], num_samples: 8}",
        "--data.batch_size=4",
        "--data.eval_batch_size=4",
        "--model.init_args.model_kwargs.base_channels=4",
        *extra,
    ]


def _run_dir(tmp_path, version):
    return tmp_path / "quickstart" / f"version_{version}"


def test_fit_then_test_round_trip(tmp_path, capsys):
    main(["fit", *_tiny(tmp_path)])
    run = _run_dir(tmp_path, 0)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["init_args"]["model_kwargs"]["base_channels"] == 4
    assert config["seed_everything"] == 0
    fit_report = json.loads((run / "test_metrics.json").read_text())  # test_after_fit: true
    assert set(fit_report) >= {"aAcc", "mIoU", "mAcc"}
    assert "per-class results" in capsys.readouterr().out
    images = list((run / "images").rglob("*.png"))
    assert images, "the image logger wrote no overlay"

    checkpoint = run / "checkpoints" / "best.ckpt"
    main(["test", *_tiny(tmp_path), f"--ckpt_path={checkpoint}"])
    test_report = json.loads((_run_dir(tmp_path, 1) / "test_metrics.json").read_text())
    assert test_report["mIoU"] == pytest.approx(fit_report["mIoU"])

    assert (
        main(["export", str(checkpoint), "--out", str(tmp_path / "export"), "--formats", "torchscript"]) == 0
    )
    assert (tmp_path / "export" / "model.torchscript.pt").is_file()

    main(["fit", *_tiny(tmp_path / "again")])  # same seed: the same numbers
    assert json.loads((_run_dir(tmp_path / "again", 0) / "test_metrics.json").read_text()) == fit_report

    inputs = tmp_path / "photos"
    inputs.mkdir()
    for i, size in enumerate([(20, 30), (25, 17)]):
        Image.new("RGB", size[::-1], (40 * i, 90, 200)).save(inputs / f"p{i}.png")
    predict = ["predict", *_tiny(tmp_path), f"--ckpt_path={checkpoint}", f"--data.predict_root={inputs}"]
    main([*predict, f"--output_dir={tmp_path / 'pred'}"])
    labels = sorted((tmp_path / "pred" / "labels").iterdir())
    assert [p.name for p in labels] == ["p0.png", "p1.png"]
    assert np.asarray(Image.open(labels[1])).shape == (25, 17)  # written at the input's own size
    assert len(list((tmp_path / "pred" / "overlays").iterdir())) == 2
    with pytest.raises(ValueError, match="input folder"):
        main([*predict, f"--output_dir={inputs}"])
    assert sorted(p.name for p in inputs.iterdir()) == ["p0.png", "p1.png"]


def test_print_config_and_overrides(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(QUICKSTART), "--data.batch_size=3", "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["batch_size"] == 3
    assert config["model"]["class_path"] == "segzoo.methods.SupervisedSegmentation"
    assert config["metrics"]["ignore_index"] is None


def test_models_command_and_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "segzoo", "models"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    for name in ("unet", "synthetic", "camvid", "supervised"):
        assert name in out
