"""Cell-centred grids and boundary conditions, shared by every operator and solver.

Layout (the one place it is documented, for any dimension): a state is a tensor ``(B, C, *spatial)``:
batch first, channels second, then space, the last axis varying fastest in memory. In 1D
``spatial = (N,)``; in 2D ``spatial = (H, W)`` = (rows, columns) = (y, x); in 3D
``spatial = (D, H, W)`` = (z, y, x). Axis ``a`` of a grid is tensor dimension ``2 + a``. Cell ``i``
along an axis with ``N`` cells on ``[lo, hi]`` has its centre at ``lo + (i + 0.5) * h`` with
``h = (hi - lo) / N``. Vector fields store their components in the channel dimension in axis order:
1D ``(u,)``; 2D ``(v_y, v_x)``, i.e. channel 0 is the row (y) component; 3D ``(v_z, v_y, v_x)``.

Boundary conditions are given per axis and side (:class:`Boundary`, axes in the same order). In the
kernels they become ghost values, axis by axis:

- :class:`Periodic` (both sides of an axis): the ghost of cell ``-1`` is cell ``N-1``;
- :class:`Dirichlet` ``g``: the value ``g`` on the boundary face, ghost ``= 2g - u_0``;
- :class:`ZeroGradient` (homogeneous Neumann, "outflow"): ghost ``= u_0``;
- :class:`ConstantOutside` ``g``: every value outside the grid is ``g`` (ghost ``= g`` on the ghost-cell
  centre, one cell beyond the first centre: PhiFlow's constant extrapolation).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

PERIODIC, DIRICHLET, ZERO_GRADIENT, CONSTANT_OUTSIDE = 0, 1, 2, 3

MAX_NDIM = 3
"""Grids and boundaries have 1, 2 or 3 axes."""


def _check_ndim(name: str, ndim: object) -> int:
    """``ndim`` as an int in ``1..MAX_NDIM`` or a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(ndim, bool) or not isinstance(ndim, int):
        raise TypeError(f"{name} must be an int (1, 2 or 3), got {type(ndim).__name__} {ndim!r}")
    if not 1 <= ndim <= MAX_NDIM:
        raise ValueError(f"{name} must be 1, 2 or 3, got {ndim}")
    return ndim


def _check_tuple(name: str, value: object, length: int) -> tuple:
    """``value`` as a tuple of ``length`` entries, or a ``TypeError``/``ValueError`` naming ``name``."""
    if not isinstance(value, tuple | list):
        raise TypeError(f"{name} must be a tuple of {length} entries, got {type(value).__name__} {value!r}")
    if len(value) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(value)}: {tuple(value)!r}")
    return tuple(value)


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
    >>> Boundary(((Dirichlet(0.0), ZeroGradient()), (Periodic(), Periodic()), (Periodic(), Periodic())))  # 3D (z, y, x)
    """

    sides: tuple[tuple[BoundaryCondition, BoundaryCondition], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.sides, tuple | list):
            raise TypeError(f"Boundary.sides must be a tuple of (low, high) pairs, one per axis, got {type(self.sides).__name__}")
        if not 1 <= len(self.sides) <= MAX_NDIM:
            raise ValueError(f"Boundary.sides must have 1, 2 or 3 (low, high) pairs (one per axis), got {len(self.sides)}")
        for axis, pair in enumerate(self.sides):
            if not isinstance(pair, tuple | list) or len(pair) != 2:
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
        return Boundary(tuple((Periodic(), Periodic()) for _ in range(_check_ndim("ndim", ndim))))

    @staticmethod
    def uniform(bc: BoundaryCondition, ndim: int) -> Boundary:
        """The same condition on every side."""
        return Boundary(tuple((bc, bc) for _ in range(_check_ndim("ndim", ndim))))

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
        shape: cells per axis, ``(N,)``, ``(H, W)`` (y, x) or ``(D, H, W)`` (z, y, x).
        bounds: ``((lo, hi), ...)`` per axis in physical units.
    """

    shape: tuple[int, ...]
    bounds: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.shape, tuple) or not isinstance(self.bounds, tuple):
            raise TypeError(
                f"Grid.shape and Grid.bounds must be tuples, got {type(self.shape).__name__} and {type(self.bounds).__name__}"
            )
        if not 1 <= len(self.shape) <= MAX_NDIM:
            raise ValueError(f"Grid.shape must have 1, 2 or 3 axes, got {self.shape}")
        if len(self.bounds) != len(self.shape):
            raise ValueError(f"Grid.bounds needs one (lo, hi) per axis of shape {self.shape}, got {self.bounds}")
        for n in self.shape:
            if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or int(n) != n or n < 2:
                raise ValueError(f"Grid.shape entries must be integers >= 2, got {self.shape}")
        for pair in self.bounds:
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise ValueError(f"Grid.bounds entries must be (lo, hi) pairs, got {self.bounds}")
            lo, hi = pair
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ValueError(f"Grid.bounds must have hi > lo (finite) on every axis, got {self.bounds}")

    @staticmethod
    def line(n: int, lo: float = 0.0, hi: float = 1.0) -> Grid:
        """A 1D grid of ``n`` cells on ``[lo, hi]``."""
        return Grid((_cells("n", n),), ((float(lo), float(hi)),))

    @staticmethod
    def rect(shape: tuple[int, int], extent: tuple[float, float] = (1.0, 1.0)) -> Grid:
        """A 2D grid of ``(H, W)`` cells on ``[0, Ly] x [0, Lx]`` with ``extent = (Ly, Lx)``."""
        return Grid.box(shape, extent, ndim=2)

    @staticmethod
    def box(shape: tuple[int, ...], extent: tuple[float, ...] | None = None, *, ndim: int = 3) -> Grid:
        """A grid of ``shape`` cells on ``[0, L_0] x ... x [0, L_{ndim-1}]`` with ``extent = (L_0, ...)``
        (default all 1): by default 3D, ``shape = (D, H, W)`` (z, y, x) and ``extent = (Lz, Ly, Lx)``;
        ``ndim`` = 1 or 2 gives a line or a rectangle the same way.

        >>> Grid.box((16, 32, 32), (0.5, 1.0, 1.0))
        """
        ndim = _check_ndim("ndim", ndim)
        shape = _check_tuple("shape", shape, ndim)
        extent = (1.0,) * ndim if extent is None else _check_tuple("extent", extent, ndim)
        for length in extent:
            if isinstance(length, bool) or not isinstance(length, numbers.Real) or not (math.isfinite(length) and length > 0):
                raise ValueError(f"extent entries must be finite numbers > 0, got {extent}")
        cells = tuple(_cells(f"shape[{a}]", n) for a, n in enumerate(shape))
        return Grid(cells, tuple((0.0, float(length)) for length in extent))

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


def _cells(name: str, n: object) -> int:
    """A cell count: an integer >= 2, or a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or int(n) != n:
        raise TypeError(f"{name} must be an integer number of cells, got {type(n).__name__} {n!r}")
    if n < 2:
        raise ValueError(f"{name} must be >= 2 cells (Grid.shape entries must be integers >= 2), got {n}")
    return int(n)


def check_grid_boundary(grid: object, boundary: object) -> None:
    """Raise a clear error unless ``grid`` is a :class:`Grid` and ``boundary`` a matching :class:`Boundary`."""
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a taichi_dp.Grid, got {type(grid).__name__}")
    if not isinstance(boundary, Boundary):
        raise TypeError(f"boundary must be a taichi_dp.Boundary, got {type(boundary).__name__}")
    if boundary.ndim != grid.ndim:
        raise ValueError(f"boundary has {boundary.ndim} axes but the grid has {grid.ndim} (shape {grid.shape})")
