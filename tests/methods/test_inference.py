import pytest
import torch

from segzoo.methods.inference import infer_logits, slide_logits

conv = torch.nn.Conv2d(3, 4, 3, padding=1)


def _fn(x):
    return conv(x)


def test_slide_equals_whole_when_one_window_covers_the_image():
    x = torch.randn(2, 3, 17, 23)
    with torch.no_grad():
        whole = _fn(x)
        slide = slide_logits(_fn, x, 4, crop_size=(32, 32), stride=(16, 16))
    assert torch.allclose(whole, slide)


def test_slide_windows_cover_every_pixel_and_average_overlaps():
    calls = []

    def ones(x):
        calls.append(x.shape)
        return torch.ones(x.shape[0], 2, *x.shape[-2:])

    out = slide_logits(ones, torch.zeros(1, 3, 10, 13), 2, crop_size=(6, 6), stride=(4, 4), window_batch=3)
    assert torch.allclose(out, torch.ones(1, 2, 10, 13))
    assert sum(c[0] for c in calls) == 2 * 3  # rows start at 0, 4 (flush); columns at 0, 4, 7 (flush)
    # A pointwise function averaged over overlapping windows gives back the function of the whole image.
    x = torch.randn(1, 3, 10, 13)
    assert torch.allclose(slide_logits(lambda t: t * 2, x, 3, (6, 6), (4, 4)), x * 2, atol=1e-6)


def test_flip_of_a_flip_equivariant_function_matches_whole():
    x = torch.randn(1, 3, 9, 11)

    def fn(t):
        return torch.cat([t, t.sum(1, keepdim=True)], 1)  # pointwise: flip-equivariant

    a = infer_logits(fn, x, 4, flip=True).softmax(1)
    b = fn(x).softmax(1)
    assert torch.allclose(a, b, atol=1e-6)


def test_multi_scale_output_size_and_errors():
    x = torch.randn(1, 3, 15, 21)
    with torch.no_grad():
        out = infer_logits(_fn, x, 4, scales=(0.5, 1.0, 1.5), flip=True)
    assert out.shape == (1, 4, 15, 21)
    with pytest.raises(ValueError, match="crop_size and stride"):
        infer_logits(_fn, x, 4, mode="slide")
    with pytest.raises(ValueError, match="'whole' or 'slide'"):
        infer_logits(_fn, x, 4, mode="tiles")
