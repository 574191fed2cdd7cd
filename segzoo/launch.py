"""Run a command (typically the segzoo CLI under DDP) in a subprocess that can never hang its caller or
outlive it: its own process group, a hard timeout, output to files, a clean distributed environment and a
free port. Used by the DDP tests and ``benchmarks/ddp.py``.

Why each part matters (all seen in practice):

- A DDP run started with ``--trainer.strategy=ddp`` is rank 0, which starts rank 1 itself. When rank 0
  dies or is killed, rank 1 keeps waiting for it (up to the 30-minute process-group timeout). Killing the
  whole process group removes both.
- Rank 1 inherits rank 0's stdout/stderr. With pipes, a reader waits for every holder to close them; files
  have no such coupling and never fill up.
- ``MASTER_ADDR``/``MASTER_PORT``, ``SLURM_*``, torchrun's and Lightning's variables left in the caller's
  environment (e.g. by a test that built a trainer under a simulated SLURM job) would send the child to a
  foreign rendezvous: an unresolvable host, or another job's port.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunResult", "clean_env", "free_port", "run_isolated"]

# Variables that select or describe a distributed job; a child must only see the ones we set.
DIST_KEYS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
)
DIST_PREFIXES = ("SLURM_", "TORCHELASTIC_", "PL_", "OMPI_", "PMI_", "LSB_", "JSM_")
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
PORT_IN_USE = ("EADDRINUSE", "Address already in use")


@dataclass
class RunResult:
    """Outcome of :func:`run_isolated`: the exit code (negative: killed by that signal) and the output."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    port: int

    def check(self, what: str = "command") -> RunResult:
        """Raise ``RuntimeError`` with the end of stderr when the command failed; return self otherwise."""
        if self.returncode != 0:
            raise RuntimeError(
                f"{what} exited with {self.returncode} after {self.seconds:.0f} s (port {self.port}); "
                f"end of stderr:\n{self.stderr[-4000:]}"
            )
        return self


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for outgoing connections (32768 on Linux by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(low: int = 20000, attempts: int = 200) -> int:
    """A TCP port that is free on every interface right now, drawn at random below the ephemeral range.

    Below the ephemeral range the kernel never gives the port to an outgoing connection (gloo opens many),
    and a random draw makes two concurrent callers unlikely to pick the same one. The port is only probed:
    another process can still take it before the child binds it, so :func:`run_isolated` retries with a
    new port when the child reports it in use.
    """
    high = max(low + 1000, _ephemeral_low())
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(attempts):
        port = rng.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))  # the rendezvous store listens on all interfaces
            except OSError:
                continue
        return port
    raise RuntimeError(f"free_port: no free TCP port in [{low}, {high}) after {attempts} attempts")


def clean_env(
    port: int, base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (default ``os.environ``) without distributed-job variables, with a local rendezvous on
    ``127.0.0.1:port``, one intra-op thread unless set, and ``extra`` on top."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if k not in DIST_KEYS and not k.startswith(DIST_PREFIXES)
    }
    env["MASTER_ADDR"] = "127.0.0.1"
    env["MASTER_PORT"] = str(port)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it when the process that started it dies, so a caller
    killed without running its cleanup (SIGKILL, SIGTERM) does not leave rank 0 behind either."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(pgid, signal.SIGKILL)


def _run_once(cmd: Sequence[str], cwd: Path, env: dict[str, str], timeout: float, port: int) -> RunResult:
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.wait()
            out.seek(0)
            err.seek(0)
            raise TimeoutError(
                f"{' '.join(cmd[:4])} ... did not finish within {timeout:.0f} s (port {port}); its process "
                f"group was killed. End of stderr:\n{err.read()[-4000:]}"
            ) from None
        finally:
            # Also on success and on KeyboardInterrupt: no rank may outlive the run.
            _kill_group(process.pid)
        out.seek(0)
        err.seek(0)
        return RunResult(returncode, out.read(), err.read(), time.monotonic() - start, port)


def run_isolated(
    cmd: Sequence[str],
    cwd: str | Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    retries: int = 2,
) -> RunResult:
    """Run ``cmd`` in a new session (process group) with a fresh port from :func:`free_port` in a
    :func:`clean_env` environment (``env`` entries on top); wait at most ``timeout`` seconds.

    On timeout (and on any exception while waiting) the whole group, including DDP ranks started by the
    command, is killed with SIGKILL and ``TimeoutError`` is raised with the end of stderr. A run that fails
    because its port was taken meanwhile is repeated with a new port up to ``retries`` times. The result
    is returned whatever the exit code; call :meth:`RunResult.check` to require success.
    """
    if timeout <= 0:
        raise ValueError(f"run_isolated: timeout must be > 0 seconds, got {timeout}")
    attempt = 0
    while True:
        port = free_port()
        result = _run_once(cmd, Path(cwd), clean_env(port, extra=env), timeout, port)
        taken = result.returncode != 0 and any(text in result.stderr for text in PORT_IN_USE)
        if not taken or attempt >= retries:
            return result
        attempt += 1
