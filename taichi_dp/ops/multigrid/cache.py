"""The solver cache: one :class:`.solver.PoissonSolver` per (runtime, grid, boundary, mask tensor), so a
rollout builds its hierarchy once. Derived data, never state that changes results."""

from __future__ import annotations

from collections import OrderedDict

import torch

from ...grid import Grid
from ...runtime import ensure_init
from .solver import PoissonSolver

CACHE_SIZE = 8
"""Solvers kept (least recently used dropped first)."""

_CACHE: OrderedDict[tuple, tuple[torch.Tensor, int, PoissonSolver]] = OrderedDict()


def solver_for(grid: Grid, fluid: torch.Tensor, bc: tuple[int, ...]) -> PoissonSolver:
    """A cached :class:`PoissonSolver` for this grid, boundary and mask tensor under the current runtime.

    The key holds the runtime's identity (arch, precision, dtype, device: after :func:`taichi_dp.init`
    switches any of them, a solver built for another runtime, whose arrays and compiled plan belong to it,
    is never returned). The cache holds the mask tensor itself (so its identity cannot be reused by another
    tensor) and its version counter (so an in-place edit rebuilds the hierarchy)."""
    rt = ensure_init()
    key = (rt.arch, rt.precision, rt.dtype, rt.device, grid, tuple(bc), id(fluid))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is fluid and hit[1] == fluid._version:
        _CACHE.move_to_end(key)
        return hit[2]
    solver = PoissonSolver(grid, fluid, bc)
    _CACHE[key] = (fluid, fluid._version, solver)
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return solver
