"""AtomicCheckpointIO: a save interrupted by an error or a SIGKILL leaves the previous checkpoint intact."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins import TorchCheckpointIO

import segzoo.checkpoint_io as checkpoint_io
from segzoo.checkpoint_io import AtomicCheckpointIO, partial_path
from segzoo.cli import SegzooCLI

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _checkpoint(value: float) -> dict:
    return {"state_dict": {"w": torch.full((64, 64), value)}, "epoch": int(value)}


def _assert_holds(path: Path, value: float) -> None:
    loaded = AtomicCheckpointIO().load_checkpoint(path)
    assert loaded["epoch"] == int(value)
    assert torch.equal(loaded["state_dict"]["w"], torch.full((64, 64), value))


def test_save_round_trip_replaces_the_file_and_leaves_no_partial(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"  # the folder is created
    io.save_checkpoint(_checkpoint(1.0), path)
    first_inode = path.stat().st_ino
    io.save_checkpoint(_checkpoint(2.0), path)
    _assert_holds(path, 2.0)
    assert path.stat().st_ino != first_inode  # a new file renamed over the old one, not rewritten in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual permissions, not mkstemp's 0600
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint(_checkpoint(3.0), path, storage_options={"x": 1})


def test_a_failed_save_keeps_the_previous_checkpoint_and_removes_the_partial(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(1.0), path)

    def half_then_fail(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_io.torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint(_checkpoint(2.0), path)
    _assert_holds(path, 1.0)
    assert not partial_path(path).exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(1.0), path)

    def killed_mid_write(obj, f):
        f.write(b"PK\x03\x04" + bytes(4096))
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    # A forked child starts saving epoch 2 and is killed by SIGKILL after a first chunk of bytes reached
    # the disk, as a preempted or OOM-killed job would be; nothing in the process gets to clean up.
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child never returns)
        try:
            monkeypatch.setattr(checkpoint_io.torch, "save", killed_mid_write)
            io.save_checkpoint(_checkpoint(2.0), path)
        finally:
            os._exit(1)  # only reached if the kill did not happen
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    _assert_holds(path, 1.0)
    assert partial_path(path).stat().st_size == 4100  # the interrupted write went to the partial file

    io.save_checkpoint(_checkpoint(3.0), path)  # the next save reuses and clears it
    _assert_holds(path, 3.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_the_cli_trainer_saves_through_the_atomic_plugin_unless_another_is_configured():
    trainer = SegzooCLI(args=["--config", str(QUICKSTART)], run=False).trainer
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO

    own = SegzooCLI(
        args=["--config", str(QUICKSTART), "--trainer.plugins=lightning.fabric.plugins.TorchCheckpointIO"],
        run=False,
    ).trainer
    assert type(own.strategy.checkpoint_io) is TorchCheckpointIO
