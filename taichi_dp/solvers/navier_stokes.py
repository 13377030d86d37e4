"""Incompressible Navier–Stokes on the staggered (MAC) grid, with obstacles."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..grid import Grid
from ..grid.staggered import FlowBoundary, apply_boundary, check_staggered, staggered_shape
from ..ops.diffusion import check_explicit_stability, stability_number
from ..ops.pressure import apply_projection, check_flux_balance, fluid_mask
from ..ops.solve_options import SolveOptions, check_solve_options, projection_kwargs
from ..ops.staggered_advection import apply_velocity_advection
from ..ops.staggered_diffusion import apply_velocity_diffusion, apply_velocity_diffusion_implicit
from ..runtime import check_param
from .base import Stepper, check_batches, check_schemes, check_staggered_fields, check_time_step, max_abs

PRESSURE_DEFAULT = SolveOptions(rtol=1e-5, max_iter=5000, method="mgpcg")
"""The default pressure solve of :class:`NavierStokes`: multigrid-preconditioned CG to ``rtol=1e-5``."""
VISCOSITY_DEFAULT = SolveOptions(rtol=1e-5, max_iter=1000, method="cg")
"""The default implicit-viscosity solve of :class:`NavierStokes`: plain CG to ``rtol=1e-5``."""


@dataclass(frozen=True, eq=False)
class NavierStokes(Stepper):
    """Incompressible Navier–Stokes in 2D or 3D for a staggered velocity ``v`` ``(B, nd, *(N + 1))``
    (``(B, 2, H+1, W+1)`` in 2D, ``(B, 3, D+1, H+1, W+1)`` in 3D; layout in :mod:`taichi_dp.grid.staggered`):

        ∂v/∂t + (v · ∇) v = −∇p/ρ + ν ∇²v + f,      ∇ · v = 0

    One step (the order of the PBDL solver-in-the-loop wake): forcing ``v += Δt f``; explicit viscosity;
    boundary conditions and the inflow region imposed; self-advection (semi-Lagrangian or MacCormack);
    pressure projection (CG, implicit adjoint), which leaves ``v`` divergence-free on every fluid cell.

    Args:
        grid: 2D grid ``(H, W)`` = (y, x) or 3D grid ``(D, H, W)`` = (z, y, x) with physical extent.
        boundary: :class:`~taichi_dp.grid.staggered.FlowBoundary` (walls, inflow, outflow, periodic).
        nu: kinematic viscosity ≥ 0, float or ``(B,)`` tensor (differentiable); explicit diffusion needs
            ``ν Δt Σ_a 1/h_a² ≤ 1/2`` (checked).
        dt: time step (float or ``(B,)``); accuracy wants CFL ``max|v| Δt / h ≲ 1`` (semi-Lagrangian is
            stable beyond).
        fluid: obstacle mask ``(B or 1, 1, *spatial)``, 1 = fluid (see :mod:`taichi_dp.grid.geometry`).
        advection: ``"semi_lagrangian"`` or ``"maccormack"``.
        forcing: optional staggered body force ``(B or 1, nd, *(N + 1))`` (differentiable).
        inflow_mask, inflow_velocity: optional staggered ``(1, nd, *(N + 1))`` region and the velocity
            imposed there every step (``v ← (1 − m) v + m u``), e.g. the karman inflow band.
        pressure: the Poisson solve, a :class:`~taichi_dp.ops.solve_options.SolveOptions`: ``rtol``
            relative to ``‖D v‖`` (the adjoint's relative to the incoming gradient), ``max_iter``, and
            ``method`` ``"mgpcg"`` (default; CG preconditioned by a geometric multigrid V-cycle) or
            ``"cg"`` (plain CG). Default :data:`PRESSURE_DEFAULT` (``rtol=1e-5, max_iter=5000``).
        diffusion: viscosity scheme, ``"explicit"`` (forward Euler, sub-stepped) or ``"implicit"``
            (backward Euler by CG with an implicit adjoint; unconditionally stable).
        viscosity_substeps: explicit viscosity sub-steps per step; ``None`` picks the fewest that keep
            each sub-step stable (``ν Δt/n · Σ 1/h² ≤ 1/2``), e.g. 3 for the karman scene at 256×512 and
            Re = 200. An explicit count is checked for stability.
        viscosity: the implicit viscosity solve (``diffusion="implicit"`` only), a
            :class:`~taichi_dp.ops.solve_options.SolveOptions` with ``method="cg"``. Default
            :data:`VISCOSITY_DEFAULT` (``rtol=1e-5, max_iter=1000``).
    """

    grid: Grid
    boundary: FlowBoundary
    nu: float | torch.Tensor
    dt: float | torch.Tensor
    fluid: torch.Tensor | None = None
    advection: str = "semi_lagrangian"
    forcing: torch.Tensor | None = None
    inflow_mask: torch.Tensor | None = None
    inflow_velocity: torch.Tensor | None = None
    pressure: SolveOptions = PRESSURE_DEFAULT
    diffusion: str = "explicit"
    viscosity_substeps: int | None = None
    viscosity: SolveOptions = VISCOSITY_DEFAULT

    def __post_init__(self) -> None:
        staggered_shape(self.grid)  # a 2D or 3D grid
        if not isinstance(self.boundary, FlowBoundary):
            raise TypeError(f"boundary must be a FlowBoundary, got {type(self.boundary).__name__}")
        check_time_step(self.dt)
        check_param("nu", self.nu, positive=True)
        check_solve_options("pressure", self.pressure)
        check_solve_options("viscosity", self.viscosity, ("cg",))
        check_schemes(self.diffusion, self.advection)
        if self.viscosity_substeps is None:
            s = stability_number(max_abs(self.nu), max_abs(self.dt), self.grid) if self.diffusion == "explicit" else 0.0
            object.__setattr__(self, "viscosity_substeps", max(1, math.ceil(s / 0.5 - 1e-12)))
        elif isinstance(self.viscosity_substeps, bool) or not isinstance(self.viscosity_substeps, int | np.integer):
            raise ValueError(f"viscosity_substeps must be an integer >= 1 or None, got {self.viscosity_substeps!r}")
        elif self.viscosity_substeps < 1:
            raise ValueError(f"viscosity_substeps must be an integer >= 1 or None, got {self.viscosity_substeps!r}")
        if self.diffusion == "explicit":
            check_explicit_stability(max_abs(self.nu), max_abs(self.dt) / self.viscosity_substeps, self.grid)
        check_flux_balance(self.grid, self.boundary)
        mask_batch = 1 if self.fluid is None else self.fluid.shape[0]
        object.__setattr__(self, "fluid", fluid_mask(self.fluid, self.grid, mask_batch))
        check_staggered_fields(self, ("forcing", "inflow_mask", "inflow_velocity"))

    @property
    def channels(self) -> int:
        return self.grid.ndim

    def check(self, v: torch.Tensor) -> None:
        """Validate a staggered velocity ``(B, nd, *(N + 1))`` for this stepper (shape, dtype, device,
        finite, mask batch)."""
        check_staggered("v", v, self.grid)
        check_batches(self, ("fluid",), "v", v.shape[0])

    def impose(self, v: torch.Tensor) -> torch.Tensor:
        """Boundary conditions, obstacle faces and the inflow region imposed on ``v``."""
        v = apply_boundary(v, self.grid, self.boundary, self.fluid)
        if self.inflow_mask is not None:
            v = v * (1 - self.inflow_mask) + self.inflow_mask * self.inflow_velocity
        return v

    def step(self, v: torch.Tensor) -> torch.Tensor:
        return self.step_with_pressure(v)[0]

    def step_with_pressure(
        self, v: torch.Tensor, pressure_guess: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step returning ``(v⁺, p)``; ``pressure_guess`` (e.g. the previous ``p``) warm-starts the
        Poisson solve. ``v`` is not validated here (use ``__call__`` for checked input)."""
        b = v.shape[0]
        dt = self.param("dt", b)
        if self.forcing is not None:
            v = v + dt.view(-1, *([1] * (v.ndim - 1))) * self.forcing
        if not (isinstance(self.nu, float | int) and self.nu == 0):
            nu = self.param("nu", b)
            if self.diffusion == "implicit":
                v = apply_velocity_diffusion_implicit(
                    self.impose(v),
                    nu,
                    dt,
                    self.grid,
                    self.boundary,
                    self.fluid,
                    rtol=self.viscosity.rtol,
                    max_iter=self.viscosity.max_iter,
                )
            else:
                for _ in range(self.viscosity_substeps):
                    v = apply_velocity_diffusion(v, nu, dt / self.viscosity_substeps, self.grid, self.boundary)
        v = self.impose(v)
        v = apply_velocity_advection(v, v, dt, self.grid, self.boundary, self.advection)
        v = self.impose(v)
        return apply_projection(
            v,
            self.grid,
            self.boundary,
            self.fluid,
            pressure_guess,
            **projection_kwargs(self.pressure),
        )

