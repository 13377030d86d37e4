"""Incompressible Navier–Stokes on the staggered (MAC) grid, with obstacles."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..grid import Grid
from ..grid.staggered import FlowBoundary, apply_boundary, check_staggered, staggered_shape
from ..ops.advection import SCHEMES as ADVECTION_SCHEMES
from ..ops.diffusion import SCHEMES as DIFFUSION_SCHEMES
from ..ops.diffusion import check_explicit_stability, stability_number
from ..ops.pressure import PRECONDITIONERS, apply_projection, check_flux_balance, fluid_mask
from ..ops.staggered_advection import apply_velocity_advection
from ..ops.staggered_diffusion import apply_velocity_diffusion, apply_velocity_diffusion_implicit
from ..runtime import check_param
from .base import Stepper


@dataclass(frozen=True, eq=False)
class NavierStokes(Stepper):
    """2D incompressible Navier–Stokes for a staggered velocity ``v`` ``(B, 2, H+1, W+1)``:

        ∂v/∂t + (v · ∇) v = −∇p/ρ + ν ∇²v + f,      ∇ · v = 0

    One step (the order of the PBDL solver-in-the-loop wake): forcing ``v += Δt f``; explicit viscosity;
    boundary conditions and the inflow region imposed; self-advection (semi-Lagrangian or MacCormack);
    pressure projection (CG, implicit adjoint), which leaves ``v`` divergence-free on every fluid cell.

    Args:
        grid: 2D grid ``(H, W)`` = (y, x) with physical extent.
        boundary: :class:`~taichi_dp.grid.staggered.FlowBoundary` (walls, inflow, outflow, periodic).
        nu: kinematic viscosity ≥ 0, float or ``(B,)`` tensor (differentiable); explicit diffusion needs
            ``ν Δt (1/h_y² + 1/h_x²) ≤ 1/2`` (checked).
        dt: time step (float or ``(B,)``); accuracy wants CFL ``max|v| Δt / h ≲ 1`` (semi-Lagrangian is
            stable beyond).
        fluid: obstacle mask ``(B or 1, 1, H, W)``, 1 = fluid (see :mod:`taichi_dp.grid.geometry`).
        advection: ``"semi_lagrangian"`` or ``"maccormack"``.
        forcing: optional staggered body force ``(B or 1, 2, H+1, W+1)`` (differentiable).
        inflow_mask, inflow_velocity: optional staggered ``(1, 2, H+1, W+1)`` region and the velocity
            imposed there every step (``v ← (1 − m) v + m u``), e.g. the karman inflow band.
        pressure_rtol, pressure_max_iter: Poisson CG tolerance (relative; the adjoint uses the same,
            relative to the incoming gradient) and iteration cap.
        pressure_preconditioner: ``"multigrid"`` (default; a geometric V-cycle) or ``"none"``.
        diffusion: viscosity scheme, ``"explicit"`` (forward Euler, sub-stepped) or ``"implicit"``
            (backward Euler by CG with an implicit adjoint; unconditionally stable).
        viscosity_substeps: explicit viscosity sub-steps per step; ``None`` picks the fewest that keep
            each sub-step stable (``ν Δt/n · Σ 1/h² ≤ 1/2``), e.g. 3 for the karman scene at 256×512 and
            Re = 200. An explicit count is checked for stability.
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
    pressure_rtol: float = 1e-5
    pressure_max_iter: int = 5000
    pressure_preconditioner: str = "multigrid"
    diffusion: str = "explicit"
    viscosity_substeps: int | None = None

    def __post_init__(self) -> None:
        staggered_shape(self.grid)  # a 2D grid
        if not isinstance(self.boundary, FlowBoundary):
            raise TypeError(f"boundary must be a FlowBoundary, got {type(self.boundary).__name__}")
        check_param("dt", self.dt, positive=True)
        check_param("nu", self.nu, positive=True)
        _check_options(self.pressure_rtol, self.pressure_max_iter, self.viscosity_substeps)
        if not bool((torch.as_tensor(self.dt).detach() > 0).all()):
            raise ValueError(f"dt must be > 0 (a zero time step does nothing), got {self.dt!r}")
        if self.diffusion not in DIFFUSION_SCHEMES:
            raise ValueError(f"diffusion must be one of {DIFFUSION_SCHEMES}, got {self.diffusion!r}")
        if self.viscosity_substeps is None:
            s = stability_number(_max_abs(self.nu), _max_abs(self.dt), self.grid) if self.diffusion == "explicit" else 0.0
            object.__setattr__(self, "viscosity_substeps", max(1, math.ceil(s / 0.5 - 1e-12)))
        if self.diffusion == "explicit":
            check_explicit_stability(_max_abs(self.nu), _max_abs(self.dt) / self.viscosity_substeps, self.grid)
        check_flux_balance(self.grid, self.boundary)
        if self.pressure_preconditioner not in PRECONDITIONERS:
            raise ValueError(f"pressure_preconditioner must be one of {PRECONDITIONERS}, got {self.pressure_preconditioner!r}")
        if self.advection not in ADVECTION_SCHEMES:
            raise ValueError(f"advection must be one of {ADVECTION_SCHEMES}, got {self.advection!r}")
        mask_batch = 1 if self.fluid is None else self.fluid.shape[0]
        object.__setattr__(self, "fluid", fluid_mask(self.fluid, self.grid, mask_batch))
        for name in ("forcing", "inflow_mask", "inflow_velocity"):
            if getattr(self, name) is not None:
                check_staggered(name, getattr(self, name), self.grid)
        if (self.inflow_mask is None) != (self.inflow_velocity is None):
            raise ValueError("inflow_mask and inflow_velocity must be given together")

    @property
    def channels(self) -> int:
        return 2

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """Advance the staggered velocity ``v`` ``(B, 2, H+1, W+1)`` by one step."""
        self.check_velocity(v)
        return self.step(v)

    def check_velocity(self, v: torch.Tensor) -> None:
        """Validate a staggered velocity for this stepper (shape, dtype, device, finite, mask batch)."""
        check_staggered("v", v, self.grid)
        if self.fluid.shape[0] not in (1, v.shape[0]):
            raise ValueError(f"fluid mask has batch size {self.fluid.shape[0]} but v has {v.shape[0]}")

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
            v = v + dt.view(-1, 1, 1, 1) * self.forcing
        if not (isinstance(self.nu, float | int) and self.nu == 0):
            nu = self.param("nu", b)
            if self.diffusion == "implicit":
                v = apply_velocity_diffusion_implicit(
                    self.impose(v), nu, dt, self.grid, self.boundary, self.fluid, rtol=self.pressure_rtol
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
            rtol=self.pressure_rtol,
            max_iter=self.pressure_max_iter,
            preconditioner=self.pressure_preconditioner,
        )


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _check_options(rtol: object, max_iter: object, substeps: object) -> None:
    """ValueError/TypeError naming the option, its range and the value: a bad tolerance or cap would silently
    return an unprojected (or unsolved) velocity."""
    if isinstance(rtol, bool) or not isinstance(rtol, float | int | np.floating | np.integer):
        raise TypeError(f"pressure_rtol must be a float in (0, 1), got {type(rtol).__name__} {rtol!r}")
    if not (math.isfinite(rtol) and 0 < rtol < 1):
        raise ValueError(f"pressure_rtol must be a finite float in (0, 1), got {rtol!r}")
    if not _is_int(max_iter):
        raise TypeError(f"pressure_max_iter must be an integer >= 1, got {type(max_iter).__name__} {max_iter!r}")
    if max_iter < 1:
        raise ValueError(f"pressure_max_iter must be an integer >= 1, got {max_iter!r}")
    if substeps is not None and not (_is_int(substeps) and substeps >= 1):
        raise ValueError(f"viscosity_substeps must be an integer >= 1 or None, got {substeps!r}")


def _max_abs(x: float | torch.Tensor) -> float:
    return float(torch.as_tensor(x).detach().abs().max())
