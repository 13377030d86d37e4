"""The preconditioner: one geometric V-cycle ``z = M⁻¹ r`` (red–black Gauss–Seidel smoothing,
restriction ``Pᵀ``, prolongation ``α P``, coarsest-level solve).

- smoothing: ``sweeps`` red→black sweeps before and the same number of black→red sweeps after the coarse
  correction (the adjoint order), so the V-cycle is a fixed symmetric positive definite operator, as
  preconditioned CG requires;
- prolongation ``P`` copies a coarse value to its four children (fluid children only; solid children are
  overwritten by the post-smoothing, whose rhs is 0 there); restriction is ``Pᵀ``; the coarse correction is
  scaled by ``alpha`` (over-correction; 1 < α < 2 keeps the V-cycle SPD);
- coarsest level: dense pseudo-inverse, else symmetric Gauss–Seidel sweeps from zero.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti

from .plan import _stat_base, nd1
from .stencil import _apply_at, _offdiag


@ti.func
def _gs_colour(work: ti.template(), stat: ti.template(), b0, b1, plan: ti.template(), lvl: ti.template(),
               colour: ti.template(), first: ti.template(), serial: ti.template(), reverse: ti.template()):
    """One Gauss–Seidel half-sweep over the cells with ``(i + j) % 2 == colour``:
    ``x_c = (rhs_c + Σ c_f x_n) / d_c``. ``first``: the vector is zero (the neighbour sum is skipped).
    ``reverse`` visits the cells in the opposite order (the adjoint sweep when the colouring is not a
    valid two-colouring, e.g. an odd periodic axis, where the order within a colour matters)."""
    lv = ti.static(plan.levels[lvl])
    h, w, xo, ro, so = ti.static(lv[0], lv[1], lv[2], lv[3], lv[4])
    n = ti.static(h * w)
    ti.loop_config(serialize=ti.static(serial or n < plan.parallel_level))
    for b, row in ti.ndrange((b0, b1), h):
        wb, sb = b * plan.nw, _stat_base(b, plan)
        i = row
        if ti.static(reverse):
            i = h - 1 - row
        for col in range((w + 1) // 2):
            jj = col
            if ti.static(reverse):
                jj = (w + 1) // 2 - 1 - col
            j = 2 * jj + ((i + colour) & 1)
            if j < w:
                k = i * w + j
                acc = work[wb + ro + k]
                if ti.static(not first):
                    acc += _offdiag(work, stat, wb, sb, i, j, xo, lv, plan.periodic)
                work[wb + xo + k] = acc * stat[sb + so + n + k]


@ti.func
def _restrict(work: ti.template(), stat: ti.template(), b0, b1, plan: ti.template(), lvl: ti.template(), serial: ti.template()):
    """Coarse rhs = Pᵀ (rhs − A x): the sum of the four children's residuals."""
    lv, cv = ti.static(plan.levels[lvl], plan.levels[lvl + 1])
    w, xo, ro = ti.static(lv[1], lv[2], lv[3])
    ti.loop_config(serialize=ti.static(serial or lv[0] * lv[1] < plan.parallel_level))
    for b, ci in ti.ndrange((b0, b1), cv[0]):
        wb, sb = b * plan.nw, _stat_base(b, plan)
        for cj in range(cv[1]):
            acc = 0.0
            for di, dj in ti.static(ti.ndrange(2, 2)):
                i, j = 2 * ci + di, 2 * cj + dj
                acc += work[wb + ro + i * w + j] - _apply_at(work, stat, wb, sb, i, j, xo, lv, plan.periodic)
            work[wb + cv[3] + ci * cv[1] + cj] = acc


@ti.func
def _prolong(work: ti.template(), b0, b1, plan: ti.template(), lvl: ti.template(), serial: ti.template()):
    """x += α P x_coarse (solid children are overwritten by the post-smoothing, whose rhs is 0 there)."""
    lv, cv = ti.static(plan.levels[lvl], plan.levels[lvl + 1])
    ti.loop_config(serialize=ti.static(serial or lv[0] * lv[1] < plan.parallel_level))
    for b, i in ti.ndrange((b0, b1), lv[0]):
        wb = b * plan.nw
        for j in range(lv[1]):
            work[wb + lv[2] + i * lv[1] + j] += plan.alpha * work[wb + cv[2] + (i // 2) * cv[1] + j // 2]


@ti.func
def _coarse_solve(work: ti.template(), stat: ti.template(), b0, b1, plan: ti.template(), serial: ti.template()):
    """Coarsest level: x = A_c⁺ rhs (dense) or symmetric Gauss–Seidel sweeps from x = 0."""
    last = ti.static(len(plan.levels) - 1)
    lv = ti.static(plan.levels[last])
    n = ti.static(lv[0] * lv[1])
    if ti.static(plan.coarse[0] == 0):
        ti.loop_config(serialize=ti.static(serial or n < plan.parallel_level))
        for b, k in ti.ndrange((b0, b1), n):
            wb, sb = b * plan.nw, _stat_base(b, plan)
            acc = 0.0
            for m in range(n):
                acc += stat[sb + plan.coarse[1] + k * n + m] * work[wb + lv[3] + m]
            work[wb + lv[2] + k] = acc
    else:  # the colouring may not be valid here (odd periodic sizes): serial sweeps are exact GS
        ti.loop_config(serialize=True)
        for b, k in ti.ndrange((b0, b1), n):  # x = 0 (a "first" half-sweep is exact only for a valid colouring)
            work[b * plan.nw + lv[2] + k] = 0.0
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
