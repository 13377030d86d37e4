"""The operator arrays and the level hierarchy, in torch (once per mask): the fine diagonal and
couplings of ``A``, the Galerkin coarse levels, the dense coarsest inverse, packed into one ``stat``
array with the :class:`.plan.Plan` that describes it.

- hierarchy: every axis halves while all stay even and at least ``min_size``; prolongation ``P`` copies
  a coarse value to its ``2**nd`` children (fluid children only), restriction is ``Pᵀ`` and the coarse operator
  is the Galerkin product ``A_c = Pᵀ A P`` restricted to fluid cells (computed exactly from the fine
  couplings: obstacles are seen by every level);
- coarsest level: dense pseudo-inverse (≤ :data:`MAX_DENSE_COARSE` cells; it also handles the constant
  null space of all-Neumann problems), else :data:`COARSE_SWEEPS` symmetric Gauss–Seidel sweep pairs.
"""

from __future__ import annotations

import itertools
import math

import torch

from ... import bridge
from ...grid import DIRICHLET, PERIODIC, Grid
from ...grid.staggered import cell_faces
from ...runtime import Runtime
from .plan import Plan

MAX_DENSE_COARSE = 1024
"""Largest coarsest level (cells) solved with a dense pseudo-inverse; beyond, Gauss–Seidel sweeps."""

PARALLEL_LEVEL = 1 << 16
"""On the CPU arch, levels with fewer cells per sample always run serial loops (a parallel loop's hand-off
costs more there); on GPUs every level runs parallel loops."""

COARSE_SWEEPS = 20
"""Symmetric Gauss–Seidel sweep pairs on a coarsest level too large for the dense inverse."""


def diagonal(fluid: torch.Tensor, grid: Grid, bc: tuple[int, ...]) -> torch.Tensor:
    """Diagonal of ``A`` ``(B or 1, 1, *spatial)``: per face, the neighbour's fluid weight (interior or across
    a periodic seam), 2 for a Dirichlet boundary face (ghost −p), 0 for a zero-gradient one; over h²;
    1 on solid cells."""
    d = torch.zeros_like(fluid)
    for axis, h in enumerate(grid.spacing):
        dim, lo, hi = 2 + axis, bc[2 * axis], bc[2 * axis + 1]
        n = fluid.shape[dim]
        for code, shift in ((lo, 1), (hi, -1)):  # lower neighbour: shift the mask down by one
            nb = torch.roll(fluid, shift, dims=dim)
            if code != PERIODIC:
                nb.narrow(dim, 0 if shift == 1 else n - 1, 1).fill_(2.0 if code == DIRICHLET else 0.0)
            d = d + nb * (1.0 / h**2)
    return torch.where(fluid > 0.5, d, torch.ones_like(d)).contiguous()


def couplings(fluid: torch.Tensor, grid: Grid, bc: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Lower-face couplings ``(c_0, …, c_{nd−1})`` of ``A`` (``(c_y, c_x)`` in 2D), each ``(B or 1, 1,
    *spatial)``: ``c[i] = w_i w_{i−1} / h²`` along the axis (wrapping on a periodic axis, 0 on the first
    cell otherwise)."""
    out = []
    for axis, h in enumerate(grid.spacing):
        dim = 2 + axis
        c = fluid * torch.roll(fluid, 1, dims=dim) / h**2
        if bc[2 * axis] != PERIODIC:
            c.narrow(dim, 0, 1).zero_()
        out.append(c.contiguous())
    return tuple(out)


def coupled_faces(theta: torch.Tensor, axis: int, grid: Grid, bc: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The open fractions of the faces below and above every cell along ``axis`` as the pressure operator
    weighs them: ``theta`` ``(B or 1, 1, *(N + 1))`` (the axis's component); a face on the domain's side
    counts once across a periodic seam, twice on a Dirichlet side (ghost ``−p``) and not at all on the other
    sides (a wall, inflow or outflow face fixes the velocity, not the pressure). Two ``(B or 1, 1, *N)``."""
    lower, upper = (f.clone() for f in cell_faces(theta, axis, grid.ndim))
    dim, n = 2 + axis, grid.shape[axis]
    for code, faces, end in ((bc[2 * axis], lower, 0), (bc[2 * axis + 1], upper, n - 1)):
        if code != PERIODIC:
            faces.narrow(dim, end, 1).mul_(2.0 if code == DIRICHLET else 0.0)
    return lower, upper


def face_operator(openings: torch.Tensor, grid: Grid, bc: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """``(fluid, d, c_0, …)`` of the cut-cell operator ``A = −D θ G`` (:mod:`taichi_dp.ops.cut_cell`) from the
    face open fractions ``θ`` ``(B or 1, nd, *(N + 1))``: each lower-face coupling is ``θ_face / h²`` (the
    first cell's 0 unless periodic, where it is the seam face's), the diagonal sums the cell's couplings
    (:func:`coupled_faces`: a Dirichlet boundary face adds ``2 θ / h²``, a wall or inflow face nothing),
    ``fluid`` marks the cells with a coupled open face, and the others get the identity row. With a binary
    ``θ`` from a mask these are :func:`diagonal` and :func:`couplings` of that mask. float64."""
    theta = openings.detach().to(torch.float64)
    coup, diag = [], torch.zeros(theta.shape[0], 1, *grid.shape, dtype=torch.float64, device=theta.device)
    for axis, h in enumerate(grid.spacing):
        lower, upper = (f / h**2 for f in coupled_faces(theta[:, axis : axis + 1], axis, grid, bc))
        c, d = lower.clone(), lower + upper
        if bc[2 * axis] != PERIODIC:  # the first cell's lower face has no neighbour
            c.narrow(2 + axis, 0, 1).zero_()
        coup.append(c.contiguous())
        diag = diag + d
    fluid = (diag > 0).to(torch.float64)
    return (fluid, torch.where(fluid > 0.5, diag, torch.ones_like(diag)).contiguous(), *coup)


def _children(x: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """The children of every coarse cell at ``offsets`` (0 or 1 per axis): ``x[..., o0::2, o1::2, …]``."""
    return x[(Ellipsis, *(slice(o, None, 2) for o in offsets))]


def _galerkin(fluid: torch.Tensor, diag: torch.Tensor, *coup: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The coarse level's ``(fluid, d, c_0, …)`` of ``Pᵀ A P`` on fluid cells (P: copy to fluid children).

    A coarse cell's lower face along axis ``a`` is the lower faces of its children at offset 0 along ``a``
    (any offset on the others); the couplings between its own children (at offset 1 along ``a``) cancel
    from the diagonal twice (``Pᵀ A P`` sums the children's rows and columns)."""
    nd = len(coup)
    fc = torch.nn.functional.max_pool3d(fluid, 2) if nd == 3 else torch.nn.functional.max_pool2d(fluid, 2)
    pool = torch.nn.functional.avg_pool3d if nd == 3 else torch.nn.functional.avg_pool2d
    others = list(itertools.product((0, 1), repeat=nd - 1))
    coarse = [sum(_children(c, (*o[:a], 0, *o[a:])) for o in others) for a, c in enumerate(coup)]
    inner = sum(_children(c, (*o[:a], 1, *o[a:])) for a, c in enumerate(coup) for o in others)
    d = pool(fluid * diag, 2) * 2**nd - 2 * inner
    d = torch.where(fc > 0.5, d, torch.ones_like(d))
    return (fc, d, *coarse)


def _dense(diag: torch.Tensor, *coup: torch.Tensor) -> torch.Tensor:
    """The assembled level operator per mask sample, ``(B or 1, n, n)`` (float64)."""
    bm, shape = diag.shape[0], tuple(diag.shape[2:])
    n = math.prod(shape)
    idx = torch.arange(n).view(shape)
    mats = []
    for k in range(bm):
        a = torch.diag(diag[k, 0].flatten().double())
        for axis, c in enumerate(coup):
            nb = torch.roll(idx, 1, axis)
            a.index_put_((idx.flatten(), nb.flatten()), -c[k, 0].flatten().double(), accumulate=True)
            a.index_put_((nb.flatten(), idx.flatten()), -c[k, 0].flatten().double(), accumulate=True)
        mats.append(a)
    return torch.stack(mats)


def build(
    grid: Grid,
    fluid: torch.Tensor,
    bc: tuple[int, ...],
    rt: Runtime,
    *,
    sweeps: int,
    alpha: float,
    min_size: int,
    openings: torch.Tensor | None = None,
) -> tuple[Plan, torch.Tensor, int]:
    """The hierarchy of ``A`` for ``fluid`` ``(B or 1, 1, *spatial)``: ``(plan, stat, n_levels)``, with ``stat``
    flat in the runtime's dtype on the mask's device (layout: :mod:`.plan`). With ``openings`` (face open
    fractions) the fine level is :func:`face_operator`'s cut-cell operator instead, and ``fluid`` must be its
    cells with an open face."""
    if openings is None:
        f = fluid.to(torch.float64)
        levels = [(f, diagonal(f, grid, bc), *couplings(f, grid, bc))]
    else:
        levels = [face_operator(openings, grid, bc)]
        f = levels[0][0]
    shape = grid.shape
    while all(s % 2 == 0 and s // 2 >= min_size for s in shape):
        levels.append(_galerkin(*levels[-1]))
        shape = tuple(s // 2 for s in shape)
    n = math.prod(grid.shape)
    layout, stat_parts, w_off, s_off = [], [], 5 * n, 0
    for lvl, (_, dl, *cl) in enumerate(levels):
        nl = math.prod(dl.shape[2:])
        x_off, rhs_off = (4 * n, n) if lvl == 0 else (w_off, w_off + nl)
        if lvl > 0:
            w_off += 2 * nl
        layout.append((tuple(dl.shape[2:]), x_off, rhs_off, s_off))
        stat_parts += [dl.flatten(1), (1.0 / dl).flatten(1), *(c.flatten(1) for c in cl)]
        s_off += (2 + len(cl)) * nl
    fluid_off = s_off
    stat_parts += [f.flatten(1), f.flatten(1).sum(1, keepdim=True)]
    s_off += n + 1
    last = levels[-1]
    n_low = math.prod(last[1].shape[2:])
    if n_low <= MAX_DENSE_COARSE:
        inv = torch.linalg.pinv(_dense(*last[1:]), hermitian=True)
        stat_parts.append(inv.flatten(1))
        coarse = (0, s_off)
        s_off += n_low * n_low
    else:
        coarse = (1, COARSE_SWEEPS)
    stat = torch.cat(stat_parts, dim=1).to(dtype=rt.dtype, device=fluid.device).contiguous().flatten()
    nd = grid.ndim
    plan = Plan(
        levels=tuple(layout),
        periodic=tuple(bc[2 * a] == PERIODIC for a in range(nd)),
        n=n,
        nw=w_off,
        ns=s_off,
        mask_batched=fluid.shape[0] > 1,
        fluid=fluid_off,
        coarse=coarse,
        sweeps=sweeps,
        alpha=float(alpha),
        singular=DIRICHLET not in bc,
        inv_h=tuple(1.0 / h for h in grid.spacing),
        dirichlet=tuple((bc[2 * a] == DIRICHLET, bc[2 * a + 1] == DIRICHLET) for a in range(nd)),
        parallel_level=PARALLEL_LEVEL if rt.arch == "cpu" and not bridge.FORCE_PARALLEL else 0,
    )
    return plan, stat, len(levels)
