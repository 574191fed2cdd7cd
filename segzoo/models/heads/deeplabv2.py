"""DeepLab v2 (Chen et al. 2017): ASPP as a sum of four dilated 3x3 classifiers (also SCOPS's classifier)."""

from __future__ import annotations

from torch import Tensor, nn

from segzoo.models.backbones import resnet_backbone
from segzoo.models.segmentor import Segmentor
from segzoo.registry import HEADS, MODELS


class ASPPv2(nn.Module):
    """Sum of 3x3 convolutions with dilations ``rates`` straight to ``out_channels`` (class scores).

    Works on a plain tensor so other methods (SCOPS) can use it on any feature map. Weights start from
    N(0, 0.01) and biases from zero, as in the reference implementation.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, ...] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=r, dilation=r, bias=True)
                for r in rates
            ]
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Sum of the dilated branches, same spatial size as ``x``."""
        out = self.branches[0](x)
        for i, branch in enumerate(self.branches):
            if i > 0:
                out = out + branch(x)
        return out


@HEADS.register("deeplabv2_head")
class DeepLabV2Head(nn.Module):
    """:class:`ASPPv2` over ``features[in_key]``."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        rates: tuple[int, ...] = (6, 12, 18, 24),
        in_key: str = "layer4",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_key = in_key
        self.aspp = ASPPv2(in_channels, num_classes, rates)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Logits at the resolution of ``features[in_key]``."""
        return self.aspp(features[self.in_key])


@MODELS.register("deeplabv2")
def deeplabv2(
    *,
    num_classes: int,
    backbone: str = "resnet50",
    output_stride: int | None = None,
    aux: bool = False,
    rates: tuple[int, ...] = (6, 12, 18, 24),
) -> Segmentor:
    """DeepLab v2 on a dilated ResNet (default ResNet-50, output stride 8); no auxiliary head."""
    if aux:
        raise ValueError("model 'deeplabv2' has no auxiliary head; use aux=False")
    encoder = resnet_backbone("deeplabv2", backbone, output_stride, default_stride=8, features=["layer4"])
    return Segmentor(encoder, DeepLabV2Head(encoder.channels["layer4"], num_classes, tuple(rates)))


__all__ = ["ASPPv2", "DeepLabV2Head", "deeplabv2"]
