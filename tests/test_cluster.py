"""The CLI resolves world size and ranks from SLURM and torchrun environments without launching anything."""

from pathlib import Path

import pytest

from segzoo.cli import SegzooCLI

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


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Building a trainer under a cluster environment sets process-global state (the rank that
    rank_zero_only methods check, MASTER_ADDR/PORT): restore it so later tests log as rank 0."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    keys = (
        "SLURM_NTASKS",
        "SLURM_JOB_ID",
        "TORCHELASTIC_RUN_ID",
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "NODE_RANK",
        "GROUP_RANK",
        "LOCAL_WORLD_SIZE",
    )
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(rank_zero_only, "rank", getattr(rank_zero_only, "rank", 0))
