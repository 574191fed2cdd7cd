"""Dense SIFT frozen features: shape, frozenness, invariances and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from segzoo.models.features import DenseSIFTFeatures, build_feature_extractor


def _image(seed: int = 0, size: int = 64) -> torch.Tensor:
    """A smooth random image (structure at several scales), ImageNet-normalised like the datamodule's."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 8, size // 8, generator=gen)
    fine = torch.rand(1, 3, size // 2, size // 2, generator=gen)
    rgb = 0.7 * F.interpolate(coarse, size=size, mode="bicubic") + 0.3 * F.interpolate(fine, size=size)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


def test_shape_and_frozen() -> None:
    extractor = build_feature_extractor("dense_sift", None, bin_size=6, stride=4)
    assert isinstance(extractor, DenseSIFTFeatures)
    out = extractor(torch.cat([_image(0, 96), _image(1, 96)]))
    assert out.shape == (2, 128, 24, 24) and extractor.out_channels == 128
    assert not any(p.requires_grad for p in extractor.parameters())
    assert not extractor.train().training
    # RootSIFT descriptors are unit vectors; averaging neighbours keeps the norm at most 1
    norms = extractor.descriptor(torch.rand(1, 1, 40, 40)).norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    assert out.norm(dim=1).max() <= 1 + 1e-5 and out.min() >= 0


def test_invariant_to_brightness_and_contrast() -> None:
    extractor = DenseSIFTFeatures(bin_size=4, stride=2)
    image = _image(2)
    # gain and offset on every channel: the luminance changes by a gain and an offset only
    changed = 1.7 * image + 0.4
    assert torch.allclose(extractor(image), extractor(changed), atol=1e-4)


def test_translation_moves_the_descriptors_by_whole_cells() -> None:
    stride, bin_size = 4, 4
    extractor = DenseSIFTFeatures(bin_size=bin_size, stride=stride)
    image = _image(3)
    shifted = torch.roll(image, shifts=2 * stride, dims=-1)
    a, b = extractor(image), extractor(shifted)
    # away from the borders (where the roll wraps and the padding shows) cell j of the shifted image is
    # cell j - 2 of the original
    margin = (4 * bin_size) // stride + 2
    inner, source = slice(margin, a.shape[-1] - margin), slice(margin - 2, a.shape[-1] - margin - 2)
    assert torch.allclose(b[..., inner, inner], a[..., inner, source], atol=1e-5)
    assert not torch.allclose(b[..., inner, inner], a[..., inner, inner], atol=1e-2)


def test_orientation_changes_the_descriptor() -> None:
    extractor = DenseSIFTFeatures(bin_size=4, stride=1)
    stripes = torch.sin(torch.arange(32.0) * 0.8).expand(1, 3, 32, 32).contiguous()
    vertical, horizontal = extractor(stripes), extractor(stripes.transpose(-1, -2))
    centre = (..., 16, 16)
    cosine = F.cosine_similarity(vertical[centre], horizontal[centre], dim=-1)
    assert float(cosine) < 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bin_size": 5}, "bin_size must be even"),
        ({"bin_size": 0}, "bin_size must be a positive int"),
        ({"stride": 1.5}, "stride must be a positive int"),
        ({"std": (0.2, 0.2)}, "std must be 3 positive numbers"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DenseSIFTFeatures(**kwargs)


def test_weights_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="takes no weights file.*feature_weights: null"):
        build_feature_extractor("dense_sift", tmp_path / "sift.pth")
