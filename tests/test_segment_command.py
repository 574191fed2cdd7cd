"""``segzoo segment``: the files it writes, its refusals (inputs are never touched), skip/overwrite, bad
paths, overrides and the CRF flag. Two 24x32 images and 3 updates of a narrow net keep it to seconds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segzoo.cli import EXTRA_COMMANDS, main
from segzoo.commands.segment import labels_to_probs, segment_command

QUICK = [
    "--set",
    "max_iter=3",
    "--set",
    "widths=[8, 8]",
    "--set",
    "kernel_sizes=[3, 3]",
    "--set",
    "n_channels=8",
]


def _make_images(folder) -> dict[str, np.ndarray]:
    """Two 24x32 images of four noisy colour quadrants, a PNG and a JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, name in enumerate(("a.png", "b.jpg")):
        rng = np.random.default_rng(i)
        image = np.zeros((24, 32, 3), dtype=np.float64)
        image[:12, :16], image[:12, 16:] = (220, 40, 40), (30, 200, 60)
        image[12:, :16], image[12:, 16:] = (40, 60, 210), (230, 230, 40)
        array = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(folder / name)
        arrays[name] = array
    return arrays


def _snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_writes_labels_paint_overlay_and_summary(tmp_path, capsys) -> None:
    _make_images(tmp_path / "in")
    out = tmp_path / "out"
    assert segment_command([str(tmp_path / "in"), "--out", str(out), *QUICK]) == 0
    for stem in ("a", "b"):
        labels = np.array(Image.open(out / "labels" / f"{stem}.png"))
        assert Image.open(out / "labels" / f"{stem}.png").mode == "P"
        assert labels.shape == (24, 32)
        # Segment ids are contiguous from 0 (first-appearance order) and at most n_channels before
        # connected-component splitting.
        assert labels[0, 0] == 0
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
        paint = np.array(Image.open(out / "paint" / f"{stem}.png"))
        assert paint.shape == (24, 32, 3)
        # Mean colour painting: constant inside every segment.
        for k in np.unique(labels):
            assert len(np.unique(paint[labels == k], axis=0)) == 1
        overlay = Image.open(out / "overlays" / f"{stem}.jpg")
        assert overlay.format == "JPEG" and overlay.size == (32, 24)
    printed = capsys.readouterr().out
    assert "2 images," in printed and "s per image, written to" in printed and str(out) in printed


def test_main_dispatches_segment(tmp_path, capsys) -> None:
    assert "segment" in EXTRA_COMMANDS
    _make_images(tmp_path / "in")
    assert main(["segment", str(tmp_path / "in" / "a.png"), "--out", str(tmp_path / "o"), *QUICK]) == 0
    assert (tmp_path / "o" / "labels" / "a.png").is_file()
    assert not (tmp_path / "o" / "labels" / "b.png").exists()
    assert "1 images" in capsys.readouterr().out


def test_refuses_out_equal_to_input_folder(tmp_path, capsys) -> None:
    _make_images(tmp_path / "in")
    before = _snapshot(tmp_path / "in")
    assert segment_command([str(tmp_path / "in"), "--out", str(tmp_path / "in"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "is or contains the input folder" in err and str(tmp_path / "in") in err
    assert _snapshot(tmp_path / "in") == before
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.png", "b.jpg"]


def test_refuses_out_containing_input_folder(tmp_path, capsys) -> None:
    _make_images(tmp_path / "data" / "in")
    assert segment_command([str(tmp_path / "data" / "in"), "--out", str(tmp_path / "data"), *QUICK]) == 2
    assert "is or contains the input folder" in capsys.readouterr().err
    assert not (tmp_path / "data" / "labels").exists()


def test_refuses_overwriting_an_input_file(tmp_path, capsys) -> None:
    _make_images(tmp_path / "in")
    labels_dir = tmp_path / "out" / "labels"
    labels_dir.mkdir(parents=True)
    victim = labels_dir / "a.png"
    victim.write_bytes((tmp_path / "in" / "a.png").read_bytes())
    before = victim.read_bytes()
    assert segment_command([str(victim), "--out", str(tmp_path / "out"), "--overwrite", *QUICK]) == 2
    err = capsys.readouterr().err
    assert f"output {victim} would overwrite the input {victim}" in err
    assert victim.read_bytes() == before


def test_refuses_two_inputs_with_the_same_stem(tmp_path, capsys) -> None:
    _make_images(tmp_path / "x")
    _make_images(tmp_path / "y")
    code = segment_command(
        [str(tmp_path / "x" / "a.png"), str(tmp_path / "y" / "a.png"), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "share the name 'a'" in capsys.readouterr().err


def test_skips_existing_outputs_unless_overwrite(tmp_path, capsys) -> None:
    _make_images(tmp_path / "in")
    out = tmp_path / "out"
    assert segment_command([str(tmp_path / "in"), "--out", str(out), *QUICK]) == 0
    capsys.readouterr()
    stale = out / "paint" / "a.png"
    stale.write_bytes(b"stale")
    assert segment_command([str(tmp_path / "in"), "--out", str(out), *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "skipped 2 image(s)" in printed and "0 images," in printed
    assert stale.read_bytes() == b"stale"
    (out / "overlays" / "b.jpg").unlink()
    assert segment_command([str(tmp_path / "in"), "--out", str(out), *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 image(s)" in printed and "1 images," in printed
    assert (out / "overlays" / "b.jpg").is_file()
    assert segment_command([str(tmp_path / "in"), "--out", str(out), "--overwrite", *QUICK]) == 0
    assert "2 images," in capsys.readouterr().out
    assert stale.read_bytes() != b"stale" and Image.open(stale).size == (32, 24)


def test_bad_paths_and_settings_are_errors(tmp_path, capsys) -> None:
    missing = tmp_path / "nothere.png"
    assert segment_command([str(missing), "--out", str(tmp_path / "o")]) == 2
    assert f"{missing}: no such file or folder" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert segment_command([str(text), "--out", str(tmp_path / "o")]) == 2
    assert "notes.txt: not an image file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert segment_command([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err
    _make_images(tmp_path / "in")
    assert segment_command([str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--set", "max_iters=3"]) == 2
    assert "unknown Kanezaki setting 'max_iters'" in capsys.readouterr().err
    assert segment_command([str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--set", "lr=-1"]) == 2
    assert "invalid lr" in capsys.readouterr().err
    assert segment_command([str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--set", "max_iter"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_same_seed_same_labels(tmp_path) -> None:
    _make_images(tmp_path / "in")
    for name in ("o1", "o2"):
        assert segment_command([str(tmp_path / "in"), "--out", str(tmp_path / name), *QUICK]) == 0
    for stem in ("a", "b"):
        one = np.array(Image.open(tmp_path / "o1" / "labels" / f"{stem}.png"))
        two = np.array(Image.open(tmp_path / "o2" / "labels" / f"{stem}.png"))
        assert np.array_equal(one, two)


def test_labels_to_probs() -> None:
    labels = np.array([[0, 1], [2, 2]])
    probs = labels_to_probs(labels, confidence=0.8)
    assert probs.shape == (3, 2, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-6)
    assert np.array_equal(probs.argmax(axis=0), labels)
    assert probs[2, 1, 0] == pytest.approx(0.8) and probs[0, 1, 0] == pytest.approx(0.1)
    assert labels_to_probs(np.zeros((2, 2), dtype=np.int64)).shape == (1, 2, 2)


def test_crf_flag_writes_labels(tmp_path, capsys) -> None:
    _make_images(tmp_path / "in")
    out = tmp_path / "out"
    assert segment_command([str(tmp_path / "in"), "--out", str(out), "--crf", *QUICK]) == 0
    for stem in ("a", "b"):
        labels = np.array(Image.open(out / "labels" / f"{stem}.png"))
        assert labels.shape == (24, 32)
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
        assert b"crf=True" in (out / "labels" / f"{stem}.png").read_bytes()
    assert "2 images," in capsys.readouterr().out
