"""Segmentation heads, one module per method; importing this package registers their models."""

from segzoo.models.heads import unet
from segzoo.models.heads.unet import ResNetUNetDecoder, UNetDecoder, UNetEncoder

__all__ = ["ResNetUNetDecoder", "UNetDecoder", "UNetEncoder", "unet"]
