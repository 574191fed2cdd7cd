"""A ``segzoo fit`` killed with SIGKILL mid-epoch and resumed from its last checkpoint ends exactly where an
uninterrupted run with the same seed ends: same validation metrics, same weights."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import Dataset

from segzoo.callbacks import EpochSeeding, ResumeCheckpoint
from segzoo.cli import SegzooCLI, main
from segzoo.data.datamodule import SegDataModule
from segzoo.data.sampling import EpochSeededDataset, EpochShuffleSampler
from segzoo.launch import clean_env, free_port, run_isolated

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 4

# A supervised UNet on tiny synthetic images with every random augmentation (scale, crop, flip, colour
# jitter) and a shuffled order, loaded by 2 workers: any random stream the resume fails to reproduce
# changes the weights and the metrics.
CONFIG = {
    "seed_everything": 3,
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": EPOCHS,
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"name": "resume"}},
        "callbacks": [
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"monitor": "val/mIoU", "mode": "max", "filename": "best", "save_last": True},
            }
        ],
    },
    "model": {
        "class_path": "segzoo.methods.SupervisedSegmentation",
        "init_args": {
            "model": "unet",
            "model_kwargs": {"base_channels": 4, "depth": 2},
            "optimizer": "adamw",
            "lr": 0.01,
            "warmup_steps": 3,
        },
    },
    "data": {
        "dataset": "synthetic",
        "dataset_kwargs": {"num_classes": 3, "size": [24, 32], "num_samples": 24},
        "batch_size": 4,
        "eval_batch_size": 8,
        "scale_range": [0.75, 1.25],
        "crop_size": [20, 28],
        "hflip": 0.5,
        "color_jitter": 0.2,
        "seed": 5,
        "num_workers": 2,  # workers draw indices before set_epoch: the harder resume
    },
}


class Draws(Dataset):
    """Each item is one draw from every global RNG, as a random augmentation would make."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple[float, float, float]:
        return float(torch.rand(())), float(np.random.rand()), random.random()  # noqa: NPY002


def test_the_shuffle_is_a_function_of_seed_and_epoch():
    order = list(EpochShuffleSampler(Draws(), seed=5, epoch=2))
    assert {e for e, _ in order} == {2} and sorted(i for _, i in order) == list(range(10))
    sampler = EpochShuffleSampler(Draws(), seed=5)
    first = list(sampler)
    sampler.set_epoch(2)  # as Lightning does before each epoch
    assert list(sampler) == order and first != order
    assert list(EpochShuffleSampler(Draws(), seed=6, epoch=2)) != order
    halves = [list(EpochShuffleSampler(Draws(), num_replicas=2, rank=r, seed=5, epoch=2)) for r in (0, 1)]
    assert sorted(halves[0] + halves[1]) == sorted(order)  # DDP ranks share the epoch's samples

    resumed = EpochShuffleSampler(Draws(), seed=5, epoch=2, skip=4)  # 4 samples of epoch 2 already trained
    assert list(resumed) == order[4:]
    assert list(resumed) == order  # once only
    later = EpochShuffleSampler(Draws(), seed=5, epoch=2, skip=4)
    later.set_epoch(3)  # the first iteration is of another epoch: nothing to skip there
    assert len(list(later)) == 10


def test_sample_randomness_is_a_function_of_seed_epoch_and_index_and_leaves_the_caller_alone():
    data = EpochSeededDataset(Draws(), seed=1)
    first = data[(2, 4)]
    torch.rand(5), np.random.rand(5), random.random()  # noqa: NPY002  (whatever ran before)
    state = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002
    assert data[(2, 4)] == first
    assert torch.equal(torch.get_rng_state(), state[0])  # the model's random stream did not move
    assert np.array_equal(np.random.get_state()[1], state[1]) and random.getstate() == state[2]  # noqa: NPY002
    assert len({first, data[(3, 4)], data[(2, 5)], EpochSeededDataset(Draws(), seed=2)[(2, 4)]}) == 4
    with pytest.raises(TypeError, match=r"got index 4; expected an \(epoch, index\) pair"):
        data[4]


def _batches(num_workers: int, epoch: int) -> list[torch.Tensor]:
    data = SegDataModule(
        dataset="synthetic",
        dataset_kwargs={"num_classes": 3, "size": [20, 24], "num_samples": 12},
        batch_size=4,
        num_workers=num_workers,
        scale_range=[0.7, 1.3],
        crop_size=[16, 16],
        color_jitter=0.3,
        seed=2,
    )
    loader = data.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return [torch.cat([b["image"].flatten(), b["mask"].flatten().float()]) for b in loader]


def test_training_batches_are_the_same_with_any_number_of_workers_and_after_a_restart():
    expected = _batches(num_workers=0, epoch=1)
    assert len(expected) == 3
    assert all(torch.equal(a, b) for a, b in zip(expected, _batches(num_workers=1, epoch=1), strict=True))
    other = _batches(num_workers=0, epoch=2)
    assert not any(torch.equal(a, b) for a, b in zip(expected, other, strict=True))


def test_epoch_seeding_reseeds_every_global_rng_per_epoch_alike_on_every_rank():
    seeding = EpochSeeding(seed=4)

    def draws(epoch: int, rank: int = 0) -> tuple[float, float, float]:
        seeding.on_train_epoch_start(SimpleNamespace(current_epoch=epoch, global_rank=rank), None)
        return float(torch.rand(())), float(np.random.rand()), random.random()  # noqa: NPY002

    first = draws(3)
    torch.rand(7)
    assert draws(3) == first

    def batch_draw(epoch: int, batch_idx: int) -> float:
        trainer = SimpleNamespace(current_epoch=epoch, global_rank=0)
        seeding.on_train_batch_start(trainer, None, None, batch_idx)
        return float(torch.rand(()))

    assert batch_draw(3, 5) == batch_draw(3, 5)  # also per batch: a mid-epoch resume continues the streams
    assert len({batch_draw(3, 5), batch_draw(3, 6), batch_draw(4, 5)}) == 3
    assert draws(3, rank=1) == first  # ranks agree, so random branches in training_step agree too
    assert len({first, draws(4), draws(3)}) == 2
    assert seeding.state_dict() == {"seed": 4}
    with pytest.warns(UserWarning, match="written with seed 9 but this run uses seed 4"):
        seeding.load_state_dict({"seed": 9})


def test_the_cli_adds_epoch_seeding_and_a_resume_checkpoint():
    trainer = SegzooCLI(args=["--config", str(REPO / "configs" / "quickstart.yaml")], run=False).trainer
    resume = [c for c in trainer.callbacks if isinstance(c, ResumeCheckpoint)]
    assert len(resume) == 1 and resume[0].monitor is None and resume[0].filename == "resume"
    assert sum(isinstance(c, EpochSeeding) for c in trainer.callbacks) == 1
    assert trainer.checkpoint_callback is not resume[0]  # test_after_fit still finds the config's best.ckpt


def test_a_rerun_of_segzoo_predict_completes_an_interrupted_output_dir(tmp_path, capsys):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for i in range(3):
        Image.new("RGB", (12 + i, 10), (60 * i, 90, 200)).save(inputs / f"p{i}.png")
    out = tmp_path / "pred"
    command = [
        "predict",
        "--config",
        str(REPO / "configs" / "quickstart.yaml"),
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
        "--model.init_args.model_kwargs.base_channels=4",
        "--data.eval_batch_size=2",
        f"--data.predict_root={inputs}",
        f"--output_dir={out}",
    ]
    main([*command, "--trainer.limit_predict_batches=1"])  # stopped after the first batch
    assert "wrote 2 prediction(s)" in capsys.readouterr().out
    first = {p: p.stat().st_mtime_ns for p in (out / "labels").iterdir()}
    main(command)
    assert "wrote 1 prediction(s)" in (text := capsys.readouterr().out)
    assert "2 input(s) already written were not predicted again" in text
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["p0.png", "p1.png", "p2.png"]
    assert {p: p.stat().st_mtime_ns for p in first} == first
    main([*command, "--overwrite_predictions=true"])
    assert f"wrote 3 prediction(s) to {out}\n" in capsys.readouterr().out


class HangAt(pl.Callback):
    """Test hook: at ``batch`` of ``epoch`` touch ``flag`` and block until the test kills the process, so
    the kill lands mid-epoch after a checkpoint exists without timing guesses. ``epoch=-1`` never hangs."""

    def __init__(self, flag: str, epoch: int = -1, batch: int = 0) -> None:
        self.flag, self.epoch, self.batch = flag, epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            Path(self.flag).touch()
            while True:  # blocked until SIGKILL
                time.sleep(0.05)


def _fit_command(config: Path, save_dir: Path, hang: dict, *extra: str) -> list[str]:
    hang_callback = {"class_path": f"{__name__}.HangAt", "init_args": hang}
    return [
        sys.executable,
        "-m",
        "segzoo",
        "fit",
        "--config",
        str(config),
        f"--trainer.logger.init_args.save_dir={save_dir}",
        f"--trainer.callbacks+={yaml.safe_dump(hang_callback, default_flow_style=True).strip()}",
        f"--trainer.callbacks+={__name__}.SaveAtEnd",
        *extra,
    ]


EXTRA_ENV = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _run(command: list[str]) -> None:
    """Run a CLI command to completion within a wall-clock budget (loader workers included), showing its
    output if it fails."""
    run_isolated(command, cwd=Path.cwd(), timeout=600, env=EXTRA_ENV).check(" ".join(command[3:5]))


def _val_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("val/mIoU")]


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def _kill_then_resume(tmp_path: Path, name: str, hang: dict, *extra: str) -> tuple[Path, Path, dict]:
    """Run the fit until ``hang`` blocks it, SIGKILL it (with its loader workers), resume it from its
    ``resume.ckpt``; return the killed and the resumed run's folders and the checkpoint resumed from."""
    config, flag = tmp_path / "config.yaml", Path(hang["flag"])
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115  (closed after the process is gone)
    process = subprocess.Popen(  # its own process group: the kill takes the loader workers too
        _fit_command(config, tmp_path / name, hang, *extra),
        env=clean_env(free_port(), extra=EXTRA_ENV),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not flag.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    log.close()
    assert flag.exists(), f"the run never reached {hang}: {(tmp_path / f'{name}.log').read_text()}"
    flag.unlink()
    killed = tmp_path / name / "resume" / "version_0"
    checkpoint = killed / "checkpoints" / "resume.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    no_hang = {"flag": hang["flag"], "epoch": -1}
    _run(_fit_command(config, tmp_path / name, no_hang, *extra, f"--ckpt_path={checkpoint}"))
    return killed, tmp_path / name / "resume" / "version_1", saved


def _assert_same_end(reference: Path, resumed: Path, first_epoch: int) -> None:
    """Validation metrics of every epoch the resumed run ran, and the final weights, equal exactly."""
    expected, got = _val_rows(reference), _val_rows(resumed)
    assert [r["epoch"] for r in expected] == [str(e) for e in range(EPOCHS)]
    assert [r["epoch"] for r in got] == [str(e) for e in range(first_epoch, EPOCHS)]
    keys = [k for k in expected[0] if k.startswith("val/")]
    assert {"val/mIoU", "val/aAcc", "val/mAcc"} <= set(keys)
    metrics = [{k: r[k] for k in keys} for r in expected[first_epoch:]]
    assert [{k: r[k] for k in keys} for r in got] == metrics
    a = _weights(reference / "checkpoints" / "last_weights.ckpt")
    b = _weights(resumed / "checkpoints" / "last_weights.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after the resume"


class SaveAtEnd(pl.Callback):
    """Test hook: the final weights, whatever the checkpoint cadence of the run."""

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(
            Path(trainer.log_dir) / "checkpoints" / "last_weights.ckpt", weights_only=True
        )


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    flag = str(tmp_path / "hanging")
    _run(_fit_command(tmp_path / "config.yaml", tmp_path / "a", {"flag": flag, "epoch": -1}))
    reference = tmp_path / "a" / "resume" / "version_0"

    # Default cadence, a checkpoint at the end of every epoch: killed in epoch 2 (6 steps per epoch),
    # resumed from the end of epoch 1; epoch 2 is trained again from its start.
    killed, resumed, saved = _kill_then_resume(tmp_path, "b", {"flag": flag, "epoch": 2, "batch": 3})
    assert saved["epoch"] == 1 and saved["global_step"] == 12
    assert len(_val_rows(killed)) == 2
    _assert_same_end(reference, resumed, first_epoch=2)

    # Every 4 steps: killed before batch 5 of epoch 2, resumed from step 16, after batch 3 of epoch 2,
    # in the middle of the epoch: the resumed run continues with batch 4.
    steps = {"class_path": "segzoo.callbacks.ResumeCheckpoint", "init_args": {"every_n_train_steps": 4}}
    every_4 = f"--trainer.callbacks+={yaml.safe_dump(steps, default_flow_style=True).strip()}"
    killed, resumed, saved = _kill_then_resume(tmp_path, "c", {"flag": flag, "epoch": 2, "batch": 5}, every_4)
    assert saved["epoch"] == 2 and saved["global_step"] == 16 and len(_val_rows(killed)) == 2
    assert saved["SegDataModule"] == {"next_train_epoch": 2, "train_batches_done": 4}
    _assert_same_end(reference, resumed, first_epoch=2)


@pytest.mark.slow
def test_an_interrupted_ddp_predict_run_resumes_with_both_processes(tmp_path):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for i in range(5):
        Image.new("RGB", (14 + i, 11), (50 * i, 120, 30 * i)).save(inputs / f"p{i}.png")

    def predict(out: Path, devices: int, *extra: str) -> str:
        cmd = [
            sys.executable,
            "-m",
            "segzoo",
            "predict",
            "--config",
            str(REPO / "configs" / "quickstart.yaml"),
            "--trainer.accelerator=cpu",
            f"--trainer.devices={devices}",
            f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
            "--model.init_args.model_kwargs.base_channels=4",
            "--data.eval_batch_size=1",  # per-image outputs independent of batching (see above)
            f"--data.predict_root={inputs}",
            f"--output_dir={out}",
            *extra,
        ]
        # Only what the child needs on top: run_isolated starts from a cleaned copy of os.environ.
        return run_isolated(cmd, cwd=tmp_path, timeout=600, env={"PYTHONPATH": str(REPO)}).check().stdout

    predict(tmp_path / "one", devices=1)
    out = tmp_path / "two"
    assert "wrote 2 prediction(s)" in predict(out, 2, "--trainer.limit_predict_batches=1")  # 1 per process
    first = {p: p.stat().st_mtime_ns for p in (out / "labels").iterdir()}
    text = predict(out, 2)
    assert "wrote 3 prediction(s)" in text and "2 input(s) already written were not predicted again" in text
    assert {p: p.stat().st_mtime_ns for p in first} == first

    def files(folder: Path) -> dict[str, bytes]:
        return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    assert len(files(out)) == 10 and files(out) == files(tmp_path / "one")
