"""Preconditioned conjugate gradients on the fine level, independent of where the right-hand side comes
from: the start (after a mode has written ``b`` into CG's ``r``), one iteration, the loops that run them,
and the fluid-mean pieces of the finish. Per-sample scalars live in ``sc`` (slots in :mod:`.plan`).

Loops follow one pattern: the outer loop runs over ``(sample, row)`` and the inner loop over the row, so
reductions (dot products) accumulate in registers and add once per row (a float atomic per cell costs
several times the stencil).
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti

from .plan import _ACC, _BB, _DONE, _ITERS, _MEAN, _NSC, _RR, _RZ, _TARGET, _stat_base, nd1, rows
from .stencil import _apply_at
from .vcycle import _vcycle


@ti.func
def _dot_into(work: ti.template(), sc: ti.template(), b0, b1, plan: ti.template(), u: ti.template(),
              v: ti.template(), slot: ti.template(), serial: ti.template()):
    """sc[b, slot] += Σ u·v over the fine cells of each sample (the slot must be zero before)."""
    h, w = ti.static(rows(plan.shape), plan.shape[plan.nd - 1])  # rows, row length
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange((b0, b1), h):
        wb = b * plan.nw + i * w
        acc = 0.0
        for j in range(w):
            acc += work[wb + u + j] * work[wb + v + j]
        sc[b * _NSC + slot] += acc


@ti.func
def _set_slots(sc: ti.template(), b0, b1, slots: ti.template(), value, serial: ti.template()):
    ti.loop_config(serialize=serial)
    for b in range(b0, b1):
        for s in ti.static(slots):
            sc[b * _NSC + s] = value


@ti.func
def _fluid_mean_into(work: ti.template(), stat: ti.template(), sc: ti.template(), nb, plan: ti.template(),
                     u: ti.template(), serial: ti.template()):
    """sc[b, MEAN] = mean of the vector at work offset ``u`` over the fluid cells of sample ``b``."""
    h, w = ti.static(rows(plan.shape), plan.shape[plan.nd - 1])  # rows, row length
    _set_slots(sc, 0, nb, (_MEAN,), 0.0, serial)
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange(nb, h):
        wb, sb = b * plan.nw + i * w, _stat_base(b, plan) + plan.fluid + i * w
        acc = 0.0
        for j in range(w):
            acc += work[wb + u + j] * stat[sb + j]
        sc[b * _NSC + _MEAN] += acc
    ti.loop_config(serialize=serial)
    for b in range(nb):
        sc[b * _NSC + _MEAN] /= stat[_stat_base(b, plan) + plan.fluid + plan.n]


# ------------------------------------------------------------------------------------ start
@ti.func
def _clear_scalars(sc: ti.template(), nb, serial: ti.template()):
    """Every per-sample scalar slot = 0 (first step of every start kernel)."""
    ti.loop_config(serialize=serial)
    for b in range(nb):
        for s in ti.static(range(_NSC)):
            sc[b * _NSC + s] = 0.0


@ti.func
def _start_cg(x0: ti.template(), work: ti.template(), stat: ti.template(), sc: ti.template(), nb,
              plan: ti.template(), warm: ti.template(), rtol, serial: ti.template()):
    """With ``b`` in CG's ``r``: r = f·(b − mean) (mean over fluid, singular systems only), x = f·x0 or 0
    (``x0`` is read only when ``warm``), r −= A x, p = 0; sc: ‖b_f‖², ‖r‖², target = rtol²‖b_f‖², done,
    zero iterations, (r·z)_old = 0 (the slots were cleared before ``b`` was written)."""
    h, w, n = ti.static(rows(plan.shape), plan.shape[plan.nd - 1], plan.n)  # rows, row length, cells
    if ti.static(plan.singular):
        _fluid_mean_into(work, stat, sc, nb, plan, plan.r, serial)
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange(nb, h):
        wb, sb = b * plan.nw + i * w, _stat_base(b, plan) + plan.fluid + i * w
        mean = sc[b * _NSC + _MEAN]
        acc = 0.0
        for j in range(w):
            f = stat[sb + j]
            r = (work[wb + plan.r + j] - mean) * f
            work[wb + plan.r + j] = r
            acc += r * r
            work[wb + plan.p + j] = 0.0
            x = 0.0
            if ti.static(warm):
                x = x0[b * n + i * w + j] * f
            work[wb + plan.x + j] = x
        sc[b * _NSC + _BB] += acc
    if ti.static(warm):
        ti.loop_config(serialize=serial)
        for b, i in ti.ndrange(nb, h):
            wb, sb = b * plan.nw, _stat_base(b, plan)
            for j in range(w):
                work[wb + plan.r + i * w + j] -= _apply_at(work, stat, wb, sb, i, j, plan.x, plan.levels[0], plan.periodic)
    ti.loop_config(serialize=serial)
    for b in range(nb):
        sc[b * _NSC + _TARGET] = rtol * rtol * sc[b * _NSC + _BB]
    _dot_into(work, sc, 0, nb, plan, plan.r, plan.r, _RR, serial)
    ti.loop_config(serialize=serial)
    for b in range(nb):
        if sc[b * _NSC + _RR] <= sc[b * _NSC + _TARGET] or sc[b * _NSC + _BB] == 0.0:
            sc[b * _NSC + _DONE] = 1.0


# ------------------------------------------------------------------------------------ iterations
@ti.func
def _cg_iteration(work: ti.template(), stat: ti.template(), sc: ti.template(), b0, b1, plan: ti.template(),
                  serial: ti.template()):
    """One PCG iteration for samples ``b0 ≤ b < b1`` (done samples take zero steps):

        z = M⁻¹ r;  β = (r·z)/(r·z)_old (0 first);  p = z + β p;  α = (r·z)/(p·A p)
        x += α p;  r −= α A p;  done when ‖r‖² ≤ target²
    """
    h, w = ti.static(rows(plan.shape), plan.shape[plan.nd - 1])  # rows, row length
    z = ti.static(plan.levels[0][1])
    _vcycle(work, stat, b0, b1, plan, serial)
    _set_slots(sc, b0, b1, (_ACC, _RR), 0.0, serial)
    _dot_into(work, sc, b0, b1, plan, plan.r, z, _ACC, serial)
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange((b0, b1), h):
        rz_old, rz = sc[b * _NSC + _RZ], sc[b * _NSC + _ACC]
        beta = ti.select(rz_old == 0.0, 0.0, rz / ti.select(rz_old == 0.0, 1.0, rz_old))
        wb = b * plan.nw + i * w
        for j in range(w):
            work[wb + plan.p + j] = work[wb + z + j] + beta * work[wb + plan.p + j]
    ti.loop_config(serialize=serial)
    for b in range(b0, b1):
        sc[b * _NSC + _RZ] = sc[b * _NSC + _ACC]
        sc[b * _NSC + _ACC] = 0.0
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange((b0, b1), h):  # A p and p·A p
        wb, sb = b * plan.nw, _stat_base(b, plan)
        acc = 0.0
        for j in range(w):
            ap = _apply_at(work, stat, wb, sb, i, j, plan.p, plan.levels[0], plan.periodic)
            work[wb + plan.ap + i * w + j] = ap
            acc += ap * work[wb + plan.p + i * w + j]
        sc[b * _NSC + _ACC] += acc
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange((b0, b1), h):  # the step and the new residual norm
        pap, rz = sc[b * _NSC + _ACC], sc[b * _NSC + _RZ]
        alpha = ti.select(sc[b * _NSC + _DONE] != 0.0 or pap == 0.0, 0.0, rz / ti.select(pap == 0.0, 1.0, pap))
        wb = b * plan.nw + i * w
        acc = 0.0
        for j in range(w):
            work[wb + plan.x + j] += alpha * work[wb + plan.p + j]
            r = work[wb + plan.r + j] - alpha * work[wb + plan.ap + j]
            work[wb + plan.r + j] = r
            acc += r * r
        sc[b * _NSC + _RR] += acc
    ti.loop_config(serialize=serial)
    for b in range(b0, b1):
        if sc[b * _NSC + _DONE] == 0.0:
            sc[b * _NSC + _ITERS] += 1.0
            if sc[b * _NSC + _RR] <= sc[b * _NSC + _TARGET]:
                sc[b * _NSC + _DONE] = 1.0


@ti.kernel
def _pcg_all(work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(), max_iter: int):
    """Every iteration of every sample in one launch (serial loops; per-sample convergence test)."""
    ti.loop_config(serialize=True)
    for b in range(nb):
        while sc[b * _NSC + _DONE] == 0.0 and sc[b * _NSC + _ITERS] < max_iter:
            _cg_iteration(work, stat, sc, b, b + 1, plan, True)


@ti.kernel
def _pcg_one(work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template()):
    """One iteration of every sample (parallel loops; the host tests convergence)."""
    _cg_iteration(work, stat, sc, 0, nb, plan, False)


# ------------------------------------------------------------------------------------ finish
@ti.func
def _solution_mean(work: ti.template(), stat: ti.template(), sc: ti.template(), nb, plan: ti.template(),
                   serial: ti.template()):
    """sc[b, MEAN] = fluid mean of CG's ``x`` (singular systems only: the answer has zero fluid mean)."""
    if ti.static(plan.singular):
        _fluid_mean_into(work, stat, sc, nb, plan, plan.x, serial)


@ti.func
def _solution_row(sc: ti.template(), b, plan: ti.template()):
    """``(mean, live)`` of sample ``b`` for ``x_out = live·f·(x − mean)``: the fluid mean removed on
    singular systems, and ``live = 0`` when ``b_f = 0`` (the answer is 0, whatever the warm start)."""
    mean = 0.0
    if ti.static(plan.singular):
        mean = sc[b * _NSC + _MEAN]
    live = ti.select(sc[b * _NSC + _BB] == 0.0, 0.0, 1.0)
    return mean, live


@ti.func
def _write_solution(out: ti.template(), work: ti.template(), stat: ti.template(), sc: ti.template(), nb,
                    plan: ti.template(), serial: ti.template()):
    """``out`` (cells) = live·f·(x − mean) (:func:`_solution_row`); 0 on solid cells."""
    h, w, n = ti.static(rows(plan.shape), plan.shape[plan.nd - 1], plan.n)  # rows, row length, cells
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange(nb, h):
        wb, sb = b * plan.nw + i * w, _stat_base(b, plan) + plan.fluid + i * w
        mean, live = _solution_row(sc, b, plan)
        for j in range(w):
            f = stat[sb + j]
            out[b * n + i * w + j] = live * f * (work[wb + plan.x + j] - mean)
