"""Taichi helper functions shared by the operator kernels: ghost values and interpolation, for any
number of spatial axes (1D, 2D, 3D) from one source.

Dimension-generic: every helper reads the number of spatial axes ``nd = len(u.shape) - 2`` of its array
argument (layout ``(B, C, *spatial)``) at compile time, and loops over axes and interpolation corners with
``ti.static`` (fully unrolled). A kernel built on them is compiled once per array rank, i.e. once per
grid dimension. Per-axis indices and positions are passed as ``ti.Vector``s (or static-length
lists/tuples) with one entry per spatial axis, in axis order (``(y, x)`` in 2D, ``(z, y, x)`` in 3D).

Boundary codes (``PERIODIC``, ``DIRICHLET``, ``ZERO_GRADIENT``, ``CONSTANT_OUTSIDE`` from :mod:`taichi_dp.grid`) are
``ti.template()`` constants, flattened ``(axis0_lo, axis0_hi, axis1_lo, ...)`` like
:attr:`taichi_dp.grid.Boundary.codes`, so every branch on them is resolved at compile time. Everything
here is branch-free at run time (``ti.select``), which keeps Taichi's reverse-mode autodiff simple and
exact.

Any value outside the grid along one axis is an affine function of one interior value: ``a + s * u[j]``
(periodic: wrap ``j``; zero-gradient: clamp ``j``; Dirichlet ``g``: ghost ``2g - u[0]`` i.e. ``a = 2g``,
``s = -1``; constant-outside ``g``: ``a = g``, ``s = 0``). Axes compose from the last one outwards:
``value = a_0 + s_0 (a_1 + s_1 (a_2 + s_2 u[j_0, j_1, j_2]))``.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.
import taichi as ti

from ..grid import CONSTANT_OUTSIDE, DIRICHLET, PERIODIC, ZERO_GRADIENT


# ------------------------------------------------------------------------------------ one axis
@ti.func
def ghost(i, n, lo: ti.template(), hi: ti.template(), g_lo, g_hi):
    """Map an integer cell index ``i`` (any value if periodic, else in ``[-1, n]``) to ``(j, a, s)``
    such that the value at ``i`` is ``a + s * u[j]`` with ``0 <= j < n``."""
    j = ti.min(ti.max(i, 0), n - 1)
    a = 0.0
    s = 1.0
    if ti.static(lo == PERIODIC):
        j = (i % n + n) % n
    else:
        if ti.static(lo == DIRICHLET):
            a = ti.select(i < 0, 2.0 * g_lo, a)
            s = ti.select(i < 0, -1.0, s)
        if ti.static(hi == DIRICHLET):
            a = ti.select(i >= n, 2.0 * g_hi, a)
            s = ti.select(i >= n, -1.0, s)
        if ti.static(lo == CONSTANT_OUTSIDE):
            a = ti.select(i < 0, g_lo, a)
            s = ti.select(i < 0, 0.0, s)
        if ti.static(hi == CONSTANT_OUTSIDE):
            a = ti.select(i >= n, g_hi, a)
            s = ti.select(i >= n, 0.0, s)
    return j, a, s


@ti.func
def clamp_position(p, n, lo: ti.template(), hi: ti.template()):
    """Clamp a continuous index-space position ``p`` (cell ``i`` centred at ``p = i``) to where the
    boundary condition defines values: the wall face ``-0.5``/``n - 0.5`` for Dirichlet, the first/last
    centre for zero-gradient, the ghost centre ``-1``/``n`` for constant-outside; periodic positions are
    left alone (wrapped by :func:`ghost`)."""
    q = p
    if ti.static(lo == DIRICHLET):
        q = ti.max(q, -0.5)
    if ti.static(lo == ZERO_GRADIENT):
        q = ti.max(q, 0.0)
    if ti.static(lo == CONSTANT_OUTSIDE):
        q = ti.max(q, -1.0)
    if ti.static(hi == DIRICHLET):
        q = ti.min(q, n - 0.5)
    if ti.static(hi == ZERO_GRADIENT):
        q = ti.min(q, n - 1.0)
    if ti.static(hi == CONSTANT_OUTSIDE):
        q = ti.min(q, n * 1.0)
    return q


@ti.func
def ghost_axis(u: ti.template(), axis: ti.template(), i, bc: ti.template(), g: ti.template()):
    """:func:`ghost` for integer index ``i`` along spatial ``axis`` of ``u`` (``(B, C, *spatial)``)."""
    return ghost(i, u.shape[2 + axis], bc[2 * axis], bc[2 * axis + 1], g[2 * axis], g[2 * axis + 1])


# ------------------------------------------------------------------------------- index vectors
@ti.func
def replaced(ix, k: ti.template(), x):
    """The integer index vector ``ix`` with entry ``k`` replaced by ``x``."""
    jx = ix
    jx[k] = x
    return jx


@ti.func
def cell(b, c, js: ti.template()):
    """The array index ``(b, c, *js)`` as an integer vector (``js``: one entry per spatial axis)."""
    return ti.Vector([b, c] + [js[a] for a in ti.static(range(len(js)))], dt=ti.i32)


@ti.func
def neighbour(u: ti.template(), ix, axis: ti.template(), d: ti.template(), bc: ti.template(), g: ti.template()):
    """``u`` at the array index ``ix`` = ``(b, c, *cell)`` moved by ``d`` cells along spatial ``axis``
    (``d`` a compile-time integer), with the ghost value of that axis: ``a + s * u[ix']``. Only that axis
    is looked up, so ``ix`` must be inside the grid on the other axes."""
    j, a, s = ghost_axis(u, axis, ix[2 + axis] + d, bc, g)
    return a + s * u[replaced(ix, 2 + axis, j)]


# ------------------------------------------------------------------------------ any dimension
@ti.func
def value_nd(u: ti.template(), b, c, idx: ti.template(), bc: ti.template(), g: ti.template()):
    """``u[b, c, *idx]`` with ghost values on every axis (``idx``: one integer per spatial axis, each
    possibly one cell outside, or anywhere on a periodic axis):
    ``a_0 + s_0 (a_1 + s_1 (… u[b, c, j_0, j_1, …]))``."""
    nd = ti.static(len(u.shape) - 2)
    gh = [ghost_axis(u, a, idx[a], bc, g) for a in ti.static(range(nd))]
    return _compose(
        u[cell(b, c, [gh[a][0] for a in ti.static(range(nd))])],
        [gh[a][1] for a in ti.static(range(nd))],
        [gh[a][2] for a in ti.static(range(nd))],
    )


@ti.func
def _compose(val, a: ti.template(), s: ti.template()):
    """``a_0 + s_0 (a_1 + s_1 (… + s_last val))``, innermost (last axis) first."""
    r = val
    for k in ti.static(range(len(a) - 1, -1, -1)):
        r = a[k] + s[k] * r
    return r


@ti.func
def stencil(u: ti.template(), b, c, p: ti.template(), bc: ti.template(), g: ti.template()):
    """The ``2**nd`` corner values and ``nd`` weights of multilinear interpolation of ``u[b, c]`` at the
    index-space position ``p`` (one float per spatial axis).

    Returns ``(corners, w)``: ``corners[m]`` is the value at cell ``floor(q) + bits(m)``, where bit
    ``nd - 1 - a`` of ``m`` is the offset along axis ``a`` (row-major: the last axis varies fastest, so in
    2D the order is ``u00, u01, u10, u11`` with ``u01`` one step in x); ``q`` is ``p`` clamped per axis
    (:func:`clamp_position`) and ``w[a] = q_a - floor(q_a)``. Each axis's ghost lookup is done once per
    offset and shared by the corners.
    """
    nd = ti.static(len(u.shape) - 2)
    q = [clamp_position(p[a], u.shape[2 + a], bc[2 * a], bc[2 * a + 1]) for a in ti.static(range(nd))]
    f = [ti.floor(q[a]) for a in ti.static(range(nd))]
    i = [ti.cast(f[a], ti.i32) for a in ti.static(range(nd))]
    gh = [[ghost_axis(u, a, i[a] + o, bc, g) for o in ti.static(range(2))] for a in ti.static(range(nd))]
    corners = [
        _compose(
            u[cell(b, c, [gh[a][(m >> (nd - 1 - a)) & 1][0] for a in ti.static(range(nd))])],
            [gh[a][(m >> (nd - 1 - a)) & 1][1] for a in ti.static(range(nd))],
            [gh[a][(m >> (nd - 1 - a)) & 1][2] for a in ti.static(range(nd))],
        )
        for m in ti.static(range(2**nd))
    ]
    return corners, [q[a] - f[a] for a in ti.static(range(nd))]


@ti.func
def lerp_corners(corners: ti.template(), w: ti.template()):
    """Multilinear combination of :func:`stencil`'s corners: linear in the last axis first, i.e. in 2D
    ``(1 - w_y)((1 - w_x) u00 + w_x u01) + w_y((1 - w_x) u10 + w_x u11)``."""
    r = corners[0]
    if ti.static(len(w) > 0):
        wl = w[ti.static(len(w) - 1)]
        half = [(1.0 - wl) * corners[2 * k] + wl * corners[2 * k + 1] for k in ti.static(range(len(corners) // 2))]
        r = lerp_corners(half, [w[a] for a in ti.static(range(len(w) - 1))])
    return r


@ti.func
def interp(u: ti.template(), b, c, p: ti.template(), bc: ti.template(), g: ti.template()):
    """Multilinear (linear/bilinear/trilinear) interpolation of ``u[b, c]`` at index-space position ``p``."""
    corners, w = stencil(u, b, c, p, bc, g)
    return lerp_corners(corners, w)


# ------------------------------------------------------------------- staggered (MAC) face neighbours
@ti.func
def normal_index(i, n_faces, periodic: ti.template()):
    """Face index along a velocity component's normal axis (``n_faces = N + 1`` faces): wrapped with period
    ``N`` on a periodic axis (face ``N`` reads face ``0``), else clamped to ``[0, N]``."""
    j = ti.min(ti.max(i, 0), n_faces - 1)
    if ti.static(periodic):
        n = n_faces - 1
        j = (i % n + n) % n
    return j


@ti.func
def face_value(v: ti.template(), ix, c: ti.template(), axis: ti.template(), d: ti.template(), bc: ti.template()):
    """Component ``c`` of a staggered ``v`` ``(B, nd, *(N+1))`` at the face ``ix = (b, c, *idx)`` moved by
    ``d`` (a compile-time ±1) along ``axis``: along ``c``'s normal axis a face (:func:`normal_index`), along
    a tangential axis the ghost value of ``bc = (codes, values)`` (``FlowBoundary.component(c)``). The index
    along the normal axis always goes through :func:`normal_index` (face ``N`` of a periodic axis reads
    face ``0``'s row)."""
    codes, g = ti.static(bc[0], bc[1])
    periodic = ti.static(codes[2 * c] == PERIODIC)
    value = 0.0
    if ti.static(axis == c):
        value = v[replaced(ix, 2 + c, normal_index(ix[2 + c] + d, v.shape[2 + c], periodic))]
    else:
        jx = replaced(ix, 2 + c, normal_index(ix[2 + c], v.shape[2 + c], periodic))
        lo, hi = ti.static(2 * axis, 2 * axis + 1)
        j, a, s = ghost(ix[2 + axis] + d, v.shape[2 + axis] - 1, codes[lo], codes[hi], g[lo], g[hi])
        value = a + s * v[replaced(jx, 2 + axis, j)]
    return value


@ti.func
def ordered_sum(terms: ti.template()):
    """``t_0 + t_1 + …`` of a static list, added left to right (one fixed order: no ``0.0 +`` start)."""
    r = terms[0]
    for a in ti.static(range(1, len(terms))):
        r = r + terms[a]
    return r


@ti.func
def tree_min(vals: ti.template()):
    """Minimum of a static list of ``2**k`` values by a pairwise tree (``min(min(v0, v1), min(v2, v3))``)."""
    r = vals[0]
    if ti.static(len(vals) > 1):
        r = tree_min([ti.min(vals[2 * k], vals[2 * k + 1]) for k in ti.static(range(len(vals) // 2))])
    return r


@ti.func
def tree_max(vals: ti.template()):
    """Maximum of a static list of ``2**k`` values by a pairwise tree (see :func:`tree_min`)."""
    r = vals[0]
    if ti.static(len(vals) > 1):
        r = tree_max([ti.max(vals[2 * k], vals[2 * k + 1]) for k in ti.static(range(len(vals) // 2))])
    return r
