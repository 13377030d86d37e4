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

from ..bridge import KernelOp
from ..grid import DIRICHLET, PERIODIC, Grid
from .poisson import _neighbour, apply_poisson

nd4 = ti.types.ndarray(ndim=4)


@ti.kernel
def _jacobi(
    x: nd4,
    rhs: nd4,
    out: nd4,
    diag: nd4,
    fluid: nd4,
    bc: ti.template(),
    inv_hy2: float,
    inv_hx2: float,
    omega: float,
    serial: ti.template(),
):
    """One damped Jacobi sweep: out = x + ω (rhs − A x) / diag."""
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(x.shape[0], x.shape[2], x.shape[3]):
        centre = x[b, 0, i, j]
        pd, wd = _neighbour(x, fluid, b, i - 1, j, bc)
        pu, wu = _neighbour(x, fluid, b, i + 1, j, bc)
        pl, wl = _neighbour(x, fluid, b, i, j - 1, bc)
        pr, wr = _neighbour(x, fluid, b, i, j + 1, bc)
        ax = (wd * (centre - pd) + wu * (centre - pu)) * inv_hy2 + (wl * (centre - pl) + wr * (centre - pr)) * inv_hx2
        ax = ti.select(fluid[b % fluid.shape[0], 0, i, j] > 0.5, ax, centre)
        out[b, 0, i, j] = centre + omega * (rhs[b, 0, i, j] - ax) / diag[b % diag.shape[0], 0, i, j]


@ti.kernel
def _restrict(r: nd4, out: nd4, serial: ti.template()):
    """out[I, J] = (1/8) Σ of the four children (R = Pᵀ / 8)."""
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(out.shape[0], out.shape[2], out.shape[3]):
        out[b, 0, i, j] = 0.125 * (
            r[b, 0, 2 * i, 2 * j] + r[b, 0, 2 * i + 1, 2 * j] + r[b, 0, 2 * i, 2 * j + 1] + r[b, 0, 2 * i + 1, 2 * j + 1]
        )


@ti.kernel
def _prolong_add(x: nd4, e: nd4, out: nd4, serial: ti.template()):
    """out = x + P e (each coarse value added to its four children)."""
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(x.shape[0], x.shape[2], x.shape[3]):
        out[b, 0, i, j] = x[b, 0, i, j] + e[b, 0, i // 2, j // 2]


_JACOBI = KernelOp(_jacobi, 2, 1, "mg_jacobi")
_RESTRICT = KernelOp(_restrict, 1, 1, "mg_restrict")
_PROLONG_ADD = KernelOp(_prolong_add, 2, 1, "mg_prolong_add")


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

    def _smooth(self, lvl: _Level, x: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        for _ in range(self.sweeps):
            x = _JACOBI((x, rhs), (x.shape,), (lvl.diag, lvl.fluid, *lvl.consts, self.omega))[0]
        return x

    def _vcycle(self, k: int, rhs: torch.Tensor) -> torch.Tensor:
        lvl = self.levels[k]
        if k == len(self.levels) - 1:
            b = rhs.shape[0]
            flat = rhs.reshape(b, -1, 1)
            inv = self._coarse_inverse.expand(b, -1, -1) if self._coarse_inverse.shape[0] == 1 else self._coarse_inverse
            return torch.bmm(inv, flat).reshape(rhs.shape)
        x = self._smooth(lvl, torch.zeros_like(rhs), rhs)
        r = rhs - apply_poisson(x, lvl.fluid, lvl.grid, lvl.consts[0])
        h, w = self.levels[k + 1].grid.shape
        rc = _RESTRICT((r,), ((r.shape[0], 1, h, w),), ())[0]
        x = _PROLONG_ADD((x, self._vcycle(k + 1, rc)), (x.shape,), ())[0]
        return self._smooth(lvl, x, rhs)

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
