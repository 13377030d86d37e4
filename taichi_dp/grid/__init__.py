"""Grids, boundary conditions and the staggered (MAC) layout. See :mod:`taichi_dp.grid._cartesian` for
the tensor layout of cell-centred states and :mod:`taichi_dp.grid.staggered` for face-centred velocity."""

from ._cartesian import (
    CONSTANT_OUTSIDE,
    DIRICHLET,
    PERIODIC,
    ZERO_GRADIENT,
    Boundary,
    BoundaryCondition,
    ConstantOutside,
    Dirichlet,
    Grid,
    Periodic,
    ZeroGradient,
    check_grid_boundary,
)

__all__ = [
    "CONSTANT_OUTSIDE",
    "DIRICHLET",
    "PERIODIC",
    "ZERO_GRADIENT",
    "Boundary",
    "BoundaryCondition",
    "ConstantOutside",
    "Dirichlet",
    "Grid",
    "Periodic",
    "ZeroGradient",
    "check_grid_boundary",
]
