"""Unlabelled images from a folder or a single file, for self-supervised training and prediction."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segzoo.data.base import Sample, SegmentationDataset
from segzoo.data.io import IMAGE_EXTENSIONS, list_images, read_image
from segzoo.registry import DATASETS


def _list_recursive(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(
            f"{folder}: no images found in it or its subfolders (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


@DATASETS.register("image_folder")
class ImageFolder(SegmentationDataset):
    """Images without labels: every image in ``root`` (with ``recursive=True`` also in subfolders), or
    ``root`` itself when it is a file. ``split`` is accepted for a uniform signature and ignored.

    Samples hold ``image`` and ``meta``: ``path`` is the absolute file path and ``relpath`` the path
    relative to the folder (the file name for a single file), so writers can mirror the input tree.
    """

    classes: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        recursive: bool = False,
    ) -> None:
        super().__init__(transforms)
        root = Path(root).expanduser().resolve()
        self.split = split
        if root.is_file():
            self.base, self.files = root.parent, [root]
        elif root.is_dir():
            self.base = root
            self.files = _list_recursive(root) if recursive else list_images(root)
        else:
            raise FileNotFoundError(f"{root}: no such image file or folder")

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Sample:
        path = self.files[index]
        return {
            "image": read_image(path),
            "meta": {"path": str(path), "relpath": path.relative_to(self.base).as_posix()},
        }
