"""Frozen feature extractors for losses that compare against fixed features (SCOPS semantic consistency).

Weights come only from local files (segzoo never downloads). Every extractor is always in eval mode, has no
trainable parameters, expects an ImageNet-normalised image ``[B, 3, H, W]`` (what ``SegDataModule`` gives
with its default mean/std) and returns one tensor ``[B, out_channels, h, w]``: the requested layers
upsampled (bilinear) to the largest of their resolutions and concatenated along channels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from kornia.feature import DenseSIFTDescriptor
from torch import Tensor, nn
from torchvision.models import vgg as tv_vgg

from segzoo.data.transforms import IMAGENET_STD
from segzoo.models.backbones import create_backbone
from segzoo.models.weights import load_weights

FEATURE_KINDS = ("vgg19", "backbone", "dense_sift")
_LUMA = (0.299, 0.587, 0.114)


def _vgg19_layers() -> dict[str, tuple[int, int]]:
    """Every named layer of torchvision's ``vgg19().features``: name -> (index, output channels)."""
    layers: dict[str, tuple[int, int]] = {}
    index, block, conv, channels = 0, 1, 0, 3
    for item in tv_vgg.cfgs["E"]:
        if item == "M":
            layers[f"pool{block}"] = (index, channels)
            index, block, conv = index + 1, block + 1, 0
        else:
            conv, channels = conv + 1, int(item)
            layers[f"conv{block}_{conv}"] = (index, channels)
            layers[f"relu{block}_{conv}"] = (index + 1, channels)
            index += 2
    return layers


VGG19_LAYERS = _vgg19_layers()


def _concat(maps: Sequence[Tensor]) -> Tensor:
    """Upsample every map to the largest spatial size among them and concatenate along channels."""
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    return torch.cat(
        [
            m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in maps
        ],
        dim=1,
    )


class _Frozen(nn.Module):
    """Base class: no trainable parameters and always in eval mode, whatever ``train()`` is called with."""

    def freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _Frozen:
        """Ignore ``mode``: a frozen extractor always runs in eval mode (BatchNorm statistics never move)."""
        return super().train(False)


class VGG19Features(_Frozen):
    """torchvision VGG-19 convolutions up to the last requested layer, loaded from a local state dict.

    Args:
        weights: a local file with ``torchvision.models.vgg19`` weights (``features.*`` keys; the
            ``classifier.*`` keys are ignored), e.g. saved with ``torch.save(vgg19(weights=...).state_dict(),
            path)`` on a machine that has them.
        layers: torchvision layer names, default SCOPS's ``relu5_2`` and ``relu5_4`` (indices 31 and 35 of
            ``vgg19().features``; 512 + 512 = 1024 channels at stride 16).
        prefix: key prefix to strip from the file (found automatically when None).
    """

    def __init__(
        self,
        weights: str | Path,
        layers: Sequence[str] = ("relu5_2", "relu5_4"),
        prefix: str | None = None,
    ) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in VGG19_LAYERS]
        if not layers or unknown:
            raise ValueError(
                f"VGG19Features: unknown layers {unknown or list(layers)}; expected names such as relu5_2, "
                f"relu5_4 (one of {', '.join(VGG19_LAYERS)})"
            )
        self.layers = tuple(layers)
        self.indices = tuple(VGG19_LAYERS[name][0] for name in self.layers)
        full = tv_vgg.make_layers(tv_vgg.cfgs["E"], batch_norm=False)
        self.features = nn.Sequential(*list(full)[: max(self.indices) + 1])
        for module in self.features:
            if isinstance(module, nn.ReLU):
                # the outputs we keep must not be overwritten by a later in-place op
                module.inplace = False
        self.out_channels = sum(VGG19_LAYERS[name][1] for name in self.layers)
        load_weights(self, weights, prefix=prefix)
        self.freeze()

    def adapt_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Keep the ``features.*`` keys this truncated network has; drop the classifier and later layers."""
        own = set(self.state_dict())
        return {
            k: v for k, v in state_dict.items() if k in own or not k.startswith(("classifier.", "features."))
        }

    def forward(self, x: Tensor) -> Tensor:
        """Concatenated layer outputs ``[B, out_channels, H/s, W/s]`` (s = 16 for relu5_*)."""
        wanted = set(self.indices)
        outputs: dict[int, Tensor] = {}
        h = x
        for index, module in enumerate(self.features):
            h = module(h)
            if index in wanted:
                outputs[index] = h
        return _concat([outputs[i] for i in self.indices])


class BackboneFeatures(_Frozen):
    """Stage features of a segzoo ResNet backbone loaded from a local file (torchvision, segzoo or R2O).

    Args:
        backbone: ``resnet18/34/50/101``.
        weights: local weights file: a torchvision ResNet state dict, a segzoo ``.ckpt`` or a
            self-supervised checkpoint such as R2O's (the key prefix, e.g. ``online_encoder.``, is found
            automatically unless ``prefix`` is given).
        layers: stages to concatenate (``stem``, ``layer1`` .. ``layer4``).
        output_stride: 8, 16 or 32; 16 (layer4 dilated) gives layer3 and layer4 the same resolution, the
            stride of VGG-19's relu5 features.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        weights: str | Path | None = None,
        layers: Sequence[str] = ("layer3", "layer4"),
        output_stride: int = 16,
        prefix: str | None = None,
    ) -> None:
        super().__init__()
        if weights is None:
            raise ValueError(_missing_weights_message("backbone"))
        self.backbone = create_backbone(backbone, output_stride=output_stride, weights=weights, prefix=prefix)
        unknown = [name for name in layers if name not in self.backbone.channels]
        if not layers or unknown:
            raise ValueError(
                f"BackboneFeatures: unknown layers {unknown or list(layers)} for {backbone}; expected "
                "some of "
                f"{', '.join(self.backbone.channels)}"
            )
        self.layers = tuple(layers)
        self.out_channels = sum(self.backbone.channels[name] for name in self.layers)
        self.freeze()

    def forward(self, x: Tensor) -> Tensor:
        """Concatenated stage features ``[B, out_channels, h, w]`` at the finest requested resolution."""
        features = self.backbone(x)
        return _concat([features[name] for name in self.layers])


class DenseSIFTFeatures(_Frozen):
    """Dense SIFT descriptors (kornia's ``DenseSIFTDescriptor``, RootSIFT) of the luminance: a hand-made
    frozen feature that needs no weights file.

    Every pixel gets the 128-d descriptor of the 4 x 4 cells of ``bin_size`` pixels around it (gradient
    orientation histograms, so eyes, brows, nostrils and lips differ); the map is average-pooled by
    ``stride``. It stands in for pretrained features where none exist: on Helen faces its own K-means
    clusters locate landmarks better than a fixed grid, unlike R2O features trained here (docs/scops.md).

    Args:
        bin_size: side of one of the 4 x 4 spatial cells in pixels, even (the descriptor spans 4 x bin_size).
        stride: output stride (average pooling of the per-pixel descriptors).
        std: the per-channel standard deviation the input was normalised with; with it the luminance
            ``0.299 R + 0.587 G + 0.114 B`` is recovered up to an offset, which SIFT ignores.
    """

    def __init__(self, bin_size: int = 8, stride: int = 4, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        for name, value in (("bin_size", bin_size), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DenseSIFTFeatures: {name} must be a positive int, got {value!r}")
        if bin_size % 2:
            # 4 cells of odd width centre the descriptor between two pixels
            raise ValueError(f"DenseSIFTFeatures: bin_size must be even, got {bin_size}")
        if len(std) != 3 or min(std) <= 0:
            raise ValueError(f"DenseSIFTFeatures: std must be 3 positive numbers, got {list(std)!r}")
        self.descriptor = DenseSIFTDescriptor(spatial_bin_size=bin_size, padding=(3 * bin_size) // 2)
        self.stride = stride
        luma = [w * s for w, s in zip(_LUMA, std, strict=True)]
        self.register_buffer("luma", torch.tensor(luma).view(1, 3, 1, 1))
        self.out_channels = self.descriptor.num_ang_bins * self.descriptor.num_spatial_bins**2
        self.freeze()

    def forward(self, x: Tensor) -> Tensor:
        """Descriptors ``[B, 128, H/stride, W/stride]`` (unit vectors before pooling)."""
        gray = (x * self.luma).sum(dim=1, keepdim=True)
        # [H + 1, W + 1] descriptors centred half a pixel up and left of each pixel (even bin sizes); the
        # mean of each 2 x 2 neighbourhood centres them on the pixels (translation-equivariant, unlike a
        # resize), then pooling by the stride as a backbone's feature map would
        descriptors = F.avg_pool2d(self.descriptor(gray), 2, stride=1)
        return F.avg_pool2d(descriptors, self.stride, ceil_mode=True) if self.stride > 1 else descriptors


def _missing_weights_message(kind: str) -> str:
    return (
        f"feature extractor {kind!r} needs a local weights file (weights=None given; segzoo never downloads "
        "and never uses random features for this). Give the path of a local file (e.g. feature_weights: "
        "$SEGZOO_WEIGHTS/vgg19.pth, a torchvision vgg19 state dict), or disable the semantic consistency "
        "term explicitly with semantic_weight: 0 and features: null."
    )


def resolve_path(path: str | Path) -> Path:
    """Expand ``~`` and environment variables (e.g. ``$SEGZOO_WEIGHTS``) in a weights path."""
    return Path(os.path.expanduser(os.path.expandvars(str(path))))


def build_feature_extractor(
    kind: str | None, weights: str | Path | None, **kwargs
) -> VGG19Features | BackboneFeatures | DenseSIFTFeatures | None:
    """Build the frozen extractor ``kind`` (``"vgg19"`` or ``"backbone"`` from a local ``weights`` file, or
    ``"dense_sift"``, which takes none).

    ``kind=None`` returns None (no extractor). For the learnt kinds ``weights=None`` or a missing file raises
    an error that says how to provide the file or how to disable the term; keyword arguments go to
    :class:`VGG19Features`, :class:`BackboneFeatures` or :class:`DenseSIFTFeatures` (e.g. ``layers``,
    ``backbone``, ``output_stride``, ``prefix``; ``bin_size``, ``stride``).
    """
    if kind is None:
        return None
    kind = str(kind).lower()
    if kind not in FEATURE_KINDS:
        raise ValueError(
            f"unknown feature extractor {kind!r}; expected one of {', '.join(FEATURE_KINDS)} or None"
        )
    if kind == "dense_sift":
        if weights is not None:
            raise ValueError(
                f"feature extractor 'dense_sift' is computed, not learnt, and takes no weights file; got "
                f"weights={str(weights)!r} (set feature_weights: null)"
            )
        return DenseSIFTFeatures(**kwargs)
    if weights is None:
        raise ValueError(_missing_weights_message(kind))
    path = resolve_path(weights)
    if not path.is_file():
        unset = [var for var in ("SEGZOO_WEIGHTS",) if f"${var}" in str(path) or f"${{{var}}}" in str(path)]
        hint = f" (environment variable {unset[0]} is not set)" if unset else ""
        raise FileNotFoundError(
            f"feature extractor {kind!r}: weights file not found: {path}{hint}. Put a local weights file "
            "there, or disable the semantic consistency term explicitly with semantic_weight: 0 and "
            "features: null."
        )
    if kind == "vgg19":
        return VGG19Features(path, **kwargs)
    return BackboneFeatures(weights=path, **kwargs)


__all__ = [
    "FEATURE_KINDS",
    "VGG19_LAYERS",
    "BackboneFeatures",
    "DenseSIFTFeatures",
    "VGG19Features",
    "build_feature_extractor",
    "resolve_path",
]
