"""The DFG benchmark "flow around a cylinder", case 2D-1 (Schäfer & Turek 1996): a steady Re = 20 flow
past a cylinder in a channel, with reference drag, lift and pressure difference.

Geometry and data (physical ``x`` along the channel = grid axis 1, ``y`` across = grid axis 0): channel
``[0, 2.2] × [0, 0.41]``, cylinder of diameter ``D = 0.1`` centred at ``(x, y) = (0.2, 0.2)`` (slightly below
the centre line: hence a small lift), no-slip walls at ``y = 0`` and ``y = 0.41``, parabolic inflow
``U(y) = 4 U_max y (H − y) / H²`` with ``U_max = 0.3`` at ``x = 0``, "do nothing" outflow at ``x = 2.2`` (here
:class:`~taichi_dp.grid.staggered.Outflow`: zero-gradient velocity, ``p = 0``), ``ν = 10⁻³``, ``ρ = 1``;
``Ū = 2 U_max / 3 = 0.2`` and ``Re = Ū D / ν = 20``. Reference values (:data:`DFG_2D1_REFERENCE`):
``c_D = 2 F_D / (ρ Ū² D) = 5.5795``, ``c_L = 2 F_L / (ρ Ū² D) = 0.0106``,
``Δp = p(0.15, 0.2) − p(0.25, 0.2) = 0.1175``.

The inflow profile is an :class:`~taichi_dp.grid.staggered.Inflow` side with the parabola as its speed
profile: ``v_x = U(y)`` on the ``x = 0`` faces, tangential velocity 0.

The cylinder is its binary (staircase) mask by default, or with ``cut_cells=True`` a
:class:`~taichi_dp.grid.cut_cells.CutCells` obstacle (the surface cut through cells: face openings in the
projection, no-slip at the true wall distance), whose answers move smoothly with the cylinder's position;
``centre=`` moves it by a fraction of a cell to show how much a staircase answer depends on where the body
falls in its cells. Measured convergence, shift scatter and the two forms side by side:
``benchmarks/RESULTS.md`` (``python -m benchmarks.bench_dfg``).

The steady state is reached by time stepping (:func:`solve_dfg_2d1`: :func:`~taichi_dp.solvers.run_to_steady`
from the inflow profile everywhere); the forces come from :mod:`taichi_dp.ops.forces` with the physical
pressure ``p = p_step / Δt`` (``ρ = 1``; the projection returns the ``Δt``-scaled pressure).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

from ..grid import Grid
from ..grid.cut_cells import CutCells
from ..grid.sdf import CircleSDF
from ..grid.staggered import FlowBoundary, Inflow, Outflow, Wall, staggered_shape
from ..ops.forces import ObstacleForces, control_volume_forces, force_coefficients, surface_forces
from ..ops.solve_options import SolveOptions, check_solve_options
from ..runtime import ensure_init
from ..solvers.base import check_count
from ..solvers.navier_stokes import NavierStokes
from ..solvers.steady import SteadyState, run_to_steady
from .scene import Scene

__all__ = [
    "DFG_2D1_REFERENCE",
    "DFG_CENTRE",
    "DFG_CYLINDER",
    "DFG_EXTENT",
    "DFG_NU",
    "DFG_U_MAX",
    "DFGQuantities",
    "dfg_2d1",
    "dfg_grid",
    "dfg_inflow",
    "dfg_quantities",
    "solve_dfg_2d1",
]

DFG_EXTENT = (0.41, 2.2)
"""``(H, L)``: the channel's height (y, grid axis 0) and length (x, grid axis 1)."""
DFG_CENTRE = (0.2, 0.2)
DFG_CYLINDER = CircleSDF(DFG_CENTRE, 0.05)
"""The cylinder: diameter 0.1 centred at ``(y, x) = (0.2, 0.2)``, as a signed-distance shape (its binary mask
is ``DFG_CYLINDER(grid)``, its face openings :func:`~taichi_dp.grid.sdf.face_fractions`)."""
DFG_DIAMETER = 0.1
DFG_U_MAX = 0.3
"""Peak inflow speed; the mean is ``Ū = 2 U_max / 3 = 0.2``."""
DFG_NU = 1e-3
DFG_PRESSURE = SolveOptions(rtol=1e-6, max_iter=5000, method="mgpcg")
"""The scene's pressure solve (a steady state accurate to the solve's tolerance)."""
DFG_FRONT, DFG_BACK = (0.2, 0.15), (0.2, 0.25)
"""The points ``(y, x)`` of ``Δp = p(front) − p(back)``: the cylinder's upstream and downstream ends."""


class DFGQuantities(NamedTuple):
    """The benchmark's quantities, each a ``(B,)`` tensor (or a float for the reference): drag and lift
    coefficients and the pressure difference; the pressure and viscous parts of the coefficients."""

    drag: torch.Tensor | float
    lift: torch.Tensor | float
    pressure_drop: torch.Tensor | float
    drag_pressure: torch.Tensor | float | None = None
    drag_viscous: torch.Tensor | float | None = None
    lift_pressure: torch.Tensor | float | None = None
    lift_viscous: torch.Tensor | float | None = None


DFG_2D1_REFERENCE = DFGQuantities(drag=5.5795, lift=0.0106, pressure_drop=0.1175)
"""Schäfer & Turek (1996), case 2D-1 (the reference intervals' midpoints: c_D ∈ [5.57, 5.59],
c_L ∈ [0.0104, 0.0110], Δp ∈ [0.1172, 0.1176])."""


def _check_resolution(resolution: object) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral):
        raise TypeError(
            f"resolution must be an integer >= 4 (cells per cylinder diameter), got {type(resolution).__name__} {resolution!r}"
        )
    if resolution < 4:
        raise ValueError(f"resolution must be an integer >= 4 (cells per cylinder diameter), got {resolution}")
    return int(resolution)


def dfg_grid(resolution: int = 10) -> Grid:
    """The channel's grid with ``resolution`` cells per diameter along x (``h_x = 0.1 / resolution``,
    ``22·resolution`` columns) and ``round(0.41 / h_x)`` rows (square cells when ``resolution`` is a
    multiple of 10: 41 × 220 at 10, 82 × 440 at 20)."""
    n = _check_resolution(resolution)
    h = DFG_DIAMETER / n
    return Grid.rect((max(4, round(DFG_EXTENT[0] / h)), 22 * n), DFG_EXTENT)


def dfg_inflow(y: torch.Tensor) -> torch.Tensor:
    """The inflow profile ``U(y) = 4 U_max y (H − y) / H²`` (the scene's :class:`Inflow` speed)."""
    height = DFG_EXTENT[0]
    return 4.0 * DFG_U_MAX * y * (height - y) / height**2


def dfg_2d1(
    resolution: int = 10,
    batch: int = 1,
    *,
    advection: str = "maccormack",
    cfl: float = 0.5,
    cylinder: bool = True,
    cut_cells: bool = False,
    pressure: SolveOptions = DFG_PRESSURE,
    centre: tuple[float, float] = DFG_CENTRE,
) -> Scene:
    """The DFG 2D-1 scene (module docstring) on :func:`dfg_grid` ``(resolution)``.

    Args:
        resolution: cells per cylinder diameter (≥ 4).
        batch: number of (identical) samples.
        advection: the split step's scheme, ``"maccormack"`` (default: second order, far less numerical
            viscosity than semi-Lagrangian at these resolutions) or ``"semi_lagrangian"``.
        cfl: ``Δt = cfl · h_x / U_max`` (> 0; explicit viscosity is sub-stepped as needed).
        cylinder: ``False`` leaves the channel empty (plane Poiseuille flow: a check of the pressure drop).
        cut_cells: ``False`` (default): the cylinder's binary (staircase) mask; ``True``: the cylinder as
            :class:`~taichi_dp.grid.cut_cells.CutCells` (face openings in the projection, no-slip at the true
            wall distance), whose answers move smoothly with the cylinder's position but measured c_D 4 %
            high at 10 cells per diameter (``benchmarks/RESULTS.md``, DFG section).
        pressure: the Poisson solve, default :data:`DFG_PRESSURE`.
        centre: the cylinder's centre ``(y, x)`` (default the benchmark's; moved by a fraction of a cell it
            shows how much an answer depends on where the body falls in its cells).

    Returns:
        A :class:`~taichi_dp.scenes.Scene`: a :class:`~taichi_dp.solvers.NavierStokes` stepper (``cut_cells``
        of the cylinder, or ``fluid`` its mask) and the inflow profile everywhere (closed at the
        cylinder) as ``state0``.
    """
    rt = ensure_init()
    grid = dfg_grid(resolution)
    check_count("batch", batch, 1)
    if isinstance(cfl, bool) or not isinstance(cfl, numbers.Real) or not (math.isfinite(cfl) and cfl > 0):
        raise ValueError(f"cfl must be a finite number > 0, got {cfl!r}")
    if not isinstance(cylinder, bool):
        raise TypeError(f"cylinder must be a bool, got {type(cylinder).__name__} {cylinder!r}")
    if not isinstance(cut_cells, bool):
        raise TypeError(f"cut_cells must be a bool, got {type(cut_cells).__name__} {cut_cells!r}")
    check_solve_options("pressure", pressure, ("mgpcg", "cg"))
    dtype, device = rt.dtype, rt.device
    boundary = FlowBoundary(((Wall(), Wall()), (Inflow(dfg_inflow), Outflow())))
    if not (isinstance(centre, tuple) and len(centre) == 2 and all(isinstance(c, numbers.Real) for c in centre)):
        raise TypeError(f"centre must be a (y, x) tuple of two numbers, got {centre!r}")
    if not (0.1 <= centre[0] <= 0.31 and 0.1 <= centre[1] <= 0.5):
        raise ValueError(f"centre must keep the cylinder inside [0.1, 0.31] x [0.1, 0.5] (y, x), got {centre!r}")
    body = DFG_CYLINDER if tuple(centre) == DFG_CENTRE else CircleSDF((float(centre[0]), float(centre[1])), 0.05)
    fluid = body(grid) if cylinder and not cut_cells else None
    cells = CutCells.from_sdf(body, grid) if cylinder and cut_cells else None
    dt = float(cfl) * grid.spacing[1] / DFG_U_MAX
    stepper = NavierStokes(
        grid, boundary, nu=DFG_NU, dt=dt, fluid=fluid, cut_cells=cells, advection=advection, pressure=pressure
    )
    ny = grid.shape[0]
    speeds = dfg_inflow(grid.centers(0, dtype, device))
    v0 = torch.zeros(1, *staggered_shape(grid), dtype=dtype, device=device)
    v0[0, 1, :ny, :] = speeds[:, None]
    v0 = stepper.impose(v0)  # padding, walls, the inflow and the cylinder's closed faces
    return Scene(stepper, v0.expand(batch, *v0.shape[1:]).contiguous())


def dfg_forces(
    scene: Scene,
    v: torch.Tensor,
    p_step: torch.Tensor,
    method: str | None = None,
    centre: tuple[float, float] = DFG_CENTRE,
) -> ObstacleForces:
    """Force on the cylinder ``(B, 1, 2)`` (components ``(F_y, F_x)``) of a (steady) state ``v`` and the
    step's pressure ``p_step`` (``Δt``-scaled, as :meth:`NavierStokes.step_with_pressure` returns it), by
    :func:`~taichi_dp.ops.forces.surface_forces` (``method="surface"``: over the staircase of the binary
    mask, refused with cut cells) or :func:`~taichi_dp.ops.forces.control_volume_forces`
    (``"control_volume"``, box ``[0.1, 0.3] × [0.1, 0.35]`` in (y, x) around the cylinder). ``None``: the
    surface integral for the mask, the control volume for cut cells."""
    st = scene.stepper
    p = p_step / st.dt
    cut = getattr(st, "cut_cells", None) is not None
    if method is None:
        method = "control_volume" if cut else "surface"
    if method == "surface" and cut:
        raise ValueError(
            "method='surface' integrates over the staircase of the binary mask, not the cut cells' surface "
            "(it measured about half the drag); use method='control_volume' (the default with cut_cells=True)"
        )
    if method == "surface":
        return surface_forces(v, p, st.grid, st.fluid, DFG_NU)
    if method == "control_volume":
        cy, cx = centre  # the box [0.1, 0.3] × [0.1, 0.35] around the benchmark's centre, moved with it
        return control_volume_forces(v, p, st.grid, ((cy - 0.1, cy + 0.1), (cx - 0.1, cx + 0.15)), DFG_NU)
    raise ValueError(f"method must be 'surface' or 'control_volume', got {method!r}")


def dfg_quantities(
    scene: Scene,
    v: torch.Tensor,
    p_step: torch.Tensor,
    method: str | None = None,
    centre: tuple[float, float] = DFG_CENTRE,
) -> DFGQuantities:
    """``c_D``, ``c_L`` and ``Δp`` (each ``(B,)``, differentiable) of a state of :func:`dfg_2d1`: forces by
    :func:`dfg_forces` (``method``; default: surface for the mask, control volume for cut cells) in the
    coefficients ``2 F / (ρ Ū² D)``, ``Ū = 0.2``, ``D = 0.1``; ``Δp`` from the physical pressure
    ``p_step / Δt`` at the cylinder's front and back (:data:`DFG_FRONT` and :data:`DFG_BACK` for the
    benchmark's ``centre``), each extrapolated linearly along x from the two nearest fluid cells on its
    side of the cylinder, in the two rows around ``y = 0.2``, interpolated linearly in y."""
    forces = dfg_forces(scene, v, p_step, method, centre)
    mean = 2.0 * DFG_U_MAX / 3.0

    def coeff(x: torch.Tensor) -> torch.Tensor:
        return force_coefficients(x, mean, DFG_DIAMETER)

    p = p_step / scene.stepper.dt
    fluid = scene.stepper.fluid
    front, back = (centre[0], centre[1] - 0.05), (centre[0], centre[1] + 0.05)
    drop = _surface_pressure(p, fluid, scene.stepper.grid, front, -1) - _surface_pressure(
        p, fluid, scene.stepper.grid, back, 1
    )
    return DFGQuantities(
        drag=coeff(forces.total[:, 0, 1]),
        lift=coeff(forces.total[:, 0, 0]),
        pressure_drop=drop,
        drag_pressure=coeff(forces.pressure[:, 0, 1]),
        drag_viscous=coeff(forces.viscous[:, 0, 1]),
        lift_pressure=coeff(forces.pressure[:, 0, 0]),
        lift_viscous=coeff(forces.viscous[:, 0, 0]),
    )


def _surface_pressure(p: torch.Tensor, fluid: torch.Tensor, grid: Grid, point: tuple[float, float], side: int) -> torch.Tensor:
    """``p`` at ``point`` on the body's surface, from the fluid on its ``side`` along x (−1: upstream)."""
    (y0, _), (x0, _) = grid.bounds[0], grid.bounds[1]
    h_y, h_x = grid.spacing
    fy = (point[0] - y0) / h_y - 0.5
    i0 = math.floor(fy)
    wy = fy - i0
    solid = fluid[0, 0].detach().to("cpu") < 0.5
    j_point = (point[1] - x0) / h_x - 0.5
    out = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
    for i, w in ((i0, 1.0 - wy), (i0 + 1, wy)):
        # the first fluid cell from the point outwards along `side`, and the next one
        j = math.floor(j_point) if side < 0 else math.ceil(j_point)
        while solid[i, j]:
            j += side
        a, b = j, j + side
        xa, xb = a + 0.5, b + 0.5  # cell-index coordinates of the centres (x / h_x)
        xt = j_point + 0.5
        t = (xt - xa) / (xb - xa)
        out = out + w * ((1.0 - t) * p[:, 0, i, a] + t * p[:, 0, i, b])
    return out


def solve_dfg_2d1(
    resolution: int = 10,
    *,
    tol: float = 1e-5,
    max_steps: int = 200_000,
    check_every: int = 50,
    method: str | None = None,
    on_fail: str = "raise",
    **scene_options: object,
) -> tuple[Scene, SteadyState, torch.Tensor, DFGQuantities]:
    """Build :func:`dfg_2d1` ``(resolution, **scene_options)``, run it to its steady state
    (:func:`~taichi_dp.solvers.run_to_steady` to ``tol``: the largest ``|∂v/∂t|`` below ``tol`` × the
    peak speed per unit time; ``on_fail`` as there), take one more step for the pressure, and measure.

    Returns:
        ``(scene, steady, p_step, quantities)``: the scene, the :class:`~taichi_dp.solvers.SteadyState`
        (``v`` is the state after the extra step), the ``Δt``-scaled pressure of that step, and
        :func:`dfg_quantities` of it (``method`` picks the force estimator; default as there).
    """
    scene = dfg_2d1(resolution, **scene_options)
    steady = run_to_steady(
        scene.stepper, scene.state0, tol=tol, max_steps=max_steps, check_every=check_every, on_fail=on_fail
    )
    with torch.no_grad():
        v, p = scene.stepper.step_with_pressure(steady.v)
    steady = SteadyState(v, steady.steps + 1, steady.residual)
    centre = scene_options.get("centre", DFG_CENTRE)
    return scene, steady, p, dfg_quantities(scene, v, p, method, centre)
