"""``segzoo segment PATH... --out DIR``: Kanezaki unsupervised segmentation of image files and folders.

Every image gets its own fresh network (training is inference). Per image ``<stem>`` three files are
written into ``DIR``: ``labels/<stem>.png`` (palette PNG whose pixel values are the segment ids),
``paint/<stem>.png`` (every segment painted with its mean colour) and ``overlays/<stem>.jpg`` (the
coloured segments blended over the image). Inputs are never overwritten.

``--crf`` refines the labels with a dense CRF. The Kanezaki core returns hard labels, not probabilities,
so the CRF's unary term is built from them: probability ``CRF_CONFIDENCE`` (0.8) on a pixel's own label
and the rest spread evenly over the other labels. The CRF then moves pixels whose neighbours of similar
colour disagree with them, i.e. it snaps segment boundaries to colour edges and removes speckle.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from segzoo.data.io import IMAGE_EXTENSIONS, list_images

CRF_CONFIDENCE = 0.8
OUTPUT_KINDS = ("labels", "paint", "overlays")


class CommandError(Exception):
    """A user error: printed as ``segzoo segment: error: ...`` with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``segzoo segment``."""
    from segzoo.methods.kanezaki import PRESETS

    parser = argparse.ArgumentParser(
        prog="segzoo segment",
        description=(
            "Unsupervised segmentation (Kanezaki) of images and folders of images (images directly inside, "
            "sorted). Each image fits its own fresh network. Writes labels/<stem>.png, paint/<stem>.png "
            "(mean colours) and overlays/<stem>.jpg into --out."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument(
        "--preset", default="fast", choices=sorted(PRESETS), help="Kanezaki settings (default: fast)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every per-image network (default 0)")
    parser.add_argument(
        "--crf",
        action="store_true",
        help=f"refine with a dense CRF (pydensecrf; unary from the labels at confidence {CRF_CONFIDENCE})",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset setting, VALUE read as YAML (e.g. --set max_iter=32 --set widths=[16,8])",
    )
    return parser


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict, each VALUE parsed as a YAML scalar or list."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CommandError(f"--set {item!r}: expected KEY=VALUE, e.g. --set max_iter=32")
        try:
            overrides[key] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise CommandError(f"--set {item!r}: value {text!r} is not valid YAML ({err})") from err
    return overrides


def expand_inputs(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(image files, input folders): folders expand to the images directly inside them, sorted; each
    file appears once. A missing path, a non-image file or an image-less folder is an error."""
    images: list[Path] = []
    folders: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            try:
                images.extend(list_images(path))
            except ValueError as err:
                raise CommandError(str(err)) from err
            folders.append(path)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise CommandError(
                    f"{path}: not an image file; expected one of {', '.join(IMAGE_EXTENSIONS)}"
                )
            images.append(path)
        else:
            raise CommandError(f"{path}: no such file or folder")
    unique: dict[Path, Path] = {}
    for image in images:
        unique.setdefault(image.resolve(), image)
    return list(unique.values()), folders


def output_paths(out: Path, stem: str) -> dict[str, Path]:
    """The three files written for the image ``stem``."""
    return {
        "labels": out / "labels" / f"{stem}.png",
        "paint": out / "paint" / f"{stem}.png",
        "overlays": out / "overlays" / f"{stem}.jpg",
    }


def check_outputs(images: Sequence[Path], folders: Sequence[Path], out: Path) -> None:
    """Refuse a run that could touch its inputs or mix up two images.

    Errors: ``out`` is, or is a parent of, an input folder; an output file would be an input file; two
    inputs share a file stem (their outputs would collide).
    """
    out_resolved = out.resolve()
    for folder in folders:
        resolved = folder.resolve()
        if resolved == out_resolved or out_resolved in resolved.parents:
            raise CommandError(
                f"--out {out} is or contains the input folder {folder}; choose an output folder outside "
                "the inputs"
            )
    inputs = {image.resolve(): image for image in images}
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise CommandError(
                f"inputs {stems[image.stem]} and {image} share the name {image.stem!r}; their outputs would "
                "overwrite each other"
            )
        stems[image.stem] = image
        for target in output_paths(out, image.stem).values():
            if target.resolve() in inputs:
                raise CommandError(
                    f"output {target} would overwrite the input {inputs[target.resolve()]}; choose another "
                    "--out"
                )


def labels_to_probs(labels: np.ndarray, confidence: float = CRF_CONFIDENCE) -> np.ndarray:
    """[C, H, W] float32 pseudo-probabilities from an [H, W] label map with ids 0..C-1: ``confidence`` on
    each pixel's label and ``(1 - confidence) / (C - 1)`` on every other label."""
    n = int(labels.max()) + 1
    if n < 2:
        return np.ones((1, *labels.shape), dtype=np.float32)
    probs = np.full((n, *labels.shape), (1.0 - confidence) / (n - 1), dtype=np.float32)
    np.put_along_axis(probs, labels[None].astype(np.int64), np.float32(confidence), axis=0)
    return probs


def refine_with_crf(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Dense-CRF refinement of hard labels (smoothness + appearance kernels), relabelled 0..K-1."""
    from segzoo.methods.kanezaki import relabel_first_appearance
    from segzoo.ops.crf import dense_crf

    if labels.max() < 1:
        return labels
    refined = dense_crf(
        rgb,
        labels_to_probs(labels),
        sxy_gaussian=3.0,
        compat_gaussian=3.0,
        sxy_bilateral=50.0,
        srgb_bilateral=13.0,
        compat_bilateral=5.0,
        iterations=5,
    )
    return relabel_first_appearance(refined)


def write_outputs(rgb: np.ndarray, labels: np.ndarray, paths: dict[str, Path], note: str) -> None:
    """Write the label PNG, the mean-colour painting and the overlay (each atomically)."""
    from segzoo import viz

    viz.save_label_png(labels, paths["labels"], ignore_index=None, text={"segzoo": note})
    viz.atomic_save(Image.fromarray(viz.mean_color(rgb, labels)), paths["paint"], format="PNG")
    overlay = viz.overlay(rgb, labels, ignore_index=None)
    viz.atomic_save(Image.fromarray(overlay), paths["overlays"], format="JPEG", quality=90)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from segzoo.methods.kanezaki import resolve_config, segment, to_rgb_uint8

    try:
        config = resolve_config(args.preset, **parse_overrides(args.overrides))
    except (TypeError, ValueError) as err:
        raise CommandError(f"--set: {err}") from err
    images, folders = expand_inputs(args.paths)
    out = Path(args.out)
    check_outputs(images, folders, out)
    todo = [
        image
        for image in images
        if args.overwrite or not all(p.exists() for p in output_paths(out, image.stem).values())
    ]
    skipped = len(images) - len(todo)
    note = f"kanezaki preset={args.preset} seed={args.seed} crf={args.crf} overrides={args.overrides}"
    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]segment"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    ) as progress:
        task = progress.add_task("", total=len(todo))
        for image in todo:
            progress.update(task, description=image.name)
            rgb = to_rgb_uint8(image)
            labels = segment(rgb, config, seed=args.seed)
            if args.crf:
                labels = refine_with_crf(rgb, labels)
            write_outputs(rgb, labels, output_paths(out, image.stem), note)
            progress.advance(task)
    seconds = time.perf_counter() - start
    per_image = seconds / len(todo) if todo else 0.0
    if skipped:
        print(f"skipped {skipped} image(s) whose outputs exist in {out} (use --overwrite to redo them)")
    print(f"{len(todo)} images, {per_image:.2f} s per image, written to {out}")
    return 0


def segment_command(argv: Sequence[str]) -> int:
    """Run ``segzoo segment`` with the arguments after the verb; returns the exit status (0 ok, 2 usage
    or input error, 1 an image that failed to read or segment)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # --help, or argparse's own usage errors (already printed)
        return int(exit_.code or 0)
    try:
        return _run(args)
    except CommandError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
