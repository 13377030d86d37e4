"""The operator arrays and the level hierarchy, in torch (once per mask): the fine diagonal and
couplings of ``A``, the Galerkin coarse levels, the dense coarsest inverse, packed into one ``stat``
array with the :class:`.plan.Plan` that describes it.

- hierarchy: both axes halve while they stay even and at least ``min_size``; prolongation ``P`` copies a
  coarse value to its four children (fluid children only), restriction is ``Pᵀ`` and the coarse operator
  is the Galerkin product ``A_c = Pᵀ A P`` restricted to fluid cells (computed exactly from the fine
  couplings: obstacles are seen by every level);
- coarsest level: dense pseudo-inverse (≤ :data:`MAX_DENSE_COARSE` cells; it also handles the constant
  null space of all-Neumann problems), else :data:`COARSE_SWEEPS` symmetric Gauss–Seidel sweep pairs.
"""

from __future__ import annotations

import torch

from ... import bridge
from ...grid import DIRICHLET, PERIODIC, Grid
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
    """Diagonal of ``A`` ``(B or 1, 1, H, W)``: per face, the neighbour's fluid weight (interior or across a
    periodic seam), 2 for a Dirichlet boundary face (ghost −p), 0 for a zero-gradient one; over h²;
    1 on solid cells."""
    hy, hx = grid.spacing
    d = torch.zeros_like(fluid)
    for dim, (lo, hi), inv_h2 in ((2, bc[0:2], 1.0 / hy**2), (3, bc[2:4], 1.0 / hx**2)):
        n = fluid.shape[dim]
        for code, shift in ((lo, 1), (hi, -1)):  # lower neighbour: shift the mask down by one
            nb = torch.roll(fluid, shift, dims=dim)
            if code != PERIODIC:
                nb.narrow(dim, 0 if shift == 1 else n - 1, 1).fill_(2.0 if code == DIRICHLET else 0.0)
            d = d + nb * inv_h2
    return torch.where(fluid > 0.5, d, torch.ones_like(d)).contiguous()


def couplings(fluid: torch.Tensor, grid: Grid, bc: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Lower-face couplings ``(c_y, c_x)`` of ``A``, each ``(B or 1, 1, H, W)``: ``c[i] = w_i w_{i−1} / h²``
    (wrapping on a periodic axis, 0 on the first row/column otherwise)."""
    out = []
    for dim, code, h in ((2, bc[0], grid.spacing[0]), (3, bc[2], grid.spacing[1])):
        c = fluid * torch.roll(fluid, 1, dims=dim) / h**2
        if code != PERIODIC:
            c.narrow(dim, 0, 1).zero_()
        out.append(c.contiguous())
    return tuple(out)


def _galerkin(fluid: torch.Tensor, diag: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The coarse level's ``(fluid, d, c_y, c_x)`` of ``Pᵀ A P`` on fluid cells (P: copy to fluid children)."""
    fc = torch.nn.functional.max_pool2d(fluid, 2)
    cyc = cy[..., 0::2, 0::2] + cy[..., 0::2, 1::2]  # the coarse cell's lower y face: its bottom children's
    cxc = cx[..., 0::2, 0::2] + cx[..., 1::2, 0::2]
    inner = cy[..., 1::2, 0::2] + cy[..., 1::2, 1::2] + cx[..., 0::2, 1::2] + cx[..., 1::2, 1::2]
    d = torch.nn.functional.avg_pool2d(fluid * diag, 2) * 4 - 2 * inner
    d = torch.where(fc > 0.5, d, torch.ones_like(d))
    return fc, d, cyc, cxc


def _dense(diag: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """The assembled level operator per mask sample, ``(B or 1, n, n)`` (float64)."""
    bm, _, h, w = diag.shape
    n = h * w
    idx = torch.arange(n).view(h, w)
    mats = []
    for k in range(bm):
        a = torch.diag(diag[k, 0].flatten().double())
        for c, nb in ((cy[k, 0], torch.roll(idx, 1, 0)), (cx[k, 0], torch.roll(idx, 1, 1))):
            a.index_put_((idx.flatten(), nb.flatten()), -c.flatten().double(), accumulate=True)
            a.index_put_((nb.flatten(), idx.flatten()), -c.flatten().double(), accumulate=True)
        mats.append(a)
    return torch.stack(mats)


def build(
    grid: Grid, fluid: torch.Tensor, bc: tuple[int, ...], rt: Runtime, *, sweeps: int, alpha: float, min_size: int
) -> tuple[Plan, torch.Tensor, int]:
    """The hierarchy of ``A`` for ``fluid`` ``(B or 1, 1, H, W)``: ``(plan, stat, n_levels)``, with ``stat``
    flat in the runtime's dtype on the mask's device (layout: :mod:`.plan`)."""
    f = fluid.to(torch.float64)
    d = diagonal(f, grid, bc)
    cy, cx = couplings(f, grid, bc)
    levels = [(f, d, cy, cx)]
    h, w = grid.shape
    while h % 2 == 0 and w % 2 == 0 and h // 2 >= min_size and w // 2 >= min_size:
        levels.append(_galerkin(*levels[-1]))
        h, w = h // 2, w // 2
    n = grid.shape[0] * grid.shape[1]
    layout, stat_parts, w_off, s_off = [], [], 5 * n, 0
    for lvl, (_, dl, cyl, cxl) in enumerate(levels):
        lh, lw = dl.shape[2:]
        nl = lh * lw
        x_off, rhs_off = (4 * n, n) if lvl == 0 else (w_off, w_off + nl)
        if lvl > 0:
            w_off += 2 * nl
        layout.append((lh, lw, x_off, rhs_off, s_off))
        stat_parts += [dl.flatten(1), (1.0 / dl).flatten(1), cyl.flatten(1), cxl.flatten(1)]
        s_off += 4 * nl
    fluid_off = s_off
    stat_parts += [f.flatten(1), f.flatten(1).sum(1, keepdim=True)]
    s_off += n + 1
    last = levels[-1]
    n_low = last[1].shape[2] * last[1].shape[3]
    if n_low <= MAX_DENSE_COARSE:
        inv = torch.linalg.pinv(_dense(*last[1:]), hermitian=True)
        stat_parts.append(inv.flatten(1))
        coarse = (0, s_off)
        s_off += n_low * n_low
    else:
        coarse = (1, COARSE_SWEEPS)
    stat = torch.cat(stat_parts, dim=1).to(dtype=rt.dtype, device=fluid.device).contiguous().flatten()
    plan = Plan(
        levels=tuple(layout),
        periodic=(bc[0] == PERIODIC, bc[2] == PERIODIC),
        n=n,
        nw=w_off,
        ns=s_off,
        mask_batched=fluid.shape[0] > 1,
        fluid=fluid_off,
        coarse=coarse,
        sweeps=sweeps,
        alpha=float(alpha),
        singular=DIRICHLET not in bc,
        inv_h=(1.0 / grid.spacing[0], 1.0 / grid.spacing[1]),
        dirichlet=((bc[0] == DIRICHLET, bc[1] == DIRICHLET), (bc[2] == DIRICHLET, bc[3] == DIRICHLET)),
        parallel_level=PARALLEL_LEVEL if rt.arch == "cpu" and not bridge.FORCE_PARALLEL else 0,
    )
    return plan, stat, len(levels)
