"""PSPNet (Zhao et al. 2017): pyramid pooling over a dilated ResNet, with an auxiliary FCN head on layer3."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segzoo.models.backbones import resnet_backbone
from segzoo.models.heads.fcn import FCNHead
from segzoo.models.segmentor import ConvBNReLU, Segmentor
from segzoo.registry import HEADS, MODELS


class PyramidPooling(nn.Module):
    """For each bin size: adaptive average pool, 1x1 conv to ``C / len(bins)``, BN, ReLU, upsample back.

    The pooled maps are concatenated with the input, giving ``2 * C`` channels for the four default bins.
    """

    def __init__(self, in_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvBNReLU(in_channels, reduced, kernel_size=1))
                for b in bins
            ]
        )
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate ``x`` with its pooled-and-upsampled context maps."""
        size = [x.shape[-2], x.shape[-1]]
        pooled = [x]
        for stage in self.stages:
            pooled.append(F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False))
        return torch.cat(pooled, dim=1)


@HEADS.register("psp_head")
class PSPHead(nn.Module):
    """Pyramid pooling, 3x3 conv to 512 + BN + ReLU, dropout 0.1, 1x1 to classes."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        bins: tuple[int, ...] = (1, 2, 3, 6),
        channels: int = 512,
        dropout: float = 0.1,
        in_key: str = "layer4",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_key = in_key
        self.ppm = PyramidPooling(in_channels, bins)
        self.bottleneck = ConvBNReLU(self.ppm.out_channels, channels, kernel_size=3)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Logits at the resolution of ``features[in_key]``."""
        return self.classifier(self.dropout(self.bottleneck(self.ppm(features[self.in_key]))))


@MODELS.register("pspnet")
def pspnet(
    *,
    num_classes: int,
    backbone: str = "resnet50",
    output_stride: int | None = None,
    aux: bool = True,
    bins: tuple[int, ...] = (1, 2, 3, 6),
) -> Segmentor:
    """PSPNet on a dilated ResNet (default ResNet-50, output stride 8); aux FCN head on layer3 by default.

    The auxiliary loss weight (0.4 in the paper) belongs to the training module.
    """
    features = ["layer3", "layer4"] if aux else ["layer4"]
    encoder = resnet_backbone("pspnet", backbone, output_stride, default_stride=8, features=features)
    head = PSPHead(encoder.channels["layer4"], num_classes, bins=tuple(bins))
    aux_head = FCNHead(encoder.channels["layer3"], num_classes, in_key="layer3") if aux else None
    return Segmentor(encoder, head, aux_head)


__all__ = ["PSPHead", "PyramidPooling", "pspnet"]
