"""How much memory autograd keeps for backward: live and peak bytes of the tensors saved by the forward.

CPU PyTorch has no allocator statistics and a process's resident size includes the allocator's caches, so
the cost of a training update is measured where it arises: every tensor the forward saves for backward
(network activations, solver states, the bridge's saved inputs) passes through
:func:`torch.autograd.graph.saved_tensors_hooks`. :class:`SavedTensorMeter` counts each storage once while
any saved reference to it is alive and records the peak, over the forward and the backward (whose nodes
release their tensors as they run). Parameters (leaves that require grad) are not counted: they exist
whether or not anything is trained.

Not seen: tensors a custom ``autograd.Function`` keeps outside ``save_for_backward`` and the chunks that
gradient checkpointing recomputes during backward (they are saved by the checkpoint's own hooks):
:func:`taichi_dp.learn.experiment.update_memory` adds the latter as an estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class _Saved:
    """One saved tensor while autograd holds it; releasing it tells the meter."""

    __slots__ = ("key", "meter", "tensor")

    def __init__(self, tensor: torch.Tensor, meter: SavedTensorMeter | None, key: int) -> None:
        self.tensor, self.meter, self.key = tensor, meter, key

    def __del__(self) -> None:
        if self.meter is not None:
            self.meter._release(self.key)


class SavedTensorMeter:
    """Context manager: ``live`` and ``peak`` bytes of the storages autograd saves inside the block (each
    storage once), tracked until the graph releases them (so a ``backward()`` inside the block counts)."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage address -> [references, bytes]
        self._hooks: Any = None

    def _pack(self, t: torch.Tensor) -> _Saved:
        if t.is_leaf and t.requires_grad:
            return _Saved(t, None, 0)  # a parameter: not an activation
        storage = t.untyped_storage()
        key = storage.data_ptr()
        entry = self._refs.setdefault(key, [0, storage.nbytes()])
        if entry[0] == 0:
            self.live += entry[1]
            self.peak = max(self.peak, self.live)
        entry[0] += 1
        return _Saved(t, self, key)

    @staticmethod
    def _unpack(saved: _Saved) -> torch.Tensor:
        return saved.tensor

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[key]

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


def peak_saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Peak bytes saved for backward while ``fn()`` computes a scalar loss and it is back-propagated."""
    with SavedTensorMeter() as meter:
        loss = fn()
        loss.backward()
        del loss
    return meter.peak
