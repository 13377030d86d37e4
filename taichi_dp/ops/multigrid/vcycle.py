"""The preconditioner: one geometric V-cycle ``z = M⁻¹ r`` (red–black Gauss–Seidel smoothing,
restriction ``Pᵀ``, prolongation ``α P``, coarsest-level solve).

- smoothing: ``sweeps`` red→black sweeps before and the same number of black→red sweeps after the coarse
  correction (the adjoint order), so the V-cycle is a fixed symmetric positive definite operator, as
  preconditioned CG requires;
- prolongation ``P`` copies a coarse value to its ``2**nd`` children (fluid children only; solid children are
  overwritten by the post-smoothing, whose rhs is 0 there); restriction is ``Pᵀ``; the coarse correction is
  scaled by ``alpha`` (over-correction; 1 < α < 2 keeps the V-cycle SPD);
- coarsest level: dense pseudo-inverse, else symmetric Gauss–Seidel sweeps from zero.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import math

import taichi as ti

from .plan import _stat_base, nd1, row_index, rows, strides
from .stencil import _apply_ix, _offdiag


@ti.func
def _gs_colour(work: ti.template(), stat: ti.template(), b0, b1, plan: ti.template(), lvl: ti.template(),
               colour: ti.template(), first: ti.template(), serial: ti.template(), reverse: ti.template()):
    """One Gauss–Seidel half-sweep over the cells whose index sum is ``colour`` modulo 2:
    ``x_c = (rhs_c + Σ c_f x_n) / d_c``. ``first``: the vector is zero (the neighbour sum is skipped).
    ``reverse`` visits the cells in the opposite order (the adjoint sweep when the colouring is not a
    valid two-colouring, e.g. an odd periodic axis, where the order within a colour matters)."""
    lv = ti.static(plan.levels[lvl])
    shape, xo, ro, so = ti.static(lv[0], lv[1], lv[2], lv[3])
    nd, n, nr = ti.static(len(shape), math.prod(shape), rows(shape))
    w = ti.static(shape[nd - 1])
    ti.loop_config(serialize=ti.static(serial or n < plan.parallel_level))
    for b, rr in ti.ndrange((b0, b1), nr):
        wb, sb = b * plan.nw, _stat_base(b, plan)
        row = rr
        if ti.static(reverse):
            row = nr - 1 - rr
        ix = row_index(row, 0, shape)
        parity = 0
        for a in ti.static(range(nd - 1)):
            parity += ix[a]
        for col in range((w + 1) // 2):
            jj = col
            if ti.static(reverse):
                jj = (w + 1) // 2 - 1 - col
            j = 2 * jj + ((parity + colour) & 1)
            if j < w:
                k = row * w + j
                acc = work[wb + ro + k]
                if ti.static(not first):
                    acc += _offdiag(work, stat, wb, sb, ix, j, k, xo, lv, plan.periodic)
                work[wb + xo + k] = acc * stat[sb + so + n + k]


@ti.func
def _restrict(work: ti.template(), stat: ti.template(), b0, b1, plan: ti.template(), lvl: ti.template(), serial: ti.template()):
    """Coarse rhs = Pᵀ (rhs − A x): the sum of the ``2**nd`` children's residuals."""
    lv, cv = ti.static(plan.levels[lvl], plan.levels[lvl + 1])
    shape, xo, ro, cshape = ti.static(lv[0], lv[1], lv[2], cv[0])
    nd = ti.static(len(shape))
    st, cw = ti.static(strides(shape), cshape[nd - 1])
    ti.loop_config(serialize=ti.static(serial or math.prod(shape) < plan.parallel_level))
    for b, crow in ti.ndrange((b0, b1), ti.static(rows(cshape))):
        wb, sb = b * plan.nw, _stat_base(b, plan)
        cix = row_index(crow, 0, cshape)
        for cj in range(cw):
            cix[nd - 1] = cj
            acc = 0.0
            for m in ti.static(range(2**nd)):  # children in row-major order (axis 0 the slowest)
                ix = ti.Vector([2 * cix[a] + ((m >> (nd - 1 - a)) & 1) for a in ti.static(range(nd))], dt=ti.i32)
                k = 0
                for a in ti.static(range(nd)):
                    k += ix[a] * st[a]
                acc += work[wb + ro + k] - _apply_ix(work, stat, wb, sb, ix, xo, lv, plan.periodic)
            work[wb + cv[2] + crow * cw + cj] = acc


@ti.func
def _prolong(work: ti.template(), b0, b1, plan: ti.template(), lvl: ti.template(), serial: ti.template()):
    """x += α P x_coarse (solid children are overwritten by the post-smoothing, whose rhs is 0 there)."""
    lv, cv = ti.static(plan.levels[lvl], plan.levels[lvl + 1])
    shape, cshape = ti.static(lv[0], cv[0])
    nd = ti.static(len(shape))
    w, cw, crs = ti.static(shape[nd - 1], cshape[nd - 1], strides(cshape[: nd - 1]) if nd > 1 else ())
    ti.loop_config(serialize=ti.static(serial or math.prod(shape) < plan.parallel_level))
    for b, row in ti.ndrange((b0, b1), ti.static(rows(shape))):
        wb = b * plan.nw
        ix = row_index(row, 0, shape)
        crow = 0
        for a in ti.static(range(nd - 1)):
            crow += (ix[a] // 2) * crs[a]
        for j in range(w):
            work[wb + lv[1] + row * w + j] += plan.alpha * work[wb + cv[1] + crow * cw + j // 2]


@ti.func
def _coarse_solve(work: ti.template(), stat: ti.template(), b0, b1, plan: ti.template(), serial: ti.template()):
    """Coarsest level: x = A_c⁺ rhs (dense) or symmetric Gauss–Seidel sweeps from x = 0."""
    last = ti.static(len(plan.levels) - 1)
    lv = ti.static(plan.levels[last])
    n = ti.static(math.prod(lv[0]))
    if ti.static(plan.coarse[0] == 0):
        ti.loop_config(serialize=ti.static(serial or n < plan.parallel_level))
        for b, k in ti.ndrange((b0, b1), n):
            wb, sb = b * plan.nw, _stat_base(b, plan)
            acc = 0.0
            for m in range(n):
                acc += stat[sb + plan.coarse[1] + k * n + m] * work[wb + lv[2] + m]
            work[wb + lv[1] + k] = acc
    else:  # the colouring may not be valid here (odd periodic sizes): serial sweeps are exact GS
        ti.loop_config(serialize=True)
        for b, k in ti.ndrange((b0, b1), n):  # x = 0 (a "first" half-sweep is exact only for a valid colouring)
            work[b * plan.nw + lv[1] + k] = 0.0
        ti.loop_config(serialize=True)
        for _ in range(plan.coarse[1]):
            _gs_colour(work, stat, b0, b1, plan, last, 0, False, True, False)
            _gs_colour(work, stat, b0, b1, plan, last, 1, False, True, False)
        ti.loop_config(serialize=True)
        for _ in range(plan.coarse[1]):
            _gs_colour(work, stat, b0, b1, plan, last, 1, False, True, True)
            _gs_colour(work, stat, b0, b1, plan, last, 0, False, True, True)


@ti.func
def _vcycle(work: ti.template(), stat: ti.template(), b0, b1, plan: ti.template(), serial: ti.template()):
    """z = M⁻¹ r: level 0 reads CG's residual and writes CG's ``z``."""
    for lvl in ti.static(range(len(plan.levels) - 1)):
        for s in ti.static(range(plan.sweeps)):
            _gs_colour(work, stat, b0, b1, plan, lvl, 0, s == 0, serial, False)
            _gs_colour(work, stat, b0, b1, plan, lvl, 1, False, serial, False)
        _restrict(work, stat, b0, b1, plan, lvl, serial)
    _coarse_solve(work, stat, b0, b1, plan, serial)
    for lvl in ti.static(range(len(plan.levels) - 2, -1, -1)):
        _prolong(work, b0, b1, plan, lvl, serial)
        for _ in ti.static(range(plan.sweeps)):
            _gs_colour(work, stat, b0, b1, plan, lvl, 1, False, serial, False)
            _gs_colour(work, stat, b0, b1, plan, lvl, 0, False, serial, False)


@ti.kernel
def _vcycle_only(work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(), serial: ti.template()):
    """z = M⁻¹ r alone (tests: the preconditioner must be symmetric positive definite)."""
    _vcycle(work, stat, 0, nb, plan, serial)
