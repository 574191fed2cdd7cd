"""Load weights from a local file (never a download) and freeze BatchNorm layers.

Accepted files: a plain state dict (e.g. ``torch.save(torchvision_model.state_dict(), path)``), or a
segzoo/Lightning checkpoint whose ``state_dict`` entry holds the weights under a prefix such as ``model.``,
``model.backbone.`` or ``online_encoder.``. The prefix is found automatically (the one whose stripped keys
match the most parameter names of the target module) unless given explicitly.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

_MAX_LISTED = 5


class WeightsMismatchError(ValueError):
    """A weights file whose keys or shapes do not fit the module it is loaded into."""


class LoadReport(NamedTuple):
    """What :func:`load_weights` did: the prefix it stripped and the keys it could not use."""

    prefix: str
    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise
    # Lightning checkpoints may pickle hyper-parameter objects that the safe loader refuses; the file is one
    # the user named explicitly, so the full loader is acceptable for it.
    return torch.load(path, map_location="cpu", weights_only=False)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read the tensor dict of a local weights file (plain state dict or checkpoint with ``state_dict``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file not found: {path}. Put a local PyTorch weights file there: a state dict "
            "(e.g. torch.save(torchvision.models.resnet50(weights=...).state_dict(), path) on a machine "
            "with the weights) or a segzoo/Lightning .ckpt. segzoo never downloads weights; use "
            "weights=None for random initialisation."
        )
    try:
        obj = _torch_load(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ValueError(f"cannot read weights file {path} with torch.load: {err}") from err
    state = obj
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                state = obj[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise ValueError(
            f"weights file {path} holds a {type(obj).__name__}, expected a state dict (name -> tensor) or a "
            "checkpoint with a 'state_dict' entry"
        )
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"weights file {path} contains no tensors (keys: {_sample(list(state))})")
    return tensors


def _sample(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (", ..." if len(keys) > _MAX_LISTED else "")


def _is_optional(key: str) -> bool:
    # BatchNorm counters are absent from older torchvision files and irrelevant to the function computed
    return key.endswith("num_batches_tracked")


def find_prefix(keys: list[str], target: set[str]) -> str:
    """The key prefix (ending with ``.``, or empty) whose stripped keys match the most names in ``target``."""
    scores: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        for cut in range(len(parts)):
            prefix = ".".join(parts[:cut]) + ("." if cut else "")
            if key[len(prefix) :] in target:
                scores[prefix] = scores.get(prefix, 0) + 1
    if not scores:
        return ""
    # most matches first; on ties prefer the shorter prefix
    return min(scores, key=lambda p: (-scores[p], len(p)))


def load_weights(
    module: nn.Module, path: str | Path, *, prefix: str | None = None, strict: bool = True
) -> LoadReport:
    """Load a local weights file into ``module``.

    ``prefix`` selects and strips the keys starting with it (e.g. ``"model.backbone."``); ``None`` picks the
    best-matching prefix automatically. A module with an ``adapt_state_dict(state)`` method (e.g. the VGG
    backbone, which reshapes fully connected layers into convolutions) gets to convert the stripped keys.
    With ``strict`` any missing, unexpected or shape-mismatched key raises :class:`WeightsMismatchError`
    naming the file; without it, the matching keys are loaded and the rest reported.
    """
    path = Path(path).expanduser()
    state = read_state_dict(path)
    own = module.state_dict()
    if prefix is None:
        prefix = find_prefix(list(state), set(own))
    elif not any(k.startswith(prefix) for k in state):
        raise WeightsMismatchError(
            f"weights file {path} has no keys starting with prefix {prefix!r} "
            f"(its keys: {_sample(list(state))})"
        )
    stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    adapt = getattr(module, "adapt_state_dict", None)
    if callable(adapt):
        stripped = adapt(stripped)
    missing = [k for k in own if k not in stripped and not _is_optional(k)]
    unexpected = [k for k in stripped if k not in own]
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in stripped.items()
        if k in own and v.shape != own[k].shape
    ]
    usable = {k: v for k, v in stripped.items() if k in own and v.shape == own[k].shape}
    if (strict and (missing or unexpected or mismatched)) or not usable:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys ({_sample(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys ({_sample(unexpected)})")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches ({_sample(mismatched)})")
        if not usable:
            problems.append("no key matches the model")
        hint = (
            " Backbone-only weights (e.g. a torchvision ImageNet file) go to the backbone: "
            "create_model(..., backbone_weights=path)."
            if hasattr(module, "backbone")
            else ""
        )
        raise WeightsMismatchError(
            f"weights file {path} does not fit {type(module).__name__} (stripped prefix {prefix!r}): "
            + "; ".join(problems)
            + ". Check the file is for this model/backbone, or pass prefix=... (e.g. 'model.' or "
            "'model.backbone.') or strict=False to load only the matching keys." + hint
        )
    module.load_state_dict(usable, strict=False)
    return LoadReport(prefix, sorted(usable), missing, unexpected, mismatched)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics and has no trainable parameters.

    It stays in eval mode whatever ``train()`` is called with, so running statistics never change, and its
    state dict is the same as ``nn.BatchNorm2d``'s (checkpoints load either way).
    """

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        """Ignore ``mode``: a frozen BatchNorm is always in eval mode."""
        return super().train(False)

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        """Copy the configuration, parameters and statistics of ``bn`` into a frozen layer."""
        reference = next(iter(bn.state_dict().values()), None)
        frozen = cls(
            bn.num_features,
            eps=bn.eps,
            momentum=bn.momentum,
            affine=bn.affine,
            track_running_stats=bn.track_running_stats,
            device=reference.device if reference is not None else None,
        )
        frozen.load_state_dict(bn.state_dict())
        for param in frozen.parameters():
            param.requires_grad_(False)
        frozen.eval()
        return frozen


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`FrozenBatchNorm2d`, in place."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, FrozenBatchNorm2d):
        return FrozenBatchNorm2d.from_batchnorm(module)
    for name, child in module.named_children():
        replaced = freeze_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


__all__ = [
    "FrozenBatchNorm2d",
    "LoadReport",
    "WeightsMismatchError",
    "find_prefix",
    "freeze_batchnorm",
    "load_weights",
    "read_state_dict",
]
