"""What callbacks read from the trainer: datamodule attributes, the log folder, safe file names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger


def datamodule_attr(trainer: pl.Trainer, name: str, default: Any = None) -> Any:
    """``trainer.datamodule.<name>``, or ``default`` when there is no datamodule or the value is None."""
    datamodule = getattr(trainer, "datamodule", None)
    value = getattr(datamodule, name, None) if datamodule is not None else None
    return default if value is None else value


def log_dir(trainer: pl.Trainer) -> Path:
    """``trainer.log_dir`` without its broadcast (a collective that would hang when only rank 0 calls it)."""
    path = None
    if trainer.loggers:
        first = trainer.loggers[0]
        path = first.log_dir if isinstance(first, TensorBoardLogger | CSVLogger) else first.save_dir
    return Path(path or trainer.default_root_dir)


def safe_name(text: str, fallback: str = "sample") -> str:
    """``text`` reduced to characters safe in a file name on every platform."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or fallback


def free_stem(folder: Path, stem: str, suffixes: tuple[str, ...]) -> str:
    """``stem``, or ``stem_1``, ``stem_2``, ...: the first for which no ``folder/<stem><suffix>`` exists,
    so a report never replaces an earlier one (several test runs may share a folder when logging is off)."""
    candidate, n = stem, 0
    while any((folder / f"{candidate}{s}").exists() for s in suffixes):
        n += 1
        candidate = f"{stem}_{n}"
    return candidate
