"""DeepLab v3 (Chen et al. 2017): ASPP with image pooling, the structure of torchvision's DeepLabHead."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segzoo.models.backbones import resnet_backbone
from segzoo.models.heads.fcn import FCNHead
from segzoo.models.segmentor import ConvBNReLU, Segmentor
from segzoo.registry import HEADS, MODELS

ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """Atrous rates of the three 3x3 ASPP branches for an output stride (6/12/18 at 16, doubled at 8)."""
    if output_stride not in ASPP_RATES:
        raise ValueError(
            f"no ASPP rates for output_stride={output_stride}; expected one of {sorted(ASPP_RATES)}"
        )
    return ASPP_RATES[output_stride]


class ASPPPooling(nn.Module):
    """Image-level branch: global average pool, 1x1 conv, BN, ReLU, broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvBNReLU(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, out_channels, H, W]`` copies of the pooled descriptor."""
        size = [x.shape[-2], x.shape[-1]]
        return F.interpolate(self.conv(self.pool(x)), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """1x1 conv + three dilated 3x3 convs + image pooling (each ``out_channels``, BN, ReLU), concatenated,
    projected by 1x1 conv + BN + ReLU + dropout (0.5 as in torchvision)."""

    def __init__(
        self, in_channels: int, rates: tuple[int, ...], out_channels: int = 256, dropout: float = 0.5
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(in_channels, out_channels, kernel_size=1)]
        branches += [ConvBNReLU(in_channels, out_channels, kernel_size=3, dilation=r) for r in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvBNReLU(len(branches) * out_channels, out_channels, kernel_size=1), nn.Dropout(dropout)
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        """Multi-scale context features of ``out_channels`` at the input's resolution."""
        outputs = []
        for branch in self.convs:
            outputs.append(branch(x))
        return self.project(torch.cat(outputs, dim=1))


@HEADS.register("deeplabv3_head")
class DeepLabV3Head(nn.Module):
    """ASPP, 3x3 conv 256 + BN + ReLU, 1x1 to classes."""

    def __init__(
        self, in_channels: int, num_classes: int, rates: tuple[int, ...] = (6, 12, 18), in_key: str = "layer4"
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_key = in_key
        self.classifier = nn.Sequential(
            ASPP(in_channels, rates),
            ConvBNReLU(256, 256, kernel_size=3),
            nn.Conv2d(256, num_classes, kernel_size=1),
        )

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Logits at the resolution of ``features[in_key]``."""
        return self.classifier(features[self.in_key])


@MODELS.register("deeplabv3")
def deeplabv3(
    *, num_classes: int, backbone: str = "resnet50", output_stride: int | None = None, aux: bool = False
) -> Segmentor:
    """DeepLab v3 on a ResNet (default ResNet-50, output stride 16); optional aux FCNHead on layer3."""
    features = ["layer3", "layer4"] if aux else ["layer4"]
    encoder = resnet_backbone("deeplabv3", backbone, output_stride, default_stride=16, features=features)
    head = DeepLabV3Head(encoder.channels["layer4"], num_classes, aspp_rates(encoder.output_stride))
    aux_head = FCNHead(encoder.channels["layer3"], num_classes, in_key="layer3") if aux else None
    return Segmentor(encoder, head, aux_head)


__all__ = ["ASPP", "ASPPPooling", "ASPP_RATES", "DeepLabV3Head", "aspp_rates", "deeplabv3"]
