"""The level operator as a stencil: neighbours on an axis, the off-diagonal sum ``Σ_f c_f x_{n(f)}`` and
``(A x)`` at one cell of any level, from the precomputed ``d, c_y, c_x`` arrays.

    (A x)_c = d_c x_c − Σ_faces f  c_f x_{n(f)}          c_f = w_c w_n / h²   (0 into a solid cell)

Each cell stores the coupling through its *lower* face per axis (the upper face's is the next cell's), so
``A`` is symmetric by construction.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti

from .plan import _stat_base, nd1


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
def _offdiag(work: ti.template(), stat: ti.template(), wb, sb, i, j, xo: ti.template(), lv: ti.template(), per: ti.template()):
    """``Σ_f c_f x_{n(f)}`` at cell ``(i, j)`` of level ``lv`` for the vector at work offset ``xo``: the
    four face couplings (lower face: this cell's ``c``; upper face: the next cell's), wrapped on periodic
    axes, zero across a non-periodic boundary."""
    h, w, so = ti.static(lv[0], lv[1], lv[4])
    n = ti.static(lv[0] * lv[1])
    dn, up, up_open = _neighbours(i, h, per[0])
    lf, rt, rt_open = _neighbours(j, w, per[1])
    c_up = up_open * stat[sb + so + 2 * n + up * w + j]
    c_rt = rt_open * stat[sb + so + 3 * n + i * w + rt]
    return (
        stat[sb + so + 2 * n + i * w + j] * work[wb + xo + dn * w + j]
        + c_up * work[wb + xo + up * w + j]
        + stat[sb + so + 3 * n + i * w + j] * work[wb + xo + i * w + lf]
        + c_rt * work[wb + xo + i * w + rt]
    )


@ti.func
def _apply_at(work: ti.template(), stat: ti.template(), wb, sb, i, j, xo: ti.template(), lv: ti.template(), per: ti.template()):
    """``(A x)`` at cell ``(i, j)`` of level ``lv`` for the vector at work offset ``xo``."""
    k = i * lv[1] + j
    return stat[sb + lv[4] + k] * work[wb + xo + k] - _offdiag(work, stat, wb, sb, i, j, xo, lv, per)


@ti.kernel
def _apply_only(work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(), serial: ti.template()):
    """A p → A p slot (tests)."""
    h, w = ti.static(plan.levels[0][0], plan.levels[0][1])
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange(nb, h):
        wb, sb = b * plan.nw, _stat_base(b, plan)
        for j in range(w):
            work[wb + plan.ap + i * w + j] = _apply_at(work, stat, wb, sb, i, j, plan.p, plan.levels[0], plan.periodic)
