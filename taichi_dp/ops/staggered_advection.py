"""Advection on the staggered (MAC) grid, 2D and 3D: of the velocity by itself, and of cell-centred
scalars by it.

Positions are in cell-index space (cell ``idx`` centred at ``idx``); the face ``idx`` of component ``c``
sits at ``idx − ½ e_c`` (2D: the ``v_y`` face ``(i, j)`` at ``(i − ½, j)``, the ``v_x`` face at
``(i, j − ½)``; layout in :mod:`taichi_dp.grid.staggered`). A velocity component is sampled from its own
face grid by multilinear (bilinear in 2D, trilinear in 3D) interpolation:

- along its normal axis the face grid spans the domain, boundary faces included; positions beyond it
  are clamped onto the boundary face (walls/inflows hold their imposed value there; outflows extrapolate
  with zero gradient); periodic axes wrap with period ``N`` (faces ``0`` and ``N`` coincide);
- along each tangential axis the faces sit at cell centres; values beyond the wall come from ghost
  values of :meth:`FlowBoundary.component` (no-slip/inflow: the wall velocity on the wall, slip/outflow:
  zero gradient).

The velocity at a face is its own component there (the seam face ``N`` of a periodic axis reads face
``0``) and the other components interpolated at the face's position; there, and at cell centres, a
component's position is a cell index along some axes, where the interpolation weight is 0 and the kernels
skip those zero-weight corners (the same values, fewer reads). Semi-Lagrangian: every face (or
cell) traces back ``x − Δt v(x)`` and samples there. MacCormack adds the error-compensating forward
trace and the min/max limiter over the ``2**nd`` values the back-trace interpolated from, as in
:mod:`taichi_dp.ops.advection`. Gradients flow to the advected field, the advecting velocity and ``dt``
(Taichi autodiff).

Every kernel is written once for 2D and 3D: the arrays' rank fixes the dimension at compile time, and
the axes, components and interpolation corners are ``ti.static`` loops.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti
import torch

from ..bridge import KernelOp
from ..grid import PERIODIC, Boundary, Grid
from ..grid.staggered import FlowBoundary
from ._stencil import clamp_position, ghost, interp, lerp_corners, stencil, tree_max, tree_min
from .flux_advection import apply_flux_advection

nd1 = ti.types.ndarray(ndim=1)
nda = ti.types.ndarray()  # (B, C, *spatial): the rank, hence the grid dimension, is fixed per compiled instance


# ------------------------------------------------------------------------------------ sampling
@ti.func
def _face_axis(v: ti.template(), p, c: ti.template(), a: ti.template(), bc: ti.template()):
    """Interpolation along axis ``a`` of component ``c``'s face grid at the cell-space coordinate ``p``:
    ``(j0, a0, s0, j1, a1, s1, w)``, the two face indices, their ghost offsets/signs (the value at ``j``
    is ``a + s·v[j]``) and the weight of ``j1``. ``bc``: ``(codes, values)`` of ``FlowBoundary.component(c)``.

    Along the normal axis ``a == c`` the faces are at ``p + ½`` in face-index space: clamped onto the
    boundary faces ``[0, N]``, or wrapped with period ``N`` (no ghost: ``a = 0``, ``s = 1``, unused).
    Along a tangential axis the faces sit at cell centres: clamp and ghost values of the boundary."""
    codes, g = ti.static(bc[0], bc[1])
    j0, j1 = 0, 0
    a0, s0, a1, s1 = 0.0, 1.0, 0.0, 1.0
    w = 0.0
    if ti.static(a == c):
        n_faces = v.shape[2 + a]
        q = p + 0.5
        if ti.static(codes[2 * a] != PERIODIC):
            q = ti.min(ti.max(q, 0.0), n_faces - 1.0)
        f = ti.floor(q)
        j0 = ti.cast(f, ti.i32)
        j1 = j0 + 1
        if ti.static(codes[2 * a] == PERIODIC):
            n = n_faces - 1
            j0 = (j0 % n + n) % n
            j1 = (j1 % n + n) % n
        else:
            j1 = ti.min(j1, n_faces - 1)
        w = q - f
    else:
        n = v.shape[2 + a] - 1
        q = clamp_position(p, n, codes[2 * a], codes[2 * a + 1])
        f = ti.floor(q)
        i = ti.cast(f, ti.i32)
        j0, a0, s0 = ghost(i, n, codes[2 * a], codes[2 * a + 1], g[2 * a], g[2 * a + 1])
        j1, a1, s1 = ghost(i + 1, n, codes[2 * a], codes[2 * a + 1], g[2 * a], g[2 * a + 1])
        w = q - f
    return j0, a0, s0, j1, a1, s1, w


@ti.func
def _axis_lookup(v: ti.template(), p, ix, c: ti.template(), a: ti.template(), bc: ti.template(), exact: ti.template()):
    """:func:`_face_axis`, or, for an axis in ``exact`` (where the position is the integer cell index
    ``ix[2 + a]``), that index alone: ``(j, 0, 1, j, 0, 1, 0)``."""
    j0, j1 = 0, 0
    a0, s0, a1, s1 = 0.0, 1.0, 0.0, 1.0
    w = 0.0
    if ti.static(a in exact):
        j0 = ix[2 + a]
        j1 = j0
    else:
        j0, a0, s0, j1, a1, s1, w = _face_axis(v, p, c, a, bc)
    return j0, a0, s0, j1, a1, s1, w


@ti.func
def _face_stencil(v: ti.template(), b, c: ti.template(), p: ti.template(), bc: ti.template(), ix, exact: ti.template()):
    """The corner values and weights for interpolating component ``c`` of the staggered ``v`` at the
    cell-space position ``p`` (one float per axis), ordered as :func:`_stencil.stencil`'s (bit
    ``n − 1 − k`` of the corner number is the offset along the ``k``-th interpolated axis). A corner is
    ``a_t + s_t·v[...]`` composed over the tangential axes, last axis innermost.

    The axes in ``exact`` (static) are not interpolated: there ``p`` is the cell index ``ix[2 + a]`` (in
    the grid), where interpolation has weight 0 and its value is the one at that index; the stencil
    then has ``2**(nd − len(exact))`` corners (the same values, without the zero-weight terms)."""
    nd = ti.static(len(v.shape) - 2)
    free = ti.static([a for a in range(nd) if a not in exact])
    ax = [_axis_lookup(v, p[a], ix, c, a, bc, exact) for a in ti.static(range(nd))]
    corners = [_corner(v, b, c, ax, m, free) for m in ti.static(range(2 ** len(free)))]
    return corners, [ax[a][6] for a in ti.static(free)]


@ti.func
def _corner(v: ti.template(), b, c: ti.template(), ax: ti.template(), m: ti.template(), free: ti.template()):
    """Corner ``m`` of :func:`_face_stencil` from the per-axis lookups ``ax`` (:func:`_axis_lookup`)."""
    nd = ti.static(len(v.shape) - 2)
    # the offset bit of axis a: bit (number of free axes after a) of m, 0 along the exact axes
    bits = ti.static([((m >> len([f for f in free if f > a])) & 1) * (a in free) for a in range(nd)])
    r = v[ti.Vector([b, c] + [ax[a][3 * bits[a]] for a in ti.static(range(nd))], dt=ti.i32)]
    for k in ti.static(range(nd - 1, -1, -1)):
        if ti.static(k != c and k in free):  # no ghost values along the normal axis or an exact one
            r = ax[k][3 * bits[k] + 1] + ax[k][3 * bits[k] + 2] * r
    return r


@ti.func
def _sample(v: ti.template(), b, c: ti.template(), p: ti.template(), bc: ti.template()):
    """Component ``c`` of the staggered ``v`` interpolated at the cell-space position ``p``."""
    corners, w = _face_stencil(v, b, c, p, bc, 0, [])
    return lerp_corners(corners, w)


@ti.func
def _sample_at(v: ti.template(), c: ti.template(), p: ti.template(), bc: ti.template(), ix, exact: ti.template()):
    """:func:`_sample` at a point ``p`` of the grid ``ix = (b, ·, *idx)`` whose coordinates along ``exact``
    are the integer cell indices ``idx[a]``."""
    corners, w = _face_stencil(v, ix[0], c, p, bc, ix, exact)
    return lerp_corners(corners, w)


@ti.func
def _coordinate(ix, a: ti.template(), c: ti.template()):
    """Cell-space coordinate along axis ``a`` of the face ``ix = (b, c, *idx)`` of component ``c``."""
    x = 1.0 * ix[2 + a]
    if ti.static(a == c):
        x = ix[2 + a] - 0.5
    return x


@ti.func
def _face_position(ix, c: ti.template(), nd: ti.template()):
    """Cell-space position of the face ``ix = (b, c, *idx)`` of component ``c``: ``idx − ½ e_c``."""
    return [_coordinate(ix, a, c) for a in ti.static(range(nd))]


@ti.func
def _face_component(vel: ti.template(), ix, c: ti.template(), d: ti.template(), pos: ti.template(), bcs: ti.template()):
    """Velocity component ``d`` at the face ``ix`` of component ``c`` (position ``pos``): the face value
    itself for ``d == c`` (a periodic axis' seam face ``N`` reads face 0, as interpolation does),
    otherwise interpolated from component ``d``'s face grid."""
    u = 0.0
    if ti.static(d == c):
        own = ix
        if ti.static(bcs[c][0][2 * c] == PERIODIC):
            own[2 + c] = ti.select(ix[2 + c] == vel.shape[2 + c] - 1, 0, ix[2 + c])
        u = vel[own]
    else:
        # the face is at cell indices along every axis but c, so component d interpolates along c and d only
        # (on padding faces, masked out by the caller, the index along the other axis is N: the padding)
        exact = ti.static([a for a in range(len(vel.shape) - 2) if a != c and a != d])
        u = _sample_at(vel, d, pos, bcs[d], ix, exact)
    return u


@ti.func
def _face_velocity(vel: ti.template(), ix, c: ti.template(), bcs: ti.template()):
    """The velocity (one entry per axis) at the face ``ix = (b, c, *idx)`` of component ``c``: its own
    component is the face value, the others are interpolated (:func:`_face_component`)."""
    nd = ti.static(len(vel.shape) - 2)
    pos = _face_position(ix, c, nd)
    return [_face_component(vel, ix, c, d, pos, bcs) for d in ti.static(range(nd))]


@ti.func
def _cell_velocity(vel: ti.template(), ix, bcs: ti.template()):
    """The velocity (one entry per axis) at the centre of the cell ``ix = (b, ch, *cell)``."""
    nd = ti.static(len(vel.shape) - 2)
    pos = [1.0 * ix[2 + a] for a in ti.static(range(nd))]
    # a cell centre is at cell indices across d: component d interpolates along d only
    return [_sample_at(vel, d, pos, bcs[d], ix, ti.static([a for a in range(nd) if a != d])) for d in ti.static(range(nd))]


@ti.func
def _step(x, d, sign: ti.template()):
    """``x + sign·d`` for ``sign = ±1``."""
    r = x + d
    if ti.static(sign < 0):
        r = x - d
    return r


@ti.func
def _traced(pos: ti.template(), u: ti.template(), dt, sign: ti.template(), inv_h: ti.template()):
    """``pos_a + sign·dt·u_a/h_a`` per axis (``sign = -1``: the back-trace)."""
    return [_step(pos[a], dt * u[a] * inv_h[a], sign) for a in ti.static(range(len(pos)))]


@ti.func
def _is_real_face(ix, c: ti.template(), v: ti.template()):
    """Whether ``ix = (b, c, *idx)`` is a real face of component ``c`` (not padding: ``idx[a] < N_a`` for
    every axis ``a ≠ c``)."""
    real = True
    for a in ti.static(range(len(v.shape) - 2)):
        if ti.static(a != c):
            real = real and ix[2 + a] < v.shape[2 + a] - 1
    return real


@ti.func
def _face_index(J, c: ti.template(), nd: ti.template()):
    """The array index ``(b, c, *idx)`` from a loop index ``J = (b, *idx)``."""
    return ti.Vector([J[0], c] + [J[1 + a] for a in ti.static(range(nd))], dt=ti.i32)


# ---------------------------------------------------------------------------------------- kernels
# One loop per velocity component (``c`` compile-time, so each face samples only what it needs) over
# ``(b, *idx)`` of the whole face array (padding included, written as 0). Grid spacings come as three
# floats ``inv_h0..2`` (``1/h`` per axis; unused trailing entries 0); ``bcs``: the compile-time
# ``(codes, values)`` of ``FlowBoundary.component(c)`` for every component.
@ti.kernel
def _sl_velocity(
    v: nda,
    vel: nda,
    dt: nd1,
    out: nda,
    bcs: ti.template(),
    inv_h0: float,
    inv_h1: float,
    inv_h2: float,
    serial: ti.template(),
):
    """Semi-Lagrangian advection of the staggered ``v`` by the staggered ``vel`` (both ``(B, nd, *(N+1))``):
    ``out[b, c, idx] = v_c(x_f − Δt u(x_f)/h)`` at each real face ``x_f``, 0 on the padding."""
    for c in ti.static(range(len(v.shape) - 2)):
        ti.loop_config(serialize=serial)
        for J in ti.grouped(ti.ndrange(v.shape[0], *[v.shape[2 + a] for a in ti.static(range(len(v.shape) - 2))])):
            ix = _face_index(J, c, ti.static(len(v.shape) - 2))
            u = _face_velocity(vel, ix, c, bcs)
            p = _traced(_face_position(ix, c, ti.static(len(v.shape) - 2)), u, dt[ix[0]], -1, ti.static((inv_h0, inv_h1, inv_h2)))
            out[ix] = ti.select(_is_real_face(ix, c, v), _sample(v, ix[0], c, p, bcs[c]), 0.0)


@ti.kernel
def _maccormack_velocity(
    v: nda,
    v_hat: nda,
    vel: nda,
    dt: nd1,
    out: nda,
    bcs: ti.template(),
    inv_h0: float,
    inv_h1: float,
    inv_h2: float,
    serial: ti.template(),
):
    """MacCormack correction of the staggered velocity: ``clamp(v̂ + ½(v − v̄), lo, hi)`` with ``v̄`` = ``v̂``
    at the forward trace and ``[lo, hi]`` the range of the ``2**nd`` values of ``v`` at the back-trace."""
    for c in ti.static(range(len(v.shape) - 2)):
        ti.loop_config(serialize=serial)
        for J in ti.grouped(ti.ndrange(v.shape[0], *[v.shape[2 + a] for a in ti.static(range(len(v.shape) - 2))])):
            ix = _face_index(J, c, ti.static(len(v.shape) - 2))
            inv_h = ti.static((inv_h0, inv_h1, inv_h2))
            pos = _face_position(ix, c, ti.static(len(v.shape) - 2))
            u = _face_velocity(vel, ix, c, bcs)
            corners, _ = _face_stencil(v, ix[0], c, _traced(pos, u, dt[ix[0]], -1, inv_h), bcs[c], 0, [])
            bar = _sample(v_hat, ix[0], c, _traced(pos, u, dt[ix[0]], 1, inv_h), bcs[c])
            corrected = v_hat[ix] + 0.5 * (v[ix] - bar)
            limited = ti.min(ti.max(corrected, tree_min(corners)), tree_max(corners))
            out[ix] = ti.select(_is_real_face(ix, c, v), limited, 0.0)


@ti.kernel
def _sl_scalar(
    q: nda,
    vel: nda,
    dt: nd1,
    out: nda,
    bc: ti.template(),
    g: ti.template(),
    bcs: ti.template(),
    inv_h0: float,
    inv_h1: float,
    inv_h2: float,
    serial: ti.template(),
):
    """Semi-Lagrangian advection of a cell-centred ``q`` ``(B, C, *N)`` by the staggered ``vel``:
    ``out[b, ch, x] = q[b, ch](x − Δt u(x)/h)``, ``u`` interpolated at the cell centre ``x``."""
    ti.loop_config(serialize=serial)
    for ix in ti.grouped(ti.ndrange(*out.shape)):
        u = _cell_velocity(vel, ix, bcs)
        pos = [1.0 * ix[2 + a] for a in ti.static(range(len(q.shape) - 2))]
        out[ix] = interp(q, ix[0], ix[1], _traced(pos, u, dt[ix[0]], -1, ti.static((inv_h0, inv_h1, inv_h2))), bc, g)


@ti.kernel
def _maccormack_scalar(
    q: nda,
    q_hat: nda,
    vel: nda,
    dt: nd1,
    out: nda,
    bc: ti.template(),
    g: ti.template(),
    bcs: ti.template(),
    inv_h0: float,
    inv_h1: float,
    inv_h2: float,
    serial: ti.template(),
):
    """MacCormack correction of a cell-centred scalar advected by the staggered ``vel``."""
    ti.loop_config(serialize=serial)
    for ix in ti.grouped(ti.ndrange(*out.shape)):
        inv_h = ti.static((inv_h0, inv_h1, inv_h2))
        u = _cell_velocity(vel, ix, bcs)
        pos = [1.0 * ix[2 + a] for a in ti.static(range(len(q.shape) - 2))]
        corners, _ = stencil(q, ix[0], ix[1], _traced(pos, u, dt[ix[0]], -1, inv_h), bc, g)
        bar = interp(q_hat, ix[0], ix[1], _traced(pos, u, dt[ix[0]], 1, inv_h), bc, g)
        out[ix] = ti.min(ti.max(q_hat[ix] + 0.5 * (q[ix] - bar), tree_min(corners)), tree_max(corners))


_SL_VELOCITY = KernelOp(_sl_velocity, 3, 1, "sl_velocity")
_MC_VELOCITY = KernelOp(_maccormack_velocity, 4, 1, "maccormack_velocity")
_SL_SCALAR = KernelOp(_sl_scalar, 3, 1, "sl_scalar_by_staggered")
_MC_SCALAR = KernelOp(_maccormack_scalar, 4, 1, "maccormack_scalar_by_staggered")


# ---------------------------------------------------------------------------------- torch-facing
def inv_spacing(grid: Grid) -> tuple[float, float, float]:
    """``1/h`` per axis padded with zeros to the kernels' three spacing slots."""
    inv = [1.0 / h for h in grid.spacing]
    return (*inv, *([0.0] * (3 - len(inv))))  # type: ignore[return-value]


def apply_velocity_advection(
    v: torch.Tensor, velocity: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: FlowBoundary, scheme: str
) -> torch.Tensor:
    """Advect the staggered ``v`` ``(B, nd, *(N+1))`` (2D ``(B, 2, H+1, W+1)``, 3D ``(B, 3, D+1, H+1, W+1)``)
    by the staggered ``velocity`` for ``dt`` ``(B,)`` (no validation; ``velocity`` may be ``v`` itself).
    ``scheme``: ``"semi_lagrangian"`` or ``"maccormack"``. Boundary faces are not re-imposed here."""
    consts = (component_bcs(boundary), *inv_spacing(grid))
    (v_hat,) = _SL_VELOCITY((v, velocity, dt), (v.shape,), consts)
    if scheme == "semi_lagrangian":
        return v_hat
    return _MC_VELOCITY((v, v_hat, velocity, dt), (v.shape,), consts)[0]


def apply_scalar_advection(
    q: torch.Tensor,
    velocity: torch.Tensor,
    dt: torch.Tensor,
    grid: Grid,
    scalar_boundary: Boundary,
    boundary: FlowBoundary,
    scheme: str,
    fluid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Advect a cell-centred ``q`` ``(B, C, *N)`` (boundary conditions ``scalar_boundary``) by the
    staggered ``velocity`` ``(B, nd, *(N+1))`` for ``dt`` ``(B,)`` (no validation). ``scheme``:
    ``"semi_lagrangian"``, ``"maccormack"`` or ``"flux"`` (conservative, sub-stepped:
    :mod:`taichi_dp.ops.flux_advection`; the only one that uses the obstacle mask ``fluid``,
    ``(B or 1, 1, *N)``: no flux into solid cells)."""
    if scheme == "flux":
        return apply_flux_advection(q, velocity, dt, grid, scalar_boundary, boundary, fluid)
    consts = (scalar_boundary.codes, scalar_boundary.values, component_bcs(boundary), *inv_spacing(grid))
    (q_hat,) = _SL_SCALAR((q, velocity, dt), (q.shape,), consts)
    if scheme == "semi_lagrangian":
        return q_hat
    return _MC_SCALAR((q, q_hat, velocity, dt), (q.shape,), consts)[0]


def component_bc(boundary: FlowBoundary, c: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``(codes, values)`` of velocity component ``c``: the compile-time boundary description."""
    bc = boundary.component(c)
    return bc.codes, bc.values


def component_bcs(boundary: FlowBoundary) -> tuple[tuple[tuple[int, ...], tuple[float, ...]], ...]:
    """:func:`component_bc` of every component, in axis order (a kernel's ``bcs`` template argument)."""
    return tuple(component_bc(boundary, c) for c in range(boundary.ndim))
