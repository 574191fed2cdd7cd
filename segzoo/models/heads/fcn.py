"""FCN (Long et al. 2015): the classic FCN-32s/16s/8s on VGG-16 and the FCNHead used on dilated ResNets."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from segzoo.models.backbones import VGG16Backbone, resnet_backbone
from segzoo.models.segmentor import Segmentor
from segzoo.registry import HEADS, MODELS


@HEADS.register("fcn_head")
class FCNHead(nn.Module):
    """3x3 conv to ``in_channels // 4``, BN, ReLU, dropout 0.1, 1x1 to classes (torchvision's FCNHead)."""

    def __init__(
        self, in_channels: int, num_classes: int, in_key: str = "layer4", dropout: float = 0.1
    ) -> None:
        super().__init__()
        inter = in_channels // 4
        self.num_classes = num_classes
        self.in_key = in_key
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, inter, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(inter, num_classes, kernel_size=1),
        )

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Logits at the resolution of ``features[in_key]``."""
        return self.block(features[self.in_key])


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """Weights that make a ``channels -> channels`` ConvTranspose2d upsample each channel bilinearly."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    grid = torch.arange(kernel_size, dtype=torch.float32)
    line = 1 - (grid - center).abs() / factor
    kernel = line[:, None] * line[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = kernel
    return weight


class Upsample2x(nn.ConvTranspose2d):
    """Learnable 2x upsampling of score maps, initialised to bilinear interpolation."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, kernel_size=4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, 4))


@HEADS.register("fcn_vgg_head")
class FCNVGGHead(nn.Module):
    """Score layers and skip fusion of FCN-32s/16s/8s over :class:`VGG16Backbone` features.

    fc7 is scored and, for 16s/8s, upsampled 2x (learnable, bilinear-initialised) and summed with the score
    of pool4, and for 8s once more with the score of pool3. Each upsampling is told the skip's size, so odd
    sizes need no cropping. The output, at stride 32/16/8, is resized to the input by the segmentor (the
    original's fixed bilinear deconvolution). Score layers start at zero as in the paper.
    """

    def __init__(self, num_classes: int, stride: int = 8, in_channels: int = 4096) -> None:
        super().__init__()
        if stride not in (8, 16, 32):
            raise ValueError(f"FCN-VGG output stride must be 8, 16 or 32, got {stride}")
        self.num_classes = num_classes
        self.stride = stride
        self.score_fr = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        self.score_pool4 = nn.Conv2d(512, num_classes, kernel_size=1) if stride <= 16 else None
        self.upscore2 = Upsample2x(num_classes) if stride <= 16 else None
        self.score_pool3 = nn.Conv2d(256, num_classes, kernel_size=1) if stride == 8 else None
        self.upscore_pool4 = Upsample2x(num_classes) if stride == 8 else None
        for conv in (self.score_fr, self.score_pool4, self.score_pool3):
            if conv is not None:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Fused class scores at stride ``self.stride``."""
        score = self.score_fr(features["fc7"])
        if self.score_pool4 is not None and self.upscore2 is not None:
            pool4 = features["pool4"]
            score = self.upscore2(score, output_size=[pool4.shape[-2], pool4.shape[-1]]) + self.score_pool4(
                pool4
            )
        if self.score_pool3 is not None and self.upscore_pool4 is not None:
            pool3 = features["pool3"]
            score = self.upscore_pool4(
                score, output_size=[pool3.shape[-2], pool3.shape[-1]]
            ) + self.score_pool3(pool3)
        return score


def _fcn_vgg(
    name: str,
    stride: int,
    num_classes: int,
    backbone: str | None,
    output_stride: int | None,
    aux: bool,
    fc_channels: int,
) -> Segmentor:
    if backbone is not None and str(backbone).lower() != "vgg16":
        raise ValueError(
            f"model {name!r} is the classic FCN on VGG-16 and takes no other backbone, got "
            f"backbone={backbone!r}; use model 'fcn' for the FCN head on a ResNet"
        )
    if output_stride not in (None, 32):
        raise ValueError(f"model {name!r} uses VGG-16 at output stride 32, got output_stride={output_stride}")
    if aux:
        raise ValueError(f"model {name!r} has no auxiliary head; use aux=False")
    encoder = VGG16Backbone(fc_channels=fc_channels)
    return Segmentor(encoder, FCNVGGHead(num_classes, stride=stride, in_channels=fc_channels))


@MODELS.register("fcn32s")
def fcn32s(
    *,
    num_classes: int,
    backbone: str | None = None,
    output_stride: int | None = None,
    aux: bool = False,
    fc_channels: int = 4096,
) -> Segmentor:
    """FCN-32s: VGG-16, fc7 scores upsampled 32x."""
    return _fcn_vgg("fcn32s", 32, num_classes, backbone, output_stride, aux, fc_channels)


@MODELS.register("fcn16s")
def fcn16s(
    *,
    num_classes: int,
    backbone: str | None = None,
    output_stride: int | None = None,
    aux: bool = False,
    fc_channels: int = 4096,
) -> Segmentor:
    """FCN-16s: VGG-16, fc7 scores fused with pool4 scores, upsampled 16x."""
    return _fcn_vgg("fcn16s", 16, num_classes, backbone, output_stride, aux, fc_channels)


@MODELS.register("fcn8s")
def fcn8s(
    *,
    num_classes: int,
    backbone: str | None = None,
    output_stride: int | None = None,
    aux: bool = False,
    fc_channels: int = 4096,
) -> Segmentor:
    """FCN-8s: VGG-16, fc7 scores fused with pool4 and pool3 scores, upsampled 8x.

    ``fc_channels`` is the width of fc6/fc7 (4096 in the paper; smaller values make a light variant).
    """
    return _fcn_vgg("fcn8s", 8, num_classes, backbone, output_stride, aux, fc_channels)


@MODELS.register("fcn")
def fcn(
    *, num_classes: int, backbone: str = "resnet50", output_stride: int | None = None, aux: bool = False
) -> Segmentor:
    """FCNHead on a dilated ResNet (default ResNet-50 at output stride 8), optional aux FCNHead on layer3."""
    encoder = resnet_backbone(
        "fcn", backbone, output_stride, default_stride=8, features=["layer3", "layer4"] if aux else ["layer4"]
    )
    head = FCNHead(encoder.channels["layer4"], num_classes)
    aux_head = FCNHead(encoder.channels["layer3"], num_classes, in_key="layer3") if aux else None
    return Segmentor(encoder, head, aux_head)


__all__ = ["FCNHead", "FCNVGGHead", "Upsample2x", "bilinear_kernel", "fcn", "fcn8s", "fcn16s", "fcn32s"]
