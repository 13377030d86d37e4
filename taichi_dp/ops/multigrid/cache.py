"""The solver cache: one :class:`.solver.PoissonSolver` per (runtime, grid, boundary, mask tensor), so a
rollout builds its hierarchy once. Derived data, never state that changes results."""

from __future__ import annotations

import torch

from ...derived_cache import DerivedCache
from ...grid import Grid
from ...runtime import ensure_init
from .solver import PoissonSolver

CACHE_SIZE = 8
"""Solvers kept (least recently used dropped first)."""

_CACHE: DerivedCache[PoissonSolver] = DerivedCache(CACHE_SIZE)


def solver_for(grid: Grid, fluid: torch.Tensor, bc: tuple[int, ...]) -> PoissonSolver:
    """A cached :class:`PoissonSolver` for this grid, boundary and mask tensor under the current runtime.

    The key holds the runtime's identity (arch, precision, dtype, device: after :func:`taichi_dp.init`
    switches any of them, a solver built for another runtime, whose arrays and compiled plan belong to it,
    is never returned); the mask tensor is keyed on its identity and version
    (:class:`~taichi_dp.derived_cache.DerivedCache`: an in-place edit rebuilds the hierarchy)."""
    rt = ensure_init()
    key = (rt.arch, rt.precision, rt.dtype, rt.device, grid, tuple(bc))
    return _CACHE.get(key, fluid, lambda: PoissonSolver(grid, fluid, bc))


_CUT_CELL_CACHE: DerivedCache[PoissonSolver] = DerivedCache(CACHE_SIZE)


def cut_cell_solver_for(grid: Grid, openings: torch.Tensor, fluid: torch.Tensor, bc: tuple[int, ...]) -> PoissonSolver:
    """A cached :class:`PoissonSolver` of the cut-cell operator of the face ``openings`` (``fluid``: its cells with
    an open face), keyed like :func:`solver_for` on the openings tensor's identity and version."""
    rt = ensure_init()
    key = (rt.arch, rt.precision, rt.dtype, rt.device, grid, tuple(bc))
    return _CUT_CELL_CACHE.get(key, openings, lambda: PoissonSolver(grid, fluid, bc, openings=openings))
