"""A generic labelled dataset: an ``images/`` folder and a ``masks/`` folder matched by file stem."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from segzoo.data.base import Sample, SegmentationDataset, as_mask, require_dir
from segzoo.data.io import check_same_size, list_images, read_image, read_label_array
from segzoo.registry import DATASETS

_SHOWN = 5


def _by_stem(files: Sequence[Path], folder: Path) -> dict[str, Path]:
    """Index files by stem; two files with one stem (``a.jpg`` and ``a.png``) are ambiguous."""
    index: dict[str, Path] = {}
    for path in files:
        if path.stem in index:
            raise ValueError(
                f"{folder}: two files share the stem {path.stem!r} ({index[path.stem].name}, {path.name}); "
                "expected one file per stem"
            )
        index[path.stem] = path
    return index


def _preview(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (", ..." if len(names) > _SHOWN else "")


def pair_by_stem(
    image_files: Sequence[Path], mask_files: Sequence[Path], image_dir: Path, mask_dir: Path
) -> list[tuple[Path, Path]]:
    """Pair images with masks of the same file stem, sorted by stem.

    Every image needs a mask and every mask an image; otherwise the ``ValueError`` lists up to five
    stems of each side and how many there are.
    """
    images = _by_stem(image_files, image_dir)
    masks = _by_stem(mask_files, mask_dir)
    lonely_images = sorted(images.keys() - masks.keys())
    lonely_masks = sorted(masks.keys() - images.keys())
    if lonely_images or lonely_masks:
        raise ValueError(
            f"unmatched file stems between {image_dir} and {mask_dir}: "
            f"{len(lonely_images)} image(s) without masks [{_preview(lonely_images)}], "
            f"{len(lonely_masks)} mask(s) without images [{_preview(lonely_masks)}]"
        )
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def _rgb(value: Sequence[int], what: str) -> tuple[int, int, int]:
    """Validate one ``[r, g, b]`` entry of a colour list."""
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or len(value) != 3
        or not all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    ):
        raise ValueError(f"{what}: {value!r} is not a colour; expected [r, g, b] with integers in 0..255")
    r, g, b = value
    return (r, g, b)


@DATASETS.register("folder")
class FolderDataset(SegmentationDataset):
    """Images and masks in two folders, paired by file stem.

    Layout: ``root/<split>/<images_dir>`` and ``root/<split>/<masks_dir>`` when the split folder exists,
    else ``root/<images_dir>`` and ``root/<masks_dir>``. Masks are index or palette PNGs; RGB masks need
    ``colors`` (entry ``i`` is the colour of class ``i``), and ``ignore_colors`` map to ``ignore_index``.
    Class names come from ``classes`` or, with ``num_classes``, are ``class_0``, ``class_1``, ...
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[Sample], Sample] | None = None,
        classes: Sequence[str] | None = None,
        num_classes: int | None = None,
        colors: Sequence[Sequence[int]] | None = None,
        ignore_colors: Sequence[Sequence[int]] | None = None,
        images_dir: str = "images",
        masks_dir: str = "masks",
        ignore_index: int = 255,
    ) -> None:
        super().__init__(transforms)
        root = require_dir(root, "dataset root")
        self.split = split
        self.ignore_index = ignore_index
        self.classes = self._class_names(root, classes, num_classes)
        self.colors = self._colour_table(colors, ignore_colors)
        if colors is not None:
            self.palette = [_rgb(c, "colors") for c in colors]

        base = root / split if (root / split / images_dir).is_dir() else root
        if not (base / images_dir).is_dir():
            raise FileNotFoundError(
                f"{root}: no image folder; looked for {root / split / images_dir} and {root / images_dir}"
            )
        self.image_dir = base / images_dir
        self.mask_dir = require_dir(base / masks_dir, "mask")
        self.pairs = pair_by_stem(
            list_images(self.image_dir), list_images(self.mask_dir), self.image_dir, self.mask_dir
        )

    @staticmethod
    def _class_names(root: Path, classes: Sequence[str] | None, num_classes: int | None) -> tuple[str, ...]:
        if classes is not None:
            names = tuple(str(c) for c in classes)
            if not names:
                raise ValueError(f"{root}: classes is empty; expected at least one class name")
            if num_classes is not None and num_classes != len(names):
                raise ValueError(
                    f"{root}: num_classes={num_classes} but classes lists {len(names)} names; "
                    "pass one of them or make them agree"
                )
            return names
        if num_classes is None:
            raise ValueError(f"{root}: the folder dataset needs classes=[names...] or num_classes=N")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{root}: num_classes={num_classes!r}; expected a positive integer")
        return tuple(f"class_{i}" for i in range(num_classes))

    def _colour_table(
        self, colors: Sequence[Sequence[int]] | None, ignore_colors: Sequence[Sequence[int]] | None
    ) -> dict[tuple[int, int, int], int] | None:
        """Build the (r, g, b) -> class id map used for RGB masks (``None`` when no colours are given)."""
        if colors is None and not ignore_colors:
            return None
        if colors is not None and len(colors) != len(self.classes):
            raise ValueError(
                f"colors has {len(colors)} entries but there are {len(self.classes)} classes; "
                "expected one [r, g, b] per class (index = class id)"
            )
        table: dict[tuple[int, int, int], int] = {}
        entries = [(c, i, "colors") for i, c in enumerate(colors or [])]
        entries += [(c, self.ignore_index, "ignore_colors") for c in ignore_colors or []]
        for value, label, what in entries:
            rgb = _rgb(value, what)
            if rgb in table and table[rgb] != label:
                raise ValueError(f"{what}: colour {list(rgb)} is listed twice (for {table[rgb]} and {label})")
            table[rgb] = label
        return table

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> Sample:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)
        labels = read_label_array(mask_path, self.colors)
        check_same_size(image.shape[-2:], labels.shape, image_path, mask_path)
        return {"image": image, "mask": as_mask(labels), "meta": {"path": str(image_path)}}
