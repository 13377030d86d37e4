"""PhiFlow 3.4's ghost-value conventions for the staggered flow boundary, as a :class:`FlowBoundary`.

The project's :class:`~taichi_dp.grid.staggered.FlowBoundary` puts a wall's tangential velocity (and an
outflow's pressure 0) on the boundary face: ghost ``= 2g − u₀``. PhiFlow's constant extrapolations put
them on the ghost-cell centre, half a cell beyond the face (ghost ``= g``, and every value further out
too). :class:`PhiFlowBoundary` has the same sides and faces, only its :meth:`component` and
:meth:`pressure` conditions use :class:`~taichi_dp.grid.ConstantOutside` where PhiFlow does; every
operator that takes a ``FlowBoundary`` (diffusion, advection, projection with
``preconditioner="none"``) then follows PhiFlow's convention. :func:`soft_disc_faces` and
:func:`box_faces` sample obstacles and regions on the faces the way PhiFlow does.

==========================  ===================================  ============================================
side                        ``FlowBoundary`` (project)           ``PhiFlowBoundary`` (PhiFlow 3.4)
==========================  ===================================  ============================================
no-slip wall, tangential    ``Dirichlet(g)``: ``g`` on the wall  ``ConstantOutside(g)``: ``g`` on the ghost
                                                                 centre (PhiFlow boundary value ``0``)
slip wall, tangential       zero gradient                        zero gradient
inflow, tangential          ``Dirichlet(0)``                     ``ConstantOutside(0)``
outflow, velocity           zero gradient                        zero gradient (``ZERO_GRADIENT``)
outflow, pressure           ``Dirichlet(0)`` on the face         ``ConstantOutside(0)`` on the ghost centre
wall / inflow, pressure     zero gradient                        zero gradient
==========================  ===================================  ============================================
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ..runtime import ensure_init
from ._cartesian import Boundary, BoundaryCondition, ConstantOutside, Dirichlet, Grid, Periodic, ZeroGradient
from .staggered import FlowBoundary, FlowSide, Inflow, Outflow, staggered_shape, valid_faces


@dataclass(frozen=True)
class PhiFlowBoundary(FlowBoundary):
    """A :class:`FlowBoundary` whose ghost values follow PhiFlow 3.4 (table in the module docstring).

    >>> PhiFlowBoundary(((Wall(), Outflow()), (Wall(), Wall())))   # PhiFlow {"x": 0, "y-": 0, "y+": ZERO_GRADIENT}
    """

    def pressure(self) -> Boundary:
        """Pressure conditions: 0 on the ghost centre beyond outflows, zero gradient at walls and inflows."""
        return _pressure_boundary(self)

    def component(self, c: int) -> Boundary:
        """Conditions of velocity component ``c`` (0: v_y, 1: v_x) across the other axis: walls hold their
        tangential velocity and inflows 0 on the ghost centre; slip walls and outflows zero gradient."""
        return _component_boundary(self, c)


def _pressure_side(s: FlowSide) -> BoundaryCondition:
    return s if isinstance(s, Periodic) else ConstantOutside(0.0) if isinstance(s, Outflow) else ZeroGradient()


def _component_side(s: FlowSide, normal: bool, c: int) -> BoundaryCondition:
    if isinstance(s, Periodic):
        return s
    if isinstance(s, Outflow) or (not normal and getattr(s, "slip", False)):
        return ZeroGradient()
    if normal:  # along a component's own axis only periodicity matters: the boundary faces hold the values
        return Dirichlet(s.speed if isinstance(s, Inflow) and s.uniform else 0.0)
    return ConstantOutside(0.0 if isinstance(s, Inflow) else s.tangential(c))


@functools.lru_cache(maxsize=64)
def _pressure_boundary(boundary: PhiFlowBoundary) -> Boundary:
    return Boundary(tuple((_pressure_side(lo), _pressure_side(hi)) for lo, hi in boundary.sides))


@functools.lru_cache(maxsize=64)
def _component_boundary(boundary: PhiFlowBoundary, c: int) -> Boundary:
    sides = enumerate(boundary.sides)
    return Boundary(tuple((_component_side(lo, axis == c, c), _component_side(hi, axis == c, c)) for axis, (lo, hi) in sides))


# ------------------------------------------------------------------------ PhiFlow's face sampling
def _face_positions(grid: Grid, dtype: torch.dtype, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, x)``, each ``(2, H+1, W+1)``: physical position of every staggered face (padding entries
    extrapolated; callers zero them with :func:`valid_faces`)."""
    _, h1, w1 = staggered_shape(grid)
    (lo_y, _), (lo_x, _) = grid.bounds
    hy, hx = grid.spacing
    i = torch.arange(h1, dtype=dtype, device=device)[:, None].expand(h1, w1)
    j = torch.arange(w1, dtype=dtype, device=device)[None, :].expand(h1, w1)
    y = torch.stack([lo_y + i * hy, lo_y + (i + 0.5) * hy])
    x = torch.stack([lo_x + (j + 0.5) * hx, lo_x + j * hx])
    return y, x


def soft_disc_faces(grid: Grid, centre: tuple[float, float], radius: float, balance: float = 1.0) -> torch.Tensor:
    """PhiFlow's soft obstacle mask on the faces, ``(1, 2, H+1, W+1)`` in the runtime dtype: the solid
    fraction ``clip(balance − (d − r)/ρ, 0, 1)`` of each face cell, with ``d`` the distance of the face
    centre from ``centre = (y, x)``, ``r = radius`` and ``ρ = ½ √(h_y² + h_x²)`` the face cell's bounding
    radius (``resample(Sphere, velocity, soft=True, balance=1)`` in ``make_incompressible``: the
    velocity is multiplied by ``1 −`` this). Padding entries are 0."""
    rt = ensure_init()
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    y, x = _face_positions(grid, rt.dtype, rt.device)
    d = torch.sqrt((y - centre[0]) ** 2 + (x - centre[1]) ** 2)
    rho = 0.5 * math.hypot(*grid.spacing)
    m = torch.clamp(balance - (d - radius) / rho, 0.0, 1.0)
    return (m[None] * valid_faces(grid, rt.dtype, rt.device)).contiguous()


def box_faces(grid: Grid, lower: tuple[float, float], upper: tuple[float, float]) -> torch.Tensor:
    """PhiFlow's hard box mask on the faces, ``(1, 2, H+1, W+1)``: 1 where the face centre lies in
    ``lower ≤ (y, x) ≤ upper`` (bounds included, as ``Box.lies_inside``), e.g. the karman inflow band
    ``StaggeredGrid(Box(x=(0, 100), y=(0, 5)), ...)``. Padding entries are 0."""
    rt = ensure_init()
    y, x = _face_positions(grid, rt.dtype, rt.device)
    inside = (y >= lower[0]) & (y <= upper[0]) & (x >= lower[1]) & (x <= upper[1])
    return (inside.to(rt.dtype)[None] * valid_faces(grid, rt.dtype, rt.device)).contiguous()
