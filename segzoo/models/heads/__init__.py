"""Segmentation heads, one module per method; importing this package registers their models."""

from segzoo.models.heads.deeplabv2 import ASPPv2, DeepLabV2Head
from segzoo.models.heads.deeplabv3 import ASPP, DeepLabV3Head, aspp_rates
from segzoo.models.heads.deeplabv3plus import DeepLabV3PlusHead
from segzoo.models.heads.fcn import FCNHead, FCNVGGHead
from segzoo.models.heads.glore import GloReHead, GloReUnit
from segzoo.models.heads.pspnet import PSPHead, PyramidPooling
from segzoo.models.heads.unet import ResNetUNetDecoder, UNetDecoder, UNetEncoder

__all__ = [
    "ASPP",
    "ASPPv2",
    "DeepLabV2Head",
    "DeepLabV3Head",
    "DeepLabV3PlusHead",
    "FCNHead",
    "FCNVGGHead",
    "GloReHead",
    "GloReUnit",
    "PSPHead",
    "PyramidPooling",
    "ResNetUNetDecoder",
    "UNetDecoder",
    "UNetEncoder",
    "aspp_rates",
]
