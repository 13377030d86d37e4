"""Passive scalar transport: advection by a given velocity field plus diffusion."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..grid import Boundary, Grid
from ..ops.advection import apply_advection
from ..ops.diffusion import apply_diffusion
from ..runtime import check_state
from .base import Stepper


@dataclass(frozen=True, eq=False)
class AdvectionDiffusion(Stepper):
    """Advection–diffusion of a quantity ``q`` by a fixed velocity field ``v``:

        ∂q/∂t + (v · ∇) q = κ ∇²q

    One step: advection (semi-Lagrangian or MacCormack), then diffusion (explicit or implicit).

    Args:
        grid: 1D, 2D or 3D cell-centred grid; the state is ``(B, C, *grid.shape)`` with any ``C``.
        boundary: boundary conditions of ``q``.
        velocity: ``(B, ndim, *grid.shape)`` or ``(1, ndim, *grid.shape)`` (shared by the batch)
            cell-centred velocity in physical units; differentiable (e.g. for flow control).
        kappa: diffusivity ≥ 0, float or ``(B,)`` tensor (differentiable); 0 gives pure advection.
        dt: time step; explicit diffusion needs ``κ dt Σ 1/h² ≤ 1/2`` (checked here).
    """

    grid: Grid
    boundary: Boundary
    velocity: torch.Tensor
    kappa: float | torch.Tensor
    dt: float | torch.Tensor
    diffusion: str = "explicit"
    advection: str = "semi_lagrangian"
    cg_rtol: float = 1e-6

    def __post_init__(self) -> None:
        self._check_fields("kappa")
        check_state("velocity", self.velocity, self.grid.shape, channels=self.grid.ndim)

    def step(self, q: torch.Tensor) -> torch.Tensor:
        b = q.shape[0]
        v = self.velocity
        if v.shape[0] != b:
            if v.shape[0] != 1:
                raise ValueError(f"velocity has batch size {v.shape[0]} but the state has {b}; use 1 or {b}")
            v = v.expand(b, *v.shape[1:]).contiguous()
        dt = self.param("dt", b)
        q = apply_advection(q, v, dt, self.grid, self.boundary, self.advection)
        if isinstance(self.kappa, float | int) and self.kappa == 0:
            return q
        return apply_diffusion(q, self.param("kappa", b), dt, self.grid, self.boundary, self.diffusion, rtol=self.cg_rtol)
