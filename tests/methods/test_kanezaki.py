"""Kanezaki per-image segmentation: presets, stopping rule, determinism, scribbles, inputs, reference mode
and the LightningModule contract. Images are tiny and iterations few so the file runs in seconds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from segzoo.data.collate import collate_samples
from segzoo.methods import kanezaki as K
from segzoo.methods.kanezaki_net import KanezakiNet, build_net
from segzoo.registry import METHODS

# Small and quick for every test: 24x32 images, a narrow net, few updates, one thread (tiny convs only
# lose from threading on a busy CPU).
QUICK = dict(max_iter=6, widths=[8, 8], kernel_sizes=[3, 3], n_channels=8, fit_scale=1.0, num_threads=1)


def _image(seed: int = 0, h: int = 24, w: int = 32) -> np.ndarray:
    """Four flat colour quadrants plus noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), dtype=np.float64)
    image[: h // 2, : w // 2] = (220, 40, 40)
    image[: h // 2, w // 2 :] = (30, 200, 60)
    image[h // 2 :, : w // 2] = (40, 60, 210)
    image[h // 2 :, w // 2 :] = (230, 230, 40)
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def _is_contiguous(labels: np.ndarray) -> bool:
    return np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


# -- presets and config files ------------------------------------------------------------------------------


def test_presets_load_and_differ() -> None:
    assert {"icassp18", "tip20", "fast"} <= set(K.PRESETS)
    icassp, tip, fast = K.PRESETS["icassp18"], K.PRESETS["tip20"], K.PRESETS["fast"]
    assert len({icassp, tip, fast}) == 3
    # ICASSP 2018 released settings.
    assert icassp.presegmentation == "slic"
    assert (icassp.slic_n_segments, icassp.slic_compactness) == (10000, 100.0)
    assert icassp.widths == (100, 100) and icassp.kernel_sizes == (3, 3) and icassp.n_channels == 100
    assert icassp.conv_order == "conv-relu-bn"
    assert (icassp.optimizer, icassp.lr, icassp.momentum) == ("sgd", 0.1, 0.9)
    assert (icassp.max_iter, icassp.min_labels, icassp.mu_con) == (1000, 3, 0.0)
    # TIP 2020: no superpixels, similarity + continuity.
    assert tip.presegmentation == "none"
    assert (tip.mu_sim, tip.mu_con, tip.lr, tip.n_channels, len(tip.widths)) == (1.0, 1.0, 0.1, 100, 2)
    assert fast.presegmentation == "felzenszwalb" and fast.conv_order == "conv-bn-relu"
    # Tuned on BSDS500 train (docs/kanezaki.md): stop at 8 labels, at most 32 updates.
    assert (fast.max_iter, fast.min_labels, fast.fz_min_size, fast.fz_sigma) == (32, 8, 100, 1.0)
    assert fast.min_segment_size == 600


def test_presets_ship_inside_the_package() -> None:
    # Package data (not the repo's configs/), so non-editable installs find them too.
    package_dir = Path(K.__file__).resolve().parent
    assert package_dir / "kanezaki_presets" == K.CONFIG_DIR
    assert {p.stem for p in K.CONFIG_DIR.glob("*.yaml")} == {"icassp18", "tip20", "fast"}
    assert K.PRESETS["fast"].source == str(K.CONFIG_DIR / "fast.yaml")
    assert K.PRESETS["fast"] == K.load_config(K.CONFIG_DIR / "fast.yaml")


def test_unknown_yaml_key_names_file_and_key(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("lr: 0.1\nlearning_rate: 0.2\n")
    with pytest.raises(ValueError, match=r"mine\.yaml: unknown key 'learning_rate'"):
        K.load_config(path)


def test_bad_yaml_values_name_file_and_key(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("max_iter: many\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: max_iter = 'many' has the wrong type; expected int"):
        K.load_config(path)
    path.write_text("presegmentation: watershed\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: invalid presegmentation 'watershed'"):
        K.load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: expected a mapping"):
        K.load_config(path)
    with pytest.raises(FileNotFoundError, match=r"nothere\.yaml"):
        K.load_config(tmp_path / "nothere.yaml")


def test_yaml_round_trip(tmp_path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("widths: [16, 8]\nkernel_sizes: [3, 1]\nlr: 1\nvote_output: true\n")
    config = K.load_config(path)
    assert config.widths == (16, 8) and config.kernel_sizes == (3, 1)
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.vote_output is True


def test_overrides_and_unknown_names() -> None:
    config = K.resolve_config("icassp18", max_iter=7)
    assert config.max_iter == 7 and config.slic_n_segments == 10000
    with pytest.raises(TypeError, match="unknown Kanezaki setting 'max_iters'"):
        K.resolve_config("fast", max_iters=3)
    with pytest.raises(KeyError, match="unknown Kanezaki preset 'quick'"):
        K.resolve_config("quick")
    with pytest.raises(ValueError, match="invalid kernel_sizes"):
        K.resolve_config("fast", widths=[8, 8], kernel_sizes=[3])
    with pytest.raises(
        ValueError, match=r"invalid merge_by 'size'; expected one of \('boundary', 'colour'\)"
    ):
        K.resolve_config("fast", merge_by="size")


# -- the net -----------------------------------------------------------------------------------------------


def test_net_orders_and_seeded_init() -> None:
    relu_bn = build_net([6, 6], [3, 3], 5, "conv-relu-bn", seed=1)
    bn_relu = build_net([6, 6], [3, 3], 5, "conv-bn-relu", seed=1)
    names = [type(m).__name__ for m in relu_bn.layers]
    assert names == ["Conv2d", "ReLU", "BatchNorm2d"] * 2 + ["Conv2d", "BatchNorm2d"]
    assert [type(m).__name__ for m in bn_relu.layers][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert relu_bn(torch.rand(1, 3, 5, 4)).shape == (1, 5, 5, 4)
    same = build_net([6, 6], [3, 3], 5, "conv-relu-bn", seed=1)
    other = build_net([6, 6], [3, 3], 5, "conv-relu-bn", seed=2)
    for a, b in zip(relu_bn.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(relu_bn.layers[0].weight, other.layers[0].weight)
    # The global RNG is not consumed by building a net.
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_net([4], [3], 3, seed=0)
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(ValueError, match="odd"):
        KanezakiNet(3, [4], [2], 3)


# -- segment -----------------------------------------------------------------------------------------------


def test_segment_returns_contiguous_int64_labels() -> None:
    labels, info = K.segment(_image(), "fast", seed=0, return_info=True, **QUICK)
    assert labels.shape == (24, 32) and labels.dtype == np.int64
    assert _is_contiguous(labels)
    assert labels[0, 0] == 0  # numbered in raster order of first appearance
    assert info.n_labels == labels.max() + 1
    assert info.fit_size == (24, 32)


@pytest.mark.parametrize("preset", ["icassp18", "tip20", "fast"])
def test_every_preset_runs(preset: str) -> None:
    labels = K.segment(_image(), preset, **{**QUICK, "max_iter": 2})
    assert labels.shape == (24, 32) and _is_contiguous(labels)


def test_stopping_rule_stops_once_labels_at_most_min_labels() -> None:
    # With min_labels = n_channels the first update already satisfies the rule.
    _, info = K.segment(_image(), "tip20", return_info=True, **{**QUICK, "min_labels": 8})
    assert info.iterations == 1 and info.stopped_early
    # With min_labels = 1 it runs until max_iter unless the argmax collapses to one label.
    _, info = K.segment(_image(), "tip20", return_info=True, **{**QUICK, "min_labels": 1, "max_iter": 5})
    assert len(info.label_history) == info.iterations
    assert all(n > 1 for n in info.label_history[:-1])
    assert info.iterations == 5 or (info.stopped_early and info.label_history[-1] <= 1)
    # In between: it stops exactly at the first update whose label count is <= min_labels.
    _, info = K.segment(_image(), "tip20", return_info=True, **{**QUICK, "min_labels": 7, "max_iter": 100})
    history = info.label_history
    assert info.stopped_early and 1 < info.iterations < 100
    assert history[-1] <= 7 and all(n > 7 for n in history[:-1])


def test_contiguous_memory_format_gives_valid_labels() -> None:
    labels = K.segment(
        _image(), "tip20", **{**QUICK, "channels_last": False, "optimizer": "adam", "lr": 0.01}
    )
    assert labels.shape == (24, 32) and _is_contiguous(labels)


def test_num_threads_is_restored() -> None:
    before = torch.get_num_threads()
    K.segment(_image(), "fast", **{**QUICK, "num_threads": before + 1})
    assert torch.get_num_threads() == before


def test_max_iter_zero_means_no_update() -> None:
    labels, info = K.segment(_image(), "fast", return_info=True, **{**QUICK, "max_iter": 0})
    assert info.iterations == 0 and labels.shape == (24, 32)


def test_same_seed_same_labels_different_seed_differs() -> None:
    kwargs = {**QUICK, "presegmentation": "slic", "slic_n_segments": 40}
    first = K.segment(_image(), "icassp18", seed=3, **kwargs)
    second = K.segment(_image(), "icassp18", seed=3, **kwargs)
    np.testing.assert_array_equal(first, second)
    others = [K.segment(_image(), "icassp18", seed=s, **kwargs) for s in (4, 5)]
    assert any(not np.array_equal(first, o) for o in others)


def test_superpixel_refinement_gives_constant_labels_per_superpixel() -> None:
    image = _image()
    labels = K.segment(image, "fast", **{**QUICK, "fz_scale": 50.0, "fz_min_size": 10, "vote_output": True})
    config = K.resolve_config("fast", fz_scale=50.0, fz_min_size=10)
    segments = K.presegment(image, config)
    for s in np.unique(segments):
        assert np.unique(labels[segments == s]).size == 1


def test_connected_components_and_min_segment_size() -> None:
    kwargs = {**QUICK, "presegmentation": "none", "connected_components": True}
    labels = K.segment(_image(), "tip20", **kwargs)
    from skimage.measure import label as connected

    # Every output segment is one 4-connected region.
    for s in np.unique(labels):
        assert connected(labels == s, connectivity=1).max() == 1
    for merge_by in ("boundary", "colour"):
        merged = K.segment(_image(), "tip20", **{**kwargs, "min_segment_size": 30, "merge_by": merge_by})
        assert np.bincount(merged.ravel()).min() >= 30 or merged.max() == 0
        # Merging only joins the connected segments.
        for s in np.unique(labels):
            assert np.unique(merged[labels == s]).size == 1


def _scribbles(h: int = 24, w: int = 32) -> np.ndarray:
    scribbles = np.full((h, w), 255, dtype=np.int64)
    scribbles[4, 2:14] = 1  # top-left quadrant
    scribbles[18, 18:30] = 0  # bottom-right quadrant
    scribbles[3:9, 24] = 2  # top-right quadrant
    return scribbles


def test_scribbles_are_respected_on_scribbled_pixels() -> None:
    scribbles = _scribbles()
    marked = scribbles != 255
    kwargs = {**QUICK, "max_iter": 40, "clamp_scribbles": False}
    labels, info = K.segment(_image(), "tip20", scribbles=scribbles, return_info=True, **kwargs)
    # The fit alone (no clamping) gives the scribble classes on the scribbled pixels ...
    assert (labels[marked] == scribbles[marked]).mean() >= 0.95
    # ... the stopping rule uses the number of scribble classes ...
    assert not info.stopped_early or info.label_history[-1] <= 3
    # ... and with clamping (the default) every scribbled pixel has its label.
    clamped = K.segment(_image(), "tip20", scribbles=scribbles, **{**QUICK, "max_iter": 3})
    np.testing.assert_array_equal(clamped[marked], scribbles[marked])
    # Unscribbled segments are numbered after the largest scribble class.
    assert set(np.unique(clamped)) - {0, 1, 2} <= set(range(3, 3 + 8))


def test_bad_scribbles_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"scribbles must be an integer label image of the image's size"):
        K.segment(_image(), "fast", scribbles=np.zeros((5, 5), np.int64), **QUICK)
    bad = _scribbles()
    bad[0, 0] = 9
    with pytest.raises(ValueError, match=r"scribble labels must be in \[0, 8\)"):
        K.segment(_image(), "fast", scribbles=bad, **QUICK)


# -- inputs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 3, 3), (1, 7, 3), (2, 5, 3)])
@pytest.mark.parametrize("preset", ["icassp18", "tip20", "fast"])
def test_tiny_images_give_valid_label_maps(shape: tuple[int, int, int], preset: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    labels = K.segment(image, preset, **QUICK)
    assert labels.shape == shape[:2] and labels.dtype == np.int64 and _is_contiguous(labels)


def test_gray_rgba_and_16bit_are_converted() -> None:
    rgb = _image()
    gray = rgb[..., 0]
    expected_gray = K.segment(np.repeat(gray[..., None], 3, axis=2), "fast", **QUICK)
    np.testing.assert_array_equal(K.segment(gray, "fast", **QUICK), expected_gray)
    np.testing.assert_array_equal(K.segment(gray[..., None], "fast", **QUICK), expected_gray)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    expected = K.segment(rgb, "fast", **QUICK)
    np.testing.assert_array_equal(K.segment(rgba, "fast", **QUICK), expected)
    sixteen = rgb.astype(np.uint16) * 256 + 99
    np.testing.assert_array_equal(K.segment(sixteen, "fast", **QUICK), expected)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), r"got dtype float32 with shape \(8, 8, 3\)"),
        (np.zeros((8, 8, 2), np.uint8), r"HxWx3 or HxWx4; got dtype uint8 with shape \(8, 8, 2\)"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"shape \(2, 8, 8, 3\)"),
        (np.zeros((0, 8, 3), np.uint8), r"shape \(0, 8, 3\)"),
    ],
)
def test_bad_arrays_are_value_errors(array: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        K.segment(array, "fast", **QUICK)


def test_image_files_are_read_and_unreadable_files_named(tmp_path) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(_image()).save(path)
    np.testing.assert_array_equal(K.segment(path, "fast", **QUICK), K.segment(_image(), "fast", **QUICK))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.jpg: cannot decode image"):
        K.segment(broken, "fast", **QUICK)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        K.segment(tmp_path / "missing.png", "fast", **QUICK)


def test_memory_guard_fits_small_and_returns_full_size() -> None:
    labels, info = K.segment(_image(h=48, w=64), "fast", return_info=True, **{**QUICK, "max_pixels": 300})
    assert info.fit_size[0] * info.fit_size[1] <= 300
    assert labels.shape == (48, 64) and _is_contiguous(labels)
    config = K.resolve_config("fast", max_pixels=3000, fit_scale=0.5)
    assert K.working_sizes(96, 128, config) == ((47, 63), (24, 32))
    # Shrinking for speed stops at a short side of MIN_FIT_SIDE pixels.
    assert K.working_sizes(12, 40, config) == ((12, 40), (12, 40))


# -- reference mode ----------------------------------------------------------------------------------------


def test_reference_mode_segments_without_updates() -> None:
    references = [_image(1), _image(2)]
    net = K.fit_reference(references, "tip20", seed=0, **{**QUICK, "max_iter": 3, "reference_size": 16})
    assert isinstance(net, KanezakiNet) and net.config.reference_size == 16
    before = {k: v.clone() for k, v in net.state_dict().items()}
    labels = K.segment_with_reference(net, _image(3))
    assert labels.shape == (24, 32) and _is_contiguous(labels)
    assert all(p.grad is None for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    np.testing.assert_array_equal(K.segment_with_reference(net, _image(3)), labels)
    with pytest.raises(ValueError, match="no reference images"):
        K.fit_reference([], "tip20")


# -- LightningModule ---------------------------------------------------------------------------------------

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalised(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def _samples() -> list[dict]:
    small = _image(1, h=20, w=28)
    return [
        {
            "image": _normalised(_image(0)),
            "mask": torch.zeros(24, 32, dtype=torch.long),
            "meta": {"path": "a"},
        },
        {"image": _normalised(small), "mask": torch.ones(20, 28, dtype=torch.long), "meta": {"path": "b"}},
    ]


def test_lightning_test_step_contract() -> None:
    assert METHODS.get("kanezaki") is K.KanezakiSegmentation
    module = K.KanezakiSegmentation("fast", seed=0, overrides=QUICK, mean=MEAN, std=STD)
    batch = collate_samples(_samples())
    out = module.test_step(batch, 0)
    assert set(out) == {"pred", "target", "masks"}
    assert out["pred"].shape == (2, 24, 32) and out["pred"].dtype == torch.long
    assert out["target"] is batch["mask"] and out["masks"] is None
    # Each image is segmented at its own size from the un-normalised pixels; padding is 0.
    expected_small = K.segment(_image(1, h=20, w=28), "fast", seed=0, **QUICK)
    assert torch.equal(out["pred"][1, :20, :28], torch.from_numpy(expected_small))
    assert (out["pred"][1, 20:] == 0).all() and (out["pred"][1, :, 28:] == 0).all()
    expected_big = K.segment(_image(0), "fast", seed=0, **QUICK)
    assert torch.equal(out["pred"][0], torch.from_numpy(expected_big))
    predicted = module.predict_step(batch, 0)
    assert set(predicted) == {"pred", "meta"} and torch.equal(predicted["pred"], out["pred"])


def test_to_uint8_handles_uint8_unit_and_0_255_normalisations() -> None:
    image = _image()
    chw = torch.from_numpy(image).permute(2, 0, 1)
    plain = K.KanezakiSegmentation("fast")
    np.testing.assert_array_equal(plain.to_uint8(chw), image)
    np.testing.assert_array_equal(plain.to_uint8(chw.float() / 255.0), image)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    scaled = (chw.float() - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    np.testing.assert_array_equal(K.KanezakiSegmentation("fast", mean=mean, std=std).to_uint8(scaled), image)


class _DataModule(L.LightningDataModule):
    mean, std = MEAN, STD

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_samples(), batch_size=2, collate_fn=collate_samples)


class _Collect(L.Callback):
    def __init__(self) -> None:
        self.outputs: list[dict] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.outputs.append(outputs)


def test_trainer_test_uses_datamodule_normalisation_under_inference_mode() -> None:
    collect = _Collect()
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[collect],
    )
    module = K.KanezakiSegmentation("fast", seed=0, overrides=QUICK)
    trainer.test(module, datamodule=_DataModule(), verbose=False)
    (out,) = collect.outputs
    expected = K.segment(_image(0), "fast", seed=0, **QUICK)
    assert torch.equal(out["pred"][0], torch.from_numpy(expected))


def test_config_is_a_frozen_dataclass_with_every_key() -> None:
    keys = K.config_keys()
    for key in ("presegmentation", "widths", "conv_order", "mu_con", "optimizer", "max_iter", "min_labels"):
        assert key in keys
    with pytest.raises(dataclasses.FrozenInstanceError):
        K.PRESETS["fast"].lr = 1.0  # type: ignore[misc]


def test_bsds500_cli_config_builds_the_method(monkeypatch) -> None:
    # The repo's configs/kanezaki/ now holds LightningCLI configs (the presets moved into the package).
    from segzoo.cli import SegzooCLI

    config = Path(__file__).resolve().parents[2] / "configs" / "kanezaki" / "bsds500.yaml"
    monkeypatch.setenv("SEGZOO_DATA", "/nonexistent")
    cli = SegzooCLI(args=["--config", str(config)], run=False)
    assert isinstance(cli.model, K.KanezakiSegmentation)
    assert cli.model.config == K.PRESETS["fast"]
    assert cli.datamodule.hparams["dataset"] == "bsds500"
    assert cli.datamodule.hparams["test_split"] == "val"
    assert str(cli.datamodule.hparams["root"]).endswith("bsds500")
