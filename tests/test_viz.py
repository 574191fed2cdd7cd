"""segzoo.viz: palettes, colourising, overlays, mean colours, grids, denormalising and label PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.data.io import read_label_array
from segzoo.viz import colorize, denormalize, grid, make_palette, mean_color, overlay, save_label_png

PALETTE = [(0, 0, 0), (200, 0, 50), (10, 20, 30)]


# ---------------------------------------------------------------------------------------------- palette
def test_make_palette_is_the_voc_colour_map_first():
    pal = make_palette(21)
    assert pal.shape == (21, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0]
    assert pal[4].tolist() == [0, 0, 128]
    assert pal[15].tolist() == [192, 128, 128]  # VOC "person"
    assert pal[20].tolist() == [0, 64, 128]  # VOC "tv/monitor"


def test_make_palette_distinct_deterministic_and_extending():
    big = make_palette(700, seed=3)
    codes = big.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    assert len(np.unique(codes)) == 700
    np.testing.assert_array_equal(big, make_palette(700, seed=3))
    np.testing.assert_array_equal(make_palette(256), big[:256])  # VOC part does not depend on the seed
    np.testing.assert_array_equal(make_palette(300, seed=3)[:300], big[:300])
    assert not np.array_equal(make_palette(300, seed=4)[256:], big[256:300])
    assert make_palette(0).shape == (0, 3)


def test_make_palette_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n=-1"):
        make_palette(-1)


# ---------------------------------------------------------------------------------------------- colorize
def test_colorize_exact_colours_and_ignore():
    labels = np.array([[0, 1], [2, 255]])
    out = colorize(labels, PALETTE)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, 1].tolist() == [200, 0, 50]
    assert out[1, 0].tolist() == [10, 20, 30]
    assert out[1, 1].tolist() == [255, 255, 255]
    out = colorize(labels, PALETTE, ignore_color=(1, 2, 3))
    assert out[1, 1].tolist() == [1, 2, 3]


def test_colorize_ids_past_the_palette_take_make_palette_colours():
    labels = torch.tensor([[1, 5], [300, 2]])
    out = colorize(labels, PALETTE)
    assert out[0, 0].tolist() == [200, 0, 50]
    assert out[0, 1].tolist() == make_palette(6)[5].tolist()
    assert out[1, 0].tolist() == make_palette(301)[300].tolist()
    np.testing.assert_array_equal(colorize(labels, None), make_palette(301)[labels.numpy()])


def test_colorize_accepts_float_palettes_in_0_1():
    out = colorize(np.array([[1]]), [(0.0, 0.0, 0.0), (1.0, 0.5, 0.0)])
    assert out[0, 0].tolist() == [255, 128, 0]


def test_colorize_rejects_negative_ids_and_bad_shapes():
    with pytest.raises(ValueError, match="label value -3 is negative"):
        colorize(np.array([[0, -3]]), PALETTE)
    with pytest.raises(ValueError, match=r"expected an HxW label map, got shape \(1, 2, 2\)"):
        colorize(np.zeros((1, 2, 2), dtype=np.int64), PALETTE)
    with pytest.raises(ValueError, match="expected integer class ids"):
        colorize(np.zeros((2, 2), dtype=np.float32), PALETTE)


# ---------------------------------------------------------------------------------------------- overlay
def test_overlay_blends_with_alpha_and_keeps_ignored_pixels():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    labels = np.array([[1, 1], [2, 255]])
    out = overlay(image, labels, PALETTE, alpha=0.25)
    # 0.75 * 100 + 0.25 * (200, 0, 50) = (125, 75, 87.5 -> 88)
    assert out[0, 0].tolist() == [125, 75, 88]
    # 0.75 * 100 + 0.25 * (10, 20, 30) = (77.5 -> 78, 80, 82.5 -> 83)
    assert out[1, 0].tolist() == [78, 80, 83]
    assert out[1, 1].tolist() == [100, 100, 100]
    np.testing.assert_array_equal(overlay(image, labels, PALETTE, alpha=0.0), image)
    full = overlay(image, labels, PALETTE, alpha=1.0)
    assert full[0, 1].tolist() == [200, 0, 50]


def test_overlay_accepts_chw_float_tensors():
    image = torch.full((3, 2, 2), 0.4)  # 0.4 * 255 = 102
    out = overlay(image, torch.zeros(2, 2, dtype=torch.long), PALETTE, alpha=0.5)
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [51, 51, 51]


def test_overlay_rejects_mismatched_sizes_and_alpha():
    with pytest.raises(ValueError, match=r"image is \(2, 2\).*labels are \(3, 3\)"):
        overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((3, 3), np.int64), PALETTE)
    with pytest.raises(ValueError, match="alpha=1.5"):
        overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.int64), PALETTE, alpha=1.5)


# ---------------------------------------------------------------------------------------------- mean colour
def test_mean_color_paints_exact_segment_means():
    image = np.array(
        [
            [[10, 0, 0], [20, 0, 0], [0, 0, 9]],
            [[30, 3, 0], [100, 100, 100], [0, 0, 1]],
        ],
        dtype=np.uint8,
    )
    labels = np.array([[7, 7, -1], [7, 1000, -1]])
    out = mean_color(image, labels)
    assert out.dtype == np.uint8
    for y, x in [(0, 0), (0, 1), (1, 0)]:
        assert out[y, x].tolist() == [20, 1, 0]
    assert out[1, 1].tolist() == [100, 100, 100]
    assert out[0, 2].tolist() == [0, 0, 5]
    assert out[1, 2].tolist() == [0, 0, 5]


def test_mean_color_keeps_float_images_and_any_channel_count():
    image = torch.tensor([[[0.0, 1.0], [0.5, 0.25]]]).permute(1, 2, 0)  # 2x2x1
    out = mean_color(image, torch.tensor([[0, 0], [1, 1]]))
    assert out.dtype == np.float32 and out.shape == (2, 2, 1)
    np.testing.assert_allclose(out[..., 0], [[0.5, 0.5], [0.375, 0.375]])


# ---------------------------------------------------------------------------------------------- grid
def test_grid_pads_rows_and_columns_of_different_sizes():
    a = np.full((2, 3, 3), 10, np.uint8)
    b = np.full((4, 5, 3), 20, np.uint8)
    c = np.full((3, 2, 3), 30, np.uint8)
    out = grid([[a, b], [c]], pad=2)
    # rows 4 and 3 tall, columns 3 and 5 wide, 2-pixel gaps around and between
    assert out.shape == (2 + 4 + 2 + 3 + 2, 2 + 3 + 2 + 5 + 2, 3)
    assert (out[2:4, 2:5] == 10).all()
    assert (out[2:6, 7:12] == 20).all()
    assert (out[8:11, 2:4] == 30).all()
    assert (out[4:6, 2:5] == 255).all()  # below the short image of row 0
    assert (out[:2] == 255).all() and (out[:, :2] == 255).all()
    assert grid([[a]], pad=0).shape == (2, 3, 3)


def test_grid_rejects_empty_input():
    with pytest.raises(ValueError, match="no images given"):
        grid([[]])


# ---------------------------------------------------------------------------------------------- denormalize
def test_denormalize_inverts_normalize():
    rgb = np.random.default_rng(0).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    normed = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out = denormalize(normed, mean, std)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(denormalize(x), rgb)  # no mean/std: already in [0, 1]
    np.testing.assert_array_equal(denormalize(torch.from_numpy(rgb).permute(2, 0, 1)), rgb)
    with pytest.raises(ValueError, match=r"expected a \[3, H, W\] image, got shape \(4, 5, 3\)"):
        denormalize(rgb)


# ---------------------------------------------------------------------------------------------- label PNG
def test_save_label_png_round_trips_ids_and_palette(tmp_path):
    labels = np.array([[0, 1, 2], [5, 255, 1]])
    path = save_label_png(torch.from_numpy(labels), tmp_path / "sub" / "a.png", PALETTE, text={"k": "v"})
    img = Image.open(path)
    assert img.mode == "P" and img.info["k"] == "v"
    np.testing.assert_array_equal(np.asarray(img), labels)
    np.testing.assert_array_equal(read_label_array(path), labels)
    pal = np.asarray(img.getpalette(), dtype=np.uint8).reshape(-1, 3)
    assert pal[:3].tolist() == [list(c) for c in PALETTE]
    assert pal[5].tolist() == make_palette(6)[5].tolist()
    assert pal[255].tolist() == [255, 255, 255]  # ignore colour
    # the file shows the colours colorize gives
    np.testing.assert_array_equal(np.asarray(img.convert("RGB")), colorize(labels, PALETTE))
    assert not list(tmp_path.glob("sub/.*"))  # no temporary file left behind


def test_save_label_png_uses_16_bit_above_255(tmp_path):
    labels = np.array([[0, 256], [1000, 65535]])
    path = save_label_png(labels, tmp_path / "big.png", None)
    img = Image.open(path)
    assert img.mode.startswith("I")
    np.testing.assert_array_equal(read_label_array(path), labels)
    with pytest.raises(ValueError, match=r"big2.png: label value 65536 cannot be saved"):
        save_label_png(np.array([[65536]]), tmp_path / "big2.png", None)
    with pytest.raises(ValueError, match="label value -1 cannot be saved"):
        save_label_png(np.array([[-1]]), tmp_path / "neg.png", None)
