import pytest
import torch
from torchvision import tv_tensors

from segzoo.data.transforms import RandomScale, build_transforms


def _sample(h=40, w=50, classes=3):
    torch.manual_seed(0)
    return {
        "image": tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8)),
        "mask": tv_tensors.Mask(torch.randint(0, classes, (h, w))),
        "meta": {"path": "x.png"},
    }


def test_eval_pipeline_normalises_and_keeps_mask():
    s = _sample()
    out = build_transforms(False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(s)
    assert out["image"].dtype == torch.float32
    expected = s["image"].float() / 255 * 2 - 1
    assert torch.allclose(out["image"], expected, atol=1e-6)
    assert torch.equal(out["mask"], s["mask"])
    assert out["meta"] == {"path": "x.png"}


def test_crop_pads_mask_with_ignore_and_image_with_zero():
    s = _sample(10, 12)
    out = build_transforms(True, crop_size=32, hflip=0, mean=None, std=None, ignore_index=255)(s)
    assert out["image"].shape == (3, 32, 32) and out["mask"].shape == (32, 32)
    padded = out["mask"] == 255
    assert padded.sum() == 32 * 32 - 10 * 12
    assert (out["image"][:, padded] == 0).all()


def test_resize_is_nearest_for_masks():
    s = _sample(40, 50, classes=5)
    out = build_transforms(False, resize=[23, 31])(s)
    assert out["mask"].shape == (23, 31)
    assert set(out["mask"].unique().tolist()) <= set(range(5))  # no smeared in-between values


def test_random_scale_range_and_aspect():
    torch.manual_seed(1)
    s = _sample(40, 40)
    for _ in range(10):
        out = RandomScale((0.5, 2.0))(s)
        h, w = out["mask"].shape
        assert h == w and 20 <= h <= 80
        assert out["image"].shape[-2:] == (h, w)


def test_random_scale_rejects_bad_range():
    with pytest.raises(ValueError, match="scale_range"):
        RandomScale((2.0, 1.0))


def test_flip_moves_image_and_mask_together():
    s = _sample(8, 9)
    out = build_transforms(True, hflip=1.0, mean=None, std=None)(s)
    assert torch.equal(out["mask"], s["mask"].flip(-1))
    assert torch.allclose(out["image"], s["image"].flip(-1).float() / 255)
