"""segzoo: supervised, unsupervised and self-supervised image segmentation on PyTorch and Lightning."""

__version__ = "0.1.0"

from segzoo import data  # noqa: E402  (registers the datasets)
from segzoo.data import SegDataModule  # noqa: E402
from segzoo.methods import SupervisedSegmentation  # noqa: E402
from segzoo.models import create_model, list_models  # noqa: E402

__all__ = ["SegDataModule", "SupervisedSegmentation", "__version__", "create_model", "data", "list_models"]
