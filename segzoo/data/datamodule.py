"""The one LightningDataModule every segzoo method uses."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Subset

import segzoo.data.datasets  # noqa: F401  (fills the dataset registry)
from segzoo.data.base import SegmentationDataset
from segzoo.data.collate import collate_samples
from segzoo.data.sampling import EpochSeededDataset, EpochShuffleSampler
from segzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from segzoo.registry import DATASETS

DEFAULT_DATA_DIR = Path("../shared/data")


def resolve_root(root: str | Path | None) -> Path | None:
    """Expand ``~`` and environment variables in a dataset root. ``$SEGZOO_DATA`` defaults to
    ``../shared/data`` when unset, so configs can say ``root: $SEGZOO_DATA/camvid``."""
    if root is None:
        return None
    text = str(root)
    if "SEGZOO_DATA" in text and "SEGZOO_DATA" not in os.environ:
        text = text.replace("${SEGZOO_DATA}", str(DEFAULT_DATA_DIR)).replace(
            "$SEGZOO_DATA", str(DEFAULT_DATA_DIR)
        )
    return Path(os.path.expanduser(os.path.expandvars(text)))


class SegDataModule(L.LightningDataModule):
    """Datasets, transforms and loaders for every stage.

    Args:
        dataset: registered dataset name (``segzoo models`` lists them).
        root: dataset folder (``$SEGZOO_DATA`` and ``~`` are expanded); ignored by ``synthetic``.
        dataset_kwargs: extra constructor arguments of the dataset (e.g. ``num_classes`` for synthetic).
        train_split, val_split, test_split, predict_split: split names per stage; ``None`` disables a stage.
        holdout: when ``val_split`` is None, this fraction of the training split (chosen with ``seed``)
            becomes the validation set, and also the test set when ``test_split`` is None.
        predict_root: a folder (or image file) of unlabelled images to predict instead of ``predict_split``.
        batch_size, eval_batch_size, num_workers: loader options (``eval_batch_size`` for val/test/predict).
        resize, crop_size, scale_range, hflip, color_jitter, mean, std: the standard transform pipeline
            (see :func:`segzoo.data.transforms.build_transforms`); ``resize`` applies to every stage.
        train_transforms, eval_transforms: replace the standard pipelines entirely.
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        root: str | None = None,
        dataset_kwargs: dict[str, Any] | None = None,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        predict_split: str | None = "test",
        holdout: float = 0.0,
        predict_root: str | None = None,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        resize: int | list[int] | None = None,
        crop_size: int | list[int] | None = None,
        scale_range: list[float] | None = None,
        hflip: float = 0.5,
        color_jitter: float = 0.0,
        mean: list[float] | None = list(IMAGENET_MEAN),  # noqa: B006  (jsonargparse reads the default)
        std: list[float] | None = list(IMAGENET_STD),  # noqa: B006
        seed: int = 0,
        train_transforms: Callable[[dict], dict] | None = None,
        eval_transforms: Callable[[dict], dict] | None = None,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            DATASETS.get(dataset)  # raises with the list of registered names
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {holdout}")
        self.save_hyperparameters(ignore=["train_transforms", "eval_transforms"])
        self.dataset_name = dataset
        self.root = resolve_root(root)
        self.dataset_kwargs = dict(dataset_kwargs or {})
        self.splits = {"train": train_split, "val": val_split, "test": test_split, "predict": predict_split}
        self.holdout = holdout
        self.predict_root = resolve_root(predict_root)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self.seed = seed
        aug = dict(resize=resize, mean=self.mean, std=self.std)
        self.train_transforms = train_transforms or build_transforms(
            True,
            crop_size=crop_size,
            scale_range=scale_range,
            hflip=hflip,
            color_jitter=color_jitter,
            ignore_index=self.ignore_index,
            **aug,
        )
        self.eval_transforms = eval_transforms or build_transforms(False, **aug)
        self.datasets: dict[str, Dataset] = {}
        self._resume_position: tuple[int, int] | None = None

    # -- dataset metadata, available before setup so methods can size their heads ----------------------
    @functools.cached_property
    def reference_dataset(self) -> SegmentationDataset:
        """One instance of the configured dataset, for class names, palette and ignore index."""
        split = next((s for s in self.splits.values() if s is not None), "train")
        return self._build(split, None)

    @property
    def class_names(self) -> list[str]:
        return list(self.reference_dataset.classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def palette(self) -> list[tuple[int, int, int]] | None:
        return self.reference_dataset.palette

    @property
    def ignore_index(self) -> int:
        return int(DATASETS.get(self.dataset_name).ignore_index)

    # -- building -------------------------------------------------------------------------------------
    def _build(
        self, split: str, transforms: Callable | None, name: str | None = None, root: Path | None = None
    ):
        name = name or self.dataset_name
        kwargs = {} if name != self.dataset_name else self.dataset_kwargs
        return DATASETS.get(name)(root=root or self.root, split=split, transforms=transforms, **kwargs)

    @property
    def has_val(self) -> bool:
        """Whether a validation set is configured (a split, or a holdout of the training split)."""
        return self.splits["val"] is not None or self.holdout > 0

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs (``fit`` builds train, and val when there is one)."""
        fit = ("train", "val") if self.has_val else ("train",)
        wanted = {"fit": fit, "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        if stage == "predict" and isinstance(self.datasets.get("predict"), Subset):
            # Each predict run starts from every input; skip_predict of an earlier run is undone.
            self.datasets["predict"] = self.datasets["predict"].dataset
        for part in wanted.get(stage, ("train", "val", "test", "predict")) if stage else fit:
            if part not in self.datasets:
                self._setup_part(part)

    def _setup_part(self, part: str) -> None:
        if part == "predict" and self.predict_root is not None:
            self.datasets[part] = self._build("all", self.eval_transforms, "image_folder", self.predict_root)
            return
        no_test_split = part == "test" and self.splits["test"] is None
        uses_holdout = part in ("train", "val", "train_eval") or no_test_split
        if uses_holdout and self.splits["val"] is None and self.holdout > 0:
            self.datasets.update(self._holdout_split())
            return
        split = self.splits["train" if part == "train_eval" else part]
        if split is None:
            raise ValueError(f"no {part} split configured (data.{part}_split is null)")
        transforms = self.train_transforms if part == "train" else self.eval_transforms
        self.datasets[part] = self._build(split, transforms)

    def _holdout_split(self) -> dict[str, Dataset]:
        split = self.splits["train"]
        train_full = self._build(split, self.train_transforms)
        eval_full = self._build(split, self.eval_transforms)
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(train_full), generator=generator).tolist()
        n_val = max(1, round(len(order) * self.holdout))
        train_idx, val_idx = sorted(order[n_val:]), sorted(order[:n_val])
        return {
            "train": Subset(train_full, train_idx),
            "val": Subset(eval_full, val_idx),
            "train_eval": Subset(eval_full, train_idx),
            "test": Subset(eval_full, val_idx),
        }

    # -- loaders --------------------------------------------------------------------------------------
    def _loader(self, part: str, batch_size: int, shuffle: bool) -> DataLoader:
        if part not in self.datasets:
            self._setup_part(part)
        dataset = self.datasets[part]
        sampler = None
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        drop_last = shuffle and len(dataset) > batch_size
        if shuffle:
            # Order and augmentations are functions of (seed, epoch, sample): a run resumed from an
            # end-of-epoch checkpoint repeats an uninterrupted run exactly (see segzoo.data.sampling).
            epoch, done = self._train_position()
            dataset = EpochSeededDataset(dataset, self.seed)
            sampler = EpochShuffleSampler(
                dataset, num_replicas=world, rank=rank, seed=self.seed, epoch=epoch, skip=done * batch_size
            )
        elif world > 1:
            # The default DistributedSampler pads with repeated samples; those would count twice in metrics.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=drop_last,
            collate_fn=functools.partial(collate_samples, ignore_index=self.ignore_index),
        )

    # -- resuming -------------------------------------------------------------------------------------
    def _fit_position(self) -> tuple[int, int]:
        """``(epoch, batches already trained in it)`` of the fit loop: where a resumed run continues."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        epochs = trainer.fit_loop.epoch_progress.current
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if epochs.started == epochs.processed:  # between epochs
            return epochs.processed, 0
        if batches >= trainer.num_training_batches:  # the epoch's batches are done (validation end, ...)
            return epochs.processed + 1, 0
        return epochs.processed, batches

    def _train_position(self) -> tuple[int, int]:
        """Where a new training loader starts. Loader workers draw their first indices when the loader is
        created, before Lightning's ``set_epoch``; on a resume that can happen before the loop counters are
        restored (``estimated_stepping_batches`` builds the loader early), and Lightning then starts the
        loader from its first batch, so the position restored with this datamodule's state is used, once."""
        position, self._resume_position = self._resume_position, None
        return self._fit_position() if position is None else position

    def state_dict(self) -> dict[str, Any]:
        if self.trainer is None:
            return {}
        epoch, batches = self._fit_position()
        return {"next_train_epoch": epoch, "train_batches_done": batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "next_train_epoch" in state_dict:
            epoch, batches = state_dict["next_train_epoch"], state_dict.get("train_batches_done", 0)
            self._resume_position = (int(epoch), int(batches))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        # No validation set (e.g. self-supervised pretraining): an empty list tells Lightning to skip it.
        if not self.has_val and self.trainer is not None and self.trainer.state.fn == "fit":
            return []
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.eval_batch_size, shuffle=False)

    # -- resuming predict runs ----------------------------------------------------------------------
    def predict_sources(self) -> list[str] | None:
        """The input file of every predict sample, in loader order, without reading any image: known for
        ``predict_root`` folders (what :class:`~segzoo.callbacks.PredictionWriter` uses to leave finished
        inputs out before the model runs); None for dataset splits."""
        if "predict" not in self.datasets:
            self._setup_part("predict")
        dataset = self.datasets["predict"]
        files = getattr(dataset, "files", None) if self.predict_root is not None else None
        if isinstance(dataset, Subset) or files is None:
            return None
        return [str(path) for path in files]

    def skip_predict(self, positions: list[int]) -> None:
        """Leave the predict samples at these positions of :meth:`predict_sources` out of the predict loader
        (their outputs are already written); the next ``setup("predict")`` brings them back."""
        dataset = self.datasets["predict"]
        drop = set(positions)
        if isinstance(dataset, Subset) or not drop <= set(range(len(dataset))):
            raise ValueError(
                f"skip_predict: positions {sorted(drop)} do not index the {len(dataset)} unfiltered predict "
                "samples; expected positions of predict_sources() after setup('predict')"
            )
        self.datasets["predict"] = Subset(dataset, [i for i in range(len(dataset)) if i not in drop])

    def train_eval_dataloader(self) -> DataLoader:
        """The training split (without the holdout) with evaluation transforms, in order: for protocols that
        fit on training outputs, such as the landmark regression of part-based methods."""
        return self._loader("train_eval", self.eval_batch_size, shuffle=False)
