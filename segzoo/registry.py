"""Name -> builder maps for models, backbones, heads, methods and datasets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry:
    """A case-insensitive map from names to builders, filled with the :meth:`register` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator that registers a builder under ``name`` (default: its ``__name__`` lower-cased)."""

        def decorator(builder: T) -> T:
            key = (name or builder.__name__).lower()
            if key in self._items and self._items[key] is not builder:
                raise KeyError(f"{self.kind} {key!r} is already registered to {self._items[key]!r}")
            self._items[key] = builder
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """Return the builder registered as ``name``; a clear error lists the known names otherwise."""
        key = name.lower()
        if key not in self._items:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {known}")
        return self._items[key]

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Build the item registered as ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


MODELS = Registry("model")
BACKBONES = Registry("backbone")
HEADS = Registry("head")
METHODS = Registry("method")
DATASETS = Registry("dataset")
