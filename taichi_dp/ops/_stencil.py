"""Taichi helper functions shared by the operator kernels: ghost values and interpolation.

Boundary codes (``PERIODIC``, ``DIRICHLET``, ``ZERO_GRADIENT``, ``CONSTANT_OUTSIDE`` from :mod:`taichi_dp.grid`) are
``ti.template()`` constants, so every branch on them is resolved at compile time. Everything here is
branch-free at run time (``ti.select``), which keeps Taichi's reverse-mode autodiff simple and exact.

Any value outside the grid is an affine function of one interior value: ``a + s * u[j]``
(periodic: wrap ``j``; zero-gradient: clamp ``j``; Dirichlet ``g``: ghost ``2g - u[0]`` i.e. ``a = 2g``,
``s = -1``; constant-outside ``g``: ``a = g``, ``s = 0``).
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.
import taichi as ti

from ..grid import CONSTANT_OUTSIDE, DIRICHLET, PERIODIC, ZERO_GRADIENT


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
def value_1d(u: ti.template(), b, c, i, bc: ti.template(), g: ti.template()):
    """``u[b, c, i]`` with ghost values for ``i`` outside ``[0, N)``. ``bc``/``g``: (lo, hi) codes/values."""
    j, a, s = ghost(i, u.shape[2], bc[0], bc[1], g[0], g[1])
    return a + s * u[b, c, j]


@ti.func
def value_2d(u: ti.template(), b, c, i, k, bc: ti.template(), g: ti.template()):
    """``u[b, c, i, k]`` (row ``i`` = y, column ``k`` = x) with ghost values on both axes."""
    ji, ai, si = ghost(i, u.shape[2], bc[0], bc[1], g[0], g[1])
    jk, ak, sk = ghost(k, u.shape[3], bc[2], bc[3], g[2], g[3])
    return ai + si * (ak + sk * u[b, c, ji, jk])


@ti.func
def stencil_1d(u: ti.template(), b, c, p, bc: ti.template(), g: ti.template()):
    """The two values and the weight for linear interpolation of ``u[b, c, :]`` at position ``p``:
    returns ``(u0, u1, w)`` with ``u(p) = (1 - w) u0 + w u1``."""
    q = clamp_position(p, u.shape[2], bc[0], bc[1])
    f = ti.floor(q)
    i = ti.cast(f, ti.i32)
    return value_1d(u, b, c, i, bc, g), value_1d(u, b, c, i + 1, bc, g), q - f


@ti.func
def interp_1d(u: ti.template(), b, c, p, bc: ti.template(), g: ti.template()):
    """Linear interpolation of ``u[b, c, :]`` at index-space position ``p``."""
    u0, u1, w = stencil_1d(u, b, c, p, bc, g)
    return (1.0 - w) * u0 + w * u1


@ti.func
def stencil_2d(u: ti.template(), b, c, py, px, bc: ti.template(), g: ti.template()):
    """The four corner values and two weights for bilinear interpolation at ``(py, px)``:
    returns ``(u00, u01, u10, u11, wy, wx)`` where ``u01`` is one step in x."""
    qy = clamp_position(py, u.shape[2], bc[0], bc[1])
    qx = clamp_position(px, u.shape[3], bc[2], bc[3])
    fy = ti.floor(qy)
    fx = ti.floor(qx)
    i = ti.cast(fy, ti.i32)
    k = ti.cast(fx, ti.i32)
    u00 = value_2d(u, b, c, i, k, bc, g)
    u01 = value_2d(u, b, c, i, k + 1, bc, g)
    u10 = value_2d(u, b, c, i + 1, k, bc, g)
    u11 = value_2d(u, b, c, i + 1, k + 1, bc, g)
    return u00, u01, u10, u11, qy - fy, qx - fx


@ti.func
def interp_2d(u: ti.template(), b, c, py, px, bc: ti.template(), g: ti.template()):
    """Bilinear interpolation of ``u[b, c, :, :]`` at index-space position ``(py, px)``."""
    u00, u01, u10, u11, wy, wx = stencil_2d(u, b, c, py, px, bc, g)
    return (1.0 - wy) * ((1.0 - wx) * u00 + wx * u01) + wy * ((1.0 - wx) * u10 + wx * u11)
