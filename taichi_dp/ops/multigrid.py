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

from ..bridge import _serial
from ..grid import DIRICHLET, PERIODIC, Grid
from .poisson import apply_a_at, apply_poisson

nd4 = ti.types.ndarray(ndim=4)


@ti.func
def _jacobi_at(
    x: ti.template(),
    rhs: ti.template(),
    diag: ti.template(),
    fluid: ti.template(),
    b,
    i,
    j,
    bc: ti.template(),
    inv_hy2,
    inv_hx2,
    omega,
):
    """Damped Jacobi update at one cell: x + ω (rhs − A x) / diag."""
    ax = apply_a_at(x, fluid, b, i, j, bc, inv_hy2, inv_hx2)
    return x[b, 0, i, j] + omega * (rhs[b, 0, i, j] - ax) / diag[b % diag.shape[0], 0, i, j]


@ti.kernel
def _down(
    rhs: nd4,
    x: nd4,
    tmp: nd4,
    coarse_rhs: nd4,
    diag: nd4,
    fluid: nd4,
    bc: ti.template(),
    inv_hy2: float,
    inv_hx2: float,
    omega: float,
    sweeps: ti.template(),
    serial: ti.template(),
):
    """Descending half of a V-cycle on one level, in one launch: ``sweeps`` damped Jacobi sweeps from
    x = 0, then the restricted residual ``coarse_rhs = R (rhs − A x)`` with ``R = Pᵀ/8``.
    Forward only (never differentiated), so its loops may read what earlier loops wrote."""
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(x.shape[0], x.shape[2], x.shape[3]):  # first sweep from x = 0
        x[b, 0, i, j] = omega * rhs[b, 0, i, j] / diag[b % diag.shape[0], 0, i, j]
    for _ in ti.static(range(sweeps - 1)):
        ti.loop_config(serialize=serial)
        for b, i, j in ti.ndrange(x.shape[0], x.shape[2], x.shape[3]):
            tmp[b, 0, i, j] = _jacobi_at(x, rhs, diag, fluid, b, i, j, bc, inv_hy2, inv_hx2, omega)
        ti.loop_config(serialize=serial)
        for b, i, j in ti.ndrange(x.shape[0], x.shape[2], x.shape[3]):
            x[b, 0, i, j] = tmp[b, 0, i, j]
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(coarse_rhs.shape[0], coarse_rhs.shape[2], coarse_rhs.shape[3]):
        acc = 0.0
        for di, dj in ti.static(ti.ndrange(2, 2)):
            ci, cj = 2 * i + di, 2 * j + dj
            acc += rhs[b, 0, ci, cj] - apply_a_at(x, fluid, b, ci, cj, bc, inv_hy2, inv_hx2)
        coarse_rhs[b, 0, i, j] = 0.125 * acc


@ti.kernel
def _up(
    rhs: nd4,
    x: nd4,
    tmp: nd4,
    coarse_x: nd4,
    diag: nd4,
    fluid: nd4,
    bc: ti.template(),
    inv_hy2: float,
    inv_hx2: float,
    omega: float,
    sweeps: ti.template(),
    serial: ti.template(),
):
    """Ascending half of a V-cycle on one level, in one launch: ``x += P coarse_x`` (each coarse value
    to its four children), then ``sweeps`` damped Jacobi sweeps."""
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(x.shape[0], x.shape[2], x.shape[3]):
        x[b, 0, i, j] += coarse_x[b, 0, i // 2, j // 2]
    for _ in ti.static(range(sweeps)):
        ti.loop_config(serialize=serial)
        for b, i, j in ti.ndrange(x.shape[0], x.shape[2], x.shape[3]):
            tmp[b, 0, i, j] = _jacobi_at(x, rhs, diag, fluid, b, i, j, bc, inv_hy2, inv_hx2, omega)
        ti.loop_config(serialize=serial)
        for b, i, j in ti.ndrange(x.shape[0], x.shape[2], x.shape[3]):
            x[b, 0, i, j] = tmp[b, 0, i, j]


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


@dataclass
class _Level:
    grid: Grid
    fluid: torch.Tensor
    diag: torch.Tensor
    consts: tuple


class Multigrid:
    """A V-cycle preconditioner ``z = M⁻¹ r`` for the masked Poisson operator on ``grid``.

    Args:
        grid: the fine 2D grid; fluid: ``(B or 1, 1, H, W)`` mask; bc: pressure boundary codes.
        sweeps: Jacobi sweeps before and after each coarse correction; omega: Jacobi damping.
        min_size: stop coarsening when an axis would drop below this many cells (or become odd).
    """

    def __init__(
        self, grid: Grid, fluid: torch.Tensor, bc: tuple[int, ...], *, sweeps: int = 2, omega: float = 0.8, min_size: int = 4
    ) -> None:
        self.sweeps, self.omega = sweeps, omega
        self.levels: list[_Level] = []
        g, f = grid, fluid
        while True:
            hy, hx = g.spacing
            self.levels.append(_Level(g, f, diagonal(f, g, bc), (bc, 1.0 / hy**2, 1.0 / hx**2)))
            h, w = g.shape
            if h % 2 or w % 2 or h // 2 < min_size or w // 2 < min_size:
                break
            g, f = g.coarsen(2), _coarsen_mask(f)
        self._coarse_inverse = self._dense_inverse(self.levels[-1])

    @staticmethod
    def _dense_inverse(level: _Level) -> torch.Tensor:
        """Pseudo-inverse of the coarsest operator per mask sample, ``(B or 1, n, n)``."""
        h, w = level.grid.shape
        n = h * w
        eye = torch.eye(n, dtype=level.fluid.dtype, device=level.fluid.device).reshape(n, 1, h, w)
        mats = []
        for k in range(level.fluid.shape[0]):
            cols = apply_poisson(eye, level.fluid[k : k + 1].contiguous(), level.grid, level.consts[0])
            mats.append(torch.linalg.pinv(cols.reshape(n, n).T, hermitian=True))
        return torch.stack(mats)

    def _vcycle(self, k: int, rhs: torch.Tensor) -> torch.Tensor:
        lvl = self.levels[k]
        if k == len(self.levels) - 1:
            b = rhs.shape[0]
            flat = rhs.reshape(b, -1, 1)
            inv = self._coarse_inverse.expand(b, -1, -1) if self._coarse_inverse.shape[0] == 1 else self._coarse_inverse
            return torch.bmm(inv, flat).reshape(rhs.shape)
        x, tmp = torch.empty_like(rhs), torch.empty_like(rhs)
        h, w = self.levels[k + 1].grid.shape
        coarse_rhs = rhs.new_empty(rhs.shape[0], 1, h, w)
        consts = (lvl.diag, lvl.fluid, *lvl.consts, self.omega, self.sweeps, _serial((rhs.shape,)))
        _down(rhs, x, tmp, coarse_rhs, *consts)
        _up(rhs, x, tmp, self._vcycle(k + 1, coarse_rhs), *consts)
        return x

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        """Apply the V-cycle to a residual ``(B, 1, H, W)``."""
        return self._vcycle(0, r.contiguous())


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
