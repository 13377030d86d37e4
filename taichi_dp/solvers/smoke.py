"""Buoyant smoke: a passive density carried by the flow that pushes it upwards (along +y, in 2D and 3D)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..grid import Boundary, Grid, ZeroGradient
from ..grid.staggered import check_staggered
from ..ops.staggered_advection import apply_scalar_advection
from ..runtime import as_batch_param, check_param, check_state
from .base import Stepper, check_batches
from .navier_stokes import NavierStokes

DENSITY_SCHEMES = ("flux", "maccormack", "semi_lagrangian")
"""Accepted ``density_advection`` schemes: ``"flux"`` (default) conserves the smoke
(:mod:`taichi_dp.ops.flux_advection`); the two interpolating ones do not (+122% MacCormack, +56%
semi-Lagrangian of the injected smoke over 100 steps of :func:`taichi_dp.scenes.smoke_plume`)."""


def pack_smoke(v: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    """One state tensor ``(B, nd + 1, *(N + 1))``: channels ``0 … nd−1`` the staggered velocity, channel
    ``nd`` the cell-centred density ``(B, 1, *spatial)`` padded with one zero layer at the end of every axis
    (``(B, 3, H+1, W+1)`` in 2D, ``(B, 4, D+1, H+1, W+1)`` in 3D). Differentiable."""
    rho = torch.nn.functional.pad(density, (0, 1) * (density.ndim - 2))
    return torch.cat([v, rho], dim=1)


def unpack_smoke(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_smoke`: ``(v (B, nd, *(N + 1)), density (B, 1, *spatial))``."""
    nd = state.ndim - 2
    inner = (slice(None), slice(nd, None), *([slice(0, -1)] * nd))
    return state[:, :nd].contiguous(), state[inner].contiguous()


def buoyancy_faces(rho: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The buoyant acceleration ``scale·ρ`` on the faces of the +y component (``(B, nd, *(N + 1))`` with the
    other components 0): ``ρ`` averaged from the two cells of each y face (zero outside the domain);
    ``scale`` is ``(B,)``. The y axis is axis ``nd − 2`` (the rows in 2D, the middle axis in 3D)."""
    nd = rho.ndim - 2
    y = nd - 2
    pad_y = [0, 0] * nd
    lo, hi = list(pad_y), list(pad_y)
    lo[2 * (nd - 1 - y) + 0] = 1  # F.pad lists the last axis first: one ghost layer below along y
    hi[2 * (nd - 1 - y) + 1] = 1  # ... or above
    face_rho = 0.5 * (torch.nn.functional.pad(rho, lo) + torch.nn.functional.pad(rho, hi))  # N_y + 1 along y
    others = [0, 0] * nd
    for a in range(nd):
        if a != y:
            others[2 * (nd - 1 - a) + 1] = 1  # padding layer on every other axis
    lift = torch.nn.functional.pad(face_rho, others) * scale.view(-1, *([1] * (nd + 1)))
    zero = torch.zeros_like(lift)
    return torch.cat([lift if c == y else zero for c in range(nd)], dim=1)


@dataclass(frozen=True, eq=False)
class SmokePlume(Stepper):
    """Navier–Stokes with a buoyant passive density ``ρ`` (Boussinesq):

        ∂ρ/∂t + (v · ∇) ρ = s,     ∂v/∂t + … = … + β ρ ŷ

    One step: ``ρ`` advected by the current velocity (conservative flux form by default, sub-stepped to
    the cell Courant limit; no flux through walls and obstacles) plus ``Δt·s``; the buoyancy
    ``β ρ`` (averaged onto the ``v_y`` faces, :func:`buoyancy_faces`) added to the velocity; then one
    :class:`NavierStokes` step of ``flow`` (viscosity, advection, projection). The state is
    :func:`pack_smoke` ``(v, ρ)``. 2D or 3D, as the flow's grid.

    Args:
        flow: the velocity stepper (grid, flow boundary, viscosity, dt, obstacles, ...).
        buoyancy: ``β`` (float or ``(B,)`` tensor, differentiable); > 0 makes dense smoke rise along +y.
        source: optional ``(B or 1, 1, *spatial)`` density injected per unit time (differentiable).
        density_boundary: boundary conditions of ``ρ`` (default: zero gradient on every side).
        density_advection: ``"flux"`` (default: conservative and bounded, :func:`~taichi_dp.ops.flux_advect`),
            ``"maccormack"`` or ``"semi_lagrangian"`` (interpolating: they do not conserve the smoke).
    """

    flow: NavierStokes
    buoyancy: float | torch.Tensor = 1.0
    source: torch.Tensor | None = None
    density_boundary: Boundary | None = None
    density_advection: str = "flux"

    def __post_init__(self) -> None:
        if not isinstance(self.flow, NavierStokes):
            raise TypeError(f"flow must be a NavierStokes stepper, got {type(self.flow).__name__}")
        check_param("buoyancy", self.buoyancy)
        if self.density_advection not in DENSITY_SCHEMES:
            raise ValueError(f"density_advection must be one of {DENSITY_SCHEMES}, got {self.density_advection!r}")
        if self.source is not None:
            check_state("source", self.source, self.flow.grid.shape, channels=1)
        if self.density_boundary is None:
            object.__setattr__(self, "density_boundary", Boundary.uniform(ZeroGradient(), self.flow.grid.ndim))
        if not isinstance(self.density_boundary, Boundary):
            raise TypeError(f"density_boundary must be a Boundary or None, got {type(self.density_boundary).__name__}")

    @property
    def grid(self) -> Grid:
        """The flow's grid."""
        return self.flow.grid

    @property
    def dt(self) -> float | torch.Tensor:
        """The flow's time step."""
        return self.flow.dt

    @property
    def channels(self) -> int:
        return self.flow.grid.ndim + 1

    def check(self, state: torch.Tensor) -> None:
        """Validate a packed smoke state ``(B, nd + 1, *(N + 1))`` (:func:`pack_smoke`) for this stepper."""
        check_staggered("state", state, self.flow.grid, channels=self.channels, hint="build it with pack_smoke(v, density)")
        check_batches(self.flow, ("fluid",), "state", state.shape[0])
        check_batches(self, ("source",), "state", state.shape[0])

    def step(self, state: torch.Tensor) -> torch.Tensor:
        flow = self.flow
        v, rho = unpack_smoke(state)
        b = v.shape[0]
        dt = flow.param("dt", b)
        rho = apply_scalar_advection(
            rho, v, dt, flow.grid, self.density_boundary, flow.boundary, self.density_advection, flow.fluid
        )
        if self.source is not None:
            rho = rho + dt.view(-1, *([1] * (rho.ndim - 1))) * self.source
        rho = rho * flow.fluid
        beta = as_batch_param("buoyancy", self.buoyancy, b)
        v = v + buoyancy_faces(rho, dt * beta)
        return pack_smoke(flow.step(v), rho)
