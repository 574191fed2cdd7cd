"""R2OViews: the two augmented crops, the raw view, boxes, flips and SLIC superpixels of one image."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from segzoo.data import SegDataModule
from segzoo.data.collate import collate_samples
from segzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from segzoo.data.views import VIEW_KEYS, R2OViews

NO_PHOTOMETRIC = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)


def _image(height: int = 48, width: int = 64, seed: int = 0) -> tv_tensors.Image:
    gen = torch.Generator().manual_seed(seed)
    return tv_tensors.Image(torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8))


def _sample(height: int = 48, width: int = 64) -> dict:
    mask = torch.zeros(height, width, dtype=torch.int64)
    return {"image": _image(height, width), "mask": tv_tensors.Mask(mask), "meta": {"path": "x.png"}}


def test_keys_shapes_and_dtypes() -> None:
    torch.manual_seed(0)
    out = R2OViews(size=32)(_sample())
    assert set(VIEW_KEYS) <= set(out)
    assert "mask" not in out and out["meta"]["path"] == "x.png"
    for key in ("view1", "view2", "raw", "image"):
        assert out[key].shape == (3, 32, 32) and out[key].dtype == torch.float32
    for key in ("boxes1", "boxes2"):
        box = out[key]
        assert box.shape == (4,) and box.dtype == torch.float32
        assert 0 <= box[0] < box[2] <= 32 + 1e-4 and 0 <= box[1] < box[3] <= 32 + 1e-4
    assert out["flip1"].dtype == torch.bool and out["flip1"].shape == ()
    sp = out["superpixels"]
    assert sp.shape == (32, 32) and sp.dtype == torch.int64
    # contiguous ids from 0
    assert torch.equal(torch.unique(sp), torch.arange(int(sp.max()) + 1))


def test_raw_view_is_the_normalised_resized_image() -> None:
    image = _image()
    out = R2OViews(size=32)({"image": image, "meta": {}})
    resized = F.resize(image.as_subclass(torch.Tensor), [32, 32], F.InterpolationMode.BICUBIC, antialias=True)
    expected = F.normalize(resized.float() / 255.0, list(IMAGENET_MEAN), list(IMAGENET_STD))
    torch.testing.assert_close(out["raw"], expected)


def test_full_crop_view_equals_raw_view_flipped_by_its_flag() -> None:
    views = R2OViews(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), **NO_PHOTOMETRIC)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out = views({"image": _image(40, 40), "meta": {}})
        for i in (1, 2):
            torch.testing.assert_close(out[f"boxes{i}"], torch.tensor([0.0, 0.0, 32.0, 32.0]))
            flip = bool(out[f"flip{i}"])
            seen.add(flip)
            expected = out["raw"].flip(-1) if flip else out["raw"]
            torch.testing.assert_close(out[f"view{i}"], expected, atol=1e-4, rtol=0)
    assert seen == {True, False}


def test_boxes_are_in_raw_view_pixels() -> None:
    # 80x40 image -> 32x32 raw view: x scales by 0.4, y by 0.8; a full-height crop spans y 0..32
    views = R2OViews(size=32, scale=(0.5, 0.5), ratio=(0.5, 0.5), **NO_PHOTOMETRIC)
    torch.manual_seed(1)
    out = views({"image": _image(40, 80), "meta": {}})
    box = out["boxes1"]
    # area 1600 at ratio w/h 0.5 -> w 28, h 57 > 40 is impossible, so torchvision falls back to a centre crop
    # of the whole image (ratio clamped to 0.5): h 40, w 20
    torch.testing.assert_close(box[3] - box[1], torch.tensor(32.0))
    torch.testing.assert_close(box[2] - box[0], torch.tensor(20 * 0.4))


def test_deterministic_under_the_torch_seed() -> None:
    views = R2OViews(size=32)
    torch.manual_seed(3)
    a = views(_sample())
    torch.manual_seed(3)
    b = views(_sample())
    for key in VIEW_KEYS:
        assert torch.equal(a[key], b[key]), key


def test_photometric_probabilities_per_view() -> None:
    assert R2OViews(size=32).photometric[0].transforms[2].p == 1.0
    assert R2OViews(size=32).photometric[1].transforms[2].p == 0.1
    assert R2OViews(size=32).photometric[0].transforms[3].p == 0.0
    assert R2OViews(size=32).photometric[1].transforms[3].p == 0.2


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"x\.png: expected an RGB image tensor \[3, H, W\], got \(1, 8, 8\)"
    ):
        R2OViews(size=32)({"image": torch.zeros(1, 8, 8, dtype=torch.uint8), "meta": {"path": "x.png"}})
    with pytest.raises(ValueError, match="scale must be"):
        R2OViews(scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="blur_prob must be a number or a pair"):
        R2OViews(blur_prob=(1.0, 0.5, 0.1))


def test_collate_and_datamodule_feed_fixed_size_batches() -> None:
    dm = SegDataModule(
        dataset="synthetic",
        dataset_kwargs={"mode": "shapes", "size": [40, 56], "num_samples": 4},
        batch_size=2,
        train_transforms=R2OViews(size=32),
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["view1"].shape == (2, 3, 32, 32)
    assert batch["boxes2"].shape == (2, 4) and batch["flip2"].shape == (2,)
    assert batch["superpixels"].shape == (2, 32, 32)
    stacked = collate_samples([R2OViews(size=32)(_sample()) for _ in range(3)])
    assert stacked["raw"].shape == (3, 3, 32, 32)
