"""Collate for segzoo samples: pads to the largest image in the batch, keeps ``meta`` as a list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

# Pad values per key: images with 0, label maps with ignore_index (filled in at call time).
_LABEL_KEYS = ("mask", "parts")
_PADDED_KEYS = ("image", "mask", "parts", "saliency")


def _pad_to(t: torch.Tensor, height: int, width: int, value: float) -> torch.Tensor:
    dh, dw = height - t.shape[-2], width - t.shape[-1]
    if dh == 0 and dw == 0:
        return t.as_subclass(torch.Tensor)
    return F.pad(t.as_subclass(torch.Tensor), (0, dw, 0, dh), value=value)


def collate_samples(samples: Sequence[dict[str, Any]], ignore_index: int = 255) -> dict[str, Any]:
    """Batch a list of samples (see docs/design.md).

    ``image``/``mask``/``parts``/``saliency`` are padded at the bottom/right to a common size (images and
    saliency with 0, label maps with ``ignore_index``) and stacked; ``meta[i]["input_size"]`` records each
    sample's size before padding. ``masks`` (several annotations per image) stay a list; ``keypoints`` and
    ``boxes`` are stacked when their shapes agree and kept as lists otherwise.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    height = max(s["image"].shape[-2] for s in samples)
    width = max(s["image"].shape[-1] for s in samples)
    batch: dict[str, Any] = {}
    for key in samples[0]:
        if key == "meta":
            continue
        missing = [s["meta"].get("path", i) for i, s in enumerate(samples) if key not in s]
        if missing:
            raise ValueError(f"samples {missing[:3]} have no {key!r} while others in the batch do")
        values = [s[key] for s in samples]
        if key in _PADDED_KEYS:
            fill = ignore_index if key in _LABEL_KEYS else 0
            batch[key] = torch.stack([_pad_to(v, height, width, fill) for v in values])
        elif (
            isinstance(values[0], torch.Tensor)
            and key != "masks"
            and all(v.shape == values[0].shape for v in values)
        ):
            batch[key] = torch.stack([v.as_subclass(torch.Tensor) for v in values])
        else:
            batch[key] = [v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for v in values]
    batch["meta"] = [
        {**s.get("meta", {}), "input_size": tuple(int(x) for x in s["image"].shape[-2:])} for s in samples
    ]
    return batch
