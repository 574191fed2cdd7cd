"""What makes a fit resumable exactly: a checkpoint at the end of every epoch and per-epoch RNG seeds."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from segzoo.data.sampling import derive_seed, seed_global_rngs


class EpochSeeding(Callback):
    """Seed Python's ``random``, NumPy and torch (CPU and accelerators) at the start of every training epoch
    from ``(seed, epoch)``.

    Lightning checkpoints weights, optimizer, scheduler and loop counters but not the global RNG streams, and
    a resumed process starts them from ``seed_everything``. Reseeding per epoch makes dropout, random
    sampling inside ``training_step`` and anything else drawn from the global RNGs during an epoch a
    function of the epoch number alone, whatever happened before (an uninterrupted run, or a resume from
    the checkpoint written at the end of the previous epoch). The data order and augmentations are seeded
    the same way by the datamodule (:mod:`segzoo.data.sampling`). Every DDP rank gets the same seed, as
    with ``seed_everything``: a random branch in ``training_step`` is then taken by all ranks alike, which
    DDP's gradient reduction needs.

    Args:
        seed: base seed; None takes ``seed_everything``'s (``PL_GLOBAL_SEED``), 0 without one.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def base_seed(self) -> int:
        """The seed every epoch's seed is derived from."""
        return int(self.seed if self.seed is not None else os.environ.get("PL_GLOBAL_SEED", 0))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed_global_rngs(derive_seed(self.base_seed(), trainer.current_epoch))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Per batch too, so a run resumed from a mid-epoch checkpoint continues the same streams.
        seed_global_rngs(derive_seed(self.base_seed(), trainer.current_epoch, batch_idx))

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.base_seed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("seed")
        if saved is not None and int(saved) != self.base_seed():
            rank_zero_warn(
                f"EpochSeeding: the checkpoint was written with seed {saved} but this run uses seed "
                f"{self.base_seed()}; the resumed epochs will not repeat the original run "
                f"(pass --seed_everything={saved} to continue it exactly)"
            )


class ResumeCheckpoint(ModelCheckpoint):
    """``<checkpoint dir>/resume.ckpt``, rewritten (atomically, with the segzoo CLI's checkpoint IO) at the
    end of every ``every_n_epochs``-th training epoch, after validation, or with ``every_n_train_steps``
    every that many optimizer steps instead (for long epochs): the checkpoint to resume from.

    Lightning 2.6's ``save_last=True`` writes ``last.ckpt`` only when a top-k checkpoint is saved in the same
    step, so with a monitored metric it holds the last *improvement*, not the last epoch. This callback
    keeps the latest epoch whatever the metrics do. Other arguments are ``ModelCheckpoint``'s (``dirpath``
    fixes the folder, e.g. so a requeued job finds it).
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "resume",
        every_n_epochs: int = 1,
        every_n_train_steps: int | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,
            # Lightning takes one cadence: steps when given (for long epochs), else epochs.
            every_n_epochs=None if every_n_train_steps else every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
