"""Backbones that return a dict of stage features: torchvision ResNets (output stride 32/16/8) and VGG-16.

Every backbone exposes ``channels`` (feature name -> channel count), ``strides`` (feature name -> its
stride relative to the input, accounting for dilation) and ``out_channels`` (channels of its last
feature). Parameter names equal torchvision's, so a torchvision ImageNet state dict loads directly
(see :func:`segzoo.models.weights.load_weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg

from segzoo.models.weights import load_weights
from segzoo.registry import BACKBONES

VALID_OUTPUT_STRIDES = (8, 16, 32)
RESNET_FEATURES = ("stem", "layer1", "layer2", "layer3", "layer4")


def _dilate_layer(layer: nn.Sequential, dilation: int, first_dilation: int) -> None:
    """Turn a stride-2 ResNet stage into a stride-1 dilated one, in place (the "atrous" conversion).

    The 3x3 conv that carried the stride keeps the previous dilation (``first_dilation``); every 3x3 conv
    after it uses ``dilation``, so each keeps the receptive field it had at the lower resolution. For
    Bottleneck stages this is exactly torchvision's ``replace_stride_with_dilation``; for BasicBlock stages
    (which torchvision refuses to dilate) the stride sits on ``conv1``, so ``conv2`` of the first block is
    dilated too. Done on the conv modules directly because ``BasicBlock`` rejects ``dilation > 1``.
    """
    for block in layer:
        for conv in block.modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            if conv.kernel_size == (3, 3):
                d = first_dilation if conv.stride != (1, 1) else dilation
                conv.stride = (1, 1)
                conv.dilation = (d, d)
                conv.padding = (d, d)
            elif conv.stride != (1, 1):
                # the 1x1 projection of the shortcut
                conv.stride = (1, 1)


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier, returning ``stem`` and ``layer1..4`` features.

    ``output_stride`` 16 dilates ``layer4`` (dilation 2); 8 dilates ``layer3`` (2) and ``layer4`` (4).
    ``stem`` is the stride-2 output of conv1-bn-relu (before the max-pool), used by UNet decoders.
    ``out_features`` restricts the returned features (all five by default): a stage output nobody reads is
    released as soon as the next stage has consumed it, which saves memory and, in inference, about 2%
    of the time of a ResNet-50 at output stride 8 on a CPU (fresh buffers instead of reused ones).
    """

    def __init__(
        self, depth: int = 50, output_stride: int = 32, out_features: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        builders = {
            18: tv_resnet.resnet18,
            34: tv_resnet.resnet34,
            50: tv_resnet.resnet50,
            101: tv_resnet.resnet101,
        }
        if depth not in builders:
            raise ValueError(f"ResNet depth {depth} is not supported; expected one of {sorted(builders)}")
        if output_stride not in VALID_OUTPUT_STRIDES:
            raise ValueError(
                f"output_stride={output_stride} is not supported; expected one of {VALID_OUTPUT_STRIDES}"
            )
        net = builders[depth](weights=None)
        self.depth = depth
        self.output_stride = output_stride
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if output_stride == 8:
            _dilate_layer(self.layer3, dilation=2, first_dilation=1)
            _dilate_layer(self.layer4, dilation=4, first_dilation=2)
        elif output_stride == 16:
            _dilate_layer(self.layer4, dilation=2, first_dilation=1)
        expansion = 4 if depth >= 50 else 1
        self.channels: dict[str, int] = {
            "stem": 64,
            "layer1": 64 * expansion,
            "layer2": 128 * expansion,
            "layer3": 256 * expansion,
            "layer4": 512 * expansion,
        }
        self.strides: dict[str, int] = {
            "stem": 2,
            "layer1": 4,
            "layer2": 8,
            "layer3": min(16, output_stride),
            "layer4": output_stride,
        }
        self.out_channels = self.channels["layer4"]
        self.out_features: list[str] = select_features(out_features)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """The stage features ``stem``, ``layer1`` .. ``layer4`` that are listed in ``out_features``."""
        features: dict[str, Tensor] = {}
        h = self.relu(self.bn1(self.conv1(x)))
        if "stem" in self.out_features:
            features["stem"] = h
        h = self.layer1(self.maxpool(h))
        if "layer1" in self.out_features:
            features["layer1"] = h
        h = self.layer2(h)
        if "layer2" in self.out_features:
            features["layer2"] = h
        h = self.layer3(h)
        if "layer3" in self.out_features:
            features["layer3"] = h
        h = self.layer4(h)
        if "layer4" in self.out_features:
            features["layer4"] = h
        return features

    def adapt_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Drop the ImageNet classifier (``fc.*``) of a torchvision checkpoint; other keys pass through."""
        return {k: v for k, v in state_dict.items() if not k.startswith("fc.")}


def select_features(names: Sequence[str] | None) -> list[str]:
    """``names`` in stage order (all of :data:`RESNET_FEATURES` when None); unknown names are an error."""
    if names is None:
        return list(RESNET_FEATURES)
    unknown = [n for n in names if n not in RESNET_FEATURES]
    if unknown or not names:
        raise ValueError(f"out_features={list(names)}; expected a non-empty subset of {RESNET_FEATURES}")
    return [n for n in RESNET_FEATURES if n in names]


class VGG16Backbone(nn.Module):
    """VGG-16 convolutions plus fc6/fc7 as 7x7 and 1x1 convs (``fc_channels``, 4096 in the classic FCN).

    Returns ``pool3`` (stride 8), ``pool4`` (stride 16) and ``fc7`` (stride 32) features. fc6 is padded by 3
    so inputs of any size >= 32 give a non-empty score map (the original's 100-pixel input padding is not
    needed). A torchvision ``vgg16`` state dict loads with its ``classifier.0/3`` reshaped into fc6/fc7.
    """

    def __init__(self, output_stride: int = 32, fc_channels: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"VGG-16 supports only output_stride=32, got {output_stride}")
        self.output_stride = 32
        self.features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=False)
        self.fc6 = nn.Conv2d(512, fc_channels, kernel_size=7, padding=3)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        # indices (in ``features``) of the max-pools closing blocks 3 and 4
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self._pool3_end = pools[2] + 1
        self._pool4_end = pools[3] + 1
        self.channels: dict[str, int] = {"pool3": 256, "pool4": 512, "fc7": fc_channels}
        self.strides: dict[str, int] = {"pool3": 8, "pool4": 16, "fc7": 32}
        self.out_channels = fc_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Return ``pool3``, ``pool4`` and ``fc7`` features; raises for inputs smaller than 32 pixels."""
        if x.shape[-2] < 32 or x.shape[-1] < 32:
            raise ValueError(f"VGG-16 needs inputs of at least 32x32 pixels, got {x.shape[-2]}x{x.shape[-1]}")
        pool3 = x
        pool4 = x
        h = x
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i + 1 == self._pool3_end:
                pool3 = h
            elif i + 1 == self._pool4_end:
                pool4 = h
        h = self.drop6(self.relu(self.fc6(h)))
        h = self.drop7(self.relu(self.fc7(h)))
        return {"pool3": pool3, "pool4": pool4, "fc7": h}

    def adapt_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map torchvision's fully connected ``classifier.0``/``classifier.3`` onto the fc6/fc7 convs.

        ``classifier.6`` (the 1000-way ImageNet classifier) is dropped.
        """
        out: dict[str, Tensor] = {}
        for key, value in state_dict.items():
            if key.startswith("classifier.0."):
                name = "fc6." + key.split(".")[-1]
                out[name] = value.reshape(-1, 512, 7, 7) if value.dim() == 2 else value
            elif key.startswith("classifier.3."):
                name = "fc7." + key.split(".")[-1]
                out[name] = value.reshape(*value.shape, 1, 1) if value.dim() == 2 else value
            elif key.startswith("classifier.6."):
                continue
            else:
                out[key] = value
        return out


def _resnet_builder(depth: int) -> Callable[..., nn.Module]:
    def build(
        *, output_stride: int = 32, weights: str | Path | None = None, prefix: str | None = None
    ) -> nn.Module:
        model = ResNetBackbone(depth=depth, output_stride=output_stride)
        if weights is not None:
            load_weights(model, weights, prefix=prefix)
        return model

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"ResNet-{depth} backbone (``output_stride`` 8/16/32, optional local ``weights`` file)."
    return build


for _depth in (18, 34, 50, 101):
    BACKBONES.register(f"resnet{_depth}")(_resnet_builder(_depth))


@BACKBONES.register("vgg16")
def vgg16(
    *, output_stride: int = 32, weights: str | Path | None = None, prefix: str | None = None
) -> nn.Module:
    """VGG-16 backbone with fc6/fc7 as convolutions (optional local ``weights`` file)."""
    model = VGG16Backbone(output_stride=output_stride)
    if weights is not None:
        load_weights(model, weights, prefix=prefix)
    return model


def create_backbone(
    name: str, *, output_stride: int = 32, weights: str | Path | None = None, prefix: str | None = None
) -> nn.Module:
    """Build the backbone registered as ``name`` (``resnet18/34/50/101``, ``vgg16``)."""
    return BACKBONES.build(name, output_stride=output_stride, weights=weights, prefix=prefix)


RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def resnet_backbone(
    model: str,
    backbone: str | None,
    output_stride: int | None,
    *,
    default: str = "resnet50",
    default_stride: int = 8,
    features: Sequence[str] | None = None,
) -> ResNetBackbone:
    """Build the ResNet ``backbone`` (or ``default``) for ``model``, with a clear error for other names.

    ``features``: the stage features the model's heads read (see ``ResNetBackbone.out_features``).
    """
    name = default if backbone is None else str(backbone).lower()
    if name not in RESNETS:
        raise ValueError(
            f"model {model!r} takes a ResNet backbone ({', '.join(RESNETS)}), got backbone={backbone!r}"
        )
    stride = default_stride if output_stride is None else output_stride
    encoder = BACKBONES.build(name, output_stride=stride)
    encoder.out_features = select_features(features)
    return encoder


__all__ = [
    "RESNETS",
    "RESNET_FEATURES",
    "ResNetBackbone",
    "VGG16Backbone",
    "create_backbone",
    "resnet_backbone",
    "select_features",
    "VALID_OUTPUT_STRIDES",
]
