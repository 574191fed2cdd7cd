"""UNet: the classic encoder-decoder (Ronneberger et al. 2015) and a UNet decoder on a ResNet encoder.

Classic: encoder of (conv3x3-BN-ReLU x2, maxpool) repeated ``depth`` times plus a bottleneck; decoder of
(2x2 transposed conv, concatenate the skip, conv3x3-BN-ReLU x2); 1x1 to classes. The transposed convs are
given the skip's size, so any input of at least ``2**depth`` pixels per side works (no divisibility rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segzoo.models.backbones import resnet_backbone
from segzoo.models.segmentor import ConvBNReLU, Segmentor
from segzoo.registry import HEADS, MODELS


class DoubleConv(nn.Sequential):
    """Two conv3x3-BN-ReLU blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels))


class UNetEncoder(nn.Module):
    """Classic UNet encoder; returns ``enc0`` (full resolution) .. ``enc{depth}`` (the bottleneck)."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64, depth: int = 4) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"UNet depth must be >= 1, got {depth}")
        if base_channels < 1:
            raise ValueError(f"UNet base_channels must be >= 1, got {base_channels}")
        self.depth = depth
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.blocks = nn.ModuleList(
            [DoubleConv(in_channels, widths[0])]
            + [DoubleConv(widths[i - 1], widths[i]) for i in range(1, depth + 1)]
        )
        self.pool = nn.MaxPool2d(2)
        self.channels: dict[str, int] = {f"enc{i}": w for i, w in enumerate(widths)}
        self.strides: dict[str, int] = {f"enc{i}": 2**i for i in range(depth + 1)}
        self.out_channels = widths[-1]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Features at strides 1, 2, .., ``2**depth``; raises when the input is too small to pool."""
        minimum = 2**self.depth
        if x.shape[-2] < minimum or x.shape[-1] < minimum:
            raise ValueError(
                f"UNet of depth {self.depth} needs inputs of at least {minimum}x{minimum} pixels, "
                f"got {x.shape[-2]}x{x.shape[-1]}"
            )
        features: dict[str, Tensor] = {}
        h = x
        for i, block in enumerate(self.blocks):
            if i > 0:
                h = self.pool(h)
            h = block(h)
            features[f"enc{i}"] = h
        return features


class UNetUp(nn.Module):
    """2x2 transposed conv to the skip's size and width, concatenation with the skip, two convs."""

    def __init__(self, in_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * skip_channels, skip_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Upsample ``x`` to ``skip``'s size (output_padding absorbs odd sizes), fuse, convolve."""
        x = self.up(x, output_size=[skip.shape[-2], skip.shape[-1]])
        return self.conv(torch.cat([skip, x], dim=1))


@HEADS.register("unet_decoder")
class UNetDecoder(nn.Module):
    """Classic UNet decoder over the features of :class:`UNetEncoder`, ending in a 1x1 to classes."""

    def __init__(self, encoder_channels: list[int], num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.depth = len(encoder_channels) - 1
        self.ups = nn.ModuleList(
            [UNetUp(encoder_channels[i + 1], encoder_channels[i]) for i in reversed(range(self.depth))]
        )
        self.classifier = nn.Conv2d(encoder_channels[0], num_classes, kernel_size=1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Logits at the encoder's full resolution."""
        x = features[f"enc{self.depth}"]
        for i, up in enumerate(self.ups):
            x = up(x, features[f"enc{self.depth - 1 - i}"])
        return self.classifier(x)


class UpFuse(nn.Module):
    """Nearest upsampling to the skip's size, concatenation, two convs (decoder block on a ResNet)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Fuse ``x`` with ``skip`` at ``skip``'s resolution."""
        x = F.interpolate(x, size=[skip.shape[-2], skip.shape[-1]], mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


@HEADS.register("resnet_unet_decoder")
class ResNetUNetDecoder(nn.Module):
    """UNet decoder on ResNet features: fuse layer3, layer2, layer1 and stem, then a last 2x block.

    The output is at stride 1 up to rounding; the segmentor resizes it to the exact input size.
    """

    SKIPS = ("layer3", "layer2", "layer1", "stem")

    def __init__(
        self,
        encoder_channels: dict[str, int],
        num_classes: int,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    ) -> None:
        super().__init__()
        if len(decoder_channels) != len(self.SKIPS) + 1:
            raise ValueError(f"decoder_channels needs {len(self.SKIPS) + 1} entries, got {decoder_channels}")
        self.num_classes = num_classes
        self.skip_keys: list[str] = list(self.SKIPS)
        blocks = []
        width = encoder_channels["layer4"]
        for skip, out in zip(self.SKIPS, decoder_channels[:-1], strict=True):
            blocks.append(UpFuse(width, encoder_channels[skip], out))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.final = DoubleConv(width, decoder_channels[-1])
        self.classifier = nn.Conv2d(decoder_channels[-1], num_classes, kernel_size=1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Logits at twice the stem's resolution."""
        x = features["layer4"]
        for i, block in enumerate(self.blocks):
            x = block(x, features[self.skip_keys[i]])
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.classifier(self.final(x))


@MODELS.register("unet")
def unet(
    *,
    num_classes: int,
    backbone: str | None = None,
    in_channels: int = 3,
    base_channels: int = 64,
    depth: int = 4,
    output_stride: int | None = None,
    aux: bool = False,
) -> Segmentor:
    """UNet: classic when ``backbone`` is None, else a UNet decoder on a ResNet (``resnet18/34/50/101``).

    ``base_channels``/``depth``/``in_channels`` apply to the classic encoder only.
    """
    if aux:
        raise ValueError("model 'unet' has no auxiliary head; use aux=False")
    if backbone is None:
        if output_stride not in (None, 2**depth):
            raise ValueError(
                f"the classic 'unet' has a fixed output stride (2**depth = {2**depth}), "
                f"got output_stride={output_stride}"
            )
        encoder = UNetEncoder(in_channels=in_channels, base_channels=base_channels, depth=depth)
        widths = [encoder.channels[f"enc{i}"] for i in range(depth + 1)]
        return Segmentor(encoder, UNetDecoder(widths, num_classes))
    if in_channels != 3 or base_channels != 64 or depth != 4:
        raise ValueError(
            f"in_channels/base_channels/depth configure the classic UNet only; with backbone={backbone!r} "
            "leave "
            f"them at 3/64/4 (got {in_channels}/{base_channels}/{depth})"
        )
    encoder = resnet_backbone("unet", backbone, output_stride, default_stride=32)
    return Segmentor(encoder, ResNetUNetDecoder(encoder.channels, num_classes))


__all__ = ["DoubleConv", "ResNetUNetDecoder", "UNetDecoder", "UNetEncoder", "unet"]
