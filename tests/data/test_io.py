import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.data.io import (
    check_label_range,
    check_same_size,
    list_images,
    read_image,
    read_label_array,
    rgb_to_labels,
)


def test_read_image_converts_gray_rgba_palette_and_16bit(tmp_path):
    Image.fromarray(np.full((4, 5), 77, np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([np.full((4, 5), c, np.uint8) for c in (10, 20, 30, 40)]), "RGBA").save(
        tmp_path / "rgba.png"
    )
    Image.fromarray(np.full((4, 5), 0x1234, np.uint16)).save(tmp_path / "deep.png")
    pal = Image.fromarray(np.ones((4, 5), np.uint8), "P")
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    gray, rgba, deep, palette = (read_image(tmp_path / f"{n}.png") for n in ("gray", "rgba", "deep", "pal"))
    for img in (gray, rgba, deep, palette):
        assert img.shape == (3, 4, 5) and img.dtype == torch.uint8
    assert (gray == 77).all()
    assert rgba[:, 0, 0].tolist() == [10, 20, 30]
    assert (deep == 0x12).all()  # 16-bit keeps its top byte
    assert palette[:, 0, 0].tolist() == [200, 100, 50]


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="broken.jpg: cannot decode"):
        read_image(tmp_path / "broken.jpg")


def test_label_maps_index_palette_and_rgb(tmp_path):
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    Image.fromarray(labels).save(tmp_path / "index.png")
    assert read_label_array(tmp_path / "index.png").tolist() == labels.tolist()
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 255, 0], [255, 0, 0]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png: RGB mask but no colour table"):
        read_label_array(tmp_path / "rgb.png")
    colors = {(255, 0, 0): 1, (0, 255, 0): 2}
    assert read_label_array(tmp_path / "rgb.png", colors).tolist() == [[1, 2], [2, 1]]
    with pytest.raises(ValueError, match=r"colours not in the colour table: \(0, 255, 0\)"):
        rgb_to_labels(rgb, {(255, 0, 0): 1}, "m.png")


def test_size_and_range_checks():
    with pytest.raises(ValueError, match=r"a.jpg is \(4, 5\).*b.png is \(4, 6\)"):
        check_same_size((4, 5), (4, 6), "a.jpg", "b.png")
    check_label_range(torch.tensor([0, 2, 255]), 3, 255, "ok.png")
    with pytest.raises(ValueError, match=r"m.png: label value 3 out of range; allowed 0..2 or 255"):
        check_label_range(torch.tensor([0, 3]), 3, 255, "m.png")


def test_list_images(tmp_path):
    with pytest.raises(ValueError, match="no images found"):
        list_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        list_images(tmp_path / "missing")
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]
