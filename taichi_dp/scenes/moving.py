"""Scenes with moving rigid bodies (:class:`~taichi_dp.solvers.moving.MovingBodies`): a paddle stirring a
closed box (:func:`stirring_rod`) and a cylinder oscillating across a channel flow
(:func:`oscillating_cylinder`). Both return a :class:`~taichi_dp.scenes.Scene` whose state is
:func:`~taichi_dp.solvers.moving.pack_moving` ``(v, n)`` ``(B, 3, H+1, W+1)``: the velocity and the step
index (the bodies' clock)."""

from __future__ import annotations

import math
import numbers

import torch

from ..grid import Grid
from ..grid.sdf import CapsuleSDF, CircleSDF
from ..grid.staggered import FlowBoundary, Inflow, Outflow, Wall, staggered_shape, valid_faces
from ..ops.solve_options import SolveOptions, check_solve_options
from ..runtime import check_positive, ensure_init
from ..solvers.base import check_count, check_schemes
from ..solvers.moving import MOVING_PRESSURE, MovingBodies, MovingBody
from ..solvers.navier_stokes import NavierStokes
from .scene import Scene

__all__ = ["oscillating_cylinder", "stirring_rod"]


def _finite(name: str, x: object, *, nonzero: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a finite number, got {type(x).__name__} {x!r}")
    if not math.isfinite(x) or (nonzero and x == 0):
        raise ValueError(f"{name} must be a finite {'non-zero ' if nonzero else ''}number, got {x!r}")
    return float(x)


def _non_negative(name: str, x: object) -> float:
    if _finite(name, x) < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
    return float(x)


def stirring_rod(
    n: int = 64,
    batch: int = 1,
    *,
    omega: float = math.pi,
    nu: float = 2e-3,
    half_length: float = 0.3,
    radius: float = 0.05,
    dt: float | None = None,
    revolutions: float = 1.0,
    advection: str = "semi_lagrangian",
    pressure: SolveOptions = MOVING_PRESSURE,
) -> Scene:
    """A paddle stirring a closed box: a capsule (a rod of ``half_length`` on each side of its centre and
    ``radius``, along x at time 0) turning about the centre of the no-slip unit square at ``omega`` rad per
    unit time (counter-clockwise; default π, one turn in 2 time units). The fluid starts at rest, projected
    around the already turning rod (the potential flow of an impulsive start). The rod's tip
    moves at ``ω·half_length`` (0.94 by default), the Reynolds number ``ω·half_length·2·half_length / ν`` is
    565 at the defaults. Grid ``n × n``.

    Args:
        n: cells per side (≥ 8; the default rod is 6 cells thick at n = 64).
        batch: number of (identical) samples.
        omega: angular velocity, finite and non-zero (negative: clockwise).
        nu: kinematic viscosity ≥ 0 (explicit, sub-stepped automatically when needed).
        half_length: the rod's half length (> 0); ``half_length + radius`` must leave one cell to the walls.
        radius: the rod's radius (> 0).
        dt: time step; ``None`` takes CFL 0.6 at the tip (``|ω| L Δt / h = 0.6``: 0.01 at the defaults).
        revolutions: ``steps`` covers this many turns (> 0).
        advection: ``"semi_lagrangian"`` or ``"maccormack"``.
        pressure: the Poisson solve (plain CG, :data:`~taichi_dp.solvers.moving.MOVING_PRESSURE`).

    Returns:
        A :class:`~taichi_dp.scenes.Scene`: a :class:`~taichi_dp.solvers.moving.MovingBodies` stepper, the
        state at step 0, and ``steps`` for ``revolutions`` turns (201 at the defaults). Measured at the
        defaults on one CPU core: 169–183 CG iterations and ~0.1 s per step.
    """
    rt = ensure_init()
    n = check_count("n", n, 8)
    batch = check_count("batch", batch)
    omega = _finite("omega", omega, nonzero=True)
    nu = _non_negative("nu", nu)
    half_length = check_positive("half_length", half_length)
    radius = check_positive("radius", radius)
    revolutions = check_positive("revolutions", revolutions)
    check_schemes("explicit", advection)
    check_solve_options("pressure", pressure, ("cg",))
    h = 1.0 / n
    if half_length + radius > 0.5 - h:
        raise ValueError(
            f"half_length + radius must leave one cell ({h:g}) to the walls: <= {0.5 - h:g}, got {half_length + radius:g}"
        )
    tip = abs(omega) * half_length
    dt = 0.6 * h / tip if dt is None else check_positive("dt", dt)
    grid = Grid.rect((n, n), (1.0, 1.0))
    flow = NavierStokes(grid, FlowBoundary.box(), nu=nu, dt=dt, advection=advection)
    rod = CapsuleSDF((0.5, 0.5 - half_length), (0.5, 0.5 + half_length), radius)
    stepper = MovingBodies(flow, MovingBody(rod, (0.5, 0.5), omega=omega), pressure=pressure)
    v0 = torch.zeros(batch, *staggered_shape(grid), dtype=rt.dtype, device=rt.device)
    steps = max(1, round(revolutions * 2 * math.pi / abs(omega) / dt))
    return Scene(stepper, stepper.initial_state(v0), steps)


def oscillating_cylinder(
    n: int = 32,
    batch: int = 1,
    *,
    reynolds: float = 100.0,
    inflow: float = 1.0,
    amplitude: float = 0.15,
    period: float = 2.0,
    radius: float = 0.1,
    dt: float | None = None,
    periods: float = 2.0,
    advection: str = "semi_lagrangian",
    pressure: SolveOptions = MOVING_PRESSURE,
) -> Scene:
    """A cylinder oscillating across a channel flow: the channel is 3 long (y, the flow direction) and 1
    wide (x), inflow at ``inflow`` along +y at y = 0, open outflow at y = 3, free-slip side walls; the
    cylinder of ``radius`` has its centre at ``(y, x) = (0.75, 0.5 + amplitude·sin(2π t / period))``,
    i.e. it moves with the time-dependent velocity ``(0, amplitude·2π/period·cos(2π t / period))`` (a
    callable motion: poses by the midpoint rule, see :mod:`taichi_dp.solvers.moving`). ``ν = U·2r/Re``.
    Grid ``(3n, n)``; the state starts as the uniform inflow projected around the cylinder.

    Args:
        n: cells across the channel (≥ 8; the default cylinder is 6.4 cells wide at n = 32).
        batch: number of (identical) samples.
        reynolds: ``U·2r/ν`` > 0.
        inflow: the inflow speed ``U`` > 0.
        amplitude: the sideways amplitude ≥ 0; ``amplitude + radius`` must leave one cell to the walls.
        period: the oscillation period > 0.
        radius: the cylinder's radius > 0.
        dt: time step; ``None`` takes CFL 0.5 for the speed ``U + amplitude·2π/period``.
        periods: ``steps`` covers this many oscillation periods (> 0).
        advection: ``"semi_lagrangian"`` or ``"maccormack"``.
        pressure: the Poisson solve (plain CG).

    Returns:
        A :class:`~taichi_dp.scenes.Scene` with a :class:`~taichi_dp.solvers.moving.MovingBodies` stepper.
    """
    rt = ensure_init()
    n = check_count("n", n, 8)
    batch = check_count("batch", batch)
    reynolds = check_positive("reynolds", reynolds)
    inflow = check_positive("inflow", inflow)
    amplitude = _non_negative("amplitude", amplitude)
    period = check_positive("period", period)
    radius = check_positive("radius", radius)
    periods = check_positive("periods", periods)
    check_schemes("explicit", advection)
    check_solve_options("pressure", pressure, ("cg",))
    h = 1.0 / n
    if amplitude + radius > 0.5 - h:
        raise ValueError(
            f"amplitude + radius must leave one cell ({h:g}) to the walls: <= {0.5 - h:g}, got {amplitude + radius:g}"
        )
    swing = amplitude * 2 * math.pi / period
    dt = 0.5 * h / (inflow + swing) if dt is None else check_positive("dt", dt)
    grid = Grid.rect((3 * n, n), (3.0, 1.0))
    boundary = FlowBoundary(((Inflow(inflow), Outflow()), (Wall(slip=True), Wall(slip=True))))
    flow = NavierStokes(grid, boundary, nu=inflow * 2 * radius / reynolds, dt=dt, advection=advection)

    def velocity(t: float) -> tuple[float, float]:
        return 0.0, swing * math.cos(2 * math.pi * t / period)

    body = MovingBody(CircleSDF((0.75, 0.5), radius), (0.75, 0.5), velocity=velocity)
    stepper = MovingBodies(flow, body, pressure=pressure)
    v0 = torch.zeros(batch, *staggered_shape(grid), dtype=rt.dtype, device=rt.device)
    v0[:, 0] = inflow
    v0 = (v0 * valid_faces(grid, rt.dtype, rt.device)).contiguous()
    return Scene(stepper, stepper.initial_state(v0), max(1, round(periods * period / dt)))
