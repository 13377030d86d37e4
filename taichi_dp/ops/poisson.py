"""The masked pressure Poisson operator ``A`` on a cell-centred 2D grid (see :mod:`taichi_dp.ops.pressure`):

    (A p)_c = Σ_neighbours n  w_n (p_c − p_n) / h²     on fluid cells (w_n = 1 if n is fluid, else 0)
    (A p)_c = p_c                                         on solid cells

Neighbours outside the domain take ghost values from the pressure boundary codes with zero values
(Dirichlet: ``−p_c``, i.e. ``p = 0`` on the boundary face; zero gradient: ``p_c``; periodic: wrap) and
count as fluid, except across a periodic seam where the wrapped cell's mask applies. ``A`` is symmetric
positive semidefinite (definite with at least one Dirichlet side).
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti
import torch

from ..bridge import KernelOp
from ..grid import PERIODIC, Grid
from ._stencil import ghost

nd4 = ti.types.ndarray(ndim=4)


@ti.func
def cell_neighbour(p: ti.template(), fluid: ti.template(), b, i, k, bc: ti.template()):
    """Pressure at cell ``(i, k)`` (possibly one cell outside the domain: ghost value from ``bc`` with
    zero Dirichlet values) and its fluid weight (1 outside the domain unless periodic, where the wrapped
    cell's mask applies)."""
    h, w = p.shape[2], p.shape[3]
    ji, _, si = ghost(i, h, bc[0], bc[1], 0.0, 0.0)
    jk, _, sk = ghost(k, w, bc[2], bc[3], 0.0, 0.0)
    inside_i = 0 <= i < h
    inside_k = 0 <= k < w
    if ti.static(bc[0] == PERIODIC):
        inside_i = True
    if ti.static(bc[2] == PERIODIC):
        inside_k = True
    weight = ti.select(inside_i and inside_k, fluid[b % fluid.shape[0], 0, ji, jk], 1.0)
    return si * sk * p[b, 0, ji, jk], weight


@ti.func
def apply_a_at(p: ti.template(), fluid: ti.template(), b, i, j, bc: ti.template(), inv_hy2, inv_hx2):
    """``(A p)`` at cell ``(i, j)`` of sample ``b``."""
    centre = p[b, 0, i, j]
    pd, wd = cell_neighbour(p, fluid, b, i - 1, j, bc)
    pu, wu = cell_neighbour(p, fluid, b, i + 1, j, bc)
    pl, wl = cell_neighbour(p, fluid, b, i, j - 1, bc)
    pr, wr = cell_neighbour(p, fluid, b, i, j + 1, bc)
    lap = (wd * (centre - pd) + wu * (centre - pu)) * inv_hy2 + (wl * (centre - pl) + wr * (centre - pr)) * inv_hx2
    return ti.select(fluid[b % fluid.shape[0], 0, i, j] > 0.5, lap, centre)


@ti.kernel
def _neg_laplacian_2d(p: nd4, out: nd4, fluid: nd4, bc: ti.template(), inv_hy2: float, inv_hx2: float, serial: ti.template()):
    """out = A p: Σ_neighbours w_n (p_c − p_n) / h² on fluid cells (w_n: neighbour is fluid), p_c on solid cells."""
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(p.shape[0], p.shape[2], p.shape[3]):
        out[b, 0, i, j] = apply_a_at(p, fluid, b, i, j, bc, inv_hy2, inv_hx2)


_NEG_LAPLACIAN = KernelOp(_neg_laplacian_2d, 1, 1, "neg_laplacian_2d")


def apply_poisson(p: torch.Tensor, fluid: torch.Tensor, grid: Grid, codes: tuple[int, ...]) -> torch.Tensor:
    """``A p`` for ``p`` ``(B, 1, H, W)``, mask ``fluid`` ``(B or 1, 1, H, W)`` and pressure boundary ``codes``."""
    hy, hx = grid.spacing
    return _NEG_LAPLACIAN((p,), (p.shape,), (fluid, codes, 1.0 / hy**2, 1.0 / hx**2))[0]
