"""Every supervised config parses (so none rots) and every synthetic one trains a step on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from segzoo.cli import main
from segzoo.models import list_models

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "supervised"
ALL = sorted(CONFIGS.rglob("*.yaml"))
SYNTHETIC = sorted((CONFIGS / "synthetic").glob("*.yaml"))


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(CONFIGS)) for p in paths]


def test_every_registered_model_has_a_synthetic_and_a_camvid_config():
    for dataset in ("synthetic", "camvid"):
        have = {p.stem for p in (CONFIGS / dataset).glob("*.yaml")}
        assert set(list_models()) <= have, f"configs/supervised/{dataset} lacks {set(list_models()) - have}"


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_config_parses_with_print_config(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    init = config["model"]["init_args"]
    assert config["model"]["class_path"] == "segzoo.methods.SupervisedSegmentation"
    assert init["model"] in list_models()
    if path.parent.name == "camvid":
        assert init["model"] == path.stem or path.stem == "cpu_recipe"
        assert config["data"]["dataset"] == "camvid" and config["data"]["root"] == "$SEGZOO_DATA/camvid"
        assert (config["data"]["train_split"], config["data"]["test_split"]) == ("train", "val")
        assert init["inference"] == "whole" and init["ignore_index"] == 255
    else:
        assert init["model"] == path.stem and config["data"]["dataset"] == "synthetic"


@pytest.fixture
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
@pytest.mark.parametrize("path", SYNTHETIC, ids=_ids(SYNTHETIC))
def test_synthetic_config_fits_one_step(path, tmp_path, single_thread):
    main(
        [
            "fit",
            "--config", str(path),
            "--test_after_fit=false",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=1",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--data.dataset_kwargs={num_classes: 3, size: [32, 32], num_samples: 2}",
            "--data.batch_size=2",
            "--data.eval_batch_size=2",
        ]
    )  # fmt: skip
    run = tmp_path / f"synthetic_{path.stem}" / "version_0"
    assert (run / "config.yaml").is_file()
    assert list((run / "checkpoints").glob("*.ckpt")), "no checkpoint written after one step"
