"""The one timing rule of the benchmarks: median wall time after warm-up runs, waiting for queued device work.

:func:`time_call` returns every timed run (:class:`Timing`: median and spread); :func:`median_seconds` is its
median; :class:`LaunchCounter` counts Taichi kernel launches. :mod:`benchmarks.harness` re-exports all of them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from taichi_dp import bridge
from taichi_dp.runtime import sync


class LaunchCounter:
    """Counts Taichi kernel launches while active (``taichi_dp.bridge.launches``: every kernel runs
    through :func:`taichi_dp.bridge.launch`, bridged ops and the fused pressure solver alike):
    ``with LaunchCounter() as c: ...`` then ``c.count``."""

    def __enter__(self) -> LaunchCounter:
        self.start = bridge.launches
        self.count = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.count = bridge.launches - self.start


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall times of the timed runs of one measurement (seconds, in run order)."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        """The median run (the upper one of the middle two for an even count, as the benchmarks always used)."""
        return sorted(self.times)[len(self.times) // 2]

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    @property
    def spread(self) -> float:
        """``max − min`` of the runs (0 for a single run)."""
        return self.max - self.min

    @property
    def rel_spread(self) -> float:
        """:attr:`spread` relative to :attr:`median`."""
        return self.spread / self.median if self.median > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """The JSON form: median, min, max, spread, relative spread and the number of runs."""
        return {"median_s": self.median, "min_s": self.min, "max_s": self.max, "spread_s": self.spread,
                "rel_spread": self.rel_spread, "runs": len(self.times)}


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    """Wall times of ``repeats`` runs of ``fn()`` after ``warmup`` untimed runs (compilation, caches). Every
    run, warm-up included, ends with :func:`taichi_dp.runtime.sync` (Taichi's and torch's queues) before the
    clock is read, so queued work of one run is never billed to the next.

    Args:
        fn: the work to time (its result is discarded).
        repeats: timed runs (at least one is made).
        warmup: untimed runs first.
    """
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return Timing(tuple(times))


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (:func:`time_call`).

    Args:
        fn: the work to time.
        repeats: timed runs.
        warmup: untimed runs first.
    """
    return time_call(fn, repeats, warmup).median
