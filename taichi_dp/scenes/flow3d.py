"""Three-dimensional flow scenes: a buoyant smoke plume around an obstacle, flow past a sphere in a channel,
and the Arnold–Beltrami–Childress (ABC) flow, an exact Navier–Stokes solution in a periodic box.

Axes are ``(z, y, x)`` (:mod:`taichi_dp.grid`); "up" is +y in every smoke scene, as in 2D.
"""

from __future__ import annotations

import math

import torch

from ..grid import Grid
from ..grid.geometry import Sphere
from ..grid.staggered import FlowBoundary, Inflow, Outflow, Wall, face_coordinates, staggered_shape, valid_faces
from ..ops.pressure import apply_projection
from ..ops.solve_options import SolveOptions
from ..runtime import ensure_init
from ..solvers import NavierStokes, SmokePlume, pack_smoke
from .scene import Scene

PLUME_EXTENT = 100.0
"""Edge length of the smoke box (as the 2D :func:`~taichi_dp.scenes.smoke_plume`)."""
PRESSURE_3D = SolveOptions(rtol=1e-4)
"""The pressure solve of the 3D smoke and channel scenes (multigrid-preconditioned CG to ``rtol=1e-4``)."""


def smoke_plume_3d(
    n: int = 32,
    buoyancy: float | torch.Tensor = 0.5,
    batch: int = 1,
    *,
    obstacle: bool = True,
    source_strength: float = 0.2,
    density_advection: str = "flux",
    pressure: SolveOptions = PRESSURE_3D,
) -> Scene:
    """A rising smoke plume in a closed ``100³`` box (no-slip walls, inviscid), the classic PhiFlow/DiffTaichi
    scene in 3D: a spherical source of radius 8 at ``(z, y, x) = (50, 12, 50)`` injects ``source_strength``
    density per unit time, buoyancy ``β`` lifts it along +y, and with ``obstacle`` a solid sphere of
    radius 14 at ``(50, 50, 50)`` splits it. ``dt = 1`` on an ``n³`` grid. Returns a
    :class:`~taichi_dp.scenes.Scene` with a :class:`~taichi_dp.solvers.SmokePlume` stepper and the packed
    state at rest without smoke, ``(batch, 4, n+1, n+1, n+1)``."""
    _check_size("n", n, 8)
    rt = ensure_init()
    grid = Grid((n, n, n), ((0.0, PLUME_EXTENT),) * 3)
    fluid = Sphere((50.0, 50.0, 50.0), 14.0)(grid) if obstacle else None
    flow = NavierStokes(grid, FlowBoundary.box(ndim=3), nu=0.0, dt=1.0, fluid=fluid, pressure=pressure)
    source = source_strength * (1.0 - Sphere((50.0, 12.0, 50.0), 8.0)(grid))
    state0 = pack_smoke(
        torch.zeros(batch, *staggered_shape(grid), dtype=rt.dtype, device=rt.device),
        torch.zeros(batch, 1, n, n, n, dtype=rt.dtype, device=rt.device),
    )
    stepper = SmokePlume(flow, buoyancy=buoyancy, source=source.contiguous(), density_advection=density_advection)
    return Scene(stepper, state0)


def sphere_channel(
    n: int = 16,
    reynolds: float = 100.0,
    batch: int = 1,
    *,
    advection: str = "maccormack",
    pressure: SolveOptions = PRESSURE_3D,
) -> Scene:
    """Flow past a sphere of diameter 1 in a channel ``(z, y, x) ∈ [0, 4] × [0, 4] × [0, 8]``: inflow of speed
    1 at ``x = 0``, outflow at ``x = 8``, slip walls on the four sides; the sphere's centre at
    ``(2, 2, 2)``. ``reynolds = U d / ν`` (so ``ν = 1/Re``); an ``(n, n, 2n)`` grid with ``h = 4/n`` and
    ``dt = h/2`` (inflow Courant number ½; the explicit viscosity is sub-stepped as needed). ``state0`` is
    the uniform inflow velocity outside the sphere, projected."""
    _check_size("n", n, 8)
    if not (isinstance(reynolds, (int, float)) and not isinstance(reynolds, bool) and reynolds > 0 and math.isfinite(reynolds)):
        raise ValueError(f"reynolds must be a finite number > 0, got {reynolds!r}")
    rt = ensure_init()
    grid = Grid((n, n, 2 * n), ((0.0, 4.0), (0.0, 4.0), (0.0, 8.0)))
    slip = Wall(slip=True)
    boundary = FlowBoundary(((slip, slip), (slip, slip), (Inflow(1.0), Outflow())))
    fluid = Sphere((2.0, 2.0, 2.0), 0.5)(grid)
    h = grid.spacing[0]
    flow = NavierStokes(
        grid, boundary, nu=1.0 / reynolds, dt=0.5 * h, fluid=fluid, advection=advection, pressure=pressure
    )
    v0 = torch.zeros(batch, *staggered_shape(grid), dtype=rt.dtype, device=rt.device)
    v0[:, 2] = 1.0  # v_x everywhere
    v0 = v0 * valid_faces(grid, rt.dtype, rt.device)
    v0 = apply_projection(flow.impose(v0), grid, boundary, flow.fluid, rtol=1e-6)[0]
    return Scene(flow, v0.contiguous())


def abc_flow(
    n: int = 16,
    nu: float = 0.05,
    dt: float | None = None,
    batch: int = 1,
    *,
    coefficients: tuple[float, float, float] = (1.0, 1.0, 1.0),
    advection: str = "maccormack",
) -> Scene:
    """The Arnold–Beltrami–Childress flow in the periodic box ``[0, 2π]³``:

        v_x = A sin z + C cos y,    v_y = B sin x + A cos z,    v_z = C sin y + B cos x,

    a Beltrami field (``∇ × v = v``, so ``(v·∇)v = ∇|v|²/2`` is balanced by the pressure) and therefore an
    exact Navier–Stokes solution that decays as ``exp(−ν t)`` (wavenumber ``k = 1``;
    :func:`abc_velocity` gives it at any time). ``dt`` defaults to ``h/2``."""
    _check_size("n", n, 4)
    grid = Grid((n, n, n), ((0.0, 2 * math.pi),) * 3)
    step = 0.5 * grid.spacing[0] if dt is None else dt
    stepper = NavierStokes(
        grid, FlowBoundary.periodic(ndim=3), nu=nu, dt=step, advection=advection  # the exact FFT projection
    )
    v0 = abc_velocity(grid, 0.0, nu, coefficients)
    return Scene(stepper, v0.expand(batch, *v0.shape[1:]).contiguous())


def abc_velocity(grid: Grid, t: float, nu: float, coefficients: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """The exact ABC velocity at time ``t`` on the staggered faces, ``(1, 3, D+1, H+1, W+1)`` (components
    ``(v_z, v_y, v_x)``; see :func:`abc_flow`)."""
    if grid.ndim != 3:
        raise ValueError(f"the ABC flow needs a 3D grid, got shape {grid.shape}")
    rt = ensure_init()
    a, b, c = (float(x) for x in coefficients)
    decay = math.exp(-nu * t)
    zyx = face_coordinates(grid, torch.float64)  # [component, coordinate (z, y, x), *index]
    z, y, x = zyx[0]
    vz = c * torch.sin(y) + b * torch.cos(x)
    z, y, x = zyx[1]
    vy = b * torch.sin(x) + a * torch.cos(z)
    z, y, x = zyx[2]
    vx = a * torch.sin(z) + c * torch.cos(y)
    v = torch.stack([vz, vy, vx])[None] * decay * valid_faces(grid, torch.float64)
    return v.to(dtype=rt.dtype, device=rt.device).contiguous()


def _check_size(name: str, n: object, minimum: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
