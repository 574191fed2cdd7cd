"""DeepLab v3+ (Chen et al. 2018): the v3 ASPP encoder plus a decoder fusing stride-4 features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segzoo.models.backbones import resnet_backbone
from segzoo.models.heads.deeplabv3 import ASPP, aspp_rates
from segzoo.models.heads.fcn import FCNHead
from segzoo.models.segmentor import ConvBNReLU, Segmentor
from segzoo.registry import HEADS, MODELS


@HEADS.register("deeplabv3plus_head")
class DeepLabV3PlusHead(nn.Module):
    """ASPP on ``in_key``; low-level ``low_key`` features projected to 48 channels and concatenated with the
    ASPP output upsampled to their size; two 3x3 convs of 256 (BN, ReLU); 1x1 to classes.

    The ASPP projection uses dropout 0.1, as in the reference TensorFlow implementation.
    """

    def __init__(
        self,
        in_channels: int,
        low_level_channels: int,
        num_classes: int,
        rates: tuple[int, ...] = (6, 12, 18),
        in_key: str = "layer4",
        low_key: str = "layer1",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_key = in_key
        self.low_key = low_key
        self.aspp = ASPP(in_channels, rates, out_channels=256, dropout=0.1)
        self.low_project = ConvBNReLU(low_level_channels, 48, kernel_size=1)
        self.fuse = nn.Sequential(ConvBNReLU(256 + 48, 256), ConvBNReLU(256, 256))
        self.classifier = nn.Conv2d(256, num_classes, kernel_size=1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Logits at the resolution of ``features[low_key]`` (stride 4)."""
        low = self.low_project(features[self.low_key])
        context = F.interpolate(
            self.aspp(features[self.in_key]),
            size=[low.shape[-2], low.shape[-1]],
            mode="bilinear",
            align_corners=False,
        )
        return self.classifier(self.fuse(torch.cat([context, low], dim=1)))


@MODELS.register("deeplabv3plus")
def deeplabv3plus(
    *, num_classes: int, backbone: str = "resnet50", output_stride: int | None = None, aux: bool = False
) -> Segmentor:
    """DeepLab v3+ on a ResNet (default ResNet-50, output stride 16); optional aux FCN head on layer3."""
    features = ["layer1", "layer3", "layer4"] if aux else ["layer1", "layer4"]
    encoder = resnet_backbone("deeplabv3plus", backbone, output_stride, default_stride=16, features=features)
    head = DeepLabV3PlusHead(
        encoder.channels["layer4"], encoder.channels["layer1"], num_classes, aspp_rates(encoder.output_stride)
    )
    aux_head = FCNHead(encoder.channels["layer3"], num_classes, in_key="layer3") if aux else None
    return Segmentor(encoder, head, aux_head)


__all__ = ["DeepLabV3PlusHead", "deeplabv3plus"]
