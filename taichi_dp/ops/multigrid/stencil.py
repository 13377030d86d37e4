"""The level operator as a stencil: neighbours on an axis, the off-diagonal sum ``Σ_f c_f x_{n(f)}`` and
``(A x)`` at one cell of any level and any dimension, from the precomputed ``d, c_0 … c_{nd−1}`` arrays.

    (A x)_c = d_c x_c − Σ_faces f  c_f x_{n(f)}          c_f = w_c w_n / h²   (0 into a solid cell)

Each cell stores the coupling through its *lower* face per axis (the upper face's is the next cell's), so
``A`` is symmetric by construction.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import math

import taichi as ti

from .plan import _stat_base, nd1, row_index, rows, strides


@ti.func
def _neighbours(i, n: ti.template(), periodic: ti.template()):
    """Lower and upper neighbour of index ``i`` on an axis of ``n`` cells (wrapped on a periodic axis,
    clamped otherwise) and 1.0 when the upper face couples to a cell (always on a periodic axis; 0.0 at
    the last cell of a non-periodic one, whose clamped neighbour then contributes nothing). The lower
    face needs no flag: its coupling is 0 on the first cell of a non-periodic axis."""
    lo, hi, hi_open = i - 1, i + 1, 1.0
    if ti.static(periodic):
        lo = ti.select(i == 0, n - 1, lo)
        hi = ti.select(i == n - 1, 0, hi)
    else:
        lo = ti.max(lo, 0)
        hi = ti.min(hi, n - 1)
        hi_open = ti.select(i < n - 1, 1.0, 0.0)
    return lo, hi, hi_open


@ti.func
def _offdiag(work: ti.template(), stat: ti.template(), wb, sb, ix, j, k, xo: ti.template(), lv: ti.template(),
             per: ti.template()):
    """``Σ_f c_f x_{n(f)}`` at the cell with leading per-axis indices ``ix`` (its last entry is ignored), last
    index ``j`` and flat index ``k`` of level ``lv``, for the vector at work offset ``xo``: per axis the two
    face couplings (lower face: this cell's ``c_a``; upper face: the next cell's), wrapped on periodic axes,
    zero across a non-periodic boundary. (``j`` apart, so a row loop never rewrites a vector per cell.)"""
    shape, so = ti.static(lv[0], lv[3])
    n = ti.static(math.prod(lv[0]))
    st = ti.static(strides(lv[0]))
    acc = 0.0
    for a in ti.static(range(len(shape))):
        i = j
        if ti.static(a < len(shape) - 1):
            i = ix[a]
        lo, hi, hi_open = _neighbours(i, shape[a], per[a])
        ca = ti.static(so + (2 + a) * n)
        k_lo = k + (lo - i) * st[a]
        k_hi = k + (hi - i) * st[a]
        acc += stat[sb + ca + k] * work[wb + xo + k_lo]
        acc += hi_open * stat[sb + ca + k_hi] * work[wb + xo + k_hi]
    return acc


@ti.func
def _apply_ix(work: ti.template(), stat: ti.template(), wb, sb, ix, xo: ti.template(), lv: ti.template(),
              per: ti.template()):
    """``(A x)`` at the cell with per-axis index ``ix`` of level ``lv`` for the vector at work offset ``xo``."""
    st = ti.static(strides(lv[0]))
    k = 0
    for a in ti.static(range(len(st))):
        k += ix[a] * st[a]
    return stat[sb + lv[3] + k] * work[wb + xo + k] - _offdiag(work, stat, wb, sb, ix, ix[ti.static(len(st) - 1)], k, xo, lv, per)


@ti.func
def _apply_at(work: ti.template(), stat: ti.template(), wb, sb, row, j, xo: ti.template(), lv: ti.template(),
              per: ti.template()):
    """``(A x)`` at entry ``j`` of flat ``row`` of level ``lv`` for the vector at work offset ``xo``."""
    k = row * ti.static(lv[0][len(lv[0]) - 1]) + j
    ix = row_index(row, 0, lv[0])
    return stat[sb + lv[3] + k] * work[wb + xo + k] - _offdiag(work, stat, wb, sb, ix, j, k, xo, lv, per)


@ti.kernel
def _apply_only(work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(), serial: ti.template()):
    """A p → A p slot (tests)."""
    shape = ti.static(plan.levels[0][0])
    w = ti.static(shape[len(shape) - 1])
    ti.loop_config(serialize=serial)
    for b, row in ti.ndrange(nb, ti.static(rows(shape))):
        wb, sb = b * plan.nw, _stat_base(b, plan)
        for j in range(w):
            work[wb + plan.ap + row * w + j] = _apply_at(work, stat, wb, sb, row, j, plan.p, plan.levels[0], plan.periodic)
