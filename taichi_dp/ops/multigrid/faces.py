"""Face operators of the fused projection: divergence ``D``, pressure gradient ``G`` and their transposes
between the staggered velocity and the cells, on the fine level.

The projection reads and writes the staggered velocity ``(B, nd, *(N + 1))`` (flat; layout in
:mod:`taichi_dp.grid.staggered`): component ``c``'s face with per-axis index ``ix`` lies between cells
``ix − e_c`` and ``ix``, i.e. its index along axis ``c`` is ``a = ix[c]``. The pressure gradient on a face, with the
couplings ``c = w_lo w_hi / h²`` of the lower cell face:

    (G p)_face = c h (p_a − p_{a−1})        interior face, or across a periodic seam (faces 0 and N)
               = ± 2 w p / h                 Dirichlet (outflow) boundary face (ghost −p)
               = 0                           zero-gradient boundary face, padding

and its transpose ``Gᵀ`` (faces → cells) gathers the same coefficients; ``D`` is the divergence
(faces → cells) and ``Dᵀ`` its transpose. Hand-written adjoints: the projection is linear in ``v``.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import math

import taichi as ti

from .plan import _stat_base, row_index, rows, strides


def _padded(plan) -> tuple:
    """Per-axis extent of the staggered tensor: ``N + 1`` on every axis."""
    return tuple(n + 1 for n in plan.shape)


@ti.func
def _cell(ix, c: ti.template(), a, plan: ti.template()):
    """Flat index of the cell with per-axis index ``ix``, its entry along axis ``c`` replaced by ``a``."""
    st = ti.static(strides(plan.shape))
    k = a * st[c]
    for d in ti.static(range(plan.nd)):
        if ti.static(d != c):
            k += ix[d] * st[d]
    return k


@ti.func
def _face(b, c: ti.template(), ix, a, plan: ti.template()):
    """Flat index of component ``c``'s face at per-axis index ``ix`` with its entry along ``c`` replaced by
    ``a``, sample ``b``."""
    pst = ti.static(strides(_padded(plan)))
    k = (b * plan.nd + c) * ti.static(math.prod(_padded(plan))) + a * pst[c]
    for d in ti.static(range(plan.nd)):
        if ti.static(d != c):
            k += ix[d] * pst[d]
    return k


@ti.func
def _grad_face(p: ti.template(), stat: ti.template(), pb, sb, c: ti.template(), ix, plan: ti.template()):
    """``(G p)`` on component ``c``'s face at ``ix`` (``p``: cells of one sample at offset ``pb``)."""
    big_n = ti.static(plan.shape[c])
    coup = ti.static(plan.levels[0][3] + (2 + c) * plan.n)
    h = ti.static(1.0 / plan.inv_h[c])
    a = ix[c]
    g = 0.0
    if a > 0 and a < big_n:
        k = _cell(ix, c, a, plan)
        g = stat[sb + coup + k] * h * (p[pb + k] - p[pb + _cell(ix, c, a - 1, plan)])
    else:
        if ti.static(plan.periodic[c]):
            c0, cn = _cell(ix, c, 0, plan), _cell(ix, c, big_n - 1, plan)
            g = stat[sb + coup + c0] * h * (p[pb + c0] - p[pb + cn])
        else:
            if ti.static(plan.dirichlet[c][0]):
                if a == 0:
                    c0 = _cell(ix, c, 0, plan)
                    g = 2.0 * stat[sb + plan.fluid + c0] * p[pb + c0] * plan.inv_h[c]
            if ti.static(plan.dirichlet[c][1]):
                if a == big_n:
                    cn = _cell(ix, c, big_n - 1, plan)
                    g = -2.0 * stat[sb + plan.fluid + cn] * p[pb + cn] * plan.inv_h[c]
    return g


@ti.func
def _grad_t_cell(gf: ti.template(), stat: ti.template(), b, sb, c: ti.template(), ix, plan: ti.template()):
    """``(Gᵀ g)`` at the cell ``ix`` from the faces of axis ``c`` (values ``gf``): the coefficients of
    :func:`_grad_face` on this cell, gathered from its two faces (and the seam's twin on periodic axes)."""
    big_n = ti.static(plan.shape[c])
    coup = ti.static(plan.levels[0][3] + (2 + c) * plan.n)
    h = ti.static(1.0 / plan.inv_h[c])
    a = ix[c]
    s = 0.0
    if a > 0:  # the lower face: + c h
        s += stat[sb + coup + _cell(ix, c, a, plan)] * h * gf[_face(b, c, ix, a, plan)]
    else:
        if ti.static(plan.periodic[c]):
            s += stat[sb + coup + _cell(ix, c, 0, plan)] * h * (gf[_face(b, c, ix, 0, plan)] + gf[_face(b, c, ix, big_n, plan)])
        elif ti.static(plan.dirichlet[c][0]):
            s += 2.0 * stat[sb + plan.fluid + _cell(ix, c, 0, plan)] * plan.inv_h[c] * gf[_face(b, c, ix, 0, plan)]
    if a + 1 < big_n:  # the upper face: − c h
        s -= stat[sb + coup + _cell(ix, c, a + 1, plan)] * h * gf[_face(b, c, ix, a + 1, plan)]
    else:
        if ti.static(plan.periodic[c]):
            s -= stat[sb + coup + _cell(ix, c, 0, plan)] * h * (gf[_face(b, c, ix, big_n, plan)] + gf[_face(b, c, ix, 0, plan)])
        elif ti.static(plan.dirichlet[c][1]):
            s -= 2.0 * stat[sb + plan.fluid + _cell(ix, c, big_n - 1, plan)] * plan.inv_h[c] * gf[_face(b, c, ix, big_n, plan)]
    return s


@ti.func
def _div_t_face(mu: ti.template(), pb, c: ti.template(), ix, plan: ti.template()):
    """``(Dᵀ μ)`` on component ``c``'s face at ``ix``: (μ below − μ above) / h, cells outside count 0."""
    big_n = ti.static(plan.shape[c])
    a = ix[c]
    s = 0.0
    if a >= 1:
        s += mu[pb + _cell(ix, c, a - 1, plan)]
    if a < big_n:
        s -= mu[pb + _cell(ix, c, a, plan)]
    return s * plan.inv_h[c]


# ------------------------------------------------------------------------------------ right-hand sides
@ti.func
def _rhs_minus_divergence(v: ti.template(), work: ti.template(), nb, plan: ti.template(), serial: ti.template()):
    """CG's ``r`` = ``−D v`` (faces → cells): the projection's right-hand side."""
    nr, w = ti.static(rows(plan.shape), plan.shape[plan.nd - 1])
    ti.loop_config(serialize=serial)
    for b, row in ti.ndrange(nb, nr):
        wb = b * plan.nw + row * w
        ix = row_index(row, 0, plan.shape)
        for j in range(w):
            ix[plan.nd - 1] = j
            acc = 0.0
            for c in ti.static(range(plan.nd)):
                acc -= (v[_face(b, c, ix, ix[c] + 1, plan)] - v[_face(b, c, ix, ix[c], plan)]) * plan.inv_h[c]
            work[wb + plan.r + j] = acc


@ti.func
def _rhs_adjoint(g_v_out: ti.template(), g_p: ti.template(), work: ti.template(), stat: ti.template(), nb,
                 plan: ti.template(), serial: ti.template()):
    """CG's ``r`` = ``g_p − Gᵀ g_v_out`` (faces and cells → cells): the projection adjoint's right-hand side."""
    nr, w = ti.static(rows(plan.shape), plan.shape[plan.nd - 1])
    ti.loop_config(serialize=serial)
    for b, row in ti.ndrange(nb, nr):
        wb, sb = b * plan.nw + row * w, _stat_base(b, plan)
        ix = row_index(row, 0, plan.shape)
        for j in range(w):
            ix[plan.nd - 1] = j
            acc = g_p[b * plan.n + row * w + j]
            for c in ti.static(range(plan.nd)):
                acc -= _grad_t_cell(g_v_out, stat, b, sb, c, ix, plan)
            work[wb + plan.r + j] = acc


# ------------------------------------------------------------------------------------ face outputs
@ti.func
def _faces_minus(faces: ti.template(), cells: ti.template(), out_faces: ti.template(), stat: ti.template(), nb,
                 plan: ti.template(), serial: ti.template(), transpose_divergence: ti.template()):
    """``out_faces = faces − G cells`` (the projected velocity), or ``faces − Dᵀ cells`` with
    ``transpose_divergence`` (the projection's adjoint), on real faces; padding copied."""
    padded = ti.static(_padded(plan))
    nd, n = ti.static(plan.nd, plan.n)
    ti.loop_config(serialize=serial)
    for b, prow in ti.ndrange(nb, ti.static(rows(padded))):
        sb = _stat_base(b, plan)
        for c in ti.static(range(nd)):
            for k in range(padded[nd - 1]):
                ix = row_index(prow, k, padded)
                real = True  # component c's faces are real where every other axis is inside the grid
                for e in ti.static(range(nd)):
                    if ti.static(e != c):
                        real = real and ix[e] < plan.shape[e]
                idx = _face(b, c, ix, ix[c], plan)
                d = 0.0
                if real:
                    if ti.static(not transpose_divergence):
                        d = _grad_face(cells, stat, b * n, sb, c, ix, plan)
                    else:
                        d = _div_t_face(cells, b * n, c, ix, plan)
                out_faces[idx] = faces[idx] - d
