"""Staggered (MAC) velocity on a 2D or 3D grid, flow boundary conditions, and centred ⇄ staggered conversion.

Layout, for ``nd`` = 2 or 3 spatial axes (cell-centred layout in :mod:`taichi_dp.grid._cartesian`): one
tensor ``(B, nd, *(N_a + 1 for each axis a))`` per velocity field, so that a staggered state travels
through torch (and a hybrid step) as a single tensor. Channel ``c`` is the velocity component along axis
``c`` (2D ``(v_y, v_x)``, 3D ``(v_z, v_y, v_x)``); the entry ``v[b, c, *idx]``:

- along axis ``c``: ``idx[c] ∈ [0, N_c]`` is the face between cells ``idx[c] − 1`` and ``idx[c]``, at
  ``lo_c + idx[c] h_c``; faces ``0`` and ``N_c`` lie on the domain boundary (with periodic sides they
  are the same face and are kept equal);
- along every other axis ``a``: ``idx[a] ∈ [0, N_a)`` is the cell index (position ``lo_a + (idx[a] + ½) h_a``);
  ``idx[a] == N_a`` is padding and always zero.

In 2D: ``(B, 2, H + 1, W + 1)``; ``v[:, 0, i, j]`` (``v_y``) sits at ``y = lo_y + i h_y`` and the centre
of column ``j`` (column ``W`` is padding), ``v[:, 1, i, j]`` (``v_x``) at the centre of row ``i`` and
``x = lo_x + j h_x`` (row ``H`` is padding). In cell-index space (cell ``i`` centred at ``i``) the face
``(c, idx)`` sits at ``idx − ½ e_c``. :func:`face_coordinates` gives the physical position of every
face. Networks see centred ``(B, nd, *N)`` tensors (:func:`to_centred`); corrections come back through
:func:`to_staggered`. Both conversions are linear torch ops (differentiable).

Obstacles are a fluid mask ``(B or 1, 1, *N)`` (1 = fluid, 0 = solid); faces touching a solid cell are
closed (zero normal velocity: static obstacles).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..derived_cache import DerivedCache
from ._cartesian import Boundary, BoundaryCondition, Dirichlet, Grid, Periodic, ZeroGradient

STAGGERED_NDIMS = (2, 3)
"""Staggered velocities live on 2D and 3D grids."""

_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


def _real(name: str, x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__} {x!r}")
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return float(x)


@dataclass(frozen=True)
class Wall:
    """Solid wall: zero normal velocity. Tangential velocity ``velocity`` on the wall (no-slip; a moving
    wall when non-zero) or zero-gradient (``slip=True``).

    ``velocity``: a float, with the 2D meaning (the wall's velocity along the other axis; only a 0.0 float
    is allowed in 3D), or, for any dimension, a tuple with one entry per axis in axis order (2D
    ``(v_y, v_x)``, 3D ``(v_z, v_y, v_x)``): the wall's velocity, whose entry along the wall's normal axis
    must be 0 (checked by :class:`FlowBoundary`, which knows the axis).

    >>> Wall(velocity=1.0)               # 2D lid sliding along the other axis
    >>> Wall(velocity=(0.0, 0.0, 1.0))   # 3D lid on a z side sliding along x
    """

    slip: bool = False
    velocity: float | tuple[float, ...] = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.velocity, tuple | list):
            if len(self.velocity) not in STAGGERED_NDIMS:
                raise ValueError(
                    f"Wall velocity must be a float or a tuple of 2 or 3 entries (one per axis), got {self.velocity!r}"
                )
            vel = tuple(_real(f"Wall velocity[{a}]", x) for a, x in enumerate(self.velocity))
            object.__setattr__(self, "velocity", vel)
            moving = any(x != 0.0 for x in vel)
        else:
            if isinstance(self.velocity, bool) or not isinstance(self.velocity, numbers.Real):
                raise TypeError(
                    f"Wall velocity must be a float or a tuple with one entry per axis, got {type(self.velocity).__name__} "
                    f"{self.velocity!r}"
                )
            if not math.isfinite(self.velocity):
                raise ValueError(f"Wall velocity must be finite, got {self.velocity}")
            moving = self.velocity != 0.0
        if self.slip and moving:
            raise ValueError(f"a slip wall has no tangential velocity, got velocity={self.velocity}")

    def tangential(self, c: int) -> float:
        """The wall's velocity component ``c`` (``c`` not the wall's normal axis): a float ``velocity``
        itself (2D meaning), a tuple its entry ``c``."""
        return self.velocity[c] if isinstance(self.velocity, tuple) else float(self.velocity)


@dataclass(frozen=True)
class Inflow:
    """Prescribed normal velocity ``speed`` (along the axis direction; > 0 points to higher index) and
    zero tangential velocity.

    ``speed``: a number (uniform over the side), or a profile: a callable of the side's face-centre
    coordinates returning their normal speeds — in 2D ``speed(t)`` with ``t`` the physical coordinate
    along the side (the other axis' cell centres, shape ``(N,)``), in 3D ``speed(t0, t1)`` with the two
    tangential axes' coordinates in axis order as an ``"ij"`` mesh ``(N_0, N_1)``. The profile is evaluated
    once per grid (:meth:`face_speeds`) and must return a finite real tensor of that shape, or one number
    (a 0-d tensor), not requiring grad (it is evaluated once and kept). The value sits on the boundary
    faces themselves, so the inflow is exactly the profile at the face centres, with no band or
    divergence-carrying column inside the domain.

    >>> Inflow(1.0)                                              # uniform
    >>> Inflow(lambda y: 4 * 0.3 * y * (0.41 - y) / 0.41**2)     # the DFG benchmark's parabolic inlet
    """

    speed: float | Callable[..., torch.Tensor | float] = 1.0

    def __post_init__(self) -> None:
        if callable(self.speed):
            return
        if isinstance(self.speed, bool) or not isinstance(self.speed, numbers.Real):
            raise TypeError(
                f"Inflow speed must be a number or a callable profile of the side's coordinates, got "
                f"{type(self.speed).__name__} {self.speed!r}"
            )
        if not math.isfinite(self.speed):
            raise ValueError(f"Inflow speed must be finite, got {self.speed}")

    @property
    def uniform(self) -> bool:
        """``True`` for a number ``speed``, ``False`` for a profile."""
        return not callable(self.speed)

    def face_speeds(
        self, grid: Grid, axis: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """The normal speed on each of this side's faces, the grid's shape without ``axis`` (2D ``(N,)``,
        3D ``(N_0, N_1)``); ``ValueError`` naming the profile's problem (shape, non-finite values)."""
        shape = tuple(n for a, n in enumerate(grid.shape) if a != axis)
        if self.uniform:
            return torch.full(shape, float(self.speed), dtype=dtype, device=device)
        coords = [grid.centers(a, dtype, device) for a in range(grid.ndim) if a != axis]
        out = self.speed(*torch.meshgrid(*coords, indexing="ij"))
        if isinstance(out, numbers.Real) and not isinstance(out, bool):
            out = torch.tensor(float(out), dtype=dtype, device=device)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"Inflow speed profile must return a tensor (or a number), got {type(out).__name__}")
        if out.is_complex():
            raise TypeError(f"Inflow speed profile must return real speeds, got complex {out.dtype}")
        if out.requires_grad:
            raise ValueError(
                "Inflow speed profile returned a tensor that requires grad: the profile is evaluated once per grid "
                "and kept, so no gradient would reach its parameters; return a detached tensor (a learned inflow "
                "belongs in the state or in NavierStokes(forcing=...))"
            )
        if out.ndim != 0 and tuple(out.shape) != shape:  # a partial shape could broadcast along the wrong axis
            raise ValueError(
                f"Inflow speed profile must return speeds of the side's faces' shape {shape} (or one number), got "
                f"shape {tuple(out.shape)}"
            )
        out = torch.broadcast_to(out.to(dtype=dtype, device=device), shape)
        if not bool(torch.isfinite(out).all()):
            raise ValueError("Inflow speed profile returned non-finite speeds")
        return out.contiguous()

    def flux(self, grid: Grid, axis: int) -> float:
        """The volume flux through this side along ``+axis`` (the speeds times the faces' areas)."""
        area = math.prod(h for a, h in enumerate(grid.spacing) if a != axis)
        return float(self.face_speeds(grid, axis).sum()) * area


@dataclass(frozen=True)
class Outflow:
    """Open boundary: zero-gradient velocity, pressure 0."""


FlowSide = Wall | Inflow | Outflow | Periodic


def _check_flow_ndim(ndim: object) -> int:
    if isinstance(ndim, bool) or not isinstance(ndim, int):
        raise TypeError(f"ndim must be an int (2 or 3), got {type(ndim).__name__} {ndim!r}")
    if ndim not in STAGGERED_NDIMS:
        raise ValueError(f"ndim must be 2 or 3 (staggered flows are 2D or 3D), got {ndim}")
    return ndim


@dataclass(frozen=True)
class FlowBoundary:
    """Flow boundary conditions of a 2D or 3D domain: one ``(lo, hi)`` side pair per axis, in axis order:
    ``((y_lo, y_hi), (x_lo, x_hi))`` in 2D, ``((z_lo, z_hi), (y_lo, y_hi), (x_lo, x_hi))`` in 3D.

    >>> FlowBoundary.box()                                             # 2D closed cavity, no-slip walls
    >>> FlowBoundary(((Wall(), Wall(velocity=1.0)), (Wall(), Wall())))  # lid-driven cavity (lid at y_hi)
    >>> FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall())))     # channel flow along +y
    >>> FlowBoundary.box(ndim=3)                                       # 3D closed box
    """

    sides: tuple[tuple[FlowSide, FlowSide], ...]

    def __post_init__(self) -> None:
        if (
            not isinstance(self.sides, tuple)
            or len(self.sides) not in STAGGERED_NDIMS
            or any(not isinstance(p, tuple) or len(p) != 2 for p in self.sides)
        ):
            raise ValueError(
                "FlowBoundary.sides must be ((y_lo, y_hi), (x_lo, x_hi)) in 2D or "
                f"((z_lo, z_hi), (y_lo, y_hi), (x_lo, x_hi)) in 3D, got {self.sides!r}"
            )
        nd = len(self.sides)
        for axis, pair in enumerate(self.sides):
            for s in pair:
                if not isinstance(s, (Wall, Inflow, Outflow, Periodic)):
                    raise TypeError(f"FlowBoundary.sides[{axis}] entries must be Wall/Inflow/Outflow/Periodic, got {s!r}")
                if isinstance(s, Wall):
                    _check_wall_velocity(s, axis, nd)
            if isinstance(pair[0], Periodic) != isinstance(pair[1], Periodic):
                raise ValueError(f"FlowBoundary.sides[{axis}]: Periodic must be set on both sides, got {pair!r}")

    @staticmethod
    def box(slip: bool = False, ndim: int = 2) -> FlowBoundary:
        """Walls on every side (``ndim`` = 2 or 3 axes)."""
        return FlowBoundary(tuple((Wall(slip), Wall(slip)) for _ in range(_check_flow_ndim(ndim))))

    @staticmethod
    def periodic(ndim: int = 2) -> FlowBoundary:
        """Periodic along every axis (``ndim`` = 2 or 3 axes)."""
        return FlowBoundary(tuple((Periodic(), Periodic()) for _ in range(_check_flow_ndim(ndim))))

    @property
    def ndim(self) -> int:
        return len(self.sides)

    @property
    def has_outflow(self) -> bool:
        return any(isinstance(s, Outflow) for pair in self.sides for s in pair)

    def pressure(self) -> Boundary:
        """Boundary conditions of the pressure: 0 at outflows, zero-gradient at walls and inflows."""
        return _pressure_boundary(self)

    def component(self, c: int) -> Boundary:
        """Boundary conditions of the velocity component ``c`` (the one along axis ``c``; 2D 0: v_y, 1: v_x)
        for advection, diffusion and interpolation: along ``c``'s own axis only periodicity matters (the
        boundary faces carry their values); across every other axis, walls and inflows are Dirichlet (the
        wall velocity's component ``c``, 0 for an inflow) and slip walls and outflows zero-gradient."""
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < self.ndim:
            raise ValueError(f"c must be a velocity component in 0..{self.ndim - 1} of this {self.ndim}D boundary, got {c!r}")
        return _component_boundary(self, c)


def _check_wall_velocity(wall: Wall, axis: int, nd: int) -> None:
    """A wall's velocity fits a ``nd``-D boundary with the wall normal to ``axis``."""
    where = f"FlowBoundary.sides[{axis}]"
    if isinstance(wall.velocity, tuple):
        if len(wall.velocity) != nd:
            names = ", ".join(f"v_{n}" for n in _AXES[nd])
            raise ValueError(f"{where}: Wall velocity must have {nd} entries ({names}) in {nd}D, got {wall.velocity!r}")
        if wall.velocity[axis] != 0.0:
            raise ValueError(
                f"{where}: Wall velocity must be tangential, its entry {axis} (v_{_AXES[nd][axis]}, along the wall's "
                f"normal) must be 0, got {wall.velocity!r}"
            )
    elif nd != 2 and wall.velocity != 0.0:
        names = ", ".join(f"v_{n}" for n in _AXES[nd])
        raise ValueError(
            f"{where}: a moving Wall in {nd}D needs its velocity as a tuple ({names}), got the float {wall.velocity!r} "
            "(a float means the tangential velocity along the other axis, in 2D only)"
        )


def _pressure_side(s: FlowSide) -> BoundaryCondition:
    return s if isinstance(s, Periodic) else Dirichlet(0.0) if isinstance(s, Outflow) else ZeroGradient()


def _component_side(s: FlowSide, normal: bool, c: int) -> BoundaryCondition:
    if isinstance(s, Periodic):
        return s
    if isinstance(s, Outflow):
        return ZeroGradient()
    if isinstance(s, Inflow):  # along a component's own axis the boundary faces hold the values (never read here)
        return Dirichlet(s.speed if normal and s.uniform else 0.0)
    if normal:
        return Dirichlet(0.0)
    return ZeroGradient() if s.slip else Dirichlet(s.tangential(c))


@functools.lru_cache(maxsize=256)  # boundaries are immutable and every step asks for the same ones
def _pressure_boundary(boundary: FlowBoundary) -> Boundary:
    return Boundary(tuple((_pressure_side(lo), _pressure_side(hi)) for lo, hi in boundary.sides))


@functools.lru_cache(maxsize=256)
def _component_boundary(boundary: FlowBoundary, c: int) -> Boundary:
    sides = enumerate(boundary.sides)
    return Boundary(tuple((_component_side(lo, axis == c, c), _component_side(hi, axis == c, c)) for axis, (lo, hi) in sides))


# ------------------------------------------------------------------------------------------ layout
def staggered_shape(grid: Grid) -> tuple[int, ...]:
    """``(nd, *(N_a + 1))``: the per-sample shape of a staggered velocity on a 2D or 3D ``grid``
    (2D ``(2, H + 1, W + 1)``, 3D ``(3, D + 1, H + 1, W + 1)``)."""
    if grid.ndim not in STAGGERED_NDIMS:
        raise ValueError(f"staggered velocity needs a 2D grid or a 3D grid, got shape {grid.shape}")
    return (grid.ndim, *(n + 1 for n in grid.shape))


def check_staggered(name: str, v: object, grid: Grid, channels: int | None = None, hint: str = "") -> torch.Tensor:
    """Validate a staggered tensor ``(B, channels, *(N_a + 1))`` for ``grid`` (``channels`` defaults to
    the grid's dimension: a velocity), checking the shape, then dtype, device, contiguity and finiteness
    via :func:`taichi_dp.runtime.check_tensor`; errors name ``name``. ``hint`` replaces the default
    advice on how to build such a tensor."""
    from ..runtime import check_tensor

    nd, *faces = staggered_shape(grid)
    channels = nd if channels is None else channels
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.ndim != nd + 2 or tuple(v.shape[1:]) != (channels, *faces):
        centred = "(B, 2, H, W)" if nd == 2 else "(B, 3, D, H, W)"
        shape = ", ".join(str(n) for n in (channels, *faces))
        raise ValueError(
            f"{name} must be a staggered {'velocity' if channels == nd else 'tensor'} of shape (B, {shape}) "
            f"for grid {grid.shape} "
            f"({hint or f'see taichi_dp.grid.staggered; convert centred {centred} fields with to_staggered'}), "
            f"got {tuple(v.shape)}"
        )
    return check_tensor(name, v)


def _index(nd: int, c: int, axis: int, idx: int | slice) -> tuple:
    """The tensor index ``[:, c, ..., idx (along spatial axis), ...]`` of a staggered ``(B, nd, ...)`` tensor."""
    index: list = [slice(None)] * (2 + nd)
    index[1] = c
    index[2 + axis] = idx
    return tuple(index)


def _pad_tangential(x: torch.Tensor, c: int, nd: int) -> torch.Tensor:
    """Pad component ``c``'s faces ``(B, *faces)`` (``N_c + 1`` along axis ``c``, ``N_a`` along the others)
    with one zero at the high end of every other axis: the staggered extent ``N_a + 1``."""
    pad: list[int] = []
    for a in reversed(range(nd)):  # F.pad lists the last dimension first
        pad += [0, 0] if a == c else [0, 1]
    return torch.nn.functional.pad(x, pad)


def valid_faces(grid: Grid, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> torch.Tensor:
    """``(1, nd, *(N_a + 1))`` mask: 1 on real faces, 0 on the padding."""
    nd, *faces = staggered_shape(grid)
    m = torch.zeros(1, nd, *faces, dtype=dtype, device=device)
    for c in range(nd):
        m[(slice(None), c, *(slice(None) if a == c else slice(0, n) for a, n in enumerate(grid.shape)))] = 1
    return m


def face_coordinates(grid: Grid, dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> torch.Tensor:
    """Physical position of every staggered face, ``(nd, nd, *(N_a + 1))`` indexed
    ``[component, coordinate, *idx]`` with ``coordinate`` the axis (2D 0 = y, 1 = x; 3D 0 = z, 1 = y,
    2 = x): ``lo_a + idx[a] h_a`` along the component's own axis ``a = c``, ``lo_a + (idx[a] + ½) h_a``
    along the others. In 2D:

    - ``[0, :, i, j]``: the ``v_y`` face at ``(y, x) = (lo_y + i h_y, lo_x + (j + ½) h_x)``;
    - ``[1, :, i, j]``: the ``v_x`` face at ``(y, x) = (lo_y + (i + ½) h_y, lo_x + j h_x)``.

    Padding entries (``idx[a] = N_a`` across a component's axis) hold the same formulas extrapolated one
    cell outside the domain: finite, so a field evaluated on them stays finite and is zeroed by
    multiplying with :func:`valid_faces` (NaN would survive that product).

    ``dtype`` defaults to float64 and ``device`` to the CPU (pass the runtime's to build a state).

    >>> yx = face_coordinates(grid)
    >>> v = torch.stack([f(*yx[0]), g(*yx[1])])[None] * valid_faces(grid, torch.float64)
    """
    nd, *faces = staggered_shape(grid)
    dtype = torch.float64 if dtype is None else dtype
    device = "cpu" if device is None else device
    face_pos, centre_pos = [], []
    for (lo, _), h, n1 in zip(grid.bounds, grid.spacing, faces):
        i = torch.arange(n1, dtype=dtype, device=device)
        face_pos.append(lo + i * h)
        centre_pos.append(lo + (i + 0.5) * h)

    def along(a: int, x: torch.Tensor) -> torch.Tensor:  # x (n1,) broadcast over the face grid along axis a
        shape = [1] * nd
        shape[a] = faces[a]
        return x.view(shape).expand(faces)

    return torch.stack(
        [torch.stack([along(a, face_pos[a] if a == c else centre_pos[a]) for a in range(nd)]) for c in range(nd)]
    ).contiguous()


def cell_faces(faces: torch.Tensor, axis: int, nd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The faces below and above every cell along ``axis``: ``faces`` holds one staggered component (or any
    per-face quantity) on its last ``nd`` dimensions ``*(N + 1)``; both results are ``(…, *N)`` views."""
    lower = (slice(0, -1),) * nd
    upper = tuple(slice(1, None) if a == axis else slice(0, -1) for a in range(nd))
    return faces[(Ellipsis, *lower)], faces[(Ellipsis, *upper)]


def to_centred(v: torch.Tensor) -> torch.Tensor:
    """Staggered ``(B, nd, *(N + 1))`` → centred ``(B, nd, *N)`` by averaging the two faces of each cell
    along each component's axis."""
    nd = v.shape[1]
    return torch.stack([0.5 * sum(cell_faces(v[:, c], c, nd)) for c in range(nd)], dim=1)


def to_staggered(c: torch.Tensor, boundary: FlowBoundary, grid: Grid | None = None) -> torch.Tensor:
    """Centred ``(B, nd, *N)`` → staggered ``(B, nd, *(N + 1))``: interior faces average their two
    cells; boundary faces follow ``boundary`` (wall 0, inflow ``speed``, outflow the adjacent cell,
    periodic the average across the seam). An :class:`Inflow` profile needs the ``grid`` (its coordinates)."""
    nd = boundary.ndim
    return torch.stack([_pad_tangential(_faces_along(c[:, a], 1 + a, boundary.sides[a], grid), a, nd) for a in range(nd)], dim=1)


def _faces_along(q: torch.Tensor, dim: int, sides: tuple[FlowSide, FlowSide], grid: Grid | None) -> torch.Tensor:
    """Face values of the normal component ``q`` (cells along ``dim``) including both boundary faces."""
    n = q.shape[dim]
    first, last = q.narrow(dim, 0, 1), q.narrow(dim, n - 1, 1)
    inner = 0.5 * (q.narrow(dim, 0, n - 1) + q.narrow(dim, 1, n - 1))

    def face(side: FlowSide, adjacent: torch.Tensor) -> torch.Tensor:
        if isinstance(side, Periodic):
            return 0.5 * (first + last)
        if isinstance(side, Outflow):
            return adjacent
        if isinstance(side, Inflow) and side.uniform:
            return torch.full_like(adjacent, float(side.speed))
        if isinstance(side, Inflow):
            if grid is None:
                raise ValueError("to_staggered needs grid= for a boundary with an Inflow speed profile")
            return side.face_speeds(grid, dim - 1, adjacent.dtype, adjacent.device).unsqueeze(dim - 1).expand_as(adjacent)
        return torch.zeros_like(adjacent)

    return torch.cat([face(sides[0], first), inner, face(sides[1], last)], dim=dim)


def open_faces(fluid: torch.Tensor, boundary: FlowBoundary) -> torch.Tensor:
    """``(B, nd, *(N + 1))`` mask of faces that flow may cross: both neighbouring cells are fluid. Across
    a periodic seam the neighbour is the cell on the other side; other cells outside the domain count as
    fluid (the boundary conditions decide there). Padding is 0."""
    nd = boundary.ndim
    comps = []
    for a in range(nd):
        dim = 2 + a
        n = fluid.shape[dim]
        if isinstance(boundary.sides[a][0], Periodic):
            ext = torch.cat([fluid.narrow(dim, n - 1, 1), fluid, fluid.narrow(dim, 0, 1)], dim)
        else:
            pad = [0, 0] * nd
            pad[2 * (nd - 1 - a)], pad[2 * (nd - 1 - a) + 1] = 1, 1
            ext = torch.nn.functional.pad(fluid, pad, value=1.0)
        both = ext.narrow(dim, 0, n + 1) * ext.narrow(dim, 1, n + 1)  # (B, 1, ..., N_a + 1, ...)
        comps.append(_pad_tangential(both[:, 0], a, nd))
    return torch.stack(comps, dim=1)


_CONSTRAINTS: DerivedCache[tuple[torch.Tensor, torch.Tensor]] = DerivedCache(16)


def face_constraints(
    grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None, dtype: torch.dtype, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, fixed)`` masks ``(1 or B, nd, *(N + 1))``: imposing the boundary is ``v·keep + fixed``
    (walls 0, inflows their speed, faces touching a solid cell 0, padding 0). Periodic seams are not
    included here (see :func:`apply_boundary`). Read-only: the masks are cached per grid, boundary and
    mask tensor (identity and version), as every step of a rollout imposes the same ones."""
    key = (grid, boundary, dtype, str(device))
    return _CONSTRAINTS.get(key, fluid, lambda: _face_constraints(grid, boundary, fluid, dtype, device))


def _check_dims(grid: Grid, boundary: FlowBoundary) -> int:
    nd = staggered_shape(grid)[0]
    if boundary.ndim != nd:
        raise ValueError(f"boundary must have one side pair per grid axis ({nd}), got a {boundary.ndim}D FlowBoundary")
    return nd


def _face_constraints(
    grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None, dtype: torch.dtype, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    nd = _check_dims(grid, boundary)
    faces = valid_faces(grid, dtype, device)
    keep = faces.clone()
    fixed = torch.zeros_like(keep)
    for c, (lo, hi) in enumerate(boundary.sides):
        for side, idx in ((lo, 0), (hi, grid.shape[c])):
            if isinstance(side, (Wall, Inflow)):
                face = _index(nd, c, c, idx)
                keep[face] = 0.0
                if isinstance(side, Inflow):  # the side's plane, padded like every component's faces
                    speeds = side.face_speeds(grid, c, dtype, device)
                    fixed[face] = torch.nn.functional.pad(speeds, [0, 1] * (nd - 1))
    fixed = fixed * faces
    if fluid is not None:
        open_ = open_faces(fluid.to(dtype), boundary)
        keep, fixed = keep * open_, fixed * open_
    return keep, fixed


def apply_boundary(v: torch.Tensor, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None = None) -> torch.Tensor:
    """Impose the boundary conditions on the normal faces of a staggered velocity ``(B, nd, *(N + 1))``:
    walls 0, inflows their speed, periodic seams equal (face ``N`` := face ``0``), faces touching a solid
    cell 0 (static obstacle), padding 0. Outflow faces are left free (the pressure projection sets
    them). Differentiable."""
    keep, fixed = face_constraints(grid, boundary, fluid, v.dtype, v.device)
    out = v * keep + fixed
    for c, (lo, _) in enumerate(boundary.sides):
        if isinstance(lo, Periodic):  # seam faces 0 and N_c are one face
            u, dim = out[:, c], 1 + c
            seam = torch.cat([u.narrow(dim, 0, grid.shape[c]), u.narrow(dim, 0, 1)], dim=dim)
            out = torch.stack([seam if a == c else out[:, a] for a in range(out.shape[1])], dim=1)
    return out


def free_faces(
    grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """``(1 or B, nd, *(N + 1))`` mask of the faces whose velocity is an unknown (not fixed by a wall,
    inflow, obstacle or padding; on a periodic axis face ``N`` is the duplicate of face ``0``)."""
    nd = _check_dims(grid, boundary)
    keep, _ = face_constraints(grid, boundary, fluid, dtype, device)
    keep = keep.clone()
    for c, (lo, _) in enumerate(boundary.sides):
        if isinstance(lo, Periodic):
            keep[_index(nd, c, c, grid.shape[c])] = 0.0
    return keep
