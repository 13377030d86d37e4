"""Geometric multigrid V-cycle for the masked pressure Poisson operator, used as a CG preconditioner.

The operator is :func:`taichi_dp.ops.pressure` 's ``A`` (−Laplacian on fluid cells with face weights from
the fluid mask, identity on solid cells). The hierarchy halves both axes while they stay even and at
least 4 cells; the coarse operator is the same discretisation on the coarse grid (spacing doubled,
same boundary codes, a coarse cell is fluid when any of its four children is). Transfers are
cell-centred: prolongation ``P`` copies a coarse value to its four children, restriction is
``R = Pᵀ / 8``, which makes ``A_c`` match the Galerkin product ``R A P`` on interior cells.

Smoothing is damped Jacobi (ω = 0.8), ``ν`` sweeps before and the same ``ν`` after the coarse
correction, and the coarsest level is solved exactly (pseudo-inverse, which also handles the constant
null space of all-Neumann problems). The V-cycle is therefore a fixed symmetric linear operator, as
preconditioned CG requires. It runs forward only: the projection's backward pass is another
preconditioned solve, never a differentiation of these kernels.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

from collections import OrderedDict
from dataclasses import dataclass

import taichi as ti
import torch

from ..bridge import launch, serial_for
from ..grid import DIRICHLET, PERIODIC, Grid
from ._stencil import ghost
from .poisson import apply_poisson

nd2 = ti.types.ndarray(ndim=2)
nd4 = ti.types.ndarray(ndim=4)


@ti.func
def _a_flat(work: ti.template(), stat: ti.template(), b, i, j, lv: ti.template(), bc: ti.template()):
    """``(A x)`` at cell ``(i, j)`` of a level stored flat: ``x`` at ``work[b, lv.x + i·w + j]``, the fluid
    mask at ``stat[·, lv.fluid + i·w + j]``; same rule as :func:`taichi_dp.ops.poisson.apply_a_at`."""
    h, w = ti.static(lv[0], lv[1])
    bm = b % stat.shape[0]
    centre = work[b, lv[4] + i * w + j]
    lap = 0.0
    for s in ti.static(range(4)):
        ni = i + ti.static((-1, 1, 0, 0)[s])
        nj = j + ti.static((0, 0, -1, 1)[s])
        ji, _, si = ghost(ni, h, bc[0], bc[1], 0.0, 0.0)
        jk, _, sk = ghost(nj, w, bc[2], bc[3], 0.0, 0.0)
        inside_i = 0 <= ni < h
        inside_k = 0 <= nj < w
        if ti.static(bc[0] == PERIODIC):
            inside_i = True
        if ti.static(bc[2] == PERIODIC):
            inside_k = True
        weight = ti.select(inside_i and inside_k, stat[bm, lv[7] + ji * w + jk], 1.0)
        lap += weight * (centre - si * sk * work[b, lv[4] + ji * w + jk]) * ti.static(lv[2] if s < 2 else lv[3])
    return ti.select(stat[bm, lv[7] + i * w + j] > 0.5, lap, centre)


@ti.func
def _smooth_flat(work: ti.template(), stat: ti.template(), lv: ti.template(), bc: ti.template(), omega, serial: ti.template()):
    """One damped Jacobi sweep on a level: tmp = x + ω (rhs − A x) / diag, then x = tmp."""
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(work.shape[0], lv[0], lv[1]):
        k = i * lv[1] + j
        ax = _a_flat(work, stat, b, i, j, lv, bc)
        work[b, lv[5] + k] = work[b, lv[4] + k] + omega * (work[b, lv[6] + k] - ax) / stat[b % stat.shape[0], lv[8] + k]
    ti.loop_config(serialize=serial)
    for b, k in ti.ndrange(work.shape[0], lv[0] * lv[1]):
        work[b, lv[4] + k] = work[b, lv[5] + k]


@ti.kernel
def _vcycle(
    r: nd4,
    z: nd4,
    work: nd2,
    stat: nd2,
    plan: ti.template(),
    omega: float,
    serial: ti.template(),
):
    """The whole V-cycle ``z = M⁻¹ r`` in one launch. Levels live flat in ``work`` (x, tmp, rhs per
    level) and ``stat`` (fluid mask, diagonal, coarsest inverse); ``plan.layout`` holds each level's
    ``(h, w, 1/h_y², 1/h_x², x, tmp, rhs, fluid, diag)`` offsets as compile-time constants. Top-level loops
    run in order, so later loops see what earlier ones wrote (forward only: never differentiated)."""
    layout, coarse, bc, sweeps = ti.static(plan.layout, plan.coarse, plan.bc, plan.sweeps)
    top = ti.static(layout[0])
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(r.shape[0], top[0], top[1]):
        work[b, top[6] + i * top[1] + j] = r[b, 0, i, j]
    for lvl in ti.static(range(len(layout) - 1)):  # descend: pre-smooth, restrict the residual
        lv, nx = ti.static(layout[lvl], layout[lvl + 1])
        ti.loop_config(serialize=serial)
        for b, k in ti.ndrange(work.shape[0], lv[0] * lv[1]):  # first sweep from x = 0
            work[b, lv[4] + k] = omega * work[b, lv[6] + k] / stat[b % stat.shape[0], lv[8] + k]
        for _ in ti.static(range(sweeps - 1)):
            _smooth_flat(work, stat, lv, bc, omega, serial)
        ti.loop_config(serialize=serial)
        for b, i, j in ti.ndrange(work.shape[0], nx[0], nx[1]):
            acc = 0.0
            for di, dj in ti.static(ti.ndrange(2, 2)):
                ci, cj = 2 * i + di, 2 * j + dj
                acc += work[b, lv[6] + ci * lv[1] + cj] - _a_flat(work, stat, b, ci, cj, lv, bc)
            work[b, nx[6] + i * nx[1] + j] = 0.125 * acc
    low = ti.static(layout[len(layout) - 1])
    n = ti.static(low[0] * low[1])
    if ti.static(coarse[0] == 0):  # exact: x = M⁻¹ rhs with the stored pseudo-inverse
        ti.loop_config(serialize=serial)
        for b, k in ti.ndrange(work.shape[0], n):
            acc = 0.0
            for m in range(n):
                acc += stat[b % stat.shape[0], coarse[1] + k * n + m] * work[b, low[6] + m]
            work[b, low[4] + k] = acc
    else:  # too large for a dense inverse: many Jacobi sweeps from x = 0 (still a symmetric operator)
        ti.loop_config(serialize=serial)
        for b, k in ti.ndrange(work.shape[0], n):
            work[b, low[4] + k] = omega * work[b, low[6] + k] / stat[b % stat.shape[0], low[8] + k]
        for _ in ti.static(range(coarse[1] - 1)):
            _smooth_flat(work, stat, low, bc, omega, serial)
    for lvl in ti.static(range(len(layout) - 2, -1, -1)):  # ascend: prolong the correction, post-smooth
        lv, nx = ti.static(layout[lvl], layout[lvl + 1])
        ti.loop_config(serialize=serial)
        for b, i, j in ti.ndrange(work.shape[0], lv[0], lv[1]):
            work[b, lv[4] + i * lv[1] + j] += work[b, nx[4] + (i // 2) * nx[1] + j // 2]
        for _ in ti.static(range(sweeps)):
            _smooth_flat(work, stat, lv, bc, omega, serial)
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(z.shape[0], top[0], top[1]):
        z[b, 0, i, j] = work[b, top[4] + i * top[1] + j]


def diagonal(fluid: torch.Tensor, grid: Grid, bc: tuple[int, ...]) -> torch.Tensor:
    """Diagonal of ``A`` ``(B or 1, 1, H, W)``: per face, the neighbour's fluid weight (interior or across a
    periodic seam), 2 for a Dirichlet boundary face (ghost −p), 0 for a zero-gradient one; over h²."""
    hy, hx = grid.spacing
    d = torch.zeros_like(fluid)
    for dim, (lo, hi), inv_h2 in ((2, bc[0:2], 1.0 / hy**2), (3, bc[2:4], 1.0 / hx**2)):
        n = fluid.shape[dim]
        for code, shift in ((lo, 1), (hi, -1)):  # lower neighbour: shift the mask down by one
            if code == PERIODIC:
                nb = torch.roll(fluid, shift, dims=dim)
            else:
                edge = 2.0 if code == DIRICHLET else 0.0
                nb = torch.roll(fluid, shift, dims=dim)
                idx = 0 if shift == 1 else n - 1
                nb.narrow(dim, idx, 1).fill_(edge)
            d = d + nb * inv_h2
    return torch.where(fluid > 0.5, d, torch.ones_like(d)).contiguous()


def _coarsen_mask(fluid: torch.Tensor) -> torch.Tensor:
    """A coarse cell is fluid when any of its four children is."""
    return torch.nn.functional.max_pool2d(fluid, 2).contiguous()


@dataclass(frozen=True)
class _Plan:
    """Compile-time description of a V-cycle: per-level ``layout`` tuples, the coarse solve, boundary
    codes, sweeps. One hashable ``ti.template()`` argument (Taichi hashes it instead of walking nested
    tuples on every launch, which cost ~3 ms per karman step)."""

    layout: tuple
    coarse: tuple
    bc: tuple
    sweeps: int


@dataclass
class _Level:
    grid: Grid
    fluid: torch.Tensor
    diag: torch.Tensor


MAX_DENSE_COARSE = 1024
"""Largest coarsest level (cells) solved with a dense pseudo-inverse; beyond, Jacobi sweeps."""


class Multigrid:
    """A V-cycle preconditioner ``z = M⁻¹ r`` for the masked Poisson operator on ``grid``, one kernel
    launch per application.

    Args:
        grid: the fine 2D grid; fluid: ``(B or 1, 1, H, W)`` mask; bc: pressure boundary codes.
        sweeps: Jacobi sweeps before and after each coarse correction; omega: Jacobi damping.
        min_size: stop coarsening when an axis would drop below this many cells (or become odd).
    """

    def __init__(
        self, grid: Grid, fluid: torch.Tensor, bc: tuple[int, ...], *, sweeps: int = 2, omega: float = 0.8, min_size: int = 4
    ) -> None:
        self.sweeps, self.omega, self.bc = sweeps, omega, bc
        self.levels: list[_Level] = []
        g, f = grid, fluid
        while True:
            self.levels.append(_Level(g, f, diagonal(f, g, bc)))
            h, w = g.shape
            if h % 2 or w % 2 or h // 2 < min_size or w // 2 < min_size:
                break
            g, f = g.coarsen(2), _coarsen_mask(f)
        # Flat storage: per level x, tmp, rhs in the work buffer; fluid, diag (+ coarsest inverse) in stat.
        layout, work_off, stat_parts, stat_off = [], 0, [], 0
        for lvl in self.levels:
            (h, w), (hy, hx), n = lvl.grid.shape, lvl.grid.spacing, lvl.grid.shape[0] * lvl.grid.shape[1]
            layout.append((h, w, 1.0 / hy**2, 1.0 / hx**2, work_off, work_off + n, work_off + 2 * n, stat_off, stat_off + n))
            work_off += 3 * n
            stat_parts += [lvl.fluid.flatten(1), lvl.diag.flatten(1)]
            stat_off += 2 * n
        low = self.levels[-1]
        n_low = low.grid.shape[0] * low.grid.shape[1]
        if n_low <= MAX_DENSE_COARSE:
            stat_parts.append(self._dense_inverse(low).flatten(1))
            self.coarse = (0, stat_off)
        else:
            self.coarse = (1, 40)  # Jacobi sweeps on a large coarsest level
        self.plan = _Plan(tuple(layout), self.coarse, bc, sweeps)
        self.work_size = work_off
        self.stat = torch.cat(stat_parts, dim=1).contiguous()

    def _dense_inverse(self, level: _Level) -> torch.Tensor:
        """Pseudo-inverse of the coarsest operator per mask sample, ``(B or 1, n, n)``."""
        h, w = level.grid.shape
        n = h * w
        eye = torch.eye(n, dtype=level.fluid.dtype, device=level.fluid.device).reshape(n, 1, h, w)
        mats = [
            torch.linalg.pinv(
                apply_poisson(eye, level.fluid[k : k + 1].contiguous(), level.grid, self.bc).reshape(n, n).T, hermitian=True
            )
            for k in range(level.fluid.shape[0])
        ]
        return torch.stack(mats)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        """Apply the V-cycle to a residual ``(B, 1, H, W)``."""
        r = r.contiguous()
        z = torch.empty_like(r)
        work = r.new_empty(r.shape[0], self.work_size)
        launch(_vcycle, r, z, work, self.stat, self.plan, self.omega, serial_for((r.shape,)))
        return z


_CACHE: "OrderedDict[tuple, tuple[torch.Tensor, int, Multigrid]]" = OrderedDict()


def multigrid_for(grid: Grid, fluid: torch.Tensor, bc: tuple[int, ...]) -> Multigrid:
    """A cached :class:`Multigrid` for this grid, boundary and mask tensor. The cache holds the mask
    tensor itself (so its identity cannot be reused by another tensor) and its version counter (so an
    in-place edit rebuilds the hierarchy); it is derived data, never state that changes results."""
    key = (grid, bc, id(fluid))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is fluid and hit[1] == fluid._version:
        _CACHE.move_to_end(key)
        return hit[2]
    mg = Multigrid(grid, fluid, bc)
    _CACHE[key] = (fluid, fluid._version, mg)
    while len(_CACHE) > 8:
        _CACHE.popitem(last=False)
    return mg
