"""Collectives shared by callbacks and methods under DDP."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def gather_rows(rows: Tensor, all_gather: Callable[[Tensor], Tensor], world_size: int) -> Tensor:
    """Concatenate every process's [n_r, D] float rows in rank order; n_r may differ (even be 0).

    ``all_gather`` maps a tensor of one process to the stack [world_size, ...] of all processes' tensors
    (``LightningModule.all_gather``). Collectives need equal shapes, so the counts travel first and the
    rows are zero-padded to the longest; the padding is cut off again.
    """
    if world_size <= 1:
        return rows
    header = torch.tensor([rows.shape[0], rows.shape[1]], dtype=torch.int64, device=rows.device)
    headers = all_gather(header).reshape(world_size, 2)
    widths = {int(w) for n, w in headers.tolist() if n > 0}
    if len(widths) > 1:
        raise ValueError(
            f"gather_rows: processes produced rows of different widths {sorted(widths)}; expected one "
            "width on every process (e.g. the same number of parts, landmarks or feature channels)"
        )
    width = widths.pop() if widths else rows.shape[1]
    longest = int(headers[:, 0].max())
    padded = rows.new_zeros((longest, width))
    padded[: rows.shape[0]] = rows
    gathered = all_gather(padded).reshape(world_size, longest, width)
    return torch.cat([gathered[r, : int(headers[r, 0])] for r in range(world_size)])
