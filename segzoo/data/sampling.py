"""Training order and augmentation randomness that depend only on (seed, epoch, sample), so a run resumed
from an end-of-epoch checkpoint sees exactly the batches and augmentations an uninterrupted run sees."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, get_worker_info


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (e.g. seed, epoch, index): independent streams for distinct tuples."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_global_rngs(seed: int, accelerators: bool = True) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's CPU generator, and with
    ``accelerators`` every accelerator's too (``torch.manual_seed``, ~100x slower than the CPU alone)."""
    random.seed(seed)
    # The legacy global generator on purpose: it is what third-party transforms draw from.
    np.random.seed(seed % 2**32)  # noqa: NPY002
    if accelerators:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Run the body with the global CPU RNGs seeded to ``seed``. In the main process (``num_workers=0``)
    the caller's states are given back after, so loading data never shifts the model's random stream;
    loader workers have no other use for theirs and skip that (saving NumPy's state costs ~0.1 ms)."""
    if get_worker_info() is not None:
        seed_global_rngs(seed, accelerators=False)
        yield
        return
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):  # the CPU generator; transforms run on the CPU
        seed_global_rngs(seed, accelerators=False)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)  # noqa: NPY002


class EpochShuffleSampler(DistributedSampler):
    """A shuffling sampler whose permutation is a function of ``(seed, epoch)`` only (DistributedSampler's
    ``seed + epoch`` generator), yielding ``(epoch, index)`` pairs for :class:`EpochSeededDataset`.

    Lightning calls ``set_epoch`` before each training epoch and leaves a ``DistributedSampler`` in place
    under DDP (each rank takes its share, as Lightning's own sampler would). ``epoch`` sets the first epoch:
    loader workers can draw indices before Lightning's ``set_epoch`` on the first epoch of a resumed run.
    ``skip`` leaves out the first samples of this rank's share once, if the first iteration is of ``epoch``:
    the samples a run resumed from a mid-epoch checkpoint has already trained on.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        epoch: int = 0,
        skip: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.set_epoch(epoch)
        self._skip_epoch, self._skip = epoch, int(skip)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        skip = self._skip if epoch == self._skip_epoch else 0
        self._skip = 0
        return ((epoch, int(i)) for i in list(super().__iter__())[skip:])


class EpochSeededDataset(Dataset):
    """``dataset[index]`` loaded with the global RNGs seeded from ``(seed, epoch, index)``: random
    augmentations are the same in any worker, with any ``num_workers``, and after a resume. Indexed by the
    ``(epoch, index)`` pairs of :class:`EpochShuffleSampler`."""

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Sequence[int]) -> dict:
        if not (isinstance(key, Sequence) and len(key) == 2):
            raise TypeError(
                f"EpochSeededDataset: got index {key!r}; expected an (epoch, index) pair "
                "from EpochShuffleSampler"
            )
        epoch, index = key
        with seeded_rngs(derive_seed(self.seed, epoch, index)):
            return self.dataset[index]
