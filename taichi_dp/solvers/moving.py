"""Navier–Stokes with moving rigid bodies: prescribed translation and rotation in 2D (:class:`MovingBodies`).

A :class:`MovingBody` is a signed-distance shape (:mod:`taichi_dp.grid.sdf`) at its reference pose (time
0) and a prescribed rigid motion: a translation velocity ``V = (v_y, v_x)`` of its reference point ``c``
and an angular velocity ``ω`` (counter-clockwise in the (x, y) plane, x to the right and y up), each a
constant or a callable of time. Its velocity field is the rigid one

    u_b(x) = V + ω × (x − c):      u_y = V_y + ω (x − c_x),      u_x = V_x − ω (y − c_y).

**Pose.** After ``n`` steps (time ``t_n = n Δt``) the body is rotated by ``θ_n`` about ``c`` and ``c`` has
moved to ``c_n``: ``φ_n(p) = φ₀(R(−θ_n) (p − c_n) + c₀)``. During step ``n`` (from ``t_n`` to ``t_n+1``)
the body moves with one velocity ``(V_n, ω_n)``: the constants themselves, or the callables evaluated at
the step's midpoint ``t_n + Δt/2``; then ``c_n+1 = c_n + Δt V_n`` and ``θ_n+1 = θ_n + Δt ω_n``. For
constants this is the exact pose (``c_n = c₀ + V t_n``, ``θ_n = ω t_n``); for callables it is the
midpoint rule (second order; a velocity given per step index ``k`` is ``lambda t: f(int(t // dt))``,
since ``t`` is always ``(k + ½) Δt``). The poses of callables are accumulated once and memoised per
step index (a cache: the step stays a pure function of its state).

**Step** ``n → n + 1`` (the operator split of :class:`~taichi_dp.solvers.NavierStokes`, with the
bodies at the pose ``n + 1`` the step ends at):

1. forcing ``v += Δt f`` and explicit viscosity (the faces inside and around the bodies hold the body
   velocity, so the no-slip condition of a moving wall enters the viscous stencil);
2. boundary conditions, static obstacles and the inflow region imposed (:meth:`NavierStokes.impose`'s
   rules), then every face touching a body cell set to ``u_b`` at that face (:meth:`MovingBodies.frame`:
   the mask comes from :func:`~taichi_dp.grid.sdf.binary_mask` of the posed SDF, every step);
3. self-advection (semi-Lagrangian or MacCormack), step 2 again;
4. pressure projection with the body faces **kept** (``close_solid_faces=False``): their flux enters the
   divergence of the neighbouring fluid cells and the pressure gradient acts only on faces between two
   fluid cells, which is the Neumann condition ``u·n = u_b·n`` of the moving wall. ``u_b`` sampled at
   the faces is exactly discretely divergence-free (``u_y`` does not depend on ``y``, ``u_x`` not on
   ``x``), so the net flux of a body into the fluid is zero and the solve is consistent even in a closed
   box; afterwards every fluid cell is divergence-free to the solve tolerance.

Cells a body uncovers become fluid carrying the body velocity on their faces (what step 2 wrote there one
step earlier); cells it covers become solid. A body must keep one fluid cell between itself and the
non-periodic sides, static obstacles and the other bodies (checked every step when the runtime's
``check_inputs`` is on): a face shared with any of them could not carry both velocities, and the net flux
into the fluid would no longer vanish. On a periodic axis a body wraps around (its images one period
away are part of it; keep it smaller than half the period).

**State and time.** A stepper is a pure function of its state, so the state carries the clock:
:func:`pack_moving` ``(v, n)`` is the staggered velocity ``(B, 2, H+1, W+1)`` with one more channel holding
the step index ``n`` (the same integer on every entry of that channel; exact in float32 up to 2²⁴ steps).
``stepper(state)`` advances ``v`` from time ``n Δt`` and writes ``n + 1``, so
:func:`~taichi_dp.solvers.rollout`, :class:`~taichi_dp.scenes.Scene` and the demos work unchanged; the
velocity-only form is :meth:`MovingBodies.step_at` ``(v, n)``. Samples may carry different ``n``.

**Pressure solve.** Plain CG (``SolveOptions(method="cg")``; the multigrid path assumes closed solid
faces), differentiated implicitly. Measured on one CPU core (``rtol=1e-5``, zero start, float64 and
float32 alike): :func:`~taichi_dp.scenes.moving.stirring_rod` at 64² takes 169–183 CG iterations and
~0.1 s per step (143–182 warm-started from the previous pressure, :meth:`MovingBodies.step_with_pressure_at`),
:func:`~taichi_dp.scenes.moving.oscillating_cylinder` at 96×32 260–275 iterations, ~0.1 s per step; the
bodies' masks and face velocities cost ~1 ms of that.

**Gradients** flow to the velocity, ``ν`` and the forcing (float64 gradcheck of a 2-step rollout in
``tests/test_moving_obstacles.py``); the bodies' poses and masks are not differentiable (the mask is a
step function of the pose), and the body velocities enter as constants.

3D is refused (``ValueError``): 2D grids only.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..grid import Grid, Periodic
from ..grid.sdf import SDF, binary_mask, rotate, translate, union
from ..grid.staggered import check_staggered, face_coordinates, open_faces, valid_faces
from ..ops.pressure import apply_projection
from ..ops.solve_options import SolveOptions, check_solve_options
from ..runtime import ensure_init
from .base import Stepper, check_batches
from .navier_stokes import NavierStokes
from .time_stepping import SplitStep

__all__ = ["MOVING_PRESSURE", "BodyFrame", "MovingBodies", "MovingBody", "pack_moving", "unpack_moving"]

MOVING_PRESSURE = SolveOptions(rtol=1e-5, max_iter=5000, method="cg")
"""The default pressure solve of :class:`MovingBodies`: plain CG to ``rtol=1e-5``."""

Vector = tuple[float, ...]
VelocitySpec = Sequence[float] | Callable[[float], Sequence[float]]
"""A body's translation velocity ``(v_y, v_x)``: a constant pair, or a callable ``t -> (v_y, v_x)``."""
OmegaSpec = float | Callable[[float], float]
"""A body's angular velocity (counter-clockwise in (x, y)): a constant, or a callable ``t -> ω``."""


def _real(name: str, x: object) -> float:
    """``x`` (a real number or a one-element tensor) as a finite float, or an error naming ``name``."""
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.detach().item()
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a finite number, got {type(x).__name__} {x!r}")
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return float(x)


def _pair(name: str, x: object) -> Vector:
    """``x`` as a ``(y, x)`` pair of finite floats, or an error naming ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().flatten().tolist() if x.ndim == 1 else x
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise ValueError(f"{name} must be a (y, x) pair of finite numbers, got {x!r}")
    return tuple(_real(f"{name}[{k}]", c) for k, c in enumerate(x))


@dataclass(frozen=True, eq=False)
class MovingBody:
    """A rigid body with a prescribed motion (2D).

    Args:
        sdf: the body at its reference pose (time 0), a 2D :class:`~taichi_dp.grid.sdf.SDF` (``φ < 0``
            inside), e.g. ``CircleSDF((0.5, 0.5), 0.1)`` or ``CapsuleSDF((0.5, 0.2), (0.5, 0.8), 0.05)``.
        centre: the reference point ``c₀ = (y, x)`` at time 0: the body rotates about it, and ``velocity``
            is its velocity.
        velocity: ``(v_y, v_x)``, a constant pair or a callable ``t -> (v_y, v_x)`` (numbers or 0-d
            tensors; called at step midpoints, see :mod:`taichi_dp.solvers.moving`).
        omega: angular velocity (rad per unit time, counter-clockwise in the (x, y) plane), a constant or
            a callable ``t -> ω``.

    Callables are evaluated once at ``t = 0`` here to validate what they return.
    """

    sdf: SDF
    centre: Sequence[float]
    velocity: VelocitySpec = (0.0, 0.0)
    omega: OmegaSpec = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.sdf, SDF):
            raise TypeError(f"MovingBody sdf must be an SDF (CircleSDF, BoxSDF, CapsuleSDF, ...), got {type(self.sdf).__name__}")
        if self.sdf.ndim != 2:
            raise ValueError(
                f"MovingBody sdf must be 2D ((y, x) points): moving bodies are implemented in 2D only, got a {self.sdf.ndim}D SDF"
            )
        object.__setattr__(self, "centre", _pair("MovingBody centre", self.centre))
        if callable(self.velocity):
            _pair("MovingBody velocity(0.0)", self.velocity(0.0))
        else:
            object.__setattr__(self, "velocity", _pair("MovingBody velocity", self.velocity))
        if callable(self.omega):
            _real("MovingBody omega(0.0)", self.omega(0.0))
        else:
            object.__setattr__(self, "omega", _real("MovingBody omega", self.omega))

    @property
    def constant(self) -> bool:
        """Whether both the velocity and ``ω`` are constants (then every pose is exact)."""
        return not callable(self.velocity) and not callable(self.omega)

    def motion(self, t: float) -> tuple[Vector, float]:
        """``((v_y, v_x), ω)`` at time ``t`` (validated)."""
        v = _pair(f"MovingBody velocity({t!r})", self.velocity(t)) if callable(self.velocity) else self.velocity
        w = _real(f"MovingBody omega({t!r})", self.omega(t)) if callable(self.omega) else self.omega
        return v, w


@dataclass(frozen=True, eq=False)
class BodyFrame:
    """The bodies as a step imposes them (see :meth:`MovingBodies.frame`).

    Attributes:
        fluid: ``(1, 1, H, W)`` mask, 0 in every body cell (static obstacles not included).
        faces: ``(1, 2, H+1, W+1)`` mask of the faces touching a body cell (padding 0).
        velocity: ``(1, 2, H+1, W+1)`` rigid velocity of the body each face touches (0 elsewhere).
        centres: each body's reference point ``c_n`` (wrapped into the domain on periodic axes).
        angles: each body's rotation ``θ_n``.

    A frame for a batch whose samples are at different steps stacks ``fluid``, ``faces`` and ``velocity``
    per sample (batch ``B``) and keeps the first sample's ``centres`` and ``angles``.
    """

    fluid: torch.Tensor
    faces: torch.Tensor
    velocity: torch.Tensor
    centres: tuple[Vector, ...]
    angles: tuple[float, ...]


def pack_moving(v: torch.Tensor, step: int | torch.Tensor = 0) -> torch.Tensor:
    """The state of :class:`MovingBodies`: the staggered velocity ``v`` ``(B, 2, H+1, W+1)`` and one more
    channel holding the step index ``step`` (an integer ≥ 0, or a ``(B,)`` tensor of them, one per
    sample) on every entry: ``(B, 3, H+1, W+1)``. Differentiable in ``v``."""
    if not isinstance(v, torch.Tensor) or v.ndim != 4 or v.shape[1] != 2:
        raise ValueError(f"v must be a 2D staggered velocity (B, 2, H+1, W+1), got {getattr(v, 'shape', type(v).__name__)}")
    n = torch.as_tensor(step).detach().to(dtype=v.dtype, device=v.device).flatten()
    if n.numel() not in (1, v.shape[0]) or not bool(((n >= 0) & (n == n.round())).all()):
        raise ValueError(f"step must be an integer >= 0 or a ({v.shape[0]},) tensor of them, got {step!r}")
    clock = n.expand(v.shape[0]).view(-1, 1, 1, 1).expand(v.shape[0], 1, *v.shape[2:])
    return torch.cat([v, clock], dim=1)


def unpack_moving(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_moving`: ``(v (B, 2, H+1, W+1), step (B,) int64)``."""
    return state[:, :2].contiguous(), state[:, 2, 0, 0].detach().round().to(torch.int64)


@dataclass(frozen=True, eq=False)
class MovingBodies(Stepper):
    """Incompressible Navier–Stokes (the configuration of ``flow``) around rigid bodies with prescribed
    motion, 2D (see :mod:`taichi_dp.solvers.moving` for the step, the pose and the time convention).

    The state is :func:`pack_moving` ``(v, n)`` ``(B, 3, H+1, W+1)``; build the first one with
    :meth:`initial_state`.

    Args:
        flow: the flow: grid (2D), boundary, ``nu``, ``dt`` (a single float: the bodies' clock), static
            obstacles ``fluid``, ``advection``, ``forcing``, inflow region. Its split step is used
            (``time_stepping=SplitStep()``, ``diffusion="explicit"``); its ``pressure`` option is not
            (see ``pressure``).
        bodies: one :class:`MovingBody` or a sequence of them.
        pressure: the Poisson solve, a :class:`~taichi_dp.ops.solve_options.SolveOptions` with
            ``method="cg"`` (plain CG; the multigrid path closes solid faces). Default
            :data:`MOVING_PRESSURE` (``rtol=1e-5, max_iter=5000``).
    """

    flow: NavierStokes
    bodies: MovingBody | Sequence[MovingBody]
    pressure: SolveOptions = MOVING_PRESSURE

    def __post_init__(self) -> None:
        flow = self.flow
        if not isinstance(flow, NavierStokes):
            raise TypeError(f"flow must be a NavierStokes stepper, got {type(flow).__name__}")
        if flow.grid.ndim != 2:
            raise ValueError(
                f"flow.grid must be 2D: moving bodies are implemented in 2D only, got a grid of shape {flow.grid.shape}"
            )
        if not isinstance(flow.time_stepping, SplitStep):
            raise ValueError(
                f"flow.time_stepping must be SplitStep() for moving bodies, got {type(flow.time_stepping).__name__}()"
            )
        if flow.diffusion != "explicit":
            raise ValueError(f"flow.diffusion must be 'explicit' for moving bodies, got {flow.diffusion!r}")
        if flow.cut_cells is not None:
            raise ValueError("flow.cut_cells must be None for moving bodies (their masks are binary; static obstacles: fluid=)")
        if isinstance(flow.dt, bool) or not isinstance(flow.dt, numbers.Real):
            raise TypeError(
                f"flow.dt must be a float for moving bodies (one clock for the whole batch), got {type(flow.dt).__name__}"
            )
        bodies = (self.bodies,) if isinstance(self.bodies, MovingBody) else self.bodies
        if not isinstance(bodies, (tuple, list)) or len(bodies) == 0:
            raise ValueError(f"bodies must be a MovingBody or a non-empty sequence of them, got {self.bodies!r}")
        for k, b in enumerate(bodies):
            if not isinstance(b, MovingBody):
                raise TypeError(f"bodies[{k}] must be a MovingBody, got {type(b).__name__} {b!r}")
        object.__setattr__(self, "bodies", tuple(bodies))
        check_solve_options("pressure", self.pressure, ("cg",))
        object.__setattr__(self, "_tracks", [[(b.centre, 0.0)] for b in self.bodies])  # memo: poses of callables

    # ----------------------------------------------------------------------------- the contract
    @property
    def grid(self) -> Grid:
        """The flow's grid."""
        return self.flow.grid

    @property
    def dt(self) -> float:
        """The flow's time step."""
        return float(self.flow.dt)

    @property
    def channels(self) -> int:
        return 3

    def check(self, state: torch.Tensor) -> None:
        """Validate a state ``(B, 3, H+1, W+1)`` (:func:`pack_moving`): shape, dtype, device, finite, mask
        batch, and a step channel holding one integer ≥ 0 per sample."""
        check_staggered("state", state, self.grid, channels=3, hint="build it with pack_moving(v, step) or initial_state(v0)")
        check_batches(self.flow, ("fluid",), "state", state.shape[0])
        clock = state[:, 2].detach().flatten(1)
        first = clock[:, :1]
        if not bool(((clock == first) & (first >= 0) & (first == first.round())).all()):
            raise ValueError(
                "state channel 2 must hold the step index, one integer >= 0 on every entry of a sample "
                "(build the state with pack_moving(v, step))"
            )

    def step(self, state: torch.Tensor) -> torch.Tensor:
        v, n = unpack_moving(state)
        return pack_moving(self._advance(v, n.tolist())[0], n + 1)

    # ------------------------------------------------------------------------------- the bodies
    def pose(self, k: int, n: int) -> tuple[Vector, float]:
        """Reference point ``c_n`` and angle ``θ_n`` of ``bodies[k]`` after ``n`` steps (time ``n Δt``),
        before any periodic wrap."""
        body, dt = self.bodies[k], self.dt
        if body.constant:
            t = n * dt
            return tuple(c + v * t for c, v in zip(body.centre, body.velocity)), body.omega * t
        track = self._tracks[k]
        while len(track) <= n:
            m = len(track) - 1
            (c, th), (vel, w) = track[m], self.motion(k, m)
            track.append((tuple(ci + dt * vi for ci, vi in zip(c, vel)), th + dt * w))
        return track[n]

    def motion(self, k: int, n: int) -> tuple[Vector, float]:
        """``(V_n, ω_n)``: the velocity of ``bodies[k]`` during step ``n`` (its callables at ``(n + ½) Δt``)."""
        return self.bodies[k].motion((n + 0.5) * self.dt)

    def frame(self, n: int) -> BodyFrame:
        """The bodies at time ``n Δt`` as the step ending there imposes them: each at its pose ``n``,
        moving with the velocity of step ``n − 1`` (of step 0 for ``n = 0``, the initial state). Raises
        ``ValueError`` if a body touches a non-periodic side, a static obstacle or another body (when the
        runtime's ``check_inputs`` is on)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be a step index (an integer >= 0), got {n!r}")
        rt = ensure_init()
        grid, boundary = self.grid, self.flow.boundary
        dtype, device = rt.dtype, rt.device
        periodic = [isinstance(lo, Periodic) for lo, _ in boundary.sides]
        extent = [hi - lo for lo, hi in grid.bounds]
        yx = face_coordinates(grid, dtype, device)
        real = valid_faces(grid, dtype, device)
        fluid = torch.ones(1, 1, *grid.shape, dtype=dtype, device=device)
        faces = torch.zeros_like(real)
        velocity = torch.zeros_like(real)
        solids, centres, angles = [], [], []
        for k, body in enumerate(self.bodies):
            c, theta = self.pose(k, n)
            (vy, vx), w = self.motion(k, max(n - 1, 0))
            c = tuple(lo + (ci - lo) % e if p else ci for ci, (lo, _), e, p in zip(c, grid.bounds, extent, periodic))
            mask = binary_mask(self._posed(body, c, theta, periodic, extent), grid, dtype=dtype, device=device)
            touching = real - open_faces(mask, boundary)
            r_x = self._offset(yx[0, 1] - c[1], extent[1], periodic[1])  # v_y faces: ω × r along y is ω r_x
            r_y = self._offset(yx[1, 0] - c[0], extent[0], periodic[0])  # v_x faces: ... along x is −ω r_y
            u = torch.stack([vy + w * r_x, vx - w * r_y])[None]
            velocity = velocity + touching * u
            faces = faces + touching
            fluid = fluid * mask
            solids.append(1 - mask)
            centres.append(c)
            angles.append(theta)
        if rt.check_inputs:
            self._check_clearance(solids, periodic, n)
        if not bool((fluid * self.flow.fluid).flatten(1).sum(1).gt(0).all()):
            raise ValueError(f"the moving bodies leave no fluid cell at step {n}")
        return BodyFrame(fluid, faces, velocity, tuple(centres), tuple(angles))

    @staticmethod
    def _posed(body: MovingBody, c: Vector, theta: float, periodic: list[bool], extent: list[float]) -> SDF:
        """``body.sdf`` rotated by ``theta`` about its reference point, moved to ``c``, with its images one
        period away on periodic axes."""
        sdf = rotate(body.sdf, theta, about=body.centre) if theta != 0.0 else body.sdf
        shifts = [(-e, 0.0, e) if p else (0.0,) for p, e in zip(periodic, extent)]
        images = [
            translate(sdf, tuple(ci - c0 + s for ci, c0, s in zip(c, body.centre, shift))) for shift in itertools.product(*shifts)
        ]
        return images[0] if len(images) == 1 else union(*images)

    @staticmethod
    def _offset(d: torch.Tensor, period: float, periodic: bool) -> torch.Tensor:
        """``d``, wrapped into ``[−period/2, period/2)`` on a periodic axis (the nearest image)."""
        return torch.remainder(d + 0.5 * period, period) - 0.5 * period if periodic else d

    def _check_clearance(self, solids: list[torch.Tensor], periodic: list[bool], n: int) -> None:
        """Every body keeps one fluid cell from the non-periodic sides, static obstacles and other bodies."""
        static = 1 - self.flow.fluid
        names = (("y_lo", "y_hi"), ("x_lo", "x_hi"))
        for k, solid in enumerate(solids):
            for a in range(2):
                if periodic[a]:
                    continue
                for side, idx in zip(names[a], (0, solid.shape[2 + a] - 1)):
                    if bool(solid.narrow(2 + a, idx, 1).any()):
                        raise ValueError(
                            f"bodies[{k}] reaches the {side} side at step {n} (time {n * self.dt:g}): a moving body must keep "
                            "one fluid cell between itself and every wall, inflow or outflow side"
                        )
            grown = solid.clone()
            for a in range(2):
                dim = 2 + a
                for s in (1, -1):
                    if periodic[a]:
                        grown = torch.maximum(grown, torch.roll(solid, s, dim))
                    else:
                        pad = [0, 0, 0, 0]
                        pad[2 * (1 - a) + (0 if s == 1 else 1)] = 1
                        shifted = torch.nn.functional.pad(solid, pad).narrow(dim, 1 if s == -1 else 0, solid.shape[dim])
                        grown = torch.maximum(grown, shifted)
            others = static + sum((o for j, o in enumerate(solids) if j != k), torch.zeros_like(solid))
            if bool((grown * others).gt(0).any()):
                raise ValueError(
                    f"bodies[{k}] touches a static obstacle or another body at step {n} (time {n * self.dt:g}): a moving body "
                    "must keep one fluid cell between itself and every other solid cell"
                )

    # --------------------------------------------------------------------------------- stepping
    def fluid_at(self, n: int) -> torch.Tensor:
        """The fluid mask at time ``n Δt``: the static obstacles and the bodies at their pose ``n``,
        ``(1 or B, 1, H, W)``."""
        return self.flow.fluid * self.frame(n).fluid

    def impose(self, v: torch.Tensor, frame: BodyFrame) -> torch.Tensor:
        """Boundary conditions, static obstacles and the inflow region imposed on ``v`` (as
        :meth:`NavierStokes.impose`), then the body velocity on every face touching a body cell."""
        v = self.flow.impose(v)
        return v * (1 - frame.faces) + frame.faces * frame.velocity

    def project(
        self, v: torch.Tensor, frame: BodyFrame, pressure_guess: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pressure projection around the bodies of ``frame`` with their faces kept: ``(v, p)``."""
        return apply_projection(
            v,
            self.grid,
            self.flow.boundary,
            self.flow.fluid * frame.fluid,
            pressure_guess,
            rtol=self.pressure.rtol,
            max_iter=self.pressure.max_iter,
            preconditioner="none",
            close_solid_faces=False,
        )

    def initial_state(self, v0: torch.Tensor) -> torch.Tensor:
        """The state at step 0 from a staggered velocity ``v0`` ``(B, 2, H+1, W+1)``: the boundaries and the
        bodies at time 0 imposed, then projected, packed with step index 0. Differentiable in ``v0``."""
        check_staggered("v0", v0, self.grid)
        frame = self.frame(0)
        return pack_moving(self.project(self.impose(v0, frame), frame)[0], 0)

    def step_at(self, v: torch.Tensor, n: int) -> torch.Tensor:
        """One step of the velocity ``v`` ``(B, 2, H+1, W+1)`` from time ``n Δt`` to ``(n + 1) Δt``."""
        return self.step_with_pressure_at(v, n)[0]

    def step_with_pressure_at(
        self, v: torch.Tensor, n: int, pressure_guess: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`step_at` returning ``(v⁺, p)``; ``pressure_guess`` (e.g. the previous ``p``) warm-starts
        the solve. ``v`` is checked, ``p`` is the ``Δt``-scaled pressure."""
        check_staggered("v", v, self.grid)
        check_batches(self.flow, ("fluid",), "v", v.shape[0])
        return self._advance(v, [n] * v.shape[0], pressure_guess)

    def _advance(
        self, v: torch.Tensor, steps: list[int], pressure_guess: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The split step of every sample ``b`` from its step index ``steps[b]``."""
        frame = self._batch_frame([n + 1 for n in steps])
        return self.flow.split_step(
            v,
            pressure_guess,
            impose=lambda u: self.impose(u, frame),
            project=lambda u, guess: self.project(u, frame, guess),
        )

    def _batch_frame(self, steps: list[int]) -> BodyFrame:
        """One frame for a batch: shared when every sample is at the same step, else stacked per sample."""
        if len(set(steps)) == 1:
            return self.frame(steps[0])
        frames = {n: self.frame(n) for n in set(steps)}
        cat = [torch.cat([getattr(frames[n], f) for n in steps]) for f in ("fluid", "faces", "velocity")]
        return BodyFrame(*cat, centres=frames[steps[0]].centres, angles=frames[steps[0]].angles)
