"""PhiFlow 3.4's incompressible Navier–Stokes step on the staggered (MAC) grid, from the project's operators.

One step of ``PhiFlowNavierStokes`` is, in PhiFlow terms (``benchmarks/pbdl_karman_reference.py``)::

    v = diffuse.explicit(v, ν, Δt)                       # one forward-Euler step
    v = v * (1 − inflow) + inflow * u_inflow             # the inflow region, once
    v = advect.semi_lagrangian(v, v, Δt)
    v, p = fluid.make_incompressible(v, obstacles, Solve("CG", ...))

and is assembled here from :func:`~taichi_dp.ops.staggered_diffusion.apply_velocity_diffusion`,
:func:`~taichi_dp.ops.staggered_advection.apply_velocity_advection` and
:func:`~taichi_dp.ops.pressure.apply_projection` (plain CG, implicit adjoint) with a
:class:`~taichi_dp.grid.phiflow.PhiFlowBoundary` (PhiFlow's ghost values), plus three masks that are plain
torch products:

- explicit diffusion leaves the outflow boundary faces alone (PhiFlow stores them, but the Laplacian of
  a zero-gradient face is 0 there);
- ``make_incompressible`` first multiplies the velocity by ``1 − m`` (``m``: the soft obstacle mask on
  the faces, :func:`~taichi_dp.grid.phiflow.soft_disc_faces`), then solves for the pressure on the cells
  whose centre is outside the obstacles (``fluid``) and subtracts its gradient only on faces between two
  such cells; faces touching a solid cell keep their (masked) velocity (``close_solid_faces=False``);
- the inflow region is imposed once, before advection (not after it), and obstacle faces are never
  closed by hand.

Walls and inflow sides hold their face values (PhiFlow's constant boundary faces, not stored there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..grid import Grid
from ..grid.phiflow import PhiFlowBoundary
from ..grid.staggered import Outflow, apply_boundary, check_staggered, valid_faces
from ..ops.diffusion import check_explicit_stability
from ..ops.pressure import apply_projection, fluid_mask
from ..ops.solve_options import SolveOptions, check_solve_options, projection_kwargs
from ..ops.staggered_advection import apply_velocity_advection
from ..ops.staggered_diffusion import apply_velocity_diffusion
from ..runtime import check_param
from .base import Stepper, check_batches, check_staggered_fields, check_time_step, max_abs

PRESSURE_DEFAULT = SolveOptions(rtol=1e-8, max_iter=20000, method="cg")
"""The default pressure solve of :class:`PhiFlowNavierStokes`: plain CG to ``rtol=1e-8`` (PhiFlow's solver)."""


@dataclass(frozen=True, eq=False)
class PhiFlowNavierStokes(Stepper):
    """PhiFlow 3.4's step (module docstring) for a staggered velocity ``v`` ``(B, 2, H+1, W+1)``.

    Args:
        grid: 2D grid ``(H, W)`` = (y, x).
        boundary: a :class:`~taichi_dp.grid.phiflow.PhiFlowBoundary` (walls, inflow, outflow, periodic).
        nu: kinematic viscosity ≥ 0, float or ``(B,)`` tensor (differentiable); one explicit step, stable
            for ``ν Δt (1/h_y² + 1/h_x²) ≤ 1/2`` (checked).
        dt: time step > 0 (float or ``(B,)``).
        fluid: cell mask ``(B or 1, 1, H, W)``, 1 where the cell centre is outside every obstacle
            (PhiFlow's ``accessible``; :func:`~taichi_dp.grid.geometry.disc`); ``None``: no obstacle.
        solid_faces: soft obstacle fraction ``m`` of each face ``(B or 1, 2, H+1, W+1)`` in ``[0, 1]``
            (:func:`~taichi_dp.grid.phiflow.soft_disc_faces`); ``None``: none.
        inflow_mask: staggered ``(1, 2, H+1, W+1)`` region ``f`` where the inflow is imposed, once per step
            after diffusion (``v ← (1 − f) v + f u``).
        inflow_velocity: staggered ``(1, 2, H+1, W+1)`` velocity ``u`` imposed there.
        pressure: the Poisson solve, a :class:`~taichi_dp.ops.solve_options.SolveOptions` with
            ``method="cg"`` (plain CG, as PhiFlow; the multigrid path assumes closed solid faces):
            ``rtol`` relative to ``‖D v‖`` (the adjoint's relative to the incoming gradient) and
            ``max_iter``. Default :data:`PRESSURE_DEFAULT` (``rtol=1e-8, max_iter=20000``).
    """

    grid: Grid
    boundary: PhiFlowBoundary
    nu: float | torch.Tensor
    dt: float | torch.Tensor
    fluid: torch.Tensor | None = None
    solid_faces: torch.Tensor | None = None
    inflow_mask: torch.Tensor | None = None
    inflow_velocity: torch.Tensor | None = None
    pressure: SolveOptions = PRESSURE_DEFAULT
    advection: str = "semi_lagrangian"
    diffusion: str = "explicit"

    def __post_init__(self) -> None:
        if not isinstance(self.grid, Grid):
            raise TypeError(f"grid must be a taichi_dp.Grid, got {type(self.grid).__name__}")
        if not isinstance(self.boundary, PhiFlowBoundary):
            raise TypeError(f"boundary must be a PhiFlowBoundary, got {type(self.boundary).__name__}")
        check_time_step(self.dt)
        check_param("nu", self.nu, positive=True)
        check_solve_options("pressure", self.pressure, ("cg",))
        if self.advection != "semi_lagrangian" or self.diffusion != "explicit":
            raise ValueError(
                "PhiFlowNavierStokes reproduces explicit diffusion and semi-Lagrangian advection only, got "
                f"diffusion={self.diffusion!r}, advection={self.advection!r}"
            )
        check_explicit_stability(max_abs(self.nu), max_abs(self.dt), self.grid)
        mask_batch = 1 if self.fluid is None else self.fluid.shape[0]
        object.__setattr__(self, "fluid", fluid_mask(self.fluid, self.grid, mask_batch))
        check_staggered_fields(self, ("solid_faces", "inflow_mask", "inflow_velocity"))
        if self.solid_faces is not None and not bool(((self.solid_faces >= 0) & (self.solid_faces <= 1)).all()):
            raise ValueError("solid_faces must lie in [0, 1] (the solid fraction of each face)")
        object.__setattr__(self, "_diffused", _diffused_faces(self.grid, self.boundary, self.fluid.dtype, self.fluid.device))

    @property
    def channels(self) -> int:
        return 2

    def check(self, v: torch.Tensor) -> None:
        """Validate a staggered velocity ``(B, 2, H+1, W+1)`` for this stepper (shape, dtype, device,
        finite, mask batches)."""
        check_staggered("v", v, self.grid)
        check_batches(self, ("fluid", "solid_faces"), "v", v.shape[0])

    def impose(self, v: torch.Tensor) -> torch.Tensor:
        """The wall and inflow-side face values (PhiFlow's constant boundary faces) imposed on ``v``."""
        return apply_boundary(v, self.grid, self.boundary)

    def step(self, v: torch.Tensor) -> torch.Tensor:
        return self.step_with_pressure(v)[0]

    def step_with_pressure(
        self, v: torch.Tensor, pressure_guess: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step returning ``(v⁺, p)`` (``p``: PhiFlow's pressure × Δt/ρ convention, ``(B, 1, H, W)``);
        ``pressure_guess`` warm-starts the CG solve. ``v`` is not validated here."""
        b = v.shape[0]
        dt = self.param("dt", b)
        v = self.impose(v)
        if not (isinstance(self.nu, float | int) and self.nu == 0):
            diffused = apply_velocity_diffusion(v, self.param("nu", b), dt, self.grid, self.boundary)
            v = self.impose(diffused * self._diffused + v * (1 - self._diffused))
        if self.inflow_mask is not None:
            v = v * (1 - self.inflow_mask) + self.inflow_mask * self.inflow_velocity
        v = apply_velocity_advection(v, v, dt, self.grid, self.boundary, "semi_lagrangian")
        if self.solid_faces is not None:
            v = v * (1 - self.solid_faces)
        return apply_projection(
            v.contiguous(),
            self.grid,
            self.boundary,
            self.fluid,
            pressure_guess,
            **projection_kwargs(self.pressure),
            close_solid_faces=False,
        )


def _diffused_faces(grid: Grid, boundary: PhiFlowBoundary, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(1, 2, H+1, W+1)``: 1 on the faces explicit diffusion updates, 0 on padding and on the outflow
    boundary faces of their normal component (PhiFlow's Laplacian is 0 there)."""
    h, w = grid.shape
    keep = valid_faces(grid, dtype, device)
    for c, (lo, hi) in enumerate(boundary.sides):
        for side, idx in ((lo, 0), (hi, h if c == 0 else w)):
            if isinstance(side, Outflow):
                if c == 0:
                    keep[:, 0, idx, :] = 0.0
                else:
                    keep[:, 1, :, idx] = 0.0
    return keep

