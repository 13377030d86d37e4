"""Advection on the staggered (MAC) grid: of the velocity by itself, and of cell-centred scalars by it.

Positions are in cell-index space (cell ``(i, j)`` centred at ``(i, j)``); the ``v_y`` face ``(i, j)``
sits at ``(i − ½, j)`` and the ``v_x`` face ``(i, j)`` at ``(i, j − ½)`` (layout in
:mod:`taichi_dp.grid.staggered`). A velocity component is sampled from its own face grid by bilinear
interpolation:

- along its normal axis the face grid spans the domain, boundary faces included; positions beyond it
  are clamped onto the boundary face (walls/inflows hold their imposed value there; outflows extrapolate
  with zero gradient); periodic axes wrap with period ``N`` (faces ``0`` and ``N`` coincide);
- along its tangential axis the faces sit at cell centres; values beyond the wall come from ghost
  values of :meth:`FlowBoundary.component` (no-slip/inflow: 0 on the wall, slip/outflow: zero gradient).

Semi-Lagrangian: every face (or cell) traces back ``x − Δt v(x)`` and samples there. MacCormack adds
the error-compensating forward trace and the min/max limiter, as in :mod:`taichi_dp.ops.advection`.
Gradients flow to the advected field, the advecting velocity and ``dt`` (Taichi autodiff).
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti
import torch

from ..bridge import KernelOp
from ..grid import PERIODIC, Boundary, Grid
from ..grid.staggered import FlowBoundary
from ._stencil import clamp_position, ghost, interp_2d, stencil_2d
from .flux_advection import apply_flux_advection

nd1 = ti.types.ndarray(ndim=1)
nd4 = ti.types.ndarray(ndim=4)


# ------------------------------------------------------------------------------------ sampling
@ti.func
def _normal_axis(p, n_faces, periodic: ti.template()):
    """Linear-interpolation indices ``(i0, i1, w)`` along a face grid's normal axis (face-index space)."""
    q = p
    if ti.static(not periodic):
        q = ti.min(ti.max(q, 0.0), n_faces - 1.0)
    f = ti.floor(q)
    i0 = ti.cast(f, ti.i32)
    i1 = i0 + 1
    if ti.static(periodic):
        n = n_faces - 1
        i0 = (i0 % n + n) % n
        i1 = (i1 % n + n) % n
    else:
        i1 = ti.min(i1, n_faces - 1)
    return i0, i1, q - f


@ti.func
def _tangential_axis(p, n, lo: ti.template(), hi: ti.template(), g_lo: ti.template(), g_hi: ti.template()):
    """Indices, ghost offsets/signs and weight ``(j0, a0, s0, j1, a1, s1, w)`` along a tangential
    (cell-centred) axis: the value at ``j`` is ``a + s·v[j]`` (Dirichlet wall velocity or zero gradient)."""
    q = clamp_position(p, n, lo, hi)
    f = ti.floor(q)
    i = ti.cast(f, ti.i32)
    j0, a0, s0 = ghost(i, n, lo, hi, g_lo, g_hi)
    j1, a1, s1 = ghost(i + 1, n, lo, hi, g_lo, g_hi)
    return j0, a0, s0, j1, a1, s1, q - f


@ti.func
def _stencil_vy(v: ti.template(), b, py, px, bc: ti.template()):
    """The four ``v_y`` face values around cell-space position ``(py, px)`` and the weights:
    ``(v00, v01, v10, v11, wy, wx)``. ``bc``: ``(codes, values)`` of ``FlowBoundary.component(0)``."""
    i0, i1, wy = _normal_axis(py + 0.5, v.shape[2], ti.static(bc[0][0] == PERIODIC))
    j0, a0, s0, j1, a1, s1, wx = _tangential_axis(px, v.shape[3] - 1, bc[0][2], bc[0][3], bc[1][2], bc[1][3])
    v00 = a0 + s0 * v[b, 0, i0, j0]
    v01 = a1 + s1 * v[b, 0, i0, j1]
    v10 = a0 + s0 * v[b, 0, i1, j0]
    v11 = a1 + s1 * v[b, 0, i1, j1]
    return v00, v01, v10, v11, wy, wx


@ti.func
def _stencil_vx(v: ti.template(), b, py, px, bc: ti.template()):
    """The four ``v_x`` face values around ``(py, px)``; ``bc``: ``(codes, values)`` of
    ``FlowBoundary.component(1)``."""
    i0, a0, s0, i1, a1, s1, wy = _tangential_axis(py, v.shape[2] - 1, bc[0][0], bc[0][1], bc[1][0], bc[1][1])
    j0, j1, wx = _normal_axis(px + 0.5, v.shape[3], ti.static(bc[0][2] == PERIODIC))
    v00 = a0 + s0 * v[b, 1, i0, j0]
    v01 = a0 + s0 * v[b, 1, i0, j1]
    v10 = a1 + s1 * v[b, 1, i1, j0]
    v11 = a1 + s1 * v[b, 1, i1, j1]
    return v00, v01, v10, v11, wy, wx


@ti.func
def _bilinear(v00, v01, v10, v11, wy, wx):
    return (1.0 - wy) * ((1.0 - wx) * v00 + wx * v01) + wy * ((1.0 - wx) * v10 + wx * v11)


@ti.func
def _sample_vy(v: ti.template(), b, py, px, bc: ti.template()):
    v00, v01, v10, v11, wy, wx = _stencil_vy(v, b, py, px, bc)
    return _bilinear(v00, v01, v10, v11, wy, wx)


@ti.func
def _sample_vx(v: ti.template(), b, py, px, bc: ti.template()):
    v00, v01, v10, v11, wy, wx = _stencil_vx(v, b, py, px, bc)
    return _bilinear(v00, v01, v10, v11, wy, wx)


@ti.func
def _clamp4(x, v00, v01, v10, v11):
    return ti.min(ti.max(x, ti.min(ti.min(v00, v01), ti.min(v10, v11))), ti.max(ti.max(v00, v01), ti.max(v10, v11)))


# ---------------------------------------------------------------------------------------- kernels
@ti.func
def _face_velocity(vel: ti.template(), b, c: ti.template(), i, k, bc_y: ti.template(), bc_x: ti.template()):
    """The velocity ``(u_y, u_x)`` at component ``c``'s face ``(i, k)``: its own component is the face
    value itself, the other one is interpolated (the four nearest faces of the other grid)."""
    py = i - 0.5 * (1 - c)  # face position in cell space
    px = k - 0.5 * c
    uy, ux = 0.0, 0.0
    if ti.static(c == 0):
        own = i
        if ti.static(bc_y[0][0] == PERIODIC):  # the seam's face N reads face 0, as interpolation does
            own = ti.select(i == vel.shape[2] - 1, 0, i)
        uy, ux = vel[b, 0, own, k], _sample_vx(vel, b, py, px, bc_x)
    else:
        own = k
        if ti.static(bc_x[0][2] == PERIODIC):
            own = ti.select(k == vel.shape[3] - 1, 0, k)
        uy, ux = _sample_vy(vel, b, py, px, bc_y), vel[b, 1, i, own]
    return uy, ux


@ti.kernel
def _sl_velocity(
    v: nd4,
    vel: nd4,
    dt: nd1,
    out: nd4,
    bc_y: ti.template(),
    bc_x: ti.template(),
    inv_hy: float,
    inv_hx: float,
    serial: ti.template(),
):
    """Semi-Lagrangian advection of the staggered ``v`` by the staggered ``vel`` (both (B,2,H+1,W+1)):
    one loop per component, each face traced back by ``Δt u(face)`` and sampled there."""
    for c in ti.static(range(2)):
        ti.loop_config(serialize=serial)
        for b, i, k in ti.ndrange(v.shape[0], v.shape[2], v.shape[3]):
            uy, ux = _face_velocity(vel, b, c, i, k, bc_y, bc_x)
            py = i - 0.5 * (1 - c) - dt[b] * uy * inv_hy  # departure point in cell space
            px = k - 0.5 * c - dt[b] * ux * inv_hx
            value = 0.0
            valid = i < v.shape[2] - 1  # v_x faces: real below row H
            if ti.static(c == 0):
                value = _sample_vy(v, b, py, px, bc_y)
                valid = k < v.shape[3] - 1  # v_y faces: real left of column W
            else:
                value = _sample_vx(v, b, py, px, bc_x)
            out[b, c, i, k] = ti.select(valid, value, 0.0)


@ti.kernel
def _maccormack_velocity(
    v: nd4,
    v_hat: nd4,
    vel: nd4,
    dt: nd1,
    out: nd4,
    bc_y: ti.template(),
    bc_x: ti.template(),
    inv_hy: float,
    inv_hx: float,
    serial: ti.template(),
):
    """MacCormack correction of the staggered velocity with the min/max limiter."""
    ti.loop_config(serialize=serial)
    for b, c, i, k in ti.ndrange(v.shape[0], 2, v.shape[2], v.shape[3]):
        py = i - 0.5 * (1 - c)
        px = k - 0.5 * c
        sy = dt[b] * _sample_vy(vel, b, py, px, bc_y) * inv_hy
        sx = dt[b] * _sample_vx(vel, b, py, px, bc_x) * inv_hx
        a00, a01, a10, a11, _, _ = _stencil_vy(v, b, py - sy, px - sx, bc_y)
        b00, b01, b10, b11, _, _ = _stencil_vx(v, b, py - sy, px - sx, bc_x)
        bar = ti.select(c == 0, _sample_vy(v_hat, b, py + sy, px + sx, bc_y), _sample_vx(v_hat, b, py + sy, px + sx, bc_x))
        corrected = v_hat[b, c, i, k] + 0.5 * (v[b, c, i, k] - bar)
        limited = ti.select(c == 0, _clamp4(corrected, a00, a01, a10, a11), _clamp4(corrected, b00, b01, b10, b11))
        valid = (c == 0 and k < v.shape[3] - 1) or (c == 1 and i < v.shape[2] - 1)
        out[b, c, i, k] = ti.select(valid, limited, 0.0)


@ti.kernel
def _sl_scalar(
    q: nd4,
    vel: nd4,
    dt: nd1,
    out: nd4,
    bc: ti.template(),
    g: ti.template(),
    bc_y: ti.template(),
    bc_x: ti.template(),
    inv_hy: float,
    inv_hx: float,
    serial: ti.template(),
):
    """Semi-Lagrangian advection of a cell-centred ``q`` (B,C,H,W) by the staggered ``vel``."""
    ti.loop_config(serialize=serial)
    for b, c, i, k in ti.ndrange(q.shape[0], q.shape[1], q.shape[2], q.shape[3]):
        sy = dt[b] * _sample_vy(vel, b, 1.0 * i, 1.0 * k, bc_y) * inv_hy
        sx = dt[b] * _sample_vx(vel, b, 1.0 * i, 1.0 * k, bc_x) * inv_hx
        out[b, c, i, k] = interp_2d(q, b, c, i - sy, k - sx, bc, g)


@ti.kernel
def _maccormack_scalar(
    q: nd4,
    q_hat: nd4,
    vel: nd4,
    dt: nd1,
    out: nd4,
    bc: ti.template(),
    g: ti.template(),
    bc_y: ti.template(),
    bc_x: ti.template(),
    inv_hy: float,
    inv_hx: float,
    serial: ti.template(),
):
    """MacCormack correction of a cell-centred scalar advected by the staggered ``vel``."""
    ti.loop_config(serialize=serial)
    for b, c, i, k in ti.ndrange(q.shape[0], q.shape[1], q.shape[2], q.shape[3]):
        sy = dt[b] * _sample_vy(vel, b, 1.0 * i, 1.0 * k, bc_y) * inv_hy
        sx = dt[b] * _sample_vx(vel, b, 1.0 * i, 1.0 * k, bc_x) * inv_hx
        q00, q01, q10, q11, _, _ = stencil_2d(q, b, c, i - sy, k - sx, bc, g)
        bar = interp_2d(q_hat, b, c, i + sy, k + sx, bc, g)
        out[b, c, i, k] = _clamp4(q_hat[b, c, i, k] + 0.5 * (q[b, c, i, k] - bar), q00, q01, q10, q11)


_SL_VELOCITY = KernelOp(_sl_velocity, 3, 1, "sl_velocity")
_MC_VELOCITY = KernelOp(_maccormack_velocity, 4, 1, "maccormack_velocity")
_SL_SCALAR = KernelOp(_sl_scalar, 3, 1, "sl_scalar_by_staggered")
_MC_SCALAR = KernelOp(_maccormack_scalar, 4, 1, "maccormack_scalar_by_staggered")


# ---------------------------------------------------------------------------------- torch-facing
def apply_velocity_advection(
    v: torch.Tensor, velocity: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: FlowBoundary, scheme: str
) -> torch.Tensor:
    """Advect the staggered ``v`` ``(B,2,H+1,W+1)`` by the staggered ``velocity`` for ``dt`` ``(B,)``
    (no validation; ``velocity`` may be ``v`` itself). Boundary faces are not re-imposed here."""
    hy, hx = grid.spacing
    consts = (component_bc(boundary, 0), component_bc(boundary, 1), 1.0 / hy, 1.0 / hx)
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
    """Advect a cell-centred ``q`` ``(B,C,H,W)`` (boundary conditions ``scalar_boundary``) by the
    staggered ``velocity`` for ``dt`` ``(B,)`` (no validation). ``scheme``: ``"semi_lagrangian"``,
    ``"maccormack"`` or ``"flux"`` (conservative, sub-stepped: :mod:`taichi_dp.ops.flux_advection`; the
    only one that uses the obstacle mask ``fluid``, ``(B or 1, 1, H, W)``: no flux into solid cells)."""
    if scheme == "flux":
        return apply_flux_advection(q, velocity, dt, grid, scalar_boundary, boundary, fluid)
    hy, hx = grid.spacing
    consts = (
        scalar_boundary.codes,
        scalar_boundary.values,
        component_bc(boundary, 0),
        component_bc(boundary, 1),
        1.0 / hy,
        1.0 / hx,
    )
    (q_hat,) = _SL_SCALAR((q, velocity, dt), (q.shape,), consts)
    if scheme == "semi_lagrangian":
        return q_hat
    return _MC_SCALAR((q, q_hat, velocity, dt), (q.shape,), consts)[0]


def component_bc(boundary: FlowBoundary, c: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``(codes, values)`` of velocity component ``c``: the compile-time boundary description."""
    bc = boundary.component(c)
    return bc.codes, bc.values
