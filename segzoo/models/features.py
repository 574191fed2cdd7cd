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
from torch import Tensor, nn
from torchvision.models import vgg as tv_vgg

from segzoo.models.backbones import create_backbone
from segzoo.models.weights import load_weights

FEATURE_KINDS = ("vgg19", "backbone")


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
) -> VGG19Features | BackboneFeatures | None:
    """Build the frozen extractor ``kind`` (``"vgg19"`` or ``"backbone"``) from a local ``weights`` file.

    ``kind=None`` returns None (no extractor). ``weights=None`` or a missing file raises an error that says
    how to provide the file or how to disable the term; keyword arguments go to :class:`VGG19Features` or
    :class:`BackboneFeatures` (e.g. ``layers``, ``backbone``, ``output_stride``, ``prefix``).
    """
    if kind is None:
        return None
    kind = str(kind).lower()
    if kind not in FEATURE_KINDS:
        raise ValueError(
            f"unknown feature extractor {kind!r}; expected one of {', '.join(FEATURE_KINDS)} or None"
        )
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
    "VGG19Features",
    "build_feature_extractor",
    "resolve_path",
]
