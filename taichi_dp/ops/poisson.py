"""The masked pressure Poisson operator ``A`` on a cell-centred 2D or 3D grid (see :mod:`taichi_dp.ops.pressure`):

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
from ._stencil import cell, ghost

nda = ti.types.ndarray()  # (B, C, *spatial): the rank, hence the grid dimension, is fixed per compiled instance


@ti.func
def cell_neighbour(p: ti.template(), fluid: ti.template(), b, ix, bc: ti.template()):
    """Pressure at the cell with per-axis index ``ix`` (possibly one cell outside the domain on any axis:
    ghost value from ``bc`` with zero Dirichlet values) and its fluid weight (1 outside the domain unless
    periodic, where the wrapped cell's mask applies)."""
    nd = ti.static(len(p.shape) - 2)
    jx = ix
    sign = 1.0
    inside = True
    for a in ti.static(range(nd)):
        j, _, s = ghost(ix[a], p.shape[2 + a], bc[2 * a], bc[2 * a + 1], 0.0, 0.0)
        jx[a] = j
        sign *= s
        if ti.static(bc[2 * a] != PERIODIC):
            inside = inside and 0 <= ix[a] < p.shape[2 + a]
    weight = ti.select(inside, fluid[cell(b % fluid.shape[0], 0, jx)], 1.0)
    return sign * p[cell(b, 0, jx)], weight


@ti.func
def apply_a_at(p: ti.template(), fluid: ti.template(), b, ix, bc: ti.template(), inv_h2: ti.template()):
    """``(A p)`` at the cell ``ix`` (per-axis index) of sample ``b``; ``inv_h2``: ``1/h²`` per axis."""
    nd = ti.static(len(p.shape) - 2)
    centre = p[cell(b, 0, ix)]
    lap = 0.0
    for a in ti.static(range(nd)):
        lo = ix
        lo[a] -= 1
        hi = ix
        hi[a] += 1
        p_lo, w_lo = cell_neighbour(p, fluid, b, lo, bc)
        p_hi, w_hi = cell_neighbour(p, fluid, b, hi, bc)
        lap += (w_lo * (centre - p_lo) + w_hi * (centre - p_hi)) * inv_h2[a]
    return ti.select(fluid[cell(b % fluid.shape[0], 0, ix)] > 0.5, lap, centre)


@ti.func
def spatial(ix):
    """The per-axis cell index of the array index ``ix = (b, c, *cell)``."""
    return ti.Vector([ix[2 + a] for a in ti.static(range(ix.n - 2))], dt=ti.i32)


@ti.kernel
def _neg_laplacian(p: nda, out: nda, fluid: nda, bc: ti.template(), inv_h2_0: float, inv_h2_1: float,
                   inv_h2_2: float, serial: ti.template()):
    """out = A p: Σ_neighbours w_n (p_c − p_n) / h² on fluid cells (w_n: neighbour is fluid), p_c on solid cells.
    ``inv_h2_a``: ``1/h²`` per axis in axis order (unused trailing entries 0: one compiled kernel per rank)."""
    ti.loop_config(serialize=serial)
    for ix in ti.grouped(ti.ndrange(*out.shape)):
        out[ix] = apply_a_at(p, fluid, ix[0], spatial(ix), bc, ti.static((inv_h2_0, inv_h2_1, inv_h2_2)))


_NEG_LAPLACIAN = KernelOp(_neg_laplacian, 1, 1, "neg_laplacian")


def apply_poisson(p: torch.Tensor, fluid: torch.Tensor, grid: Grid, codes: tuple[int, ...]) -> torch.Tensor:
    """``A p`` for ``p`` ``(B, 1, *spatial)``, mask ``fluid`` ``(B or 1, 1, *spatial)`` and pressure boundary ``codes``."""
    return _NEG_LAPLACIAN((p,), (p.shape,), (fluid, codes, *inv_h_powers(grid, 2)))[0]


def inv_h_powers(grid: Grid, power: int) -> tuple[float, float, float]:
    """``1/h^power`` per axis, padded with zeros to three entries (the kernels' per-axis float arguments)."""
    vals = [1.0 / h**power for h in grid.spacing]
    return tuple(vals + [0.0] * (3 - len(vals)))
