"""Face operators of the fused projection: divergence ``D``, pressure gradient ``G`` and their transposes
between the staggered velocity and the cells, on the fine level.

The projection reads and writes the staggered velocity ``(B, 2, H+1, W+1)`` (flat): component ``c``'s
face with index ``a`` along axis ``c`` and ``o`` across it. The pressure gradient on a face, with the
couplings ``c = w_lo w_hi / h²`` of the lower cell face:

    (G p)_face = c h (p_a − p_{a−1})        interior face, or across a periodic seam (faces 0 and N)
               = ± 2 w p / h                 Dirichlet (outflow) boundary face (ghost −p)
               = 0                           zero-gradient boundary face, padding

and its transpose ``Gᵀ`` (faces → cells) gathers the same coefficients; ``D`` is the divergence
(faces → cells) and ``Dᵀ`` its transpose. Hand-written adjoints: the projection is linear in ``v``.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti

from .plan import _stat_base


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


# ------------------------------------------------------------------------------------ right-hand sides
@ti.func
def _rhs_minus_divergence(v: ti.template(), work: ti.template(), nb, plan: ti.template(), serial: ti.template()):
    """CG's ``r`` = ``−D v`` (faces → cells): the projection's right-hand side."""
    h, w = ti.static(plan.levels[0][0], plan.levels[0][1])
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange(nb, h):
        wb = b * plan.nw + i * w
        for j in range(w):
            work[wb + plan.r + j] = -(v[_face(b, 0, i + 1, j, plan)] - v[_face(b, 0, i, j, plan)]) * plan.inv_h[0] - (
                v[_face(b, 1, j + 1, i, plan)] - v[_face(b, 1, j, i, plan)]
            ) * plan.inv_h[1]


@ti.func
def _rhs_adjoint(g_v_out: ti.template(), g_p: ti.template(), work: ti.template(), stat: ti.template(), nb,
                 plan: ti.template(), serial: ti.template()):
    """CG's ``r`` = ``g_p − Gᵀ g_v_out`` (faces and cells → cells): the projection adjoint's right-hand side."""
    h, w = ti.static(plan.levels[0][0], plan.levels[0][1])
    ti.loop_config(serialize=serial)
    for b, i in ti.ndrange(nb, h):
        wb, sb = b * plan.nw + i * w, _stat_base(b, plan)
        for j in range(w):
            work[wb + plan.r + j] = (
                g_p[b * plan.n + i * plan.levels[0][1] + j]
                - _grad_t_cell(g_v_out, stat, b, sb, 0, i, j, plan)
                - _grad_t_cell(g_v_out, stat, b, sb, 1, j, i, plan)
            )


# ------------------------------------------------------------------------------------ face outputs
@ti.func
def _faces_minus(faces: ti.template(), cells: ti.template(), out_faces: ti.template(), stat: ti.template(), nb,
                 plan: ti.template(), serial: ti.template(), transpose_divergence: ti.template()):
    """``out_faces = faces − G cells`` (the projected velocity), or ``faces − Dᵀ cells`` with
    ``transpose_divergence`` (the projection's adjoint), on real faces; padding copied."""
    h, w, n = ti.static(plan.levels[0][0], plan.levels[0][1], plan.n)
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
                    if ti.static(not transpose_divergence):
                        d = _grad_face(cells, stat, b * n, sb, c, a, o, plan)
                    else:
                        d = _div_t_face(cells, b * n, c, a, o, plan)
                out_faces[idx] = faces[idx] - d
