"""Checkpoint writes that a kill can interrupt without leaving a corrupt file behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _umask() -> int:
    """The process umask (reading it means setting it: done once, at import, before any thread starts)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def partial_path(path: str | Path) -> Path:
    """Where :class:`AtomicCheckpointIO` writes ``path`` before publishing it: a hidden file in the same
    folder (``os.replace`` is only atomic within one filesystem), named so Lightning's ``last*.ckpt`` and
    ``hpc_ckpt_*.ckpt`` look-ups never pick it up."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened, and renames there are already journaled
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network filesystems refuse fsync on folders; the file itself is already synced
    finally:
        os.close(fd)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to a local ``path`` so that readers only ever see the previous complete file or
    the new complete one: written to :func:`partial_path`, flushed and fsynced, renamed over ``path``, the
    folder fsynced. A failed save removes its partial file. Returns ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose local saves are atomic: the checkpoint is serialised into a hidden
    ``.<name>.partial`` file beside the target, flushed and fsynced, then renamed over the target with
    ``os.replace``. A reader (or a resumed run) sees the previous complete checkpoint or the new complete one,
    never a truncated file, whatever kills the writer. A failed save removes its partial file; a SIGKILL can
    leave one behind, which the next save of the same name overwrites.

    Lightning's own ``TorchCheckpointIO`` stages through fsspec in the system temp folder and moves the file
    into place, which is a copy (not atomic) when that folder is on another filesystem, and does not fsync.
    Remote paths (``s3://`` ...) keep Lightning's behaviour.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (local filesystems)."""
        if not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint: storage_options={storage_options!r} is not "
                "supported; expected None for a local checkpoint path"
            )
        save_atomic(checkpoint, path)
