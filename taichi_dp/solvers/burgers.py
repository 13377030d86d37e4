"""Viscous Burgers' equation in 1D, 2D and 3D."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..grid import Boundary, Grid
from ..ops.advection import apply_advection
from ..ops.diffusion import apply_diffusion
from ..runtime import check_state
from .base import Stepper


@dataclass(frozen=True, eq=False)
class Burgers(Stepper):
    """Viscous Burgers' equation for a velocity ``u`` with ``ndim`` components:

        ∂u/∂t + (u · ∇) u = ν ∇²u + f

    One step is the operator splitting of the PBDL book: the forcing ``u += Δt f`` (if any), diffusion
    (explicit or implicit), then self-advection of the diffused velocity by itself (semi-Lagrangian or
    MacCormack).

    Args:
        grid: 1D, 2D or 3D cell-centred grid; the state is ``(B, grid.ndim, *grid.shape)``.
        boundary: boundary conditions of the velocity (periodic, Dirichlet wall values, zero-gradient).
        nu: viscosity ≥ 0: a float, or a ``(B,)`` tensor (one value per batch element; differentiable).
            Typical: 1e-3–1e-1 on a unit-sized domain.
        dt: time step (float or ``(B,)`` tensor). Accuracy wants CFL ``max|u| dt / h ≲ 1``; explicit
            diffusion needs ``ν dt Σ 1/h² ≤ 1/2`` (checked here).
        diffusion: ``"explicit"`` or ``"implicit"``.
        advection: ``"semi_lagrangian"`` or ``"maccormack"``.
        cg_rtol: relative tolerance of the implicit-diffusion CG solve (and of its adjoint).
        forcing: optional body force ``f``, ``(B, ndim, *grid.shape)`` or ``(1, ndim, *grid.shape)``
            (differentiable: e.g. the control in an optimal-control problem).
    """

    grid: Grid
    boundary: Boundary
    nu: float | torch.Tensor
    dt: float | torch.Tensor
    diffusion: str = "explicit"
    advection: str = "semi_lagrangian"
    cg_rtol: float = 1e-6
    forcing: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self._check_fields("nu")
        if self.forcing is not None:
            check_state("forcing", self.forcing, self.grid.shape, channels=self.grid.ndim)

    @property
    def channels(self) -> int:
        return self.grid.ndim

    def step(self, u: torch.Tensor) -> torch.Tensor:
        b = u.shape[0]
        nu, dt = self.param("nu", b), self.param("dt", b)
        if self.forcing is not None:
            if self.forcing.shape[0] not in (1, b):
                raise ValueError(f"forcing has batch size {self.forcing.shape[0]} but the state has {b}; use 1 or {b}")
            u = u + dt.view(-1, *([1] * (u.ndim - 1))) * self.forcing
        u = apply_diffusion(u, nu, dt, self.grid, self.boundary, self.diffusion, rtol=self.cg_rtol)
        return apply_advection(u, u, dt, self.grid, self.boundary, self.advection)
