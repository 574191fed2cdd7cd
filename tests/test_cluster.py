"""The CLI resolves world size and ranks from SLURM and torchrun environments without launching anything."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import torch

from segzoo.cli import SegzooCLI
from segzoo.launch import DIST_KEYS, DIST_PREFIXES

REPO = Path(__file__).resolve().parents[1]
ARGS = [
    "--config",
    str(REPO / "configs" / "quickstart.yaml"),
    "--trainer.accelerator=cpu",
    "--trainer.strategy=ddp",
    "--trainer.devices=2",
    "--trainer.num_nodes=2",
]


def _trainer(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return SegzooCLI(args=ARGS, run=False).trainer


def test_slurm_environment(monkeypatch):
    for key in ("MASTER_PORT", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    trainer = _trainer(
        monkeypatch,
        {
            "SLURM_NTASKS": "4",
            "SLURM_NTASKS_PER_NODE": "2",
            "SLURM_NODEID": "1",
            "SLURM_PROCID": "3",
            "SLURM_LOCALID": "1",
            "SLURM_JOB_NAME": "segzoo",
            "SLURM_JOB_ID": "4242",
            "SLURM_NODELIST": "gpu[07-08]",
        },
    )
    env = trainer.strategy.cluster_environment
    assert type(env).__name__ == "SLURMEnvironment"
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (4, 3, 1, 1)
    assert env.main_address == "gpu07"
    assert env.main_port == 15000 + 4242 % 10000  # Lightning's port from the job id when MASTER_PORT is unset


def test_slurm_respects_master_port(monkeypatch):
    trainer = _trainer(
        monkeypatch,
        {
            "SLURM_NTASKS": "4",
            "SLURM_NTASKS_PER_NODE": "2",
            "SLURM_NODEID": "0",
            "SLURM_PROCID": "0",
            "SLURM_LOCALID": "0",
            "SLURM_JOB_NAME": "segzoo",
            "SLURM_JOB_ID": "7",
            "SLURM_NODELIST": "a,b",
            "MASTER_PORT": "29511",
        },
    )
    assert trainer.strategy.cluster_environment.main_port == 29511
    assert trainer.global_rank == 0 and trainer.world_size == 4


def test_torchrun_environment(monkeypatch):
    trainer = _trainer(
        monkeypatch,
        {
            "TORCHELASTIC_RUN_ID": "segzoo",
            "RANK": "2",
            "LOCAL_RANK": "0",
            "GROUP_RANK": "1",
            "WORLD_SIZE": "4",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "10.0.0.1",
            "MASTER_PORT": "29500",
        },
    )
    assert type(trainer.strategy.cluster_environment).__name__ == "TorchElasticEnvironment"
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (4, 2, 0, 1)


def test_sync_batchnorm_is_opt_in():
    """SyncBatchNorm is off by default (and in every shipped config); ``--trainer.sync_batchnorm=true``
    makes the DDP strategy convert every BatchNorm of the model. Running it needs GPUs: torch's DDP refuses
    SyncBatchNorm on CPU modules ("SyncBatchNorm layers only work with GPU modules")."""
    args = [*ARGS, "--model.init_args.num_classes=4"]
    assert SegzooCLI(args=args, run=False).trainer.strategy._layer_sync is None
    assert not [p for p in (REPO / "configs").rglob("*.yaml") if "sync_batchnorm: true" in p.read_text()]
    cli = SegzooCLI(args=[*args, "--trainer.sync_batchnorm=true"], run=False)
    layer_sync = cli.trainer.strategy._layer_sync
    assert type(layer_sync).__name__ == "TorchSyncBatchNorm"
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in cli.model.modules())
    assert batchnorms > 0
    synced = layer_sync.apply(cli.model)
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules()) == batchnorms
    assert not any(type(m) is torch.nn.BatchNorm2d for m in synced.modules())


@contextlib.contextmanager
def isolated_environ() -> Iterator[None]:
    """``os.environ`` without distributed-job variables inside, exactly as before on exit (added, changed and
    removed keys). Building a trainer under a cluster environment writes MASTER_ADDR/MASTER_PORT into
    ``os.environ`` (SLURM: the first node, 15000 + job id); a leaked ``MASTER_ADDR=gpu07`` made every later
    DDP subprocess of the session wait for a host that does not exist (the hang of
    tests/test_ddp.py in full-suite runs). ``monkeypatch.delenv`` cannot prevent it: it only restores
    variables that existed before the test."""
    with mock.patch.dict(os.environ):
        for key in [k for k in os.environ if k in DIST_KEYS or k.startswith(DIST_PREFIXES)]:
            del os.environ[key]
        yield


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Restore the environment and the rank that rank_zero_only methods check (set by building a trainer
    under a cluster environment), so later tests neither log as another rank nor rendezvous elsewhere."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", getattr(rank_zero_only, "rank", 0))
    with isolated_environ():
        yield


def test_environment_is_restored():
    outside = dict(os.environ)
    with isolated_environ():
        os.environ.update(
            {
                "SLURM_NTASKS": "2",
                "SLURM_NTASKS_PER_NODE": "2",
                "SLURM_NODEID": "0",
                "SLURM_PROCID": "0",
                "SLURM_LOCALID": "0",
                "SLURM_JOB_NAME": "segzoo",
                "SLURM_JOB_ID": "99",
                "SLURM_NODELIST": "node[3-4]",
            }
        )
        trainer = SegzooCLI(args=[*ARGS[:-1], "--trainer.num_nodes=1"], run=False).trainer
        env = trainer.strategy.cluster_environment
        assert (env.main_address, env.main_port) == ("node3", 15000 + 99)
        assert os.environ["MASTER_ADDR"] == "node3"  # what Lightning leaves behind
        assert os.environ["MASTER_PORT"] == str(15000 + 99)
    assert dict(os.environ) == outside
