"""The generic segmentation model (a backbone, a head, an optional auxiliary head) and its conv block."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def resize_to(x: Tensor, size: list[int]) -> Tensor:
    """Bilinearly resize ``x`` (``align_corners=False``) to spatial ``size``; a no-op when it already fits."""
    if x.shape[-2] == size[0] and x.shape[-1] == size[1]:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """Conv (no bias, "same" padding for odd kernels) -> BatchNorm -> ReLU, the block every head repeats."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Segmentor(nn.Module):
    """Join a backbone (image -> dict of features) and heads (dict of features -> logits).

    ``forward`` returns ``{"out": logits}`` and, when an auxiliary head is set, ``"aux"``, both upsampled
    to the input size. The three parts are separate attributes (``backbone``, ``head``, ``aux_head``) so a
    training module can give them different learning rates.
    """

    __jit_unused_properties__ = ["num_classes"]

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    @property
    def num_classes(self) -> int:
        """Number of output channels of the main head."""
        return int(self.head.num_classes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Per-pixel class logits ``out`` (and ``aux``) of shape ``[B, num_classes, H, W]``."""
        size = [x.shape[-2], x.shape[-1]]
        features = self.backbone(x)
        result = {"out": resize_to(self.head(features), size)}
        if self.aux_head is not None:
            result["aux"] = resize_to(self.aux_head(features), size)
        return result


__all__ = ["ConvBNReLU", "Segmentor", "resize_to"]
