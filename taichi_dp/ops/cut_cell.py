"""Cut-cell pressure projection: obstacles that cut through cells, described by the open fraction of every face.

A binary obstacle mask closes every face that touches a solid cell, so the body the flow sees is a
staircase that jumps by a cell when the body moves by a fraction of one (at 10 cells per diameter the DFG
cylinder's drag moves by several per cent under half-cell shifts). Here the geometry enters as the open
(fluid) fraction ``θ_f ∈ [0, 1]`` of each staggered face, e.g. :func:`taichi_dp.grid.sdf.face_fractions`
of a signed-distance obstacle, and the projection enforces incompressibility on the fluxes through the
open parts of the faces (the finite-volume / variational form of Batty, Bertails & Bridson, SIGGRAPH 2007;
Ng, Min & Gibou, J. Comput. Phys. 228, 2009, whose pressure converges at second order on cut cells):

    A p = −D(θ v*)                 on every cell with an open face, with  A = −D θ G  (SPD, weights θ_f / h²)
    v   = v* − G p                 on the faces with θ_f > 0
    v   = 0                        on the closed faces (θ_f = 0: inside the body; static obstacles)

so that ``D(θ v) = 0`` on every cell with an open face. ``D`` is the divergence (faces → cells) and ``G``
the pressure gradient (cells → faces) with the flow boundary's pressure conditions, as in
:mod:`taichi_dp.ops.pressure`; cells without an open face are decoupled (identity rows, ``p = 0``). With a
binary ``θ`` (the open faces of a binary mask) the system is exactly :func:`~taichi_dp.ops.pressure.project`'s
(``tests/test_cut_cell.py`` checks the two agree). ``p`` is scaled by ``Δt/ρ`` like there.

The solve is CG preconditioned by a multigrid V-cycle of this very operator (Galerkin levels built from the
couplings ``θ_f / h²``: :func:`taichi_dp.ops.multigrid.face_operator`; cells with a sliver of fluid keep a
consistent diagonal), differentiated implicitly by :func:`~taichi_dp.ops.linear_solve.solve_spd`: the
backward solves ``A λ = ḡ`` with a tolerance relative to the incoming gradient, and the gradient with
respect to ``θ`` is ``−λᵀ (∂A/∂θ) p`` plus the right-hand side's part — so a loss of the projected flow is
differentiable in the obstacle's shape parameters (centre, radius, angle) through
:func:`~taichi_dp.grid.sdf.face_fractions`. The operator is applied with the bridged divergence and gradient
kernels (2D and 3D), so each iteration costs a few launches more than the fused binary-mask path.
"""

from __future__ import annotations

import torch

from ..grid import CONSTANT_OUTSIDE, DIRICHLET, Grid, Periodic
from ..grid.staggered import (
    FlowBoundary,
    apply_boundary,
    check_staggered,
    open_faces,
    staggered_shape,
    valid_faces,
)
from ..runtime import check_tensor, ensure_init
from . import multigrid
from .linear_solve import solve_spd
from .pressure import apply_divergence, apply_subtract_gradient, fluid_mean

__all__ = [
    "apply_cut_cell_projection",
    "check_openings",
    "check_seam_clearance",
    "check_seams",
    "cut_cell_projection",
    "open_cells",
]


def check_openings(openings: object, grid: Grid, batch: int | None = None) -> torch.Tensor:
    """Validate face openings ``(1 or B, nd, *(N + 1))`` in ``[0, 1]`` (runtime dtype and device, finite,
    padding 0) and return them; ``ValueError``/``TypeError`` naming ``openings`` otherwise."""
    rt = ensure_init()
    shape = staggered_shape(grid)
    if not isinstance(openings, torch.Tensor):
        raise TypeError(f"openings must be a torch.Tensor of face open fractions, got {type(openings).__name__}")
    lead = "1" if batch is None else f"1 or {batch}"
    if openings.ndim != 1 + len(shape) or tuple(openings.shape[1:]) != shape or (
        batch is not None and openings.shape[0] not in (1, batch)
    ):
        raise ValueError(
            f"openings must have shape ({lead}, {', '.join(map(str, shape))}) (the staggered layout of the grid), "
            f"got {tuple(openings.shape)}"
        )
    check_tensor("openings", openings)
    if openings.dtype != rt.dtype or openings.device != torch.device(rt.device):
        raise ValueError(
            f"openings must have the runtime's dtype {rt.dtype} on {rt.device}, got {openings.dtype} on {openings.device}"
        )
    values = openings.detach()
    if bool((values < 0).any()) or bool((values > 1).any()):
        raise ValueError(
            f"openings must lie in [0, 1] (open fractions), got values in [{float(values.min()):.3g}, {float(values.max()):.3g}]"
        )
    if bool((values * (1 - valid_faces(grid, values.dtype, values.device))).abs().max() > 0):
        raise ValueError("openings must be 0 on the padding entries of the staggered layout (use grid.sdf.face_fractions)")
    return openings


def check_seams(openings: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> None:
    """On a periodic axis the faces ``0`` and ``N`` are one face: their openings must agree (an SDF is not
    periodic, so a body across the seam gives two different values and an inconsistent system);
    ``ValueError`` naming ``openings`` otherwise."""
    for axis, (lo, _) in enumerate(boundary.sides):
        if isinstance(lo, Periodic):
            first = openings[:, axis].narrow(axis + 1, 0, 1)
            last = openings[:, axis].narrow(axis + 1, grid.shape[axis], 1)
            gap = float((first - last).detach().abs().max())
            if gap > 1e-12:
                raise ValueError(
                    f"openings differ across the periodic seam of axis {axis} by up to {gap:.3g} (faces 0 and "
                    f"{grid.shape[axis]} are one face): keep the obstacle away from the seam or make its openings agree there"
                )


def check_seam_clearance(exterior: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> None:
    """The wall coefficients of :meth:`~taichi_dp.grid.cut_cells.CutCells.from_sdf` do not look across a
    periodic seam: they are right only where the face centres next to the seam (``exterior``: 1 outside
    the body) agree on both sides of it — a body invariant along the axis (a channel wall), or one kept at
    least a cell away. ``ValueError`` naming ``cut_cells`` otherwise (the no-slip would be lost there)."""
    for axis, (lo, _) in enumerate(boundary.sides):
        if not isinstance(lo, Periodic):
            continue
        n, dim = grid.shape[axis], 2 + axis
        for c in range(grid.ndim):
            faces = exterior[:, c : c + 1].detach()
            # the neighbours across the seam: cell layers 0 and N−1; along the axis itself faces 0 | N−1 and N | 1
            pairs = [(0, n - 1)] if c != axis else [(0, n - 1), (n, 1)]
            for a, b in pairs:
                if not torch.equal(faces.narrow(dim, a, 1), faces.narrow(dim, b, 1)):
                    raise ValueError(
                        f"cut_cells: the obstacle's surface passes within one cell of the periodic seam of axis {axis} "
                        "(face centres on its two sides disagree on inside/outside), where its no-slip wall does "
                        "not wrap: move the obstacle at least one cell away from the seam"
                    )


def open_cells(openings: torch.Tensor, grid: Grid, codes: tuple[int, ...]) -> torch.Tensor:
    """``(B or 1, 1, *spatial)`` mask (runtime dtype): 1 on every cell with an open face that couples it
    to a pressure (an interior or periodic face, or one on a Dirichlet side; ``codes`` are the pressure's
    boundary codes, ``boundary.pressure().codes``): the projection's unknowns, the multigrid operator's
    ``fluid`` (:func:`taichi_dp.ops.multigrid.hierarchy.coupled_faces`). 0 on cells inside an obstacle and
    on cells whose only open faces lie on a wall or inflow side (a body flush with that side): no flow can
    pass through them."""
    theta = openings.detach()
    total = sum(sum(multigrid.coupled_faces(theta[:, c : c + 1], c, grid, codes)) for c in range(grid.ndim))
    return (total > 0).to(openings.dtype)


def _gradient(p: torch.Tensor, grid: Grid, codes: tuple, like: torch.Tensor) -> torch.Tensor:
    """``G p`` on every face (no obstacle: the openings weight it afterwards), with the pressure conditions."""
    ones = torch.ones(1, 1, *grid.shape, dtype=p.dtype, device=p.device)
    return -apply_subtract_gradient(torch.zeros_like(like), p, grid, ones, codes)


def cut_cell_projection(
    v: torch.Tensor,
    grid: Grid,
    boundary: FlowBoundary,
    openings: torch.Tensor,
    *,
    pressure_guess: torch.Tensor | None = None,
    rtol: float = 1e-5,
    max_iter: int = 5000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project a staggered velocity ``(B, nd, *(N + 1))`` with obstacles given by their face ``openings``
    (module docstring); returns ``(v⁺, p)`` with ``p`` ``(B, 1, *spatial)`` scaled by ``Δt/ρ``.

    Args:
        v: staggered velocity, boundary conditions already imposed or not (they are imposed here).
        grid: 2D or 3D grid.
        boundary: the flow boundary (its pressure conditions: outflow ``p = 0``, walls/inflows zero-gradient).
        openings: open fraction of every face ``(1 or B, nd, *(N + 1))`` in ``[0, 1]``, e.g.
            :func:`taichi_dp.grid.sdf.face_fractions`; differentiable.
        pressure_guess: warm start ``(B, 1, *spatial)`` (no gradient).
        rtol: CG tolerance relative to ``‖D(θ v)‖`` (the adjoint's relative to the incoming gradient).
        max_iter: CG iteration limit (a ``NotConvergedWarning`` when reached).
    """
    check_staggered("v", v, grid)
    openings = check_openings(openings, grid, v.shape[0])
    check_seams(openings, grid, boundary)
    if pressure_guess is not None:
        check_tensor("pressure_guess", pressure_guess)
    v = apply_boundary(v, grid, boundary, None)
    return apply_cut_cell_projection(v, grid, boundary, openings, pressure_guess, rtol=rtol, max_iter=max_iter)


def apply_cut_cell_projection(
    v: torch.Tensor,
    grid: Grid,
    boundary: FlowBoundary,
    openings: torch.Tensor,
    pressure_guess: torch.Tensor | None = None,
    *,
    rtol: float = 1e-5,
    max_iter: int = 5000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`cut_cell_projection` without validation; ``v`` has its boundary conditions imposed."""
    codes = boundary.pressure().codes
    unknown = open_cells(openings, grid, codes)
    singular = DIRICHLET not in codes and CONSTANT_OUTSIDE not in codes  # no fixed pressure anywhere

    def project_mean(x: torch.Tensor) -> torch.Tensor:
        return x - fluid_mean(x, unknown) * unknown if singular else x

    def matvec(p: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return -apply_divergence(theta * _gradient(p, grid, codes, v), grid) * unknown + (1 - unknown) * p

    rhs = project_mean(-apply_divergence(openings * v, grid) * unknown)
    guess = None if pressure_guess is None else pressure_guess.detach() * unknown
    solver = multigrid.cut_cell_solver_for(grid, openings, unknown, codes)  # the V-cycle of this very operator
    p = solve_spd(matvec, rhs, (openings,), x0=guess, rtol=rtol, max_iter=max_iter, precond=solver.vcycle)
    p = project_mean(p)
    flowing = (openings.detach() > 0).to(v.dtype) * open_faces(unknown, boundary)  # no face of a dead cell
    return (v - _gradient(p, grid, codes, v)) * flowing, p
