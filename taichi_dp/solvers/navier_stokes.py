"""Incompressible Navier–Stokes on the staggered (MAC) grid, with obstacles."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..grid import Grid
from ..grid.cut_cells import CutCells
from ..grid.staggered import FlowBoundary, apply_boundary, check_staggered, staggered_shape
from ..ops.cut_cell import apply_cut_cell_projection, check_openings, check_seam_clearance, check_seams, open_cells
from ..ops.diffusion import check_explicit_stability, stability_number
from ..ops.pressure import apply_projection, check_flux_balance, fluid_mask
from ..ops.solve_options import SolveOptions, check_solve_options, projection_kwargs
from ..ops.spectral_projection import check_spectral, spectral_applicable
from ..ops.staggered_advection import apply_velocity_advection
from ..ops.staggered_advection_rate import apply_velocity_rate
from ..ops.staggered_diffusion import apply_velocity_diffusion, apply_velocity_diffusion_implicit
from ..runtime import check_param, ensure_init
from .base import Stepper, check_batches, check_schemes, check_staggered_fields, check_time_step, max_abs
from .time_stepping import SPLIT_STEP, RungeKutta, TimeStepping

PRESSURE_DEFAULT = SolveOptions(rtol=1e-5, max_iter=5000, method="mgpcg")
"""The default pressure solve of :class:`NavierStokes`: multigrid-preconditioned CG to ``rtol=1e-5``."""
PRESSURE_SPECTRAL = SolveOptions(method="fft")
"""The pressure solve :class:`NavierStokes` picks for a fully periodic box without obstacles: the exact FFT
projection (:mod:`taichi_dp.ops.spectral_projection`; ``rtol`` and ``max_iter`` do not apply)."""
PRESSURE_CUT_CELL = SolveOptions(rtol=1e-5, max_iter=5000, method="mgpcg")
"""The pressure solve :class:`NavierStokes` uses with ``cut_cells``: CG preconditioned by a V-cycle of the
cut-cell operator (:mod:`taichi_dp.ops.cut_cell`)."""
VISCOSITY_DEFAULT = SolveOptions(rtol=1e-5, max_iter=1000, method="cg")
"""The default implicit-viscosity solve of :class:`NavierStokes`: plain CG to ``rtol=1e-5``."""


@dataclass(frozen=True, eq=False)
class NavierStokes(Stepper):
    """Incompressible Navier–Stokes in 2D or 3D for a staggered velocity ``v`` ``(B, nd, *(N + 1))``
    (``(B, 2, H+1, W+1)`` in 2D, ``(B, 3, D+1, H+1, W+1)`` in 3D; layout in :mod:`taichi_dp.grid.staggered`):

        ∂v/∂t + (v · ∇) v = −∇p/ρ + ν ∇²v + f,      ∇ · v = 0

    One step of the default :class:`~taichi_dp.solvers.time_stepping.SplitStep` (the order of the PBDL
    solver-in-the-loop wake, first order in time): forcing ``v += Δt f``; explicit viscosity; boundary
    conditions and the inflow region imposed; self-advection (semi-Lagrangian or MacCormack); pressure
    projection (CG, implicit adjoint), which leaves ``v`` divergence-free on every fluid cell. With a
    :class:`~taichi_dp.solvers.time_stepping.RungeKutta` ``time_stepping`` (``SSPRK2()``, ``SSPRK3()``) a
    step is that method's stages on the explicit rate :meth:`rate` ``= −(v·∇)v + ν∇²v + f`` (central
    differences), each stage followed by :meth:`constrain` (boundaries, obstacles and inflow region imposed,
    then projected): second or third order in time.

    Args:
        grid: 2D grid ``(H, W)`` = (y, x) or 3D grid ``(D, H, W)`` = (z, y, x) with physical extent.
        boundary: :class:`~taichi_dp.grid.staggered.FlowBoundary` (walls, inflow, outflow, periodic).
        nu: kinematic viscosity ≥ 0, float or ``(B,)`` tensor (differentiable); explicit diffusion needs
            ``ν Δt Σ_a 1/h_a² ≤ 1/2`` per sub-step (checked; with a Runge–Kutta ``time_stepping``, per step
            and up to that method's ``diffusion_limit``).
        dt: time step (float or ``(B,)``); accuracy wants CFL ``max|v| Δt / h ≲ 1`` (semi-Lagrangian is
            stable beyond; a Runge–Kutta ``time_stepping`` checks ``Δt Σ_a max|v_a|/h_a`` against its
            ``courant_limit`` every step).
        fluid: obstacle mask ``(B or 1, 1, *spatial)``, 1 = fluid (see :mod:`taichi_dp.grid.geometry`): a
            staircase body, every face touching a solid cell closed.
        cut_cells: instead of ``fluid``, a :class:`~taichi_dp.grid.cut_cells.CutCells` obstacle
            (``CutCells.from_sdf(sdf, grid)``; differentiable in the SDF's parameters): the projection
            enforces ``D(θ v) = 0`` with the faces' open fractions ``θ`` (:mod:`taichi_dp.ops.cut_cell`),
            faces with ``θ = 0`` are closed, the viscous step gets the wall's no-slip at its true distance
            (:meth:`~taichi_dp.grid.cut_cells.CutCells.no_slip`), and ``fluid`` becomes the cells with an open
            face. Split step with explicit viscosity only; ``pressure`` must use ``method="mgpcg"`` (default
            then :data:`PRESSURE_CUT_CELL`).
        advection: ``"semi_lagrangian"`` or ``"maccormack"`` (the split step's scheme; a Runge–Kutta
            ``time_stepping`` uses central differences and accepts only the default).
        forcing: optional staggered body force ``(B or 1, nd, *(N + 1))`` (differentiable).
        inflow_mask: optional staggered ``(1, nd, *(N + 1))`` region where ``inflow_velocity`` is imposed
            every step (``v ← (1 − m) v + m u``), e.g. the karman inflow band. A band inside the domain
            leaves a column of transverse velocities at its edge that departure points reach at CFL > 1
            (measured on the DFG channel at CFL 2: −95 % pressure gradient near the band); an inflow
            through the domain's side is ``FlowBoundary(..., Inflow(profile))`` on the boundary faces.
        inflow_velocity: the staggered ``(1, nd, *(N + 1))`` velocity ``u`` imposed in ``inflow_mask``.
        pressure: the Poisson solve, a :class:`~taichi_dp.ops.solve_options.SolveOptions`: ``rtol``
            relative to ``‖D v‖`` (the adjoint's relative to the incoming gradient), ``max_iter``, and
            ``method`` ``"mgpcg"`` (CG preconditioned by a geometric multigrid V-cycle), ``"cg"`` (plain
            CG) or ``"fft"`` (exact spectral solve; every side periodic and no obstacle, checked here).
            ``None`` (default) picks :data:`PRESSURE_SPECTRAL` when every side is periodic and ``fluid`` is
            ``None`` or all fluid, else :data:`PRESSURE_DEFAULT` (``rtol=1e-5, max_iter=5000``); after
            construction ``pressure`` holds the options chosen.
        diffusion: viscosity scheme, ``"explicit"`` (forward Euler, sub-stepped) or ``"implicit"``
            (backward Euler by CG with an implicit adjoint; unconditionally stable).
        viscosity_substeps: explicit viscosity sub-steps per step; ``None`` picks the fewest that keep
            each sub-step stable (``ν Δt/n · Σ 1/h² ≤ 1/2``), e.g. 3 for the karman scene at 256×512 and
            Re = 200. An explicit count is checked for stability.
        viscosity: the implicit viscosity solve (``diffusion="implicit"`` only), a
            :class:`~taichi_dp.ops.solve_options.SolveOptions` with ``method="cg"``. Default
            :data:`VISCOSITY_DEFAULT` (``rtol=1e-5, max_iter=1000``).
        time_stepping: the integrator, a :class:`~taichi_dp.solvers.time_stepping.TimeStepping`:
            :class:`~taichi_dp.solvers.time_stepping.SplitStep` (default), or a Runge–Kutta method
            (``ForwardEuler()``, ``SSPRK2()``, ``SSPRK3()``; :mod:`taichi_dp.solvers.time_stepping`), which
            needs ``diffusion="explicit"`` and ``viscosity_substeps`` ``None`` or 1 (the viscosity is part of
            its rate).
    """

    grid: Grid
    boundary: FlowBoundary
    nu: float | torch.Tensor
    dt: float | torch.Tensor
    fluid: torch.Tensor | None = None
    cut_cells: CutCells | None = None
    advection: str = "semi_lagrangian"
    forcing: torch.Tensor | None = None
    inflow_mask: torch.Tensor | None = None
    inflow_velocity: torch.Tensor | None = None
    pressure: SolveOptions | None = None
    diffusion: str = "explicit"
    viscosity_substeps: int | None = None
    viscosity: SolveOptions = VISCOSITY_DEFAULT
    time_stepping: TimeStepping = SPLIT_STEP

    def __post_init__(self) -> None:
        staggered_shape(self.grid)  # a 2D or 3D grid
        if not isinstance(self.boundary, FlowBoundary):
            raise TypeError(f"boundary must be a FlowBoundary, got {type(self.boundary).__name__}")
        check_time_step(self.dt)
        check_param("nu", self.nu, positive=True)
        if self.cut_cells is not None:
            self._set_cut_cells()
        elif self.pressure is None:  # the exact FFT solve where it applies (fluid=None or all ones: no obstacle)
            spectral = spectral_applicable(self.grid, self.boundary, self.fluid)
            object.__setattr__(self, "pressure", PRESSURE_SPECTRAL if spectral else PRESSURE_DEFAULT)
        check_solve_options("pressure", self.pressure)
        check_solve_options("viscosity", self.viscosity, ("cg",))
        check_schemes(self.diffusion, self.advection)
        if not isinstance(self.time_stepping, TimeStepping):
            raise TypeError(
                "time_stepping must be a taichi_dp.solvers.time_stepping.TimeStepping (SplitStep(), ForwardEuler(), "
                f"SSPRK2(), SSPRK3()), got {type(self.time_stepping).__name__} {self.time_stepping!r}"
            )
        if isinstance(self.time_stepping, RungeKutta):
            self._check_runge_kutta(self.time_stepping)
        elif self.viscosity_substeps is None:
            s = stability_number(max_abs(self.nu), max_abs(self.dt), self.grid) if self.diffusion == "explicit" else 0.0
            object.__setattr__(self, "viscosity_substeps", max(1, math.ceil(s / 0.5 - 1e-12)))
        elif isinstance(self.viscosity_substeps, bool) or not isinstance(self.viscosity_substeps, int | np.integer):
            raise ValueError(f"viscosity_substeps must be an integer >= 1 or None, got {self.viscosity_substeps!r}")
        elif self.viscosity_substeps < 1:
            raise ValueError(f"viscosity_substeps must be an integer >= 1 or None, got {self.viscosity_substeps!r}")
        if self.diffusion == "explicit" and not isinstance(self.time_stepping, RungeKutta):
            check_explicit_stability(max_abs(self.nu), max_abs(self.dt) / self.viscosity_substeps, self.grid)
        check_flux_balance(self.grid, self.boundary)
        mask_batch = 1 if self.fluid is None else self.fluid.shape[0]
        object.__setattr__(self, "fluid", fluid_mask(self.fluid, self.grid, mask_batch))
        if self.pressure.method == "fft":
            check_spectral(self.grid, self.boundary, self.fluid)  # a wrong choice fails here, not at the first step
        check_staggered_fields(self, ("forcing", "inflow_mask", "inflow_velocity"))

    def _set_cut_cells(self) -> None:
        """Validate ``cut_cells``; ``fluid`` := the cells with an open face; the cut-cell pressure solve."""
        if not isinstance(self.cut_cells, CutCells):
            raise TypeError(
                f"cut_cells must be a taichi_dp.grid.cut_cells.CutCells (CutCells.from_sdf(sdf, grid)), got "
                f"{type(self.cut_cells).__name__}"
            )
        if self.fluid is not None:
            raise ValueError("give the obstacle as fluid= (a binary mask) or as cut_cells= (an SDF's cut cells), not both")
        if isinstance(self.time_stepping, RungeKutta):
            raise ValueError(f"cut_cells needs time_stepping=SplitStep(), got {self.time_stepping!r}")
        if self.diffusion != "explicit":  # the wall's ghost-fluid no-slip is written for the explicit viscous step
            raise ValueError(f"cut_cells needs diffusion='explicit' (its no-slip wall), got {self.diffusion!r}")
        check_openings(self.cut_cells.openings, self.grid)
        check_seams(self.cut_cells.openings, self.grid, self.boundary)
        check_seam_clearance(self.cut_cells.exterior, self.grid, self.boundary)
        if self.pressure is None:
            object.__setattr__(self, "pressure", PRESSURE_CUT_CELL)
        elif self.pressure.method != "mgpcg":
            raise ValueError(
                f"pressure must use method='mgpcg' with cut_cells= (the cut-cell projection is multigrid-preconditioned "
                f"CG; it has no plain-CG or FFT path), got {self.pressure!r}"
            )
        codes = self.boundary.pressure().codes
        object.__setattr__(self, "fluid", open_cells(self.cut_cells.openings, self.grid, codes))

    def _check_runge_kutta(self, method: RungeKutta) -> None:
        """The fields a Runge–Kutta ``time_stepping`` constrains; sets ``viscosity_substeps`` to 1."""
        name = method.name
        if self.diffusion != "explicit":
            raise ValueError(
                f"diffusion must be 'explicit' with time_stepping={name}() (the viscosity is part of its explicit "
                f"rate), got {self.diffusion!r}"
            )
        if self.advection != "semi_lagrangian":
            raise ValueError(
                f"advection must be left at 'semi_lagrangian' with time_stepping={name}() (its rate uses central "
                f"differences; the advection scheme belongs to SplitStep), got {self.advection!r}"
            )
        if self.viscosity_substeps not in (None, 1) or isinstance(self.viscosity_substeps, bool):
            raise ValueError(
                f"viscosity_substeps must be None or 1 with time_stepping={name}() (the viscosity is one term of "
                f"each stage's rate), got {self.viscosity_substeps!r}"
            )
        object.__setattr__(self, "viscosity_substeps", 1)
        s = stability_number(max_abs(self.nu), max_abs(self.dt), self.grid)
        if ensure_init().check_inputs and s > method.diffusion_limit:
            raise ValueError(
                f"nu, dt: explicit viscosity in {name} is unstable: nu*dt*sum(1/h^2) = {s:.3g} > {method.diffusion_limit:.4g} "
                f"(the method's diffusion_limit); reduce dt below {max_abs(self.dt) * method.diffusion_limit / s:.3g} "
                "or use time_stepping=SplitStep() (viscosity sub-steps or diffusion='implicit')"
            )

    @property
    def channels(self) -> int:
        return self.grid.ndim

    def check(self, v: torch.Tensor) -> None:
        """Validate a staggered velocity ``(B, nd, *(N + 1))`` for this stepper (shape, dtype, device,
        finite, mask batch)."""
        check_staggered("v", v, self.grid)
        if self.cut_cells is not None and self.cut_cells.openings.shape[0] not in (1, v.shape[0]):
            raise ValueError(f"cut_cells has batch size {self.cut_cells.openings.shape[0]} but v has {v.shape[0]}")
        check_batches(self, ("fluid",), "v", v.shape[0])

    def impose(self, v: torch.Tensor) -> torch.Tensor:
        """Boundary conditions, obstacle faces and the inflow region imposed on ``v``."""
        v = apply_boundary(v, self.grid, self.boundary, self.fluid)
        if self.cut_cells is not None:  # cut cells: the closed faces are those with no open fraction
            v = v * self.cut_cells.open_faces
        if self.inflow_mask is not None:
            v = v * (1 - self.inflow_mask) + self.inflow_mask * self.inflow_velocity
        return v

    def step(self, v: torch.Tensor) -> torch.Tensor:
        return self.step_with_pressure(v)[0]

    def step_with_pressure(
        self, v: torch.Tensor, pressure_guess: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of ``time_stepping`` returning ``(v⁺, p)``; ``pressure_guess`` (e.g. the previous
        ``p``) warm-starts the Poisson solve. ``p`` is the ``Δt``-scaled pressure of the (last) projection
        (with a Runge–Kutta method: the last stage's, divided by its weight ``Σ_k β_sk``). ``v`` is not
        validated here (use ``__call__`` for checked input)."""
        return self.time_stepping.step(self, v, pressure_guess)

    def rate(self, v: torch.Tensor) -> torch.Tensor:
        """The explicit rate ``F(v) = −(v·∇)v + ν∇²v + f`` of a staggered velocity (central differences,
        :mod:`taichi_dp.ops.staggered_advection_rate`), which the Runge–Kutta stages integrate."""
        f = apply_velocity_rate(v.contiguous(), self.param("nu", v.shape[0]), self.grid, self.boundary)
        return f if self.forcing is None else f + self.forcing

    def constrain(
        self, v: torch.Tensor, pressure_guess: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``P(v)`` of a Runge–Kutta stage: boundaries, obstacle faces and inflow region imposed, then the
        pressure projection; ``(v, p)``."""
        return self.project(self.impose(v), pressure_guess)

    def project(self, v: torch.Tensor, pressure_guess: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The pressure projection of an imposed ``v`` around this stepper's obstacle (binary ``fluid`` or
        ``cut_cells``): ``(v, p)``."""
        if self.cut_cells is not None:
            opts = self.pressure
            return apply_cut_cell_projection(
                v, self.grid, self.boundary, self.cut_cells.openings, pressure_guess, rtol=opts.rtol, max_iter=opts.max_iter
            )
        return apply_projection(v, self.grid, self.boundary, self.fluid, pressure_guess, **projection_kwargs(self.pressure))

    def split_step(
        self,
        v: torch.Tensor,
        pressure_guess: torch.Tensor | None = None,
        *,
        impose: Callable[[torch.Tensor], torch.Tensor] | None = None,
        project: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The operator-split step of :class:`~taichi_dp.solvers.time_stepping.SplitStep`, ``(v⁺, p)``:
        forcing, viscosity, boundaries, self-advection, boundaries, projection. ``impose`` and ``project``
        replace :meth:`impose` and :meth:`project` (e.g. :class:`~taichi_dp.solvers.MovingBodies` imposes
        and projects around the bodies' pose at the step's end)."""
        impose = self.impose if impose is None else impose
        project = self.project if project is None else project
        b = v.shape[0]
        dt = self.param("dt", b)
        if self.forcing is not None:
            v = v + dt.view(-1, *([1] * (v.ndim - 1))) * self.forcing
        if not (isinstance(self.nu, float | int) and self.nu == 0):
            nu = self.param("nu", b)
            if self.diffusion == "implicit":
                v = apply_velocity_diffusion_implicit(
                    impose(v),
                    nu,
                    dt,
                    self.grid,
                    self.boundary,
                    self.fluid,
                    rtol=self.viscosity.rtol,
                    max_iter=self.viscosity.max_iter,
                )
            else:
                if self.cut_cells is not None:  # the wall's no-slip at its true distance (ghost fluid, implicit),
                    v = self.cut_cells.no_slip(v, nu * dt)  # first: the stencil then reads ~0 inside the body
                for _ in range(self.viscosity_substeps):
                    v = apply_velocity_diffusion(v, nu, dt / self.viscosity_substeps, self.grid, self.boundary)
                if self.cut_cells is not None:  # faces inside the body stay closed through advection
                    v = v * self.cut_cells.closing
        v = impose(v)
        v = apply_velocity_advection(v, v, dt, self.grid, self.boundary, self.advection)
        return project(impose(v), pressure_guess)

