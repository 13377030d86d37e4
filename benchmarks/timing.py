"""The one timing rule of the benchmarks: median wall time after warm-up runs."""

from __future__ import annotations

import time
from collections.abc import Callable

from taichi_dp import bridge
from taichi_dp.runtime import sync


class LaunchCounter:
    """Counts Taichi kernel launches while active (``taichi_dp.bridge.launches``: every kernel runs
    through :func:`taichi_dp.bridge.launch`, bridged ops and the fused pressure solver alike):
    ``with LaunchCounter() as c: ...`` then ``c.count``."""

    def __enter__(self) -> LaunchCounter:
        self._start = bridge.launches
        self.count = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.count = bridge.launches - self._start


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (compilation, caches);
    waits for queued device work (Taichi's and torch's) before reading the clock."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]
