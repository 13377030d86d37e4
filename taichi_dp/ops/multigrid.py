"""Fused multigrid-preconditioned conjugate gradients for the masked pressure Poisson system.

The operator is :mod:`taichi_dp.ops.pressure` 's ``A`` (the −Laplacian on fluid cells with face weights
from the fluid mask, identity rows on solid cells), written with precomputed couplings:

    (A x)_c = d_c x_c − Σ_faces f  c_f x_{n(f)}          c_f = w_c w_n / h²   (0 into a solid cell)

``d`` is the diagonal (Dirichlet boundary faces add ``2/h²``; 1 on solid cells) and each cell stores the
coupling through its *lower* face per axis (the upper face's is the next cell's), so ``A`` is symmetric
by construction. Everything boundary- and obstacle-specific lives in these arrays, computed once per
mask in torch; the kernels only read them.

Solver. Preconditioned CG (``rtol`` relative to ``‖b‖``) with one geometric V-cycle per iteration:

- hierarchy: both axes halve while they stay even and at least ``2·min_size``; prolongation ``P`` copies
  a coarse value to its four children (fluid children only), restriction is ``Pᵀ`` and the coarse
  operator is the Galerkin product ``A_c = Pᵀ A P`` restricted to fluid cells (computed exactly from the
  fine couplings: obstacles are seen by every level);
- smoothing: red–black Gauss–Seidel, ``sweeps`` red→black sweeps before and the same number of
  black→red sweeps after the coarse correction (the adjoint order), so the V-cycle is a fixed symmetric
  positive definite operator, as preconditioned CG requires;
- coarse correction scaled by ``alpha`` (over-correction; piecewise-constant prolongation under-estimates
  smooth errors, 1 < α < 2 keeps the V-cycle SPD);
- coarsest level: dense pseudo-inverse (≤ :data:`MAX_DENSE_COARSE` cells; it also handles the constant
  null space of all-Neumann problems), else symmetric Gauss–Seidel sweeps.

Launches. The CPU arch runs the whole solve in three launches (start, all iterations with a per-sample
convergence test inside the kernel, finish), with serial loops: on this hardware a parallel Taichi loop
costs ~100 µs of hand-off, more than a whole V-cycle on the karman grids. Other archs run one launch
per iteration with parallel loops and read the convergence flags on the host every :data:`CHECK_EVERY`
iterations.

Loops follow one pattern: the outer loop runs over ``(sample, row)`` and the inner loop over the row, so
reductions (dot products) accumulate in registers and add once per row (a float atomic per cell costs
several times the stencil). Per-level constants (shape, offsets) are compile-time: storage is flat per
sample, ``work[b·NW + offset + i·w + j]``.

Differentiation: the projection (:func:`project`) is linear in ``v`` and the solution operator is
symmetric, so its backward pass (:meth:`PoissonSolver.project_adjoint`) is one more solve whose
right-hand side is built from the incoming gradient (tolerance relative to it), never a
differentiation of these kernels.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import taichi as ti
import torch

from .. import bridge
from ..bridge import launch
from ..grid import DIRICHLET, PERIODIC, Grid
from ..runtime import ensure_init
from . import linear_solve
from .linear_solve import NotConvergedWarning

nd1 = ti.types.ndarray(ndim=1)

MAX_DENSE_COARSE = 1024
"""Largest coarsest level (cells) solved with a dense pseudo-inverse; beyond, Gauss–Seidel sweeps."""

PARALLEL_ABOVE = 1 << 21
"""On the CPU arch, solves with at least this many cells (batch × grid) use parallel loops and one launch
per iteration; smaller ones run serially in one launch (measured on 2 cores: serial wins up to ~1M cells)."""

PARALLEL_LEVEL = 1 << 16
"""On the CPU arch, levels with fewer cells per sample always run serial loops (a parallel loop's hand-off
costs more there); on GPUs every level runs parallel loops."""

CHECK_EVERY = 4
"""Off the serial CPU path, PCG iterations launched between two host reads of the convergence flags (a
converged sample takes zero steps, so the extra iterations change nothing; one host round trip per
``CHECK_EVERY`` iterations instead of one per iteration)."""

COARSE_SWEEPS = 20
"""Symmetric Gauss–Seidel sweep pairs on a coarsest level too large for the dense inverse."""

# Per-sample scalar slots of the ``sc`` buffer.
_RZ, _ACC, _RR, _TARGET, _DONE, _ITERS, _BB, _MEAN = range(8)
_NSC = 8


@dataclass(frozen=True)
class _Plan:
    """Compile-time description of the solver (one hashable ``ti.template()`` argument).

    ``levels[l] = (h, w, x_offset, rhs_offset, stat_offset)``; level 0's ``x`` is CG's ``z`` and its rhs
    is CG's residual. ``stat`` holds per level ``d, 1/d, c_y, c_x`` (``n_l`` each)."""

    levels: tuple
    periodic: tuple  # (y, x): periodic axes wrap their couplings
    n: int  # fine cells per sample
    nw: int  # work floats per sample
    ns: int  # stat floats per mask sample
    mask_batched: bool  # one mask per sample (else one shared mask)
    fluid: int  # stat offset of the fine fluid mask (then the fluid cell count)
    coarse: tuple  # (0, inverse offset): dense; (1, sweeps): Gauss–Seidel
    sweeps: int
    alpha: float
    singular: bool  # no Dirichlet side: constant null space
    inv_h: tuple  # (1/h_y, 1/h_x) of the fine grid
    dirichlet: tuple  # ((y_lo, y_hi), (x_lo, x_hi)): Dirichlet (outflow) pressure sides
    parallel_level: int  # levels with fewer cells per sample run serial loops

    # CG vectors in ``work``: x, r, p, A p, z
    @property
    def x(self) -> int:
        return 0

    @property
    def r(self) -> int:
        return self.n

    @property
    def p(self) -> int:
        return 2 * self.n

    @property
    def ap(self) -> int:
        return 3 * self.n


# ------------------------------------------------------------------------------------ stencil helpers
@ti.func
def _stat_base(b, plan: ti.template()):
    base = 0
    if ti.static(plan.mask_batched):
        base = b * plan.ns
    return base


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


# ------------------------------------------------------------------------------------ V-cycle pieces
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


# ------------------------------------------------------------------------------------ CG pieces
@ti.func
def _dot_into(work: ti.template(), sc: ti.template(), b0, b1, plan: ti.template(), u: ti.template(),
              v: ti.template(), slot: ti.template(), serial: ti.template()):
    """sc[b, slot] += Σ u·v over the fine cells of each sample (the slot must be zero before)."""
    h, w = ti.static(plan.levels[0][0], plan.levels[0][1])
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
def _cg_iteration(work: ti.template(), stat: ti.template(), sc: ti.template(), b0, b1, plan: ti.template(),
                  serial: ti.template()):
    """One PCG iteration for samples ``b0 ≤ b < b1`` (done samples take zero steps):

        z = M⁻¹ r;  β = (r·z)/(r·z)_old (0 first);  p = z + β p;  α = (r·z)/(p·A p)
        x += α p;  r −= α A p;  done when ‖r‖² ≤ target²
    """
    h, w = ti.static(plan.levels[0][0], plan.levels[0][1])
    z = ti.static(plan.levels[0][2])
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


@ti.func
def _fluid_mean_into(work: ti.template(), stat: ti.template(), sc: ti.template(), nb, plan: ti.template(),
                     u: ti.template(), serial: ti.template()):
    """sc[b, MEAN] = mean of the vector at work offset ``u`` over the fluid cells of sample ``b``."""
    h, w = ti.static(plan.levels[0][0], plan.levels[0][1])
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


# ------------------------------------------------------------------------------------ faces
# The projection reads and writes the staggered velocity ``(B, 2, H+1, W+1)`` (flat): component ``c``'s
# face with index ``a`` along axis ``c`` and ``o`` across it. The pressure gradient on a face, with the
# couplings ``c = w_lo w_hi / h²`` of the lower cell face:
#
#     (G p)_face = c h (p_a − p_{a−1})        interior face, or across a periodic seam (faces 0 and N)
#                = ± 2 w p / h                 Dirichlet (outflow) boundary face (ghost −p)
#                = 0                           zero-gradient boundary face, padding
#
# and its transpose ``Gᵀ`` (faces → cells) gathers the same coefficients; ``D`` is the divergence
# (faces → cells) and ``Dᵀ`` its transpose. Hand-written adjoints: the projection is linear in ``v``.
@ti.func
def _cell(c: ti.template(), a, o, plan: ti.template()):
    """Flat cell index of the cell ``a`` along axis ``c``, ``o`` across it."""
    idx = 0
    if ti.static(c == 0):
        idx = a * plan.levels[0][1] + o
    else:
        idx = o * plan.levels[0][1] + a
    return idx


@ti.func
def _face(b, c: ti.template(), a, o, plan: ti.template()):
    """Flat index of component ``c``'s face ``a`` along axis ``c``, ``o`` across it, sample ``b``."""
    h1, w1 = ti.static(plan.levels[0][0] + 1, plan.levels[0][1] + 1)
    idx = 0
    if ti.static(c == 0):
        idx = ((b * 2) * h1 + a) * w1 + o
    else:
        idx = ((b * 2 + 1) * h1 + o) * w1 + a
    return idx


@ti.func
def _grad_face(p: ti.template(), stat: ti.template(), pb, sb, c: ti.template(), a, o, plan: ti.template()):
    """``(G p)`` on face ``a`` of axis ``c`` (``p``: cells of one sample at offset ``pb``)."""
    big_n = ti.static(plan.levels[0][c])
    coup = ti.static(plan.levels[0][4] + (2 + c) * plan.n)
    h = ti.static(1.0 / plan.inv_h[c])
    g = 0.0
    if a > 0 and a < big_n:
        g = stat[sb + coup + _cell(c, a, o, plan)] * h * (p[pb + _cell(c, a, o, plan)] - p[pb + _cell(c, a - 1, o, plan)])
    else:
        if ti.static(plan.periodic[c]):
            c0, cn = _cell(c, 0, o, plan), _cell(c, big_n - 1, o, plan)
            g = stat[sb + coup + c0] * h * (p[pb + c0] - p[pb + cn])
        else:
            if ti.static(plan.dirichlet[c][0]):
                if a == 0:
                    c0 = _cell(c, 0, o, plan)
                    g = 2.0 * stat[sb + plan.fluid + c0] * p[pb + c0] * plan.inv_h[c]
            if ti.static(plan.dirichlet[c][1]):
                if a == big_n:
                    cn = _cell(c, big_n - 1, o, plan)
                    g = -2.0 * stat[sb + plan.fluid + cn] * p[pb + cn] * plan.inv_h[c]
    return g


@ti.func
def _grad_t_cell(gf: ti.template(), stat: ti.template(), b, sb, c: ti.template(), a, o, plan: ti.template()):
    """``(Gᵀ g)`` at cell ``a`` of axis ``c`` from the face values ``gf``: the coefficients of
    :func:`_grad_face` on this cell, gathered from its two faces (and the seam's twin on periodic axes)."""
    big_n = ti.static(plan.levels[0][c])
    coup = ti.static(plan.levels[0][4] + (2 + c) * plan.n)
    h = ti.static(1.0 / plan.inv_h[c])
    s = 0.0
    if a > 0:  # the lower face: + c h
        s += stat[sb + coup + _cell(c, a, o, plan)] * h * gf[_face(b, c, a, o, plan)]
    else:
        if ti.static(plan.periodic[c]):
            s += stat[sb + coup + _cell(c, 0, o, plan)] * h * (gf[_face(b, c, 0, o, plan)] + gf[_face(b, c, big_n, o, plan)])
        elif ti.static(plan.dirichlet[c][0]):
            s += 2.0 * stat[sb + plan.fluid + _cell(c, 0, o, plan)] * plan.inv_h[c] * gf[_face(b, c, 0, o, plan)]
    if a + 1 < big_n:  # the upper face: − c h
        s -= stat[sb + coup + _cell(c, a + 1, o, plan)] * h * gf[_face(b, c, a + 1, o, plan)]
    else:
        if ti.static(plan.periodic[c]):
            s -= stat[sb + coup + _cell(c, 0, o, plan)] * h * (gf[_face(b, c, big_n, o, plan)] + gf[_face(b, c, 0, o, plan)])
        elif ti.static(plan.dirichlet[c][1]):
            s -= 2.0 * stat[sb + plan.fluid + _cell(c, big_n - 1, o, plan)] * plan.inv_h[c] * gf[_face(b, c, big_n, o, plan)]
    return s


@ti.func
def _div_t_face(mu: ti.template(), pb, c: ti.template(), a, o, plan: ti.template()):
    """``(Dᵀ μ)`` on face ``a`` of axis ``c``: (μ below − μ above) / h, cells outside count 0."""
    big_n = ti.static(plan.levels[0][c])
    s = 0.0
    if a >= 1:
        s += mu[pb + _cell(c, a - 1, o, plan)]
    if a < big_n:
        s -= mu[pb + _cell(c, a, o, plan)]
    return s * plan.inv_h[c]


@ti.func
def _rhs_at(src: ti.template(), aux: ti.template(), stat: ti.template(), b, sb, i, j, plan: ti.template(),
            source: ti.template()):
    """The right-hand side at cell ``(i, j)``: ``source`` 0: ``src`` (cells); 1: ``−D src`` (faces);
    2: ``aux − Gᵀ src`` (faces ``src``, cells ``aux``: the projection's adjoint)."""
    r = 0.0
    if ti.static(source == 0):
        r = src[b * plan.n + i * plan.levels[0][1] + j]
    elif ti.static(source == 1):
        r = -(src[_face(b, 0, i + 1, j, plan)] - src[_face(b, 0, i, j, plan)]) * plan.inv_h[0] - (
            src[_face(b, 1, j + 1, i, plan)] - src[_face(b, 1, j, i, plan)]
        ) * plan.inv_h[1]
    else:
        r = (
            aux[b * plan.n + i * plan.levels[0][1] + j]
            - _grad_t_cell(src, stat, b, sb, 0, i, j, plan)
            - _grad_t_cell(src, stat, b, sb, 1, j, i, plan)
        )
    return r


# ------------------------------------------------------------------------------------ kernels
@ti.kernel
def _pcg_start(src: nd1, aux: nd1, x0: nd1, work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(),
               source: ti.template(), warm: ti.template(), rtol: float, serial: ti.template()):
    """b from ``src``/``aux`` (:func:`_rhs_at`); r = f·(b − mean) (mean over fluid, singular systems
    only), x = f·x0 or 0, r −= A x, p = 0; sc: ‖b_f‖², ‖r‖², target = rtol²‖b_f‖², done, zero
    iterations, (r·z)_old = 0."""
    h, w, n = ti.static(plan.levels[0][0], plan.levels[0][1], plan.n)
    ti.loop_config(serialize=serial)
    for b in range(nb):
        for s in ti.static(range(_NSC)):
            sc[b * _NSC + s] = 0.0
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange(nb, h):  # the right-hand side into the work buffer
        wb, sb = b * plan.nw + i * w, _stat_base(b, plan)
        for j in range(w):
            work[wb + plan.r + j] = _rhs_at(src, aux, stat, b, sb, i, j, plan, source)
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


@ti.kernel
def _pcg_finish(rhs: nd1, faces: nd1, out: nd1, out_faces: nd1, work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(),
                sink: ti.template(), serial: ti.template()):
    """``out`` (cells) = f·(x − mean), zero when b_f = 0 (zero fluid mean for singular systems), plus
    ``sink`` 0: the identity rows of solid cells, ``(1 − f)·rhs`` (a plain solve);
    1: ``out_faces = faces − G out`` on real faces (the projected velocity; padding copied);
    2: ``out_faces = faces − Dᵀ out`` on real faces (the projection's adjoint; padding copied)."""
    h, w, n = ti.static(plan.levels[0][0], plan.levels[0][1], plan.n)
    if ti.static(plan.singular):
        _fluid_mean_into(work, stat, sc, nb, plan, plan.x, serial)
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange(nb, h):
        wb, sb = b * plan.nw + i * w, _stat_base(b, plan) + plan.fluid + i * w
        mean = 0.0
        if ti.static(plan.singular):
            mean = sc[b * _NSC + _MEAN]
        live = ti.select(sc[b * _NSC + _BB] == 0.0, 0.0, 1.0)
        for j in range(w):
            f = stat[sb + j]
            x = live * f * (work[wb + plan.x + j] - mean)
            if ti.static(sink == 0):
                x += (1.0 - f) * rhs[b * n + i * w + j]
            out[b * n + i * w + j] = x
    if ti.static(sink != 0):
        ti.loop_config(serialize=serial)
        for b, i in ti.ndrange(nb, h + 1):
            sb = _stat_base(b, plan)
            for c in ti.static(range(2)):
                for k in range(w + 1):
                    a, o, real = k, i, i < h  # v_x face (i, k): along x, real below row H
                    if ti.static(c == 0):
                        a, o, real = i, k, k < w  # v_y face (i, k): along y, real left of column W
                    idx = _face(b, c, a, o, plan)
                    d = 0.0
                    if real:
                        if ti.static(sink == 1):
                            d = _grad_face(out, stat, b * n, sb, c, a, o, plan)
                        else:
                            d = _div_t_face(out, b * n, c, a, o, plan)
                    out_faces[idx] = faces[idx] - d


@ti.kernel
def _vcycle_only(work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(), serial: ti.template()):
    """z = M⁻¹ r alone (tests: the preconditioner must be symmetric positive definite)."""
    _vcycle(work, stat, 0, nb, plan, serial)


@ti.kernel
def _apply_only(work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(), serial: ti.template()):
    """A p → A p slot (tests)."""
    h, w = ti.static(plan.levels[0][0], plan.levels[0][1])
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange(nb, h):
        wb, sb = b * plan.nw, _stat_base(b, plan)
        for j in range(w):
            work[wb + plan.ap + i * w + j] = _apply_at(work, stat, wb, sb, i, j, plan.p, plan.levels[0], plan.periodic)


# ------------------------------------------------------------------------------------ operator arrays
def diagonal(fluid: torch.Tensor, grid: Grid, bc: tuple[int, ...]) -> torch.Tensor:
    """Diagonal of ``A`` ``(B or 1, 1, H, W)``: per face, the neighbour's fluid weight (interior or across a
    periodic seam), 2 for a Dirichlet boundary face (ghost −p), 0 for a zero-gradient one; over h²;
    1 on solid cells."""
    hy, hx = grid.spacing
    d = torch.zeros_like(fluid)
    for dim, (lo, hi), inv_h2 in ((2, bc[0:2], 1.0 / hy**2), (3, bc[2:4], 1.0 / hx**2)):
        n = fluid.shape[dim]
        for code, shift in ((lo, 1), (hi, -1)):  # lower neighbour: shift the mask down by one
            nb = torch.roll(fluid, shift, dims=dim)
            if code != PERIODIC:
                nb.narrow(dim, 0 if shift == 1 else n - 1, 1).fill_(2.0 if code == DIRICHLET else 0.0)
            d = d + nb * inv_h2
    return torch.where(fluid > 0.5, d, torch.ones_like(d)).contiguous()


def couplings(fluid: torch.Tensor, grid: Grid, bc: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Lower-face couplings ``(c_y, c_x)`` of ``A``, each ``(B or 1, 1, H, W)``: ``c[i] = w_i w_{i−1} / h²``
    (wrapping on a periodic axis, 0 on the first row/column otherwise)."""
    out = []
    for dim, code, h in ((2, bc[0], grid.spacing[0]), (3, bc[2], grid.spacing[1])):
        c = fluid * torch.roll(fluid, 1, dims=dim) / h**2
        if code != PERIODIC:
            c.narrow(dim, 0, 1).zero_()
        out.append(c.contiguous())
    return tuple(out)


def _galerkin(fluid: torch.Tensor, diag: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The coarse level's ``(fluid, d, c_y, c_x)`` of ``Pᵀ A P`` on fluid cells (P: copy to fluid children)."""
    fc = torch.nn.functional.max_pool2d(fluid, 2)
    cyc = cy[..., 0::2, 0::2] + cy[..., 0::2, 1::2]  # the coarse cell's lower y face: its bottom children's
    cxc = cx[..., 0::2, 0::2] + cx[..., 1::2, 0::2]
    inner = cy[..., 1::2, 0::2] + cy[..., 1::2, 1::2] + cx[..., 0::2, 1::2] + cx[..., 1::2, 1::2]
    d = torch.nn.functional.avg_pool2d(fluid * diag, 2) * 4 - 2 * inner
    d = torch.where(fc > 0.5, d, torch.ones_like(d))
    return fc, d, cyc, cxc


def _dense(diag: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """The assembled level operator per mask sample, ``(B or 1, n, n)`` (float64)."""
    bm, _, h, w = diag.shape
    n = h * w
    idx = torch.arange(n).view(h, w)
    mats = []
    for k in range(bm):
        a = torch.diag(diag[k, 0].flatten().double())
        for c, nb in ((cy[k, 0], torch.roll(idx, 1, 0)), (cx[k, 0], torch.roll(idx, 1, 1))):
            a.index_put_((idx.flatten(), nb.flatten()), -c.flatten().double(), accumulate=True)
            a.index_put_((nb.flatten(), idx.flatten()), -c.flatten().double(), accumulate=True)
        mats.append(a)
    return torch.stack(mats)


# ------------------------------------------------------------------------------------ the solver
class PoissonSolver:
    """Multigrid-preconditioned CG for ``A x = b`` on ``grid`` with obstacle mask ``fluid`` and pressure
    boundary codes ``bc`` (see module docstring); one instance per mask, reused across calls.

    Args:
        grid: the 2D grid ``(H, W)``; fluid: ``(B or 1, 1, H, W)`` 0/1 mask; bc: pressure boundary codes.
        sweeps: red–black Gauss–Seidel sweeps before and after each coarse correction.
        alpha: coarse-correction scaling (over-correction), ``0 < α < 2``.

    The defaults were chosen by measurement (karman scene, rtol 1e-3, 2-core CPU): α = 1 needs 10 / 20 /
    28 iterations at 32×64 / 128×256 / 256×512, α = 1.8 needs 5 / 6 / 6; one sweep was faster than two or
    three (fewer passes per iteration outweigh the extra iteration).
        min_size: stop coarsening when an axis would drop below this many cells (or become odd).
    """

    def __init__(
        self,
        grid: Grid,
        fluid: torch.Tensor,
        bc: tuple[int, ...],
        *,
        sweeps: int = 1,
        alpha: float = 1.8,
        min_size: int = 4,
    ) -> None:
        if not 0.0 < alpha < 2.0:
            raise ValueError(f"alpha must be in (0, 2) to keep the V-cycle positive definite, got {alpha}")
        rt = ensure_init()
        self.grid, self.bc, self.dtype, self.device = grid, tuple(bc), fluid.dtype, fluid.device
        f = fluid.to(torch.float64)
        d = diagonal(f, grid, bc)
        cy, cx = couplings(f, grid, bc)
        levels = [(f, d, cy, cx)]
        h, w = grid.shape
        while h % 2 == 0 and w % 2 == 0 and h // 2 >= min_size and w // 2 >= min_size:
            levels.append(_galerkin(*levels[-1]))
            h, w = h // 2, w // 2
        self.n_levels = len(levels)
        n = grid.shape[0] * grid.shape[1]
        layout, stat_parts, w_off, s_off = [], [], 5 * n, 0
        for lvl, (_, dl, cyl, cxl) in enumerate(levels):
            lh, lw = dl.shape[2:]
            nl = lh * lw
            x_off, rhs_off = (4 * n, n) if lvl == 0 else (w_off, w_off + nl)
            if lvl > 0:
                w_off += 2 * nl
            layout.append((lh, lw, x_off, rhs_off, s_off))
            stat_parts += [dl.flatten(1), (1.0 / dl).flatten(1), cyl.flatten(1), cxl.flatten(1)]
            s_off += 4 * nl
        fluid_off = s_off
        stat_parts += [f.flatten(1), f.flatten(1).sum(1, keepdim=True)]
        s_off += n + 1
        last = levels[-1]
        n_low = last[1].shape[2] * last[1].shape[3]
        if n_low <= MAX_DENSE_COARSE:
            inv = torch.linalg.pinv(_dense(*last[1:]), hermitian=True)
            stat_parts.append(inv.flatten(1))
            coarse = (0, s_off)
            s_off += n_low * n_low
        else:
            coarse = (1, COARSE_SWEEPS)
        self.stat = torch.cat(stat_parts, dim=1).to(dtype=rt.dtype, device=self.device).contiguous().flatten()
        self.plan = _Plan(
            levels=tuple(layout),
            periodic=(bc[0] == PERIODIC, bc[2] == PERIODIC),
            n=n,
            nw=w_off,
            ns=s_off,
            mask_batched=fluid.shape[0] > 1,
            fluid=fluid_off,
            coarse=coarse,
            sweeps=sweeps,
            alpha=float(alpha),
            singular=DIRICHLET not in bc,
            inv_h=(1.0 / grid.spacing[0], 1.0 / grid.spacing[1]),
            dirichlet=((bc[0] == DIRICHLET, bc[1] == DIRICHLET), (bc[2] == DIRICHLET, bc[3] == DIRICHLET)),
            parallel_level=PARALLEL_LEVEL if rt.arch == "cpu" and not bridge.FORCE_PARALLEL else 0,
        )
        self.mask_batch = fluid.shape[0]
        self._work: dict[int, torch.Tensor] = {}

    # -- buffers
    def _buffers(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask_batch not in (1, batch):
            raise ValueError(f"the solver's mask has batch size {self.mask_batch} but the right-hand side has {batch}")
        work = self._work.get(batch)
        if work is None:
            work = self._work[batch] = torch.zeros(batch * self.plan.nw, dtype=self.stat.dtype, device=self.device)
        return work, torch.zeros(batch * _NSC, dtype=self.stat.dtype, device=self.device)

    def serial(self, batch: int) -> bool:
        """Whole solves in one launch with serial loops (the CPU arch below :data:`PARALLEL_ABOVE`, unless
        :data:`taichi_dp.bridge.FORCE_PARALLEL`)."""
        return ensure_init().arch == "cpu" and batch * self.plan.n < PARALLEL_ABOVE and not bridge.FORCE_PARALLEL

    # -- the solve
    def solve(
        self,
        b: torch.Tensor,
        x0: torch.Tensor | None = None,
        *,
        rtol: float = 1e-5,
        max_iter: int = 5000,
        adjoint: bool = False,
    ) -> torch.Tensor:
        """Solve ``A x = b`` for ``b`` ``(B, 1, H, W)`` without autograd: CG on the fluid cells to
        ``‖r‖ ≤ rtol·‖b_f‖`` per sample (warm start ``x0``), ``x = b`` on solid cells; for a singular
        system ``b`` is projected onto the range and ``x`` has zero fluid mean. Records
        :data:`taichi_dp.ops.linear_solve.last_solve`; warns :class:`NotConvergedWarning` with the residual
        when ``max_iter`` is reached."""
        batch = b.shape[0]
        bf = b.detach().contiguous().view(-1)
        out = torch.empty_like(bf)
        self._run(batch, 0, bf, bf, x0, rtol, max_iter, adjoint, bf, bf, out, out)
        return out.view(b.shape)

    def project(
        self, v: torch.Tensor, x0: torch.Tensor | None = None, *, rtol: float = 1e-5, max_iter: int = 5000
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pressure projection of a staggered velocity ``v`` ``(B, 2, H+1, W+1)`` (boundary conditions
        already imposed), without autograd: ``p = S(−f·D v)``, ``v⁺ = v − G p`` (padding copied), in three
        launches. Returns ``(v⁺, p)`` with ``p`` ``(B, 1, H, W)``."""
        batch = v.shape[0]
        vf = v.detach().contiguous().view(-1)
        p = torch.empty(batch * self.plan.n, dtype=vf.dtype, device=vf.device)
        out = torch.empty_like(vf)
        self._run(batch, 1, vf, vf, x0, rtol, max_iter, False, vf, vf, p, out)
        return out.view(v.shape), p.view(batch, 1, *self.grid.shape)

    def project_adjoint(
        self, g_out: torch.Tensor, g_p: torch.Tensor, *, rtol: float = 1e-5, max_iter: int = 5000
    ) -> torch.Tensor:
        """The vector–Jacobian product of :meth:`project`: ``g_v = g_out − Dᵀ(f·λ)`` with
        ``λ = S(g_p − Gᵀ g_out)`` (``S`` symmetric: one more solve, ``rtol`` relative to its rhs)."""
        batch = g_out.shape[0]
        gf, pf = g_out.detach().contiguous().view(-1), g_p.detach().contiguous().view(-1)
        lam = torch.empty_like(pf)
        g_v = torch.empty_like(gf)
        self._run(batch, 2, gf, pf, None, rtol, max_iter, True, gf, gf, lam, g_v)
        return g_v.view(g_out.shape)

    def _run(self, batch: int, mode: int, src: torch.Tensor, aux: torch.Tensor, x0: torch.Tensor | None, rtol: float,
             max_iter: int, adjoint: bool, rhs: torch.Tensor, faces: torch.Tensor, out: torch.Tensor,
             out_faces: torch.Tensor) -> None:
        """Start (right-hand side of kind ``mode``), iterate, finish (output of kind ``mode``), report."""
        work, sc = self._buffers(batch)
        warm = x0 is not None
        xf = x0.detach().contiguous().view(-1) if warm else aux
        serial = self.serial(batch)
        if serial and ensure_init().arch != "cpu":  # measured: on Vulkan (SPIR-V) the one-launch solve
            # leaves every sample after the first unsolved; the parallel path is the one GPUs use
            raise RuntimeError("the one-launch serial PCG solve is CPU-only; other archs use the parallel path")
        launch(_pcg_start, src, aux, xf, work, self.stat, sc, batch, self.plan, mode, warm, float(rtol), serial)
        if serial:
            launch(_pcg_all, work, self.stat, sc, batch, self.plan, int(max_iter))
        else:  # converged samples take zero steps, so reading the flags every few iterations is exact
            done = 0
            while done < max_iter and not bool((sc[_DONE::_NSC] != 0).all()):
                for _ in range(min(CHECK_EVERY, max_iter - done)):
                    launch(_pcg_one, work, self.stat, sc, batch, self.plan)
                done += CHECK_EVERY
        launch(_pcg_finish, rhs, faces, out, out_faces, work, self.stat, sc, batch, self.plan, mode, serial)
        self._report(sc, rtol, max_iter, adjoint)

    def _report(self, sc: torch.Tensor, rtol: float, max_iter: int, adjoint: bool) -> None:
        rows = sc.view(-1, _NSC).tolist()  # one device → host copy, then plain Python
        info = linear_solve.last_solve
        info.iterations = int(max(r[_ITERS] for r in rows))
        info.residual = max(math.sqrt(r[_RR] / r[_BB]) if r[_BB] > 0 else 0.0 for r in rows)
        info.converged, info.adjoint = all(r[_DONE] != 0 for r in rows), adjoint
        if not info.converged:
            warnings.warn(
                f"{'adjoint ' if adjoint else ''}multigrid-PCG did not converge in {max_iter} iterations: "
                f"relative residual {info.residual:.3e} > rtol {rtol:.1e}",
                NotConvergedWarning,
                stacklevel=4,
            )

    # -- the pieces, for tests and diagnostics
    def _run_piece(self, kernel: Any, vec: torch.Tensor, into: int, out_of: int) -> torch.Tensor:
        batch, n = vec.shape[0], self.plan.n
        work, sc = self._buffers(batch)
        w = work.view(batch, self.plan.nw)
        w[:, into : into + n] = vec.reshape(batch, n)
        launch(kernel, work, self.stat, sc, batch, self.plan, self.serial(batch))
        return w[:, out_of : out_of + n].clone().view(vec.shape)

    def vcycle(self, r: torch.Tensor) -> torch.Tensor:
        """The preconditioner ``M⁻¹ r`` for ``r`` ``(B, 1, H, W)`` (zero on solid cells)."""
        return self._run_piece(_vcycle_only, r, self.plan.r, self.plan.levels[0][2])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` ``(B, 1, H, W)``."""
        return self._run_piece(_apply_only, x, self.plan.p, self.plan.ap)


def project(
    solver: PoissonSolver, v: torch.Tensor, x0: torch.Tensor | None = None, *, rtol: float = 1e-5, max_iter: int = 5000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable :meth:`PoissonSolver.project`: ``(v⁺, p)``; the backward pass is
    :meth:`PoissonSolver.project_adjoint` (one solve); ``x0`` gets no gradient."""
    if torch.is_grad_enabled() and v.requires_grad:
        return _Project.apply(solver, rtol, max_iter, v, x0)
    return solver.project(v, x0, rtol=rtol, max_iter=max_iter)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, solver: PoissonSolver, rtol: float, max_iter: int, v: torch.Tensor, x0: Any) -> Any:
        ctx.solver, ctx.rtol, ctx.max_iter = solver, rtol, max_iter
        ctx.shapes = (v.shape, (v.shape[0], 1, *solver.grid.shape))
        return solver.project(v, x0, rtol=rtol, max_iter=max_iter)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_out: torch.Tensor | None, g_p: torch.Tensor | None) -> Any:
        ref = g_out if g_out is not None else g_p
        g_out = torch.zeros(ctx.shapes[0], dtype=ref.dtype, device=ref.device) if g_out is None else g_out
        g_p = torch.zeros(ctx.shapes[1], dtype=ref.dtype, device=ref.device) if g_p is None else g_p
        g_v = ctx.solver.project_adjoint(g_out, g_p, rtol=ctx.rtol, max_iter=ctx.max_iter)
        return None, None, None, g_v, None


_CACHE: "OrderedDict[tuple, tuple[torch.Tensor, int, PoissonSolver]]" = OrderedDict()


def solver_for(grid: Grid, fluid: torch.Tensor, bc: tuple[int, ...]) -> PoissonSolver:
    """A cached :class:`PoissonSolver` for this grid, boundary and mask tensor. The cache holds the mask
    tensor itself (so its identity cannot be reused by another tensor) and its version counter (so an
    in-place edit rebuilds the hierarchy); it is derived data, never state that changes results."""
    key = (grid, tuple(bc), id(fluid), ensure_init().dtype)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is fluid and hit[1] == fluid._version:
        _CACHE.move_to_end(key)
        return hit[2]
    solver = PoissonSolver(grid, fluid, bc)
    _CACHE[key] = (fluid, fluid._version, solver)
    while len(_CACHE) > 8:
        _CACHE.popitem(last=False)
    return solver

