"""Supervised segmentation models: backbones, heads, the segmentor joining them, and ``create_model``.

>>> import torch
>>> from segzoo.models import create_model
>>> model = create_model("unet", num_classes=3, base_channels=8, depth=2)
>>> model(torch.rand(1, 3, 33, 47))["out"].shape
torch.Size([1, 3, 33, 47])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from segzoo.models import backbones, heads  # noqa: F401  (importing registers the backbones and models)
from segzoo.models.backbones import ResNetBackbone, VGG16Backbone, create_backbone
from segzoo.models.segmentor import Segmentor
from segzoo.models.weights import FrozenBatchNorm2d, freeze_batchnorm, load_weights
from segzoo.registry import MODELS


def list_models() -> list[str]:
    """Sorted names accepted by :func:`create_model`."""
    return MODELS.names()


def create_model(
    name: str,
    num_classes: int,
    *,
    weights: str | Path | None = None,
    weights_prefix: str | None = None,
    backbone_weights: str | Path | None = None,
    backbone_weights_prefix: str | None = None,
    freeze_bn: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build the model registered as ``name`` with ``num_classes`` output channels.

    Architecture keywords (``backbone``, ``output_stride``, ``aux``, ...) go to the model's builder; see
    :func:`list_models`. Weights only ever come from local files:

    - ``weights``: a checkpoint of the whole model (a segzoo/Lightning ``.ckpt`` or a state dict);
    - ``backbone_weights``: weights for the backbone only, e.g. a torchvision ImageNet ResNet state dict or
      a self-supervised checkpoint (the ``online_encoder.``-style prefix is found automatically);
    - ``*_prefix``: the key prefix to select and strip, when the automatic choice is not the right one;
    - ``freeze_bn``: keep the backbone's BatchNorm layers in eval mode with frozen affine parameters.

    ``None`` weights mean random initialisation.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = MODELS.build(name, num_classes=num_classes, **kwargs)
    if backbone_weights is not None:
        load_weights(model.backbone, backbone_weights, prefix=backbone_weights_prefix)
    if weights is not None:
        load_weights(model, weights, prefix=weights_prefix)
    if freeze_bn:
        freeze_batchnorm(model.backbone)
    return model


__all__ = [
    "FrozenBatchNorm2d",
    "ResNetBackbone",
    "Segmentor",
    "VGG16Backbone",
    "create_backbone",
    "create_model",
    "freeze_batchnorm",
    "list_models",
    "load_weights",
]
