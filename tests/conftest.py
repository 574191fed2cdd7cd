"""Shared fixtures: the real-data folder (``SEGZOO_DATA``, default ``../shared/data``), benchmark scripts as
modules."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Where the real datasets live: ``$SEGZOO_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("SEGZOO_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real-data root; the test is skipped with a reason when it is absent."""
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(
            f"real data not found at {root} (set SEGZOO_DATA to the folder with bsds500/, camvid/, ...)"
        )
    return root


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """One intra-op thread for the whole suite: the tests use tiny tensors, where thread start-up dominates,
    and on a shared 2-core machine OpenMP threads waiting on each other cost 10-50x."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Each test runs in its own empty folder, so nothing a test writes by default (checkpoints, reports)
    lands in the checkout; ``$SEGZOO_DATA`` is pinned first since it defaults to a path relative to it."""
    if "SEGZOO_DATA" not in os.environ:
        monkeypatch.setenv("SEGZOO_DATA", str(shared_data_root().resolve()))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def load_benchmark():
    """A loader of ``benchmarks/<name>.py`` as module ``name`` (registered in ``sys.modules`` while the test
    module runs, so dataclasses and pickling resolve it)."""
    loaded: list[str] = []

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loaded.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
