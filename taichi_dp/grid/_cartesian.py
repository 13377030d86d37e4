"""Cell-centred grids and boundary conditions, shared by every operator and solver.

Layout (the one place it is documented): a state is a tensor ``(B, C, *spatial)``: batch first,
channels second, then space. In 1D ``spatial = (N,)``; in 2D ``spatial = (H, W)`` = (rows, columns) =
(y, x). Cell ``i`` along an axis with ``N`` cells on ``[lo, hi]`` has its centre at
``lo + (i + 0.5) * h`` with ``h = (hi - lo) / N``. Vector fields store their components in the channel
dimension in axis order: 1D ``(u,)``; 2D ``(v_y, v_x)``, i.e. channel 0 is the row (y) component.

Boundary conditions are given per axis and side. In the kernels they become ghost values:

- :class:`Periodic` (both sides of an axis): the ghost of cell ``-1`` is cell ``N-1``;
- :class:`Dirichlet` ``g``: the value ``g`` on the boundary face, ghost ``= 2g - u_0``;
- :class:`ZeroGradient` (homogeneous Neumann, "outflow"): ghost ``= u_0``;
- :class:`ConstantOutside` ``g``: every value outside the grid is ``g`` (ghost ``= g`` on the ghost-cell
  centre, one cell beyond the first centre: PhiFlow's constant extrapolation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PERIODIC, DIRICHLET, ZERO_GRADIENT, CONSTANT_OUTSIDE = 0, 1, 2, 3


@dataclass(frozen=True)
class Periodic:
    """Periodic boundary: the domain wraps around along this axis (must be set on both sides)."""

    code = PERIODIC
    value = 0.0


@dataclass(frozen=True)
class Dirichlet:
    """Fixed value ``value`` on the boundary face (e.g. a no-slip wall for velocity with 0)."""

    value: float = 0.0
    code = DIRICHLET

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.value)):
            raise ValueError(f"Dirichlet value must be finite, got {self.value}")


@dataclass(frozen=True)
class ZeroGradient:
    """Zero normal derivative on the boundary face (homogeneous Neumann; open/outflow boundary)."""

    code = ZERO_GRADIENT
    value = 0.0


@dataclass(frozen=True)
class ConstantOutside:
    """Every value outside the grid is ``value``: the ghost cell holds it at its centre, half a cell
    beyond the boundary face (unlike :class:`Dirichlet`, whose value sits on the face), and
    interpolation further out reads it too. This is PhiFlow's constant extrapolation
    (``extrapolation.ZERO``, ``ConstantExtrapolation``); used to reproduce PhiFlow
    (:class:`taichi_dp.grid.phiflow.PhiFlowBoundary`)."""

    value: float = 0.0
    code = CONSTANT_OUTSIDE

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.value)):
            raise ValueError(f"ConstantOutside value must be finite, got {self.value}")


BoundaryCondition = Periodic | Dirichlet | ZeroGradient | ConstantOutside


@dataclass(frozen=True)
class Boundary:
    """Boundary conditions of a grid: one ``(low side, high side)`` pair per axis, in axis order.

    >>> Boundary.periodic(1)
    >>> Boundary(((Dirichlet(0.0), ZeroGradient()),))          # 1D: wall at lo, outflow at hi
    >>> Boundary.uniform(Dirichlet(0.0), 2)                      # 2D box with walls
    """

    sides: tuple[tuple[BoundaryCondition, BoundaryCondition], ...]

    def __post_init__(self) -> None:
        for axis, pair in enumerate(self.sides):
            if len(pair) != 2:
                raise ValueError(f"Boundary.sides[{axis}] must be a (low, high) pair, got {pair!r}")
            for bc in pair:
                if not isinstance(bc, (Periodic, Dirichlet, ZeroGradient, ConstantOutside)):
                    raise TypeError(
                        f"Boundary.sides[{axis}] entries must be Periodic/Dirichlet/ZeroGradient/ConstantOutside, got {bc!r}"
                    )
            if isinstance(pair[0], Periodic) != isinstance(pair[1], Periodic):
                raise ValueError(f"Boundary.sides[{axis}]: Periodic must be set on both sides of an axis, got {pair!r}")

    @staticmethod
    def periodic(ndim: int) -> Boundary:
        """Periodic along every axis."""
        return Boundary(tuple((Periodic(), Periodic()) for _ in range(ndim)))

    @staticmethod
    def uniform(bc: BoundaryCondition, ndim: int) -> Boundary:
        """The same condition on every side."""
        return Boundary(tuple((bc, bc) for _ in range(ndim)))

    @property
    def ndim(self) -> int:
        return len(self.sides)

    @property
    def codes(self) -> tuple[int, ...]:
        """Kernel codes, flattened ``(axis0_lo, axis0_hi, axis1_lo, ...)``: compile-time constants."""
        return tuple(bc.code for pair in self.sides for bc in pair)

    @property
    def values(self) -> tuple[float, ...]:
        """Dirichlet and ConstantOutside values, flattened like :attr:`codes` (0 for the other kinds)."""
        return tuple(float(bc.value) for pair in self.sides for bc in pair)


@dataclass(frozen=True)
class Grid:
    """A uniform cell-centred grid with physical extent.

    Args:
        shape: cells per axis, ``(N,)`` or ``(H, W)`` (y, x).
        bounds: ``((lo, hi), ...)`` per axis in physical units.
    """

    shape: tuple[int, ...]
    bounds: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.shape) not in (1, 2):
            raise ValueError(f"Grid.shape must have 1 or 2 axes, got {self.shape}")
        if len(self.bounds) != len(self.shape):
            raise ValueError(f"Grid.bounds needs one (lo, hi) per axis of shape {self.shape}, got {self.bounds}")
        for n in self.shape:
            if int(n) != n or n < 2:
                raise ValueError(f"Grid.shape entries must be integers >= 2, got {self.shape}")
        for lo, hi in self.bounds:
            if not hi > lo:
                raise ValueError(f"Grid.bounds must have hi > lo on every axis, got {self.bounds}")

    @staticmethod
    def line(n: int, lo: float = 0.0, hi: float = 1.0) -> Grid:
        """A 1D grid of ``n`` cells on ``[lo, hi]``."""
        return Grid((int(n),), ((float(lo), float(hi)),))

    @staticmethod
    def rect(shape: tuple[int, int], extent: tuple[float, float] = (1.0, 1.0)) -> Grid:
        """A 2D grid of ``(H, W)`` cells on ``[0, Ly] x [0, Lx]`` with ``extent = (Ly, Lx)``."""
        return Grid((int(shape[0]), int(shape[1])), ((0.0, float(extent[0])), (0.0, float(extent[1]))))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Cell size per axis ``h = (hi - lo) / N``."""
        return tuple((hi - lo) / n for n, (lo, hi) in zip(self.shape, self.bounds))

    def centers(self, axis: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
        """Cell-centre coordinates along ``axis``, shape ``(N,)``."""
        (lo, _), h, n = self.bounds[axis], self.spacing[axis], self.shape[axis]
        return lo + (torch.arange(n, dtype=dtype, device=device) + 0.5) * h

    def coarsen(self, factor: int) -> Grid:
        """The same domain with ``factor`` times fewer cells per axis."""
        if any(n % factor for n in self.shape):
            raise ValueError(f"coarsen factor {factor} must divide the grid shape {self.shape}")
        return Grid(tuple(n // factor for n in self.shape), self.bounds)

    def refine(self, factor: int) -> Grid:
        """The same domain with ``factor`` times more cells per axis."""
        return Grid(tuple(n * factor for n in self.shape), self.bounds)


def check_grid_boundary(grid: object, boundary: object) -> None:
    """Raise a clear error unless ``grid`` is a :class:`Grid` and ``boundary`` a matching :class:`Boundary`."""
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a taichi_dp.Grid, got {type(grid).__name__}")
    if not isinstance(boundary, Boundary):
        raise TypeError(f"boundary must be a taichi_dp.Boundary, got {type(boundary).__name__}")
    if boundary.ndim != grid.ndim:
        raise ValueError(f"boundary has {boundary.ndim} axes but the grid has {grid.ndim} (shape {grid.shape})")
