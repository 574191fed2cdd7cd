"""The small fully convolutional network Kanezaki-style segmentation fits to each image."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

CONV_ORDERS = ("conv-relu-bn", "conv-bn-relu")


class KanezakiNet(nn.Module):
    """Hidden conv blocks, then a 1x1 conv to ``n_channels`` followed by BN (no ReLU); labels = argmax.

    ``conv_order="conv-relu-bn"`` is the ICASSP 2018 / TIP 2020 block, ``"conv-bn-relu"`` the usual one
    (Yonv1943's fast re-implementation). BatchNorm always normalises with the statistics of the current
    input (``track_running_stats=False``): the released code never switches to eval mode, and keeping no
    running buffers means segmenting with a fitted net never changes it.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        kernel_sizes: Sequence[int],
        n_channels: int,
        conv_order: str = "conv-relu-bn",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(widths) != len(kernel_sizes) or not widths:
            raise ValueError(
                f"widths {list(widths)} and kernel_sizes {list(kernel_sizes)} must be non-empty and of "
                "equal length (one entry per hidden conv layer)"
            )
        if conv_order not in CONV_ORDERS:
            raise ValueError(f"conv_order must be one of {CONV_ORDERS}, got {conv_order!r}")
        layers: list[nn.Module] = []
        prev = in_channels
        for width, k in zip(widths, kernel_sizes, strict=True):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd and positive (same-size output), got {k}")
            conv = nn.Conv2d(prev, width, kernel_size=k, padding=k // 2, device="meta")
            bn = nn.BatchNorm2d(width, track_running_stats=False, device="meta")
            act = nn.ReLU(inplace=True)
            layers += [conv, act, bn] if conv_order == "conv-relu-bn" else [conv, bn, act]
            prev = width
        layers += [
            nn.Conv2d(prev, n_channels, kernel_size=1, device="meta"),
            nn.BatchNorm2d(n_channels, track_running_stats=False, device="meta"),
        ]
        # Built on the meta device and initialised from a local generator: the global RNG is untouched.
        self.layers = nn.Sequential(*layers).to_empty(device="cpu")
        self.n_channels = n_channels
        self.reset_parameters(torch.Generator().manual_seed(int(seed)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, n_channels, H, W] for an image batch [B, in_channels, H, W]."""
        return self.layers(x)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default conv initialisation (BN: weight 1, bias 0), drawn from ``generator``."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                with torch.no_grad():
                    weight = torch.empty(module.weight.shape)
                    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
                    module.weight.copy_(weight)
                    if module.bias is not None:
                        fan_in = module.weight[0].numel()
                        bound = 1.0 / math.sqrt(fan_in)
                        bias = torch.empty(module.bias.shape).uniform_(-bound, bound, generator=generator)
                        module.bias.copy_(bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def build_net(
    widths: Sequence[int],
    kernel_sizes: Sequence[int],
    n_channels: int,
    conv_order: str = "conv-relu-bn",
    seed: int = 0,
    in_channels: int = 3,
    device: torch.device | str | None = None,
) -> KanezakiNet:
    """A freshly initialised :class:`KanezakiNet`; the same ``seed`` gives the same weights on any device
    (drawn on the CPU, then moved)."""
    net = KanezakiNet(in_channels, widths, kernel_sizes, n_channels, conv_order, seed=seed)
    return net.to(device) if device is not None else net
