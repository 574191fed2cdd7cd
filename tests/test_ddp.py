"""DDP through the real CLI: every method trains and evaluates with 2 CPU processes (gloo), and the metrics of
2 processes equal those of 1 process exactly on the same data and weights.

The default run checks the subprocess runner (:mod:`segzoo.launch`) that keeps these runs from hanging;
the per-method runs take 1-2 minutes each on a shared 2-core machine and are marked slow
(``pytest -m slow tests/test_ddp.py``).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from segzoo.launch import clean_env, free_port, run_isolated

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 420  # seconds for one CLI run; a DDP run that waits longer is hung and gets killed
COMMON = (
    "--trainer.log_every_n_steps=1",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
)


# -- the runner ---------------------------------------------------------------------------------------
def test_free_port_is_bindable_and_below_the_ephemeral_range():
    port = free_port()
    assert 20000 <= port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", port))  # still free: nothing kept it open


def test_clean_env_drops_a_leaked_rendezvous():
    leaked = {
        "MASTER_ADDR": "gpu07",  # what a SLURM trainer built in-process leaves in os.environ
        "MASTER_PORT": "19242",
        "RANK": "3",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "4",
        "SLURM_JOB_ID": "4242",
        "TORCHELASTIC_RUN_ID": "x",
        "PL_GLOBAL_SEED": "7",
        "PATH": "/usr/bin",
        "OMP_NUM_THREADS": "2",
    }
    env = clean_env(23456, base=leaked, extra={"EXTRA": "1"})
    assert env == {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "23456",
        "PATH": "/usr/bin",
        "OMP_NUM_THREADS": "2",
        "EXTRA": "1",
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child of an exited parent is reaped by init; until then it is a zombie, i.e. dead
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


SPAWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    # a "rank 1" that inherits stdout/stderr and would wait forever, like a DDP worker whose rank 0 died
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open("child.pid", "w").write(str(child.pid))
    print("x" * 200000)  # more than a pipe buffer holds
    sys.stdout.flush()
    if sys.argv[1] == "hang":
        time.sleep(120)
    """
)


@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_run_isolated_never_leaves_a_process_behind(tmp_path, mode):
    (tmp_path / "spawner.py").write_text(SPAWNER)
    start = time.monotonic()
    cmd = [sys.executable, "spawner.py", mode]
    if mode == "hang":
        with pytest.raises(TimeoutError, match="did not finish within 1 s"):
            run_isolated(cmd, cwd=tmp_path, timeout=1)
    else:
        # the parent exits at once; the child still holds the output, which must not make us wait
        result = run_isolated(cmd, cwd=tmp_path, timeout=60).check()
        assert len(result.stdout) > 200000
    assert time.monotonic() - start < 30
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the grandchild outlived run_isolated"


CALLER = textwrap.dedent(
    """
    import importlib.util, sys
    # segzoo.launch alone (standard library only), without importing the package and torch
    spec = importlib.util.spec_from_file_location("launch", sys.argv[1])
    launch = sys.modules["launch"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    code = "import os, time; open('rank0.pid', 'w').write(str(os.getpid())); time.sleep(120)"
    launch.run_isolated([sys.executable, "-c", code], cwd=".", timeout=100)
    """
)


def test_run_isolated_child_dies_with_a_killed_caller(tmp_path):
    """A caller killed without cleanup (SIGKILL) still takes its child down (PR_SET_PDEATHSIG)."""
    (tmp_path / "caller.py").write_text(CALLER)
    caller = subprocess.Popen([sys.executable, "caller.py", str(REPO / "segzoo" / "launch.py")], cwd=tmp_path)
    pid_file = tmp_path / "rank0.pid"
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert _alive(child)
    caller.kill()
    caller.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the child outlived its killed caller"


def test_run_isolated_retries_a_taken_port(tmp_path):
    script = textwrap.dedent(
        """
        import os, pathlib, sys
        seen = pathlib.Path("ports.txt")
        seen.write_text(seen.read_text() + os.environ["MASTER_PORT"] + "\\n" if seen.exists() else
                        os.environ["MASTER_PORT"] + "\\n")
        if len(seen.read_text().split()) == 1:
            sys.exit("The server socket has failed to listen on any local network address. EADDRINUSE")
        """
    )
    (tmp_path / "bind.py").write_text(script)
    result = run_isolated([sys.executable, "bind.py"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0
    ports = (tmp_path / "ports.txt").read_text().split()
    assert len(ports) == 2 and ports[1] == str(result.port)
    failed = run_isolated([sys.executable, "-c", "raise SystemExit(3)"], cwd=tmp_path, timeout=60)
    with pytest.raises(RuntimeError, match="exited with 3"):
        failed.check()


def test_run_isolated_rejects_a_missing_timeout(tmp_path):
    with pytest.raises(ValueError, match="timeout must be > 0"):
        run_isolated([sys.executable, "-c", "pass"], cwd=tmp_path, timeout=0)


# -- the CLI under DDP ----------------------------------------------------------------------------------
def segzoo(tmp_path: Path, verb: str, name: str, devices: int, *args: str) -> Path:
    """Run ``segzoo VERB`` with ``devices`` CPU processes; return its log folder (``<name>/version_0``)."""
    strategy = "--trainer.strategy=ddp" if devices > 1 else "--trainer.strategy=auto"
    cmd = [
        sys.executable,
        "-m",
        "segzoo",
        verb,
        *args,
        *COMMON,
        f"--trainer.devices={devices}",
        strategy,
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.logger.init_args.name={name}",
    ]
    run_isolated(cmd, cwd=tmp_path, timeout=TIMEOUT).check(f"segzoo {verb} ({name}, {devices} processes)")
    return tmp_path / name / "version_0"


def logged(run: Path, prefix: str) -> dict[str, float]:
    """The last logged value of every ``prefix*`` column of the run's metrics.csv (rank 0 writes it)."""
    values: dict[str, float] = {}
    with open(run / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            values.update(
                {k: float(v) for k, v in row.items() if k.startswith(prefix) and v not in ("", None)}
            )
    return values


def report(run: Path, name: str = "test_metrics") -> dict[str, float]:
    """The test report written by rank 0."""
    return json.loads((run / f"{name}.json").read_text())


def assert_same(double: dict[str, float], single: dict[str, float], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in single or k not in double]
    assert not missing, f"not logged: {missing} (1 process: {sorted(single)}, 2: {sorted(double)})"
    assert {k: double[k] for k in keys} == {k: single[k] for k in keys}  # exact, not approximate


SUPERVISED = (
    "--config",
    str(REPO / "configs" / "quickstart.yaml"),
    # 13 samples in batches of 4: 2 processes get 7 and 6, so a padding sampler would repeat one.
    "--data.dataset_kwargs={num_classes: 4, size: [40, 56], num_samples: 13}",
    "--data.batch_size=4",
    "--data.eval_batch_size=4",
    "--model.init_args.model_kwargs.base_channels=8",
)


@pytest.mark.slow
def test_supervised_fit_validate_test(tmp_path):
    """Fit with 2 processes; its epoch-end validation equals a 1-process validation of the saved weights,
    and testing those weights gives the same numbers on 1 and 2 processes."""
    fit = segzoo(
        tmp_path,
        "fit",
        "fit",
        2,
        *SUPERVISED,
        "--test_after_fit=false",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
    )
    ckpt = fit / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    during_fit = logged(fit, "val/")
    assert "train/loss" in logged(fit, "train/")
    keys = ("val/aAcc", "val/mIoU", "val/mAcc")
    validate = segzoo(tmp_path, "validate", "validate", 1, *SUPERVISED, f"--ckpt_path={ckpt}")
    assert_same(during_fit, logged(validate, "val/"), keys)
    single = segzoo(tmp_path, "test", "single", 1, *SUPERVISED, f"--ckpt_path={ckpt}")
    double = segzoo(tmp_path, "test", "ddp", 2, *SUPERVISED, f"--ckpt_path={ckpt}")
    keys = ("test/aAcc", "test/mIoU", "test/mAcc")
    assert_same(logged(double, "test/"), logged(single, "test/"), keys)
    # The loss is a sample-weighted mean over all 13 images: equal up to float summation order (an integer
    # sample count would be truncated when averaged over the 2 processes and inflate it by 13/12).
    loss_1, loss_2 = logged(single, "test/")["test/loss"], logged(double, "test/")["test/loss"]
    assert loss_2 == pytest.approx(loss_1, rel=1e-5)
    assert report(double) == report(single)
    assert 0.0 < report(single)["mIoU"] < 1.0


SCOPS = (
    "--config",
    str(REPO / "configs" / "scops" / "synthetic.yaml"),
    "--test_after_fit=false",
    "--data.dataset_kwargs={mode: parts, num_parts: 4, size: [48, 48], num_samples: 13}",
    "--data.eval_batch_size=4",
)


@pytest.mark.slow
def test_scops_fit_and_landmarks(tmp_path):
    """SCOPS (manual optimisation, two optimisers) trains with 2 processes; testing its weights gives the
    same part mIoU and landmark error (regressor fitted on the gathered training split) on 1 and 2."""
    fit = segzoo(
        tmp_path,
        "fit",
        "fit",
        2,
        *SCOPS,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=null",
    )
    ckpt = fit / "checkpoints" / "last.ckpt"
    assert "val/mIoU" in logged(fit, "val/")
    # One image per batch: CPU convolutions give slightly different floats for an image depending on the
    # batch size (1e-6 here), which the landmark regression would carry into the error; see docs/cluster.md.
    # The config's LandmarkMetrics fits on at most 4 batches per process: fit on the whole training split.
    evaluate = (
        *SCOPS,
        f"--ckpt_path={ckpt}",
        "--trainer.limit_test_batches=null",
        "--data.eval_batch_size=1",
        "--trainer.callbacks=[{class_path: segzoo.callbacks.LandmarkMetrics, init_args: {stages: [test]}}]",
    )
    single = segzoo(tmp_path, "test", "single", 1, *evaluate)
    double = segzoo(tmp_path, "test", "ddp", 2, *evaluate)
    keys = ("test/aAcc", "test/mIoU", "test/mAcc", "test/landmark_error")
    assert_same(logged(double, "test/"), logged(single, "test/"), keys)
    conc_1, conc_2 = (logged(run, "test/")["test/loss_concentration"] for run in (single, double))
    # A mean over 13 images, not 12 (see the supervised test).
    assert conc_2 == pytest.approx(conc_1, rel=1e-5)
    landmarks = report(single, "landmark_metrics")
    assert landmarks == report(double, "landmark_metrics")
    assert landmarks["num_images"] == 13 and landmarks["num_fit_images"] == 13


KANEZAKI_SYNTHETIC = (
    "--model=segzoo.methods.kanezaki.KanezakiSegmentation",
    "--model.overrides={connected_components: false, min_segment_size: 0, max_iter: 8}",
    "--data.dataset=synthetic",
    "--data.dataset_kwargs={num_classes: 4, size: [40, 48], num_samples: 5}",
    "--data.mean=null",
    "--data.std=null",
    "--data.eval_batch_size=2",
    "--metrics.matching=hungarian",
    "--metrics.num_clusters=16",
)


@pytest.mark.slow
def test_kanezaki_synthetic(tmp_path):
    """Kanezaki (a fresh net per image, nothing trained across images) with Hungarian-matched mIoU."""
    single = segzoo(tmp_path, "test", "single", 1, *KANEZAKI_SYNTHETIC)
    double = segzoo(tmp_path, "test", "ddp", 2, *KANEZAKI_SYNTHETIC)
    assert_same(logged(double, "test/"), logged(single, "test/"), ("test/aAcc", "test/mIoU", "test/mAcc"))
    assert report(double) == report(single)


@pytest.mark.slow
@pytest.mark.realdata
def test_kanezaki_bsds500(tmp_path, shared_data):
    """``configs/kanezaki/bsds500.yaml`` itself on 3 BSDS500 val images (a folder of links, so 1 and 2
    processes see the same 3): the BSDS scores (sums over images, reduced across processes) agree."""
    source = shared_data / "bsds500"
    root = tmp_path / "bsds500"
    images = sorted((source / "images" / "val").glob("*.jpg"))[:3]
    assert len(images) == 3, f"expected BSDS500 val images in {source / 'images' / 'val'}"
    for image in images:
        for folder, suffix in (("images", ".jpg"), ("groundTruth", ".mat")):
            (root / folder / "val").mkdir(parents=True, exist_ok=True)
            (root / folder / "val" / f"{image.stem}{suffix}").symlink_to(
                source / folder / "val" / f"{image.stem}{suffix}"
            )
    args = (
        "--config",
        str(REPO / "configs" / "kanezaki" / "bsds500.yaml"),
        f"--data.root={root}",
        "--model.init_args.overrides={max_iter: 8}",
    )
    single = segzoo(tmp_path, "test", "single", 1, *args)
    double = segzoo(tmp_path, "test", "ddp", 2, *args)
    scores = report(single)
    assert {"bsds_covering", "bsds_pri", "bsds_voi"} <= set(scores)
    assert report(double) == scores


R2O = (
    "--config",
    str(REPO / "configs" / "r2o" / "synthetic.yaml"),
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--data.batch_size=4",
)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["process", "global"])
def test_r2o_fit(tmp_path, scope):
    """R2O pretraining trains with 2 processes with either K-means scope and exports the encoder (rank 0,
    after a log-folder broadcast that every rank takes part in)."""
    fit = segzoo(tmp_path, "fit", scope, 2, *R2O, f"--model.init_args.kmeans_scope={scope}")
    train = logged(fit, "train/")
    assert torch.isfinite(torch.tensor(train["train/loss"])) and train["train/k"] == 16.0
    encoder = torch.load(fit / "r2o_encoder.pth", map_location="cpu", weights_only=True)
    state = torch.load(fit / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    key = "conv1.weight"
    assert torch.equal(encoder[key], state[f"online_encoder.{key}"])
