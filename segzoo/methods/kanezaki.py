"""Kanezaki unsupervised segmentation: fit a fresh small CNN to one image so that its own argmax labels,
refined by superpixels (ICASSP 2018) or smoothed by a spatial-continuity loss (TIP 2020), become its targets.

Training is inference: :func:`segment` builds a new net per image. Presets ship with the package in
``segzoo/methods/kanezaki_presets/{icassp18,tip20,fast}.yaml`` (keys = :class:`KanezakiConfig` fields):

- ``icassp18``: SLIC (10000 segments, compactness 100) refinement, conv-ReLU-BN net with C=100, nConv=2,
  SGD lr 0.1 momentum 0.9, at most 1000 iterations, stop at <= 3 labels.
- ``tip20``: no superpixels, similarity + continuity loss (mu 1, 1), same net and optimiser.
- ``fast`` (default): the speed/quality choice for CPUs (see the YAML file for the numbers).

TIP 2020 extras: ``scribbles`` (a label image, ``scribble_unlabelled`` where unscribbled) and reference
mode (:func:`fit_reference` on a set of images, then :func:`segment_with_reference` without fitting).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from skimage.color import rgb2lab

from segzoo.data.io import read_image_array
from segzoo.losses.kanezaki import continuity_loss, scribble_loss, similarity_loss
from segzoo.methods.kanezaki_net import CONV_ORDERS, KanezakiNet, build_net
from segzoo.ops.superpixels import felzenszwalb, merge_small_segments, slic, superpixel_vote
from segzoo.registry import METHODS

# Package data (pyproject.toml), so the presets exist in non-editable installs too.
CONFIG_DIR = Path(__file__).resolve().parent / "kanezaki_presets"
PRESEGMENTATIONS = ("slic", "felzenszwalb", "none")
OPTIMIZERS = ("sgd", "adam")
MERGE_BY = ("boundary", "colour")
MIN_FIT_SIDE = 8


@dataclass(frozen=True)
class KanezakiConfig:
    """Every choice of the method. Defaults are the ICASSP 2018 released settings.

    Pre-segmentation: ``presegmentation`` is ``slic``, ``felzenszwalb`` or ``none``; ``slic_*`` and
    ``fz_*`` are the scikit-image parameters. Net: hidden conv layers ``widths``/``kernel_sizes`` (ICASSP
    nConv=2 is two 3x3 layers of C), then a 1x1 conv to ``n_channels`` (= the most labels) and BN;
    ``conv_order`` ``conv-relu-bn`` (ICASSP/TIP) or ``conv-bn-relu``. Loss: ``mu_sim`` x CE to the (refined)
    argmax + ``mu_con`` x continuity + ``mu_scr`` x CE to scribbles. Optimiser ``sgd``/``adam`` with
    ``lr``, ``momentum`` (SGD), ``weight_decay``. Stopping: at most ``max_iter`` updates, or as soon as the
    argmax has <= ``min_labels`` distinct labels. Resolution: the net is fitted on the image resized by
    ``fit_scale`` and further shrunk so it has at most ``max_pixels`` pixels (memory guard); labels are
    upsampled (nearest) back. Output: ``vote_output`` paints the final labels by superpixel majority;
    ``connected_components`` splits each label into its 4-connected regions; ``min_segment_size`` then
    merges smaller segments into a neighbour (0: off): the one with the longest shared boundary
    (``merge_by: boundary``) or the nearest mean Lab colour (``colour``). Reference mode resizes the
    reference images to ``reference_size`` squared (0 keeps their size). ``num_threads`` > 0 sets torch's
    intra-op threads while fitting (restored afterwards); 0 leaves them alone. Results can differ in the
    last bits between thread counts, so a preset that fixes it is reproducible across machines.
    ``channels_last`` runs the net in NHWC memory format (faster convs and channel argmax on CPU).
    """

    presegmentation: str = "slic"
    slic_n_segments: int = 10000
    slic_compactness: float = 100.0
    slic_sigma: float = 0.0
    fz_scale: float = 32.0
    fz_sigma: float = 0.5
    fz_min_size: int = 64
    widths: tuple[int, ...] = (100, 100)
    kernel_sizes: tuple[int, ...] = (3, 3)
    n_channels: int = 100
    conv_order: str = "conv-relu-bn"
    mu_sim: float = 1.0
    mu_con: float = 0.0
    mu_scr: float = 0.5
    scribble_unlabelled: int = 255
    clamp_scribbles: bool = True
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    max_iter: int = 1000
    min_labels: int = 3
    fit_scale: float = 1.0
    max_pixels: int = 1_000_000
    vote_output: bool = False
    connected_components: bool = False
    min_segment_size: int = 0
    merge_by: str = "boundary"
    reference_size: int = 224
    num_threads: int = 0
    channels_last: bool = True
    # Where the values came from, for error messages; not a setting.
    source: str = field(default="<defaults>", compare=False, repr=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name == "source":
                continue
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), f.default, self.source))
        checks = [
            (self.presegmentation in PRESEGMENTATIONS, "presegmentation", f"one of {PRESEGMENTATIONS}"),
            (self.conv_order in CONV_ORDERS, "conv_order", f"one of {CONV_ORDERS}"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}"),
            (self.merge_by in MERGE_BY, "merge_by", f"one of {MERGE_BY}"),
            (len(self.widths) == len(self.kernel_sizes) > 0, "kernel_sizes", "one per entry of widths"),
            (all(w > 0 for w in self.widths), "widths", "positive integers"),
            (all(k > 0 and k % 2 == 1 for k in self.kernel_sizes), "kernel_sizes", "odd positive integers"),
            (self.n_channels >= 2, "n_channels", ">= 2"),
            (self.max_iter >= 0, "max_iter", ">= 0"),
            (self.min_labels >= 1, "min_labels", ">= 1"),
            (0.0 < self.fit_scale <= 1.0, "fit_scale", "in (0, 1]"),
            (self.max_pixels >= 1, "max_pixels", ">= 1"),
            (self.lr > 0, "lr", "> 0"),
            (min(self.mu_sim, self.mu_con, self.mu_scr) >= 0, "mu_sim/mu_con/mu_scr", ">= 0"),
            (self.reference_size >= 0, "reference_size", ">= 0"),
            (self.min_segment_size >= 0, "min_segment_size", ">= 0"),
            (self.num_threads >= 0, "num_threads", ">= 0"),
            (self.slic_n_segments >= 1 and self.fz_min_size >= 0, "slic_n_segments/fz_min_size", ">= 1/0"),
        ]
        for ok, name, expected in checks:
            if not ok:
                value = getattr(self, name, None) if "/" not in name else None
                shown = f" {value!r}" if value is not None else ""
                raise ValueError(f"{self.source}: invalid {name}{shown}; expected {expected}")


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    """Check ``value`` against the type of the field's default (YAML gives lists, ints for floats)."""
    bad = ValueError(f"{source}: {name} = {value!r} has the wrong type; expected {type(default).__name__}")
    if isinstance(default, bool):
        if not isinstance(value, (bool, np.bool_)):
            raise bad
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
        return int(value)
    if isinstance(default, float):
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise bad
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad
        return value.lower()
    if isinstance(default, tuple):
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
        ):
            raise ValueError(f"{source}: {name} = {value!r} has the wrong type; expected a list of integers")
        return tuple(int(v) for v in value)
    return value


def config_keys() -> list[str]:
    """The keys a Kanezaki YAML file (or ``**overrides``) may set."""
    return [f.name for f in dataclasses.fields(KanezakiConfig) if f.name != "source"]


def load_config(path: str | Path) -> KanezakiConfig:
    """Read a Kanezaki YAML file (a mapping of :class:`KanezakiConfig` fields); unknown keys are errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Kanezaki config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    allowed = config_keys()
    for key in data:
        if key not in allowed:
            raise ValueError(f"{path}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    return KanezakiConfig(**data, source=str(path))


def _load_presets(folder: Path = CONFIG_DIR) -> dict[str, KanezakiConfig]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: Kanezaki preset folder not found (expected icassp18.yaml etc.)")
    return {p.stem: load_config(p) for p in sorted(folder.glob("*.yaml"))}


PRESETS: dict[str, KanezakiConfig] = _load_presets()


def resolve_config(preset: str | KanezakiConfig = "fast", **overrides: Any) -> KanezakiConfig:
    """A preset (name or config) with ``overrides`` applied; unknown names and keys are errors."""
    if isinstance(preset, KanezakiConfig):
        config = preset
    elif preset in PRESETS:
        config = PRESETS[preset]
    else:
        raise KeyError(f"unknown Kanezaki preset {preset!r}; presets: {', '.join(sorted(PRESETS))}")
    if not overrides:
        return config
    allowed = config_keys()
    for key in overrides:
        if key not in allowed:
            raise TypeError(f"unknown Kanezaki setting {key!r}; allowed: {', '.join(allowed)}")
    source = f"{config.source} with overrides {sorted(overrides)}"
    return dataclasses.replace(config, **overrides, source=source)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (0: unchanged); small convs on a busy CPU often run
    faster on fewer threads."""
    if n <= 0:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class SegmentInfo:
    """What one :func:`segment` call did: updates made, label count (before refinement) per update, whether
    ``min_labels`` stopped it, the final label count, the fitting resolution (H, W) and the wall time."""

    iterations: int
    label_history: list[int]
    stopped_early: bool
    n_labels: int
    fit_size: tuple[int, int]
    seconds: float


# ---------------------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------------------


def to_rgb_uint8(image: np.ndarray | str | Path) -> np.ndarray:
    """An HxWx3 uint8 array from an image file or an array.

    Grayscale HxW / HxWx1 are repeated to 3 channels, RGBA drops alpha, uint16 keeps its top byte. Any
    other dtype or shape is a ValueError naming what was given and what is expected.
    """
    if isinstance(image, (str, Path)):
        return read_image_array(image)
    array = np.asarray(image)
    expected = "a uint8 or uint16 image of shape HxW, HxWx1, HxWx3 or HxWx4"
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"expected {expected}; got dtype {array.dtype} with shape {array.shape}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"expected {expected}; got dtype {array.dtype} with shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def working_sizes(height: int, width: int, config: KanezakiConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """(output_size, fit_size): the image shrunk to at most ``max_pixels`` pixels (memory guard; superpixels
    and the final vote live there), and that size times ``fit_scale`` (where the net is fitted; not below
    a short side of ``MIN_FIT_SIDE`` pixels)."""
    guard = min(1.0, math.sqrt(config.max_pixels / (height * width)))
    output = (height, width) if guard >= 1.0 else (max(1, int(height * guard)), max(1, int(width * guard)))
    # Shrinking an image whose short side would drop under MIN_FIT_SIDE saves nothing and loses detail.
    if config.fit_scale >= 1.0 or min(output) * config.fit_scale < MIN_FIT_SIDE:
        return output, output
    return output, (round(output[0] * config.fit_scale), round(output[1] * config.fit_scale))


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == size:
        return image
    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an HxW label map by index arithmetic (pixel centres)."""
    h, w = labels.shape
    if (h, w) == size:
        return labels
    rows = np.minimum((np.arange(size[0]) + 0.5) * h / size[0], h - 1).astype(np.int64)
    cols = np.minimum((np.arange(size[1]) + 0.5) * w / size[1], w - 1).astype(np.int64)
    return labels[rows[:, None], cols[None, :]]


def presegment(image: np.ndarray, config: KanezakiConfig) -> np.ndarray | None:
    """The superpixel map (HxW int64 from 0) the config asks for, or None for ``presegmentation: none``."""
    if config.presegmentation == "slic":
        return slic(image, config.slic_n_segments, config.slic_compactness, sigma=config.slic_sigma)
    if config.presegmentation == "felzenszwalb":
        return felzenszwalb(image, config.fz_scale, config.fz_sigma, config.fz_min_size)
    return None


def relabel_first_appearance(labels: np.ndarray, keep: Sequence[int] = ()) -> np.ndarray:
    """Renumber labels to contiguous ids in raster order of first appearance.

    Ids in ``keep`` (scribble classes) keep their value; the others are numbered after ``max(keep)``.
    """
    flat = labels.ravel()
    values, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    keep_set = {int(k) for k in keep}
    new_ids = np.empty(len(values), dtype=np.int64)
    next_id = max(keep_set) + 1 if keep_set else 0
    for i in np.argsort(first, kind="stable"):
        if int(values[i]) in keep_set:
            new_ids[i] = int(values[i])
        else:
            new_ids[i] = next_id
            next_id += 1
    return new_ids[inverse.ravel()].reshape(labels.shape)


def _split_components(labels: np.ndarray) -> np.ndarray:
    from skimage.measure import label as connected

    return connected(labels + 1, background=0, connectivity=1).astype(np.int64) - 1


# ---------------------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------------------


class _Problem:
    """One image prepared for fitting: the net input at ``fit_size``; superpixels and scribbles both at
    ``fit_size`` (for the loss) and at ``output_size`` (for the final vote and clamping)."""

    def __init__(
        self,
        image: np.ndarray,
        config: KanezakiConfig,
        device: torch.device,
        output_size: tuple[int, int],
        fit_size: tuple[int, int],
        scribbles: np.ndarray | None = None,
    ) -> None:
        self.output_size, self.fit_size = output_size, fit_size
        out_image = _resize_image(image, output_size)
        fit_image = _resize_image(out_image, fit_size)
        x = torch.from_numpy(np.array(fit_image)).to(device).permute(2, 0, 1)[None].float().div_(255.0)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.x = x.contiguous(memory_format=memory_format)
        # Superpixels are computed once at the output resolution, so their parameters keep their meaning
        # in output pixels whatever fit_scale is; the fitting copy is a nearest-neighbour subsample.
        segments = presegment(out_image, config)
        self.segments_out = self.segments = None
        self.num_segments = 0
        if segments is not None:
            self.num_segments = int(segments.max()) + 1
            self.segments_out = torch.from_numpy(segments.ravel()).to(device)
            self.segments = torch.from_numpy(_resize_nearest(segments, fit_size).ravel()).to(device)
        self.scribbles = self.scribbles_out = None
        if scribbles is not None:
            out_scribbles = _resize_nearest(scribbles, output_size)
            self.scribbles_out = torch.from_numpy(out_scribbles).to(device)
            self.scribbles = torch.from_numpy(_resize_nearest(out_scribbles, fit_size)).to(device)[None]


def _new_net(config: KanezakiConfig, seed: int, device: torch.device) -> KanezakiNet:
    net = build_net(
        config.widths, config.kernel_sizes, config.n_channels, config.conv_order, seed, device=device
    )
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net.train()


def _make_optimizer(net: torch.nn.Module, config: KanezakiConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _targets(logits: torch.Tensor, problem: _Problem, n_channels: int) -> tuple[torch.Tensor, int]:
    """The argmax (refined by the superpixel vote when there are superpixels) and its label count."""
    target = logits.detach().argmax(dim=1)
    n_labels = int((torch.bincount(target.reshape(-1), minlength=n_channels) > 0).sum())
    if problem.segments is not None:
        voted = superpixel_vote(target.reshape(-1), problem.segments, problem.num_segments, n_channels)
        target = voted.view_as(target)
    return target, n_labels


def _loss(
    logits: torch.Tensor, target: torch.Tensor, problem: _Problem, config: KanezakiConfig
) -> torch.Tensor:
    loss = logits.new_zeros(())
    if problem.scribbles is not None:
        scribbled = problem.scribbles != config.scribble_unlabelled
        target = torch.where(scribbled, torch.full_like(target, -100), target)
        if config.mu_scr > 0:
            loss = loss + config.mu_scr * scribble_loss(logits, problem.scribbles, config.scribble_unlabelled)
    if config.mu_sim > 0:
        loss = loss + config.mu_sim * similarity_loss(logits, target, ignore_index=-100)
    if config.mu_con > 0:
        loss = loss + config.mu_con * continuity_loss(logits)
    return loss


def _can_normalise(size: tuple[int, int]) -> bool:
    # Batch-statistics BN needs more than one value per channel: a 1-pixel image cannot be fitted.
    return size[0] * size[1] > 1


def _predict(net: KanezakiNet, problem: _Problem, config: KanezakiConfig) -> torch.Tensor:
    """Final labels at the output resolution: argmax at the fitting resolution, upsampled (nearest), voted
    by superpixels when ``vote_output``, scribbled pixels clamped to their scribble."""
    with torch.no_grad():
        logits = net(problem.x)
    labels = logits.argmax(dim=1)[0]
    if problem.fit_size != problem.output_size:
        labels = F.interpolate(labels[None, None].float(), size=problem.output_size, mode="nearest-exact")
        labels = labels[0, 0].long()
    if config.vote_output and problem.segments_out is not None:
        voted = superpixel_vote(
            labels.reshape(-1), problem.segments_out, problem.num_segments, net.n_channels
        )
        labels = voted.view_as(labels)
    if problem.scribbles_out is not None and config.clamp_scribbles:
        scribbled = problem.scribbles_out != config.scribble_unlabelled
        labels = torch.where(scribbled, problem.scribbles_out, labels)
    return labels


def _finish(
    labels: torch.Tensor | np.ndarray, rgb: np.ndarray, config: KanezakiConfig, keep: Sequence[int]
) -> np.ndarray:
    array = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    array = _resize_nearest(array.astype(np.int64), rgb.shape[:2])
    if not keep:
        # Post-processing would renumber scribble classes, so it only runs without scribbles.
        if config.connected_components:
            array = _split_components(array)
        if config.min_segment_size > 1:
            features = rgb2lab(rgb) if config.merge_by == "colour" else None
            array = merge_small_segments(array, config.min_segment_size, features)
    return relabel_first_appearance(array, keep)


def _check_scribbles(scribbles: Any, size: tuple[int, int], config: KanezakiConfig) -> np.ndarray:
    array = np.asarray(scribbles)
    if array.shape != size or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"scribbles must be an integer label image of the image's size {size} (H, W) with "
            f"{config.scribble_unlabelled} where unscribbled; got dtype {array.dtype} with shape "
            f"{array.shape}"
        )
    array = array.astype(np.int64)
    labelled = array[array != config.scribble_unlabelled]
    if labelled.size and (labelled.min() < 0 or labelled.max() >= config.n_channels):
        raise ValueError(
            f"scribble labels must be in [0, {config.n_channels}) (n_channels) or "
            f"{config.scribble_unlabelled} (unlabelled); got values {labelled.min()}..{labelled.max()}"
        )
    return array


def _resolve_device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


@overload
def segment(
    image: np.ndarray | str | Path,
    preset: str | KanezakiConfig = ...,
    seed: int = ...,
    scribbles: np.ndarray | None = ...,
    device: torch.device | str | None = ...,
    return_info: Literal[False] = ...,
    **overrides: Any,
) -> np.ndarray: ...
@overload
def segment(
    image: np.ndarray | str | Path,
    preset: str | KanezakiConfig = ...,
    seed: int = ...,
    scribbles: np.ndarray | None = ...,
    device: torch.device | str | None = ...,
    return_info: Literal[True] = ...,
    **overrides: Any,
) -> tuple[np.ndarray, SegmentInfo]: ...


def segment(
    image: np.ndarray | str | Path,
    preset: str | KanezakiConfig = "fast",
    seed: int = 0,
    scribbles: np.ndarray | None = None,
    device: torch.device | str | None = None,
    return_info: bool = False,
    **overrides: Any,
) -> np.ndarray | tuple[np.ndarray, SegmentInfo]:
    """Segment one image by fitting a fresh net to it; returns an HxW int64 label map (0..n-1).

    Args:
        image: HxWx3 uint8 array (grayscale, RGBA and uint16 are converted) or an image file path.
        preset: ``fast`` (default), ``icassp18``, ``tip20`` or a :class:`KanezakiConfig`.
        seed: initialises the net; the same seed gives the same labels on the same device and thread count
            (``fast`` fixes ``num_threads: 1``).
        scribbles: optional HxW integer labels, ``scribble_unlabelled`` (255) where unscribbled. Scribble
            class k is output label k (other segments are numbered after the largest scribble class); the
            stopping rule uses the number of scribble classes as ``min_labels`` (as the TIP release does),
            and with ``clamp_scribbles`` scribbled pixels always get their scribble label.
        device: where to fit (default CPU).
        return_info: also return a :class:`SegmentInfo` (iterations, label counts, timing).
        **overrides: any :class:`KanezakiConfig` field, e.g. ``max_iter=50``.

    Large images (memory guard): an image over ``max_pixels`` pixels (default 1e6) is shrunk to that many
    for superpixels, fitting and voting, and the labels are upsampled back with nearest neighbour, so
    memory stays bounded whatever the input size. ``fit_scale`` < 1 additionally fits the net on a smaller
    copy for speed. A 1-pixel image is a single segment (batch-statistics BN cannot normalise one value).
    """
    start = time.perf_counter()
    config = resolve_config(preset, **overrides)
    rgb = to_rgb_uint8(image)
    full_size = (rgb.shape[0], rgb.shape[1])
    scribble_map = None if scribbles is None else _check_scribbles(scribbles, full_size, config)
    keep: list[int] = []
    min_labels = config.min_labels
    if scribble_map is not None:
        keep = sorted(int(v) for v in np.unique(scribble_map) if v != config.scribble_unlabelled)
        min_labels = max(len(keep), 1)
    output_size, fit_size = working_sizes(*full_size, config)
    if not _can_normalise(fit_size):
        labels = np.full(full_size, keep[0] if keep else 0, dtype=np.int64)
        info = SegmentInfo(0, [], False, 1, fit_size, time.perf_counter() - start)
        return (labels, info) if return_info else labels
    dev = _resolve_device(device)
    # Lightning runs test/predict under inference mode; fitting needs autograd whatever the caller's mode.
    with torch.inference_mode(False), torch.enable_grad(), _torch_threads(config.num_threads):
        problem = _Problem(rgb, config, dev, output_size, fit_size, scribble_map)
        net = _new_net(config, seed, dev)
        optimizer = _make_optimizer(net, config)
        history: list[int] = []
        stopped = False
        for _ in range(config.max_iter):
            optimizer.zero_grad(set_to_none=True)
            logits = net(problem.x)
            target, n_labels = _targets(logits, problem, config.n_channels)
            _loss(logits, target, problem, config).backward()
            optimizer.step()
            history.append(n_labels)
            if n_labels <= min_labels:
                stopped = True
                break
        labels = _predict(net, problem, config)
    out = _finish(labels, rgb, config, keep)
    if not return_info:
        return out
    n_final = int(np.unique(out).size)
    return out, SegmentInfo(len(history), history, stopped, n_final, fit_size, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------
# Reference mode (TIP 2020)
# ---------------------------------------------------------------------------------------------------------


def fit_reference(
    images: Sequence[np.ndarray | str | Path],
    preset: str | KanezakiConfig = "fast",
    seed: int = 0,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> KanezakiNet:
    """Fit one net on a set of reference images (TIP 2020 reference mode) and return it.

    Each image is resized to ``reference_size`` squared (TIP: 224; 0 keeps the working size). Every one of
    ``max_iter`` rounds makes one update per image, in order, so each image gets ``max_iter`` updates
    (TIP: 1000 and ``mu_con`` 5; pass them as overrides). ``min_labels`` does not stop reference fitting.
    The returned net carries its config as ``net.config`` for :func:`segment_with_reference`.
    """
    if len(images) == 0:
        raise ValueError("fit_reference: no reference images given")
    config = resolve_config(preset, **overrides)
    dev = _resolve_device(device)
    with torch.inference_mode(False), torch.enable_grad(), _torch_threads(config.num_threads):
        problems = []
        for image in images:
            rgb = to_rgb_uint8(image)
            if config.reference_size > 0:
                output_size = fit_size = (config.reference_size, config.reference_size)
            else:
                output_size, fit_size = working_sizes(rgb.shape[0], rgb.shape[1], config)
            if not _can_normalise(fit_size):
                raise ValueError(
                    f"fit_reference: reference image {len(problems)} of size {rgb.shape[:2]} is too small "
                    "to fit (needs at least 2 pixels)"
                )
            problems.append(_Problem(rgb, config, dev, output_size, fit_size))
        net = _new_net(config, seed, dev)
        optimizer = _make_optimizer(net, config)
        for _ in range(config.max_iter):
            for problem in problems:
                optimizer.zero_grad(set_to_none=True)
                logits = net(problem.x)
                target, _ = _targets(logits, problem, config.n_channels)
                _loss(logits, target, problem, config).backward()
                optimizer.step()
    net.zero_grad(set_to_none=True)
    net.config = config
    return net


def segment_with_reference(net: KanezakiNet, image: np.ndarray | str | Path) -> np.ndarray:
    """Segment a new image with a net from :func:`fit_reference`: one forward pass, no updates.

    The working resolution, superpixels (for ``vote_output``) and relabelling follow ``net.config``.
    """
    config: KanezakiConfig = getattr(net, "config", None) or KanezakiConfig()
    rgb = to_rgb_uint8(image)
    full_size = (rgb.shape[0], rgb.shape[1])
    output_size, fit_size = working_sizes(*full_size, config)
    if not _can_normalise(fit_size):
        return np.zeros(full_size, dtype=np.int64)
    dev = next(net.parameters()).device
    problem = _Problem(rgb, config, dev, output_size, fit_size)
    return _finish(_predict(net, problem, config), rgb, config, ())


# ---------------------------------------------------------------------------------------------------------
# LightningModule
# ---------------------------------------------------------------------------------------------------------


@METHODS.register("kanezaki")
class KanezakiSegmentation(L.LightningModule):
    """Per-image Kanezaki segmentation inside the Lightning loop: every test/predict image is segmented by
    :func:`segment` (a fresh net each, seeded with ``seed``); nothing is trained across images.

    Args:
        preset: ``fast``, ``icassp18`` or ``tip20``.
        seed: seed of every per-image net.
        overrides: :class:`KanezakiConfig` fields to change, e.g. ``{"max_iter": 100}``.
        mean, std: how the batch images were normalised (0..1 scale); default: the datamodule's
            ``mean``/``std`` when attached, else images are taken as floats in [0, 1] (uint8 batches as is).
    """

    def __init__(
        self,
        preset: str = "fast",
        seed: int = 0,
        overrides: dict[str, Any] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = resolve_config(preset, **(overrides or {}))
        self.seed = seed
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None

    def _normalisation(self) -> tuple[Sequence[float] | None, Sequence[float] | None]:
        if self.mean is not None and self.std is not None:
            return self.mean, self.std
        trainer = getattr(self, "_trainer", None)
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        return getattr(datamodule, "mean", None), getattr(datamodule, "std", None)

    def to_uint8(self, image: torch.Tensor) -> np.ndarray:
        """Undo the batch normalisation of one [3, H, W] image and return it as HxWx3 uint8."""
        image = image.detach()
        if image.dtype == torch.uint8:
            return image.permute(1, 2, 0).cpu().numpy()
        image = image.float()
        mean, std = self._normalisation()
        if mean is not None and std is not None:
            m = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
            s = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
            image = image * s + m
            # Means given in 0..255 (e.g. 123.7) mean the images were not scaled to [0, 1] first.
            scale = 1.0 if max(mean) > 1.0 else 255.0
        else:
            scale = 255.0
        array = (image * scale).round().clamp(0, 255).to(torch.uint8)
        return array.permute(1, 2, 0).cpu().numpy()

    def segment_batch(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Labels [B, H, W] for the batch images, each segmented at its ``meta['input_size']`` and padded
        with 0 to the batch size."""
        images = batch["image"]
        metas = batch.get("meta") or [{} for _ in range(images.shape[0])]
        pred = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.long, device=images.device)
        for i in range(images.shape[0]):
            h, w = metas[i].get("input_size", images.shape[-2:])
            rgb = self.to_uint8(images[i, :, :h, :w])
            labels = segment(rgb, self.config, seed=self.seed, device=images.device)
            pred[i, :h, :w] = torch.from_numpy(labels).to(images.device)
        return pred

    def _eval_step(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {"pred": self.segment_batch(batch), "target": batch.get("mask"), "masks": batch.get("masks")}

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        """Segment the batch; ``{"pred", "target", "masks"}`` per docs/design.md."""
        return self._eval_step(batch)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        """Segment the batch; ``{"pred", "target", "masks"}`` per docs/design.md."""
        return self._eval_step(batch)

    def predict_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """Segment the batch; ``{"pred", "meta"}`` per docs/design.md."""
        return {"pred": self.segment_batch(batch), "meta": batch.get("meta")}

    def configure_optimizers(self) -> None:
        """Nothing is trained across images: each image fits its own net inside :func:`segment`."""
        return None
