"""Pressure projection of a staggered (MAC) velocity onto divergence-free fields, with obstacles.

With the divergence ``D`` (faces → cells) and the pressure gradient ``G`` (cells → open faces):

    A p = −D v          on fluid cells  (A = −D G: the negative Laplacian, symmetric positive (semi)definite)
    p   = 0             on solid cells  (identity rows, right-hand side 0: decoupled, still SPD)
    v⁺  = v − G p       ⇒  D v⁺ = 0 on every fluid cell

``p`` is the pressure scaled by ``Δt/ρ``. Boundary conditions of the pressure follow from the flow
boundary: outflow sides are Dirichlet ``p = 0`` on the boundary face (ghost ``−p``; ``p = 0`` on the ghost
centre instead with :class:`~taichi_dp.grid.ConstantOutside`, PhiFlow's convention), walls and inflows
are zero-gradient (no flux change), periodic sides wrap. Faces touching a solid cell are closed.
Without an outflow side the constant pressure is a null space: the right-hand side is projected onto
the range (its mean over fluid cells removed) and the returned pressure has zero mean over fluid cells.
Isolated fluid pockets (fluid enclosed by solid) are projected exactly: each is an all-Neumann block
whose right-hand side sums to zero (its faces to the solid are closed), so the solve is consistent;
the pocket's pressure *level* is arbitrary (it follows the start vector), only its gradient is defined
(``tests/test_fluid_pockets.py``).

The Poisson solve is multigrid-preconditioned CG (:mod:`taichi_dp.ops.multigrid`; plain CG with
``preconditioner="none"``), differentiated implicitly: the backward pass solves ``A λ = ḡ`` with a
tolerance relative to the incoming gradient, never differentiating through the iterations. On a fully
periodic box without obstacles ``preconditioner="fft"`` solves exactly by real FFTs instead
(:mod:`taichi_dp.ops.spectral_projection`: same gauge, so the same ``p``; its backward is the same FFT
projection), refused with a ``ValueError`` anywhere else.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti
import torch

from ..bridge import KernelOp
from ..grid import CONSTANT_OUTSIDE, DIRICHLET, Grid
from ..grid.staggered import FlowBoundary, Inflow, apply_boundary, check_staggered
from ..runtime import check_state, check_tensor, ensure_init
from . import multigrid
from ._stencil import replaced
from .linear_solve import solve_spd
from .poisson import apply_poisson, cell_neighbour, inv_h_powers, spatial
from .spectral_projection import apply_spectral_projection, check_spectral

nda = ti.types.ndarray()  # (B, C, *spatial): the rank, hence the grid dimension, is fixed per compiled instance

PRECONDITIONERS = ("multigrid", "none")
"""The CG preconditioners: iterative solves that apply to every boundary and obstacle."""

SPECTRAL = "fft"
"""``preconditioner=SPECTRAL``: no iteration but the exact FFT solve of a fully periodic box without obstacles."""

SOLVERS = (*PRECONDITIONERS, SPECTRAL)
"""Every accepted value of ``preconditioner=``."""


# ---------------------------------------------------------------------------------------- kernels
@ti.kernel
def _divergence(v: nda, out: nda, inv_h0: float, inv_h1: float, inv_h2: float, serial: ti.template()):
    """out[b,0,cell] = Σ_a (v_a[cell + e_a] − v_a[cell]) / h_a: the staggered faces' net outflow per cell."""
    ti.loop_config(serialize=serial)
    for ix in ti.grouped(ti.ndrange(*out.shape)):
        inv_h = ti.static((inv_h0, inv_h1, inv_h2))
        acc = 0.0
        for a in ti.static(range(len(out.shape) - 2)):
            lo = replaced(ix, 1, a)
            hi = lo
            hi[2 + a] += 1
            acc += (v[hi] - v[lo]) * inv_h[a]
        out[ix] = acc


@ti.kernel
def _subtract_gradient(v: nda, p: nda, out: nda, fluid: nda, bc: ti.template(), inv_h0: float, inv_h1: float,
                       inv_h2: float, serial: ti.template()):
    """out = v − w_lo w_hi (p_hi − p_lo) / h on every real face (w: both neighbouring cells fluid); padding
    entries are copied."""
    ti.loop_config(serialize=serial)
    for ix in ti.grouped(ti.ndrange(*v.shape)):
        nd = ti.static(len(v.shape) - 2)
        inv_h = ti.static((inv_h0, inv_h1, inv_h2))
        hi = spatial(ix)
        grad = 0.0
        for a in ti.static(range(nd)):
            if ix[1] == a:
                real = True  # component a's faces are real where every other axis is inside the grid
                for e in ti.static(range(nd)):
                    if ti.static(e != a):
                        real = real and hi[e] < p.shape[2 + e]
                lo = hi
                lo[a] -= 1
                p_lo, w_lo = cell_neighbour(p, fluid, ix[0], lo, bc)
                p_hi, w_hi = cell_neighbour(p, fluid, ix[0], hi, bc)
                grad = ti.select(real, w_lo * w_hi * (p_hi - p_lo) * inv_h[a], 0.0)
        out[ix] = v[ix] - grad


_DIVERGENCE = KernelOp(_divergence, 1, 1, "divergence")
_SUBTRACT_GRADIENT = KernelOp(_subtract_gradient, 2, 1, "subtract_gradient")


# ---------------------------------------------------------------------------------- torch-facing
def divergence(v: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Cell-centred divergence ``(B, 1, *spatial)`` of a staggered velocity ``(B, nd, *(N + 1))``."""
    check_staggered("v", v, grid)
    return apply_divergence(v, grid)


def apply_divergence(v: torch.Tensor, grid: Grid) -> torch.Tensor:
    """:func:`divergence` without validation."""
    return _DIVERGENCE((v,), ((v.shape[0], 1, *grid.shape),), inv_h_powers(grid, 1))[0]


def project(
    v: torch.Tensor,
    grid: Grid,
    boundary: FlowBoundary,
    fluid: torch.Tensor | None = None,
    *,
    pressure_guess: torch.Tensor | None = None,
    rtol: float = 1e-5,
    max_iter: int = 5000,
    preconditioner: str = "multigrid",
    close_solid_faces: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project a staggered velocity onto divergence-free fields (see module docstring).

    Args:
        v: ``(B, nd, *(N + 1))`` staggered velocity (layout in :mod:`taichi_dp.grid.staggered`).
        grid: the 2D or 3D grid.
        boundary: flow boundary conditions (walls, inflow, outflow, periodic).
        fluid: optional ``(B or 1, 1, *spatial)`` mask, 1 = fluid, 0 = solid obstacle (bool or float).
        pressure_guess: ``(B, 1, *spatial)`` warm start for the Poisson solve (e.g. the previous step's).
        rtol: CG tolerance relative to ``‖D v‖`` (and, in backward, to the incoming gradient).
        max_iter: CG iteration cap (a ``NotConvergedWarning`` with the residual when reached).
        preconditioner: ``"multigrid"`` (default: the fused multigrid-preconditioned CG of
            :mod:`taichi_dp.ops.multigrid`, divergence and gradient included, with a hand-written adjoint;
            measured at rtol 1e-3 on the karman scene: 5–6 iterations from 32×64 to 256×512, 5 on a square
            channel at 1024², against 144–860 for plain CG) or ``"none"`` (plain CG on torch tensors, the
            reference path; the only one for pressure boundaries with
            :class:`~taichi_dp.grid.ConstantOutside` sides and for ``close_solid_faces=False``) or ``"fft"``
            (not an iteration: the exact spectral solve of :mod:`taichi_dp.ops.spectral_projection`, for a
            boundary periodic on every side and no obstacle, i.e. ``fluid`` ``None`` or all fluid; a
            ``ValueError`` otherwise; ``rtol``, ``max_iter`` and ``pressure_guess`` are then unused).
        close_solid_faces: ``True`` (default) sets faces touching a solid cell to 0 first (static
            obstacles). ``False`` leaves them as given: their flux still enters the fluid cell's
            divergence, the pressure gradient does not act on them (PhiFlow's ``make_incompressible``
            after its soft obstacle mask, :mod:`taichi_dp.solvers.phiflow_navier_stokes`).

    Returns:
        ``(v⁺, p)``: the projected velocity with the boundary conditions imposed, and the pressure
        ``(B, 1, *spatial)``. Both are differentiable w.r.t. ``v``.
    """
    check_staggered("v", v, grid)
    if not isinstance(boundary, FlowBoundary):
        raise TypeError(f"boundary must be a FlowBoundary, got {type(boundary).__name__}")
    check_flux_balance(grid, boundary)
    mask = fluid_mask(fluid, grid, v.shape[0])
    if pressure_guess is not None:
        check_state("pressure_guess", pressure_guess, grid.shape, channels=1, batch=v.shape[0])
    if preconditioner not in SOLVERS:
        raise ValueError(f"preconditioner must be one of {SOLVERS}, got {preconditioner!r}")
    if not isinstance(close_solid_faces, bool):
        raise TypeError(f"close_solid_faces must be a bool, got {type(close_solid_faces).__name__} {close_solid_faces!r}")
    return apply_projection(
        v,
        grid,
        boundary,
        mask,
        pressure_guess,
        rtol=rtol,
        max_iter=max_iter,
        preconditioner=preconditioner,
        close_solid_faces=close_solid_faces,
    )


def check_flux_balance(grid: Grid, boundary: FlowBoundary) -> None:
    """Without an outflow side, the inflows must balance (net volume flux 0), or no divergence-free
    field exists; raise ``ValueError`` naming the net flux otherwise."""
    if boundary.has_outflow:
        return
    net = 0.0
    for axis, (lo, hi) in enumerate(boundary.sides):
        net += sum(sign * side.flux(grid, axis) for sign, side in ((1, lo), (-1, hi)) if isinstance(side, Inflow))
    if abs(net) > 1e-12:
        raise ValueError(
            f"boundary {boundary.sides} lets a net volume flux of {net:g} into the domain and has no Outflow side: "
            "no divergence-free velocity exists; add an Outflow side or balance the inflows"
        )


def fluid_mask(fluid: torch.Tensor | None, grid: Grid, batch: int) -> torch.Tensor:
    """Validate an obstacle mask and return it as a ``(B or 1, 1, *spatial)`` 0/1 tensor of the runtime dtype
    (all fluid when ``None``; the input itself when it already is one). Raises ``ValueError`` for a
    wrong shape or a sample with no fluid cell."""
    rt = ensure_init()
    shape = tuple(grid.shape)
    if fluid is None:
        return torch.ones(1, 1, *shape, dtype=rt.dtype, device=rt.device)
    if not isinstance(fluid, torch.Tensor):
        raise TypeError(f"fluid must be a torch.Tensor mask, got {type(fluid).__name__}")
    if fluid.ndim != 2 + len(shape) or fluid.shape[1] != 1 or tuple(fluid.shape[2:]) != shape or fluid.shape[0] not in (1, batch):
        expected = ", ".join(str(n) for n in shape)
        raise ValueError(f"fluid must have shape (1 or {batch}, 1, {expected}) to match the velocity, got {tuple(fluid.shape)}")
    mask = (fluid.detach() > 0.5).to(dtype=rt.dtype).contiguous()
    if fluid.dtype == mask.dtype and fluid.device == mask.device and not fluid.requires_grad and torch.equal(fluid, mask):
        mask = fluid  # already a clean mask: keep the same tensor (derived caches, e.g. multigrid, key on it)
    check_tensor("fluid", mask)
    empty = mask.flatten(1).sum(1) == 0
    if bool(empty.any()):
        raise ValueError(f"fluid mask has no fluid cell in sample(s) {torch.nonzero(empty).flatten().tolist()}")
    return mask


def apply_projection(
    v: torch.Tensor,
    grid: Grid,
    boundary: FlowBoundary,
    fluid: torch.Tensor,
    pressure_guess: torch.Tensor | None = None,
    *,
    rtol: float = 1e-5,
    max_iter: int = 5000,
    preconditioner: str = "multigrid",
    close_solid_faces: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`project` without validation; ``fluid`` is a ``(B or 1, 1, *spatial)`` runtime-dtype mask.
    ``preconditioner="fft"`` checks that the box is fully periodic and ``fluid`` all ones (``ValueError``
    naming what is not)."""
    if preconditioner == SPECTRAL:  # exact: rtol, max_iter and the warm start do not apply
        check_spectral(grid, boundary, fluid)
        return apply_spectral_projection(apply_boundary(v, grid, boundary, None), grid)
    pbc = boundary.pressure()
    v = apply_boundary(v, grid, boundary, fluid if close_solid_faces else None)
    guess = None if pressure_guess is None else pressure_guess.detach()
    if preconditioner == "multigrid" and (CONSTANT_OUTSIDE in pbc.codes or not close_solid_faces):
        raise ValueError(  # the fused multigrid path (and its adjoint) assumes closed faces and no such sides
            "preconditioner='multigrid' supports neither ConstantOutside pressure sides nor close_solid_faces=False "
            f"(boundary {type(boundary).__name__}, close_solid_faces={close_solid_faces}); use preconditioner='none'"
        )
    if preconditioner == "multigrid":  # divergence, solve and gradient fused, with a hand-written adjoint
        return multigrid.project(multigrid.solver_for(grid, fluid, pbc.codes), v, guess, rtol=rtol, max_iter=max_iter)
    p = _plain_cg(-apply_divergence(v, grid), fluid, grid, pbc.codes, guess, rtol, max_iter)
    return apply_subtract_gradient(v, p, grid, fluid, pbc.codes), p


def apply_subtract_gradient(
    v: torch.Tensor, p: torch.Tensor, grid: Grid, fluid: torch.Tensor, codes: tuple
) -> torch.Tensor:
    """``v − G p`` on the open faces (faces beside a solid cell or a closed side keep ``v``), without
    validation: ``p`` ``(B, 1, *spatial)``, ``fluid`` the runtime-dtype mask, ``codes`` the pressure
    boundary codes of ``boundary.pressure()``. Differentiable in ``v`` and ``p``."""
    (out,) = _SUBTRACT_GRADIENT((v, p), (v.shape,), (fluid, codes, *inv_h_powers(grid, 1)))
    return out


def _plain_cg(
    rhs: torch.Tensor, fluid: torch.Tensor, grid: Grid, codes: tuple, guess: torch.Tensor | None, rtol: float, max_iter: int
) -> torch.Tensor:
    """The unpreconditioned reference path: torch-side CG (:func:`~taichi_dp.ops.linear_solve.solve_spd`)
    on ``A`` applied by a Taichi kernel, with the same masking and null-space handling."""
    rhs = rhs * fluid
    singular = DIRICHLET not in codes and CONSTANT_OUTSIDE not in codes  # a fixed outside value anchors p
    if singular:
        rhs = rhs - fluid_mean(rhs, fluid) * fluid

    def matvec(p: torch.Tensor) -> torch.Tensor:
        return apply_poisson(p, fluid, grid, codes)

    p = solve_spd(matvec, rhs, (), x0=None if guess is None else guess * fluid, rtol=rtol, max_iter=max_iter)
    if singular:
        p = (p - fluid_mean(p, fluid)) * fluid
    return p


def fluid_mean(x: torch.Tensor, fluid: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``x`` over fluid cells, shape ``(B, 1, 1, …)``."""
    f = fluid.expand_as(x)
    return ((x * f).flatten(1).sum(1) / f.flatten(1).sum(1)).view(-1, *([1] * (x.ndim - 1)))
