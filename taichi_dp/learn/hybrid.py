"""The hybrid solver: a numerical step followed by a learned correction, and its unrolled losses.

    u ← solver(u)
    u ← u + model(u, **conditioning)

SOL-k ("solver in the loop", Um et al. 2020) unrolls k hybrid steps from a reference state and
backpropagates through every solver step; NON trains the same correction on one step from pre-computed
source states with no solver gradient. Both share :func:`hybrid_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..grid import Grid
from ..grid.staggered import FlowBoundary, free_faces, to_centred, to_staggered
from ..ops.pressure import project
from ..ops.solve_options import SolveOptions, check_solve_options, projection_kwargs
from ..runtime import ensure_init
from ..solvers.base import rollout

Solver = Callable[[torch.Tensor], torch.Tensor]
REPROJECT_PRESSURE = SolveOptions(rtol=1e-3, max_iter=5000, method="mgpcg")
"""The re-projection solve of :class:`StaggeredCorrection` (as the karman scene's)."""


def hybrid_step(
    solver: Solver, model: nn.Module | None, u: torch.Tensor, conditioning: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """One corrected step ``s = solver(u); s + model(s, **conditioning)``; ``model=None`` is the bare solver."""
    s = solver(u)
    return s if model is None else s + model(s, **conditioning)


def hybrid_rollout(
    solver: Solver,
    model: nn.Module | None,
    u0: torch.Tensor,
    steps: int,
    conditioning: Mapping[str, torch.Tensor],
    *,
    include_initial: bool = True,
    checkpoint_every: int = 0,
) -> torch.Tensor:
    """``steps`` hybrid steps from ``u0`` ``(B, C, *S)``; returns ``(B, T, C, *S)``. With
    ``checkpoint_every > 0`` the steps are recomputed in chunks during backward instead of stored
    (memory for long SOL unrolls; see :func:`taichi_dp.solvers.rollout`)."""
    return rollout(
        lambda u: hybrid_step(solver, model, u, conditioning),
        u0,
        steps,
        include_initial=include_initial,
        checkpoint_every=checkpoint_every,
    )


def sol_loss(
    solver: Solver,
    model: nn.Module,
    reference: torch.Tensor,
    conditioning: Mapping[str, torch.Tensor],
    *,
    checkpoint_every: int = 0,
) -> torch.Tensor:
    """SOL-k loss: unroll ``k = T − 1`` hybrid steps from ``reference[:, 0]`` with gradients through the
    solver; mean squared error against ``reference[:, 1:]`` averaged over the k steps.

    ``reference``: ``(B, k + 1, C, *S)`` window of the reference trajectory. ``checkpoint_every``:
    recompute chunks of that many steps in backward instead of storing them (long unrolls).
    """
    u0 = reference[:, 0].contiguous()
    k = reference.shape[1] - 1
    pred = hybrid_rollout(solver, model, u0, k, conditioning, include_initial=False, checkpoint_every=checkpoint_every)
    return torch.mean((pred - reference[:, 1:]) ** 2)


def non_loss(
    model: nn.Module, source: torch.Tensor, target: torch.Tensor, conditioning: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """NON loss: the correction of pre-computed source states ``solver(reference_t)`` towards
    ``reference_{t+1}``; no solver in the graph. ``source``, ``target``: ``(B, C, *S)``."""
    return torch.mean((source + model(source, **conditioning) - target) ** 2)


class StaggeredCorrection(nn.Module):
    """Turns a model of centred tensors into a correction of a staggered velocity:

        Δv = F ⊙ to_staggered(model(to_centred(v), **conditioning))

    where ``F`` masks the free faces (walls, inflows, obstacle faces and padding keep their imposed
    values). ``model`` maps ``(B, 2, H, W)`` (+ conditioning) to ``(B, 2, H, W)``; any module from
    ``models/`` fits. Use it as the ``model`` of :func:`hybrid_step` / :func:`sol_loss` with a
    :class:`~taichi_dp.solvers.NavierStokes` solver. With ``reproject=True`` the corrected velocity is
    projected by the Poisson solve ``pressure`` (:class:`~taichi_dp.solvers.SolveOptions`, default
    :data:`REPROJECT_PRESSURE`).
    """

    def __init__(
        self,
        model: nn.Module,
        grid: Grid,
        boundary: FlowBoundary,
        fluid: torch.Tensor | None = None,
        *,
        reproject: bool = False,
        pressure: SolveOptions = REPROJECT_PRESSURE,
    ) -> None:
        super().__init__()
        self.model = model
        self.grid, self.boundary = grid, boundary
        self.reproject, self.pressure = reproject, check_solve_options("pressure", pressure)
        rt = ensure_init()
        self.register_buffer("free", free_faces(grid, boundary, fluid, rt.dtype, rt.device), persistent=False)
        self.fluid = fluid  # the solver's own mask tensor (its multigrid hierarchy is cached by identity)

    def forward(self, v: torch.Tensor, **conditioning: torch.Tensor) -> torch.Tensor:
        """``(B, 2, H+1, W+1)`` → the correction, same shape. With ``reproject`` the corrected velocity is
        projected back onto divergence-free fields: ``Δv = P(v + Δv_raw) − v`` (differentiable, implicit adjoint)."""
        correction = self.free * to_staggered(self.model(to_centred(v), **conditioning), self.boundary)
        if not self.reproject:
            return correction
        corrected, _ = project(v + correction, self.grid, self.boundary, self.fluid, **projection_kwargs(self.pressure))
        return corrected - v
