"""Dataset readers, one module per on-disk layout; importing this package registers them all."""

from segzoo.data.datasets import (  # noqa: F401
    bsds,
    camvid,
    celeba,
    cityscapes,
    cub,
    faces,
    folder,
    synthetic,
    unlabelled,
    voc,
    weizmann,
)
