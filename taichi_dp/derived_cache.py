"""A small LRU cache of data derived from a tensor (masks, solver hierarchies), keyed on the tensor's
identity and checked against its version counter.

``id(tensor)`` alone is unsafe as a key: a freed tensor's id is reused by the next one, and an in-place
edit keeps the id. The cache therefore holds the tensor itself (its id cannot be reused while the entry
lives) and the version counter torch bumps on every in-place change (an edited tensor rebuilds).
Derived data only, never state that changes results.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


class DerivedCache(Generic[T]):
    """``cache.get(key, tensor, build)``: ``build()`` once per ``(key, tensor identity, tensor version)``;
    the ``size`` most recently used entries are kept. ``tensor`` may be ``None`` (a key of its own)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._entries: OrderedDict[tuple, tuple[torch.Tensor | None, int, T]] = OrderedDict()

    def get(self, key: Hashable, tensor: torch.Tensor | None, build: Callable[[], T]) -> T:
        full = (key, id(tensor))
        version = -1 if tensor is None else tensor._version
        hit = self._entries.get(full)
        if hit is not None and hit[0] is tensor and hit[1] == version:
            self._entries.move_to_end(full)
            return hit[2]
        value = build()
        self._entries[full] = (tensor, version, value)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
