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

# Signed-distance obstacles → fractional cell volumes and face openings (taichi_dp.grid.sdf; its functions
# union/intersection/difference/translate/rotate/scale are also the SDF operators | & - and methods).
from .sdf import (
    BoxSDF,
    CapsuleSDF,
    CircleSDF,
    CylinderSDF,
    SphereSDF,
    binary_mask,
    cell_fractions,
    face_fractions,
)

__all__ += [
    "BoxSDF",
    "CapsuleSDF",
    "CircleSDF",
    "CylinderSDF",
    "SphereSDF",
    "binary_mask",
    "cell_fractions",
    "face_fractions",
]

# Cut cells: what the flow solver sees of an SDF obstacle (face openings, no-slip wall distances)
from .cut_cells import CutCells  # noqa: E402

__all__ += ["CutCells"]
