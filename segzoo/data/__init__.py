"""Datasets, transforms and the shared LightningDataModule."""

from segzoo.data.base import SegmentationDataset
from segzoo.data.collate import collate_samples
from segzoo.data.datamodule import SegDataModule
from segzoo.data.transforms import build_transforms

__all__ = ["SegDataModule", "SegmentationDataset", "build_transforms", "collate_samples"]
