"""Staggered (MAC) velocity on a 2D grid, flow boundary conditions, and centred ⇄ staggered conversion.

Layout: one tensor ``(B, 2, H + 1, W + 1)`` per velocity field, so that a staggered state travels
through torch (and a hybrid step) as a single tensor:

- channel 0, ``v_y`` on the horizontal faces: ``v[:, 0, i, j]`` sits at ``y = lo_y + i h_y`` and the
  centre of column ``j``, between cells ``(i − 1, j)`` and ``(i, j)``; ``i ∈ [0, H]``, ``j ∈ [0, W)``;
  column ``W`` is padding and always zero;
- channel 1, ``v_x`` on the vertical faces: ``v[:, 1, i, j]`` sits at the centre of row ``i`` and
  ``x = lo_x + j h_x``, between cells ``(i, j − 1)`` and ``(i, j)``; ``i ∈ [0, H)``, ``j ∈ [0, W]``;
  row ``H`` is padding and always zero.

Faces ``0`` and ``H`` (``W``) lie on the domain boundary; with periodic sides they are the same face
and are kept equal; :func:`face_coordinates` gives the physical position of every face. Networks see
centred ``(B, 2, H, W)`` tensors (:func:`to_centred`); corrections come back through
:func:`to_staggered`. Both conversions are linear torch ops (differentiable).

Obstacles are a fluid mask ``(B or 1, 1, H, W)`` (1 = fluid, 0 = solid); faces touching a solid cell
are closed (zero normal velocity: static obstacles).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ..derived_cache import DerivedCache
from ._cartesian import Boundary, BoundaryCondition, Dirichlet, Grid, Periodic, ZeroGradient


@dataclass(frozen=True)
class Wall:
    """Solid wall: zero normal velocity. Tangential velocity ``velocity`` on the wall (no-slip; a moving
    lid when non-zero, along the other axis' direction) or zero-gradient (``slip=True``)."""

    slip: bool = False
    velocity: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.velocity):
            raise ValueError(f"Wall velocity must be finite, got {self.velocity}")
        if self.slip and self.velocity != 0.0:
            raise ValueError(f"a slip wall has no tangential velocity, got velocity={self.velocity}")


@dataclass(frozen=True)
class Inflow:
    """Prescribed normal velocity ``speed`` (along the axis direction; > 0 points to higher index) and
    zero tangential velocity."""

    speed: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.speed):
            raise ValueError(f"Inflow speed must be finite, got {self.speed}")


@dataclass(frozen=True)
class Outflow:
    """Open boundary: zero-gradient velocity, pressure 0."""


FlowSide = Wall | Inflow | Outflow | Periodic


@dataclass(frozen=True)
class FlowBoundary:
    """Flow boundary conditions of a 2D domain: ``((y_lo, y_hi), (x_lo, x_hi))`` sides.

    >>> FlowBoundary.box()                                             # closed cavity, no-slip walls
    >>> FlowBoundary(((Wall(), Wall(velocity=1.0)), (Wall(), Wall())))  # lid-driven cavity (lid at y_hi)
    >>> FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall())))     # channel flow along +y
    """

    sides: tuple[tuple[FlowSide, FlowSide], tuple[FlowSide, FlowSide]]

    def __post_init__(self) -> None:
        if (
            not isinstance(self.sides, tuple)
            or len(self.sides) != 2
            or any(not isinstance(p, tuple) or len(p) != 2 for p in self.sides)
        ):
            raise ValueError(f"FlowBoundary.sides must be ((y_lo, y_hi), (x_lo, x_hi)), got {self.sides!r}")
        for axis, pair in enumerate(self.sides):
            for s in pair:
                if not isinstance(s, (Wall, Inflow, Outflow, Periodic)):
                    raise TypeError(f"FlowBoundary.sides[{axis}] entries must be Wall/Inflow/Outflow/Periodic, got {s!r}")
            if isinstance(pair[0], Periodic) != isinstance(pair[1], Periodic):
                raise ValueError(f"FlowBoundary.sides[{axis}]: Periodic must be set on both sides, got {pair!r}")

    @staticmethod
    def box(slip: bool = False) -> FlowBoundary:
        """Walls on all four sides."""
        return FlowBoundary(((Wall(slip), Wall(slip)), (Wall(slip), Wall(slip))))

    @staticmethod
    def periodic() -> FlowBoundary:
        return FlowBoundary(((Periodic(), Periodic()), (Periodic(), Periodic())))

    @property
    def has_outflow(self) -> bool:
        return any(isinstance(s, Outflow) for pair in self.sides for s in pair)

    def pressure(self) -> Boundary:
        """Boundary conditions of the pressure: 0 at outflows, zero-gradient at walls and inflows."""
        return _pressure_boundary(self)

    def component(self, c: int) -> Boundary:
        """Boundary conditions of the velocity component ``c`` (0: v_y, 1: v_x) for advection, diffusion
        and interpolation: along ``c``'s own axis only periodicity matters (the boundary faces carry their
        values); across it, walls and inflows are Dirichlet (the wall's tangential velocity, 0 for an
        inflow) and slip walls and outflows zero-gradient."""
        return _component_boundary(self, c)


def _pressure_side(s: FlowSide) -> BoundaryCondition:
    return s if isinstance(s, Periodic) else Dirichlet(0.0) if isinstance(s, Outflow) else ZeroGradient()


def _component_side(s: FlowSide, normal: bool) -> BoundaryCondition:
    if isinstance(s, Periodic):
        return s
    if isinstance(s, Outflow):
        return ZeroGradient()
    if isinstance(s, Inflow):
        return Dirichlet(s.speed if normal else 0.0)
    if normal:
        return Dirichlet(0.0)
    return ZeroGradient() if s.slip else Dirichlet(s.velocity)


@functools.lru_cache(maxsize=256)  # boundaries are immutable and every step asks for the same ones
def _pressure_boundary(boundary: FlowBoundary) -> Boundary:
    return Boundary(tuple((_pressure_side(lo), _pressure_side(hi)) for lo, hi in boundary.sides))


@functools.lru_cache(maxsize=256)
def _component_boundary(boundary: FlowBoundary, c: int) -> Boundary:
    sides = enumerate(boundary.sides)
    return Boundary(tuple((_component_side(lo, axis == c), _component_side(hi, axis == c)) for axis, (lo, hi) in sides))


def staggered_shape(grid: Grid) -> tuple[int, int, int]:
    """``(2, H + 1, W + 1)``: the per-sample shape of a staggered velocity on ``grid``."""
    if grid.ndim != 2:
        raise ValueError(f"staggered velocity needs a 2D grid, got shape {grid.shape}")
    h, w = grid.shape
    return (2, h + 1, w + 1)


def check_staggered(name: str, v: object, grid: Grid, channels: int = 2, hint: str = "") -> torch.Tensor:
    """Validate a staggered tensor ``(B, channels, H+1, W+1)`` for ``grid`` (shape, then dtype, device,
    contiguity and finiteness via :func:`taichi_dp.runtime.check_tensor`); errors name ``name``.
    ``hint`` replaces the default advice on how to build such a tensor."""
    from ..runtime import check_tensor

    _, h1, w1 = staggered_shape(grid)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.ndim != 4 or tuple(v.shape[1:]) != (channels, h1, w1):
        raise ValueError(
            f"{name} must be a staggered {'velocity' if channels == 2 else 'tensor'} of shape (B, {channels}, {h1}, {w1}) "
            f"for grid {grid.shape} "
            f"({hint or 'see taichi_dp.grid.staggered; convert centred (B, 2, H, W) fields with to_staggered'}), "
            f"got {tuple(v.shape)}"
        )
    return check_tensor(name, v)


def valid_faces(grid: Grid, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> torch.Tensor:
    """``(1, 2, H + 1, W + 1)`` mask: 1 on real faces, 0 on the padding."""
    h, w = grid.shape
    m = torch.zeros(1, 2, h + 1, w + 1, dtype=dtype, device=device)
    m[:, 0, :, :w] = 1
    m[:, 1, :h, :] = 1
    return m


def face_coordinates(
    grid: Grid, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> torch.Tensor:
    """Physical position of every staggered face, ``(2, 2, H + 1, W + 1)`` indexed
    ``[component, coordinate, i, j]`` with ``coordinate`` 0 = y, 1 = x:

    - ``[0, :, i, j]``: the ``v_y`` face at ``(y, x) = (lo_y + i h_y, lo_x + (j + ½) h_x)``;
    - ``[1, :, i, j]``: the ``v_x`` face at ``(y, x) = (lo_y + (i + ½) h_y, lo_x + j h_x)``.

    Padding entries (column ``W`` of channel 0, row ``H`` of channel 1) hold the same formulas
    extrapolated one cell outside the domain: finite, so a field evaluated on them stays finite and is
    zeroed by multiplying with :func:`valid_faces` (NaN would survive that product).

    ``dtype`` defaults to float64 and ``device`` to the CPU (pass the runtime's to build a state).

    >>> yx = face_coordinates(grid)
    >>> v = torch.stack([f(*yx[0]), g(*yx[1])])[None] * valid_faces(grid, torch.float64)
    """
    _, h1, w1 = staggered_shape(grid)
    dtype = torch.float64 if dtype is None else dtype
    device = "cpu" if device is None else device
    (lo_y, _), (lo_x, _) = grid.bounds
    hy, hx = grid.spacing
    i = torch.arange(h1, dtype=dtype, device=device)
    j = torch.arange(w1, dtype=dtype, device=device)
    y_face, y_centre = lo_y + i * hy, lo_y + (i + 0.5) * hy
    x_face, x_centre = lo_x + j * hx, lo_x + (j + 0.5) * hx

    def plane(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[:, None].expand(h1, w1), x[None, :].expand(h1, w1)])

    return torch.stack([plane(y_face, x_centre), plane(y_centre, x_face)]).contiguous()


def to_centred(v: torch.Tensor) -> torch.Tensor:
    """Staggered ``(B, 2, H+1, W+1)`` → centred ``(B, 2, H, W)`` by averaging the two faces of each cell."""
    vy = 0.5 * (v[:, 0, :-1, :-1] + v[:, 0, 1:, :-1])
    vx = 0.5 * (v[:, 1, :-1, :-1] + v[:, 1, :-1, 1:])
    return torch.stack([vy, vx], dim=1)


def to_staggered(c: torch.Tensor, boundary: FlowBoundary) -> torch.Tensor:
    """Centred ``(B, 2, H, W)`` → staggered ``(B, 2, H+1, W+1)``: interior faces average their two
    cells; boundary faces follow ``boundary`` (wall 0, inflow ``speed``, outflow the adjacent cell,
    periodic the average across the seam)."""
    vy = _faces_along(c[:, 0], 1, boundary.sides[0])  # (B, H+1, W)
    vx = _faces_along(c[:, 1], 2, boundary.sides[1])  # (B, H, W+1)
    return torch.stack(
        [torch.nn.functional.pad(vy, (0, 1)), torch.nn.functional.pad(vx, (0, 0, 0, 1))],
        dim=1,
    )


def _faces_along(q: torch.Tensor, dim: int, sides: tuple[FlowSide, FlowSide]) -> torch.Tensor:
    """Face values of the normal component ``q`` (cells along ``dim``) including both boundary faces."""
    n = q.shape[dim]
    first, last = q.narrow(dim, 0, 1), q.narrow(dim, n - 1, 1)
    inner = 0.5 * (q.narrow(dim, 0, n - 1) + q.narrow(dim, 1, n - 1))

    def face(side: FlowSide, adjacent: torch.Tensor) -> torch.Tensor:
        if isinstance(side, Periodic):
            return 0.5 * (first + last)
        if isinstance(side, Outflow):
            return adjacent
        return torch.full_like(adjacent, side.speed if isinstance(side, Inflow) else 0.0)

    return torch.cat([face(sides[0], first), inner, face(sides[1], last)], dim=dim)


def open_faces(fluid: torch.Tensor, boundary: FlowBoundary) -> torch.Tensor:
    """``(B, 2, H+1, W+1)`` mask of faces that flow may cross: both neighbouring cells are fluid. Across
    a periodic seam the neighbour is the cell on the other side; other cells outside the domain count as
    fluid (the boundary conditions decide there). Padding is 0."""
    py, px = (isinstance(boundary.sides[a][0], Periodic) for a in (0, 1))
    fy = (
        torch.cat([fluid[:, :, -1:], fluid, fluid[:, :, :1]], 2)
        if py
        else torch.nn.functional.pad(fluid, (0, 0, 1, 1), value=1.0)
    )
    fx = torch.cat([fluid[..., -1:], fluid, fluid[..., :1]], 3) if px else torch.nn.functional.pad(fluid, (1, 1, 0, 0), value=1.0)
    oy = fy[:, :, :-1] * fy[:, :, 1:]  # (B, 1, H+1, W)
    ox = fx[..., :-1] * fx[..., 1:]  # (B, 1, H, W+1)
    return torch.cat([torch.nn.functional.pad(oy, (0, 1)), torch.nn.functional.pad(ox, (0, 0, 0, 1))], dim=1)


_CONSTRAINTS: DerivedCache[tuple[torch.Tensor, torch.Tensor]] = DerivedCache(16)


def face_constraints(
    grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None, dtype: torch.dtype, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, fixed)`` masks ``(1 or B, 2, H+1, W+1)``: imposing the boundary is ``v·keep + fixed``
    (walls 0, inflows their speed, faces touching a solid cell 0, padding 0). Periodic seams are not
    included here (see :func:`apply_boundary`). Read-only: the masks are cached per grid, boundary and
    mask tensor (identity and version), as every step of a rollout imposes the same ones."""
    key = (grid, boundary, dtype, str(device))
    return _CONSTRAINTS.get(key, fluid, lambda: _face_constraints(grid, boundary, fluid, dtype, device))


def _face_constraints(
    grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None, dtype: torch.dtype, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = grid.shape
    faces = valid_faces(grid, dtype, device)
    keep = faces.clone()
    fixed = torch.zeros_like(keep)
    for c, (lo, hi) in enumerate(boundary.sides):
        for side, idx in ((lo, 0), (hi, h if c == 0 else w)):
            if isinstance(side, (Wall, Inflow)):
                face = (slice(None), c, idx, slice(None)) if c == 0 else (slice(None), c, slice(None), idx)
                keep[face] = 0.0
                fixed[face] = side.speed if isinstance(side, Inflow) else 0.0
    fixed = fixed * faces
    if fluid is not None:
        open_ = open_faces(fluid.to(dtype), boundary)
        keep, fixed = keep * open_, fixed * open_
    return keep, fixed


def apply_boundary(v: torch.Tensor, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None = None) -> torch.Tensor:
    """Impose the boundary conditions on the normal faces of a staggered velocity ``(B, 2, H+1, W+1)``:
    walls 0, inflows their speed, periodic seams equal (face ``N`` := face ``0``), faces touching a solid
    cell 0 (static obstacle), padding 0. Outflow faces are left free (the pressure projection sets
    them). Differentiable."""
    h, w = grid.shape
    keep, fixed = face_constraints(grid, boundary, fluid, v.dtype, v.device)
    out = v * keep + fixed
    if isinstance(boundary.sides[0][0], Periodic):  # seam faces 0 and H are one face
        vy = torch.cat([out[:, 0, :h], out[:, 0, :1]], dim=1)
        out = torch.stack([vy, out[:, 1]], dim=1)
    if isinstance(boundary.sides[1][0], Periodic):
        vx = torch.cat([out[:, 1, :, :w], out[:, 1, :, :1]], dim=2)
        out = torch.stack([out[:, 0], vx], dim=1)
    return out


def free_faces(
    grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """``(1 or B, 2, H+1, W+1)`` mask of the faces whose velocity is an unknown (not fixed by a wall,
    inflow, obstacle or padding; on a periodic axis face ``N`` is the duplicate of face ``0``)."""
    h, w = grid.shape
    keep, _ = face_constraints(grid, boundary, fluid, dtype, device)
    keep = keep.clone()
    if isinstance(boundary.sides[0][0], Periodic):
        keep[:, 0, h] = 0.0
    if isinstance(boundary.sides[1][0], Periodic):
        keep[:, 1, :, w] = 0.0
    return keep
