"""Advection of a cell-centred quantity by a cell-centred (collocated) velocity.

    ∂q/∂t + (v · ∇) q = 0

Semi-Lagrangian (first-order Euler back-trace, linear/bilinear interpolation):

    q⁺(x) = q(x − Δt v(x))

MacCormack (Selle et al. 2008) on top of it, with the usual min/max limiter:

    q̂ = SL(q, v, Δt)                    forward step
    q̄ = SL(q̂, v, −Δt)                   backward step (trace forwards from x)
    q⁺ = q̂ + ½ (q − q̄)                  error-compensated value
    q⁺ ← clamp(q⁺, min, max of the values q̂ interpolated from)   (limiter; keeps it monotone)

Both are unconditionally stable; accuracy degrades when the CFL number ``|v| Δt / h`` exceeds ~1.
Gradients flow to ``q``, ``v`` and ``dt`` (Taichi autodiff of these kernels).
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.
import taichi as ti
import torch

from ..bridge import KernelOp
from ..grid import Boundary, Grid, check_grid_boundary
from ..runtime import as_batch_param, check_state
from ._stencil import interp_1d, interp_2d, stencil_1d, stencil_2d

nd1 = ti.types.ndarray(ndim=1)
nd3 = ti.types.ndarray(ndim=3)
nd4 = ti.types.ndarray(ndim=4)

SCHEMES = ("semi_lagrangian", "maccormack")


# ---------------------------------------------------------------------------------------- kernels
@ti.kernel
def _semi_lagrangian_1d(
    q: nd3, v: nd3, dt: nd1, out: nd3, bc: ti.template(), g: ti.template(), inv_h: float, serial: ti.template()
):
    """out[b,c,i] = q[b,c](i − dt[b]·v[b,0,i]/h)   (linear interpolation, index space)."""
    ti.loop_config(serialize=serial)
    for b, c, i in ti.ndrange(q.shape[0], q.shape[1], q.shape[2]):
        out[b, c, i] = interp_1d(q, b, c, i - dt[b] * v[b, 0, i] * inv_h, bc, g)


@ti.kernel
def _maccormack_1d(
    q: nd3, q_hat: nd3, v: nd3, dt: nd1, out: nd3, bc: ti.template(), g: ti.template(), inv_h: float, serial: ti.template()
):
    """out = clamp(q̂ + ½(q − q̄), lo, hi) with q̄ = q̂ traced forwards and [lo, hi] the range of the
    two values of q that q̂[i] was interpolated from."""
    ti.loop_config(serialize=serial)
    for b, c, i in ti.ndrange(q.shape[0], q.shape[1], q.shape[2]):
        shift = dt[b] * v[b, 0, i] * inv_h
        q0, q1, _ = stencil_1d(q, b, c, i - shift, bc, g)
        q_bar = interp_1d(q_hat, b, c, i + shift, bc, g)
        corrected = q_hat[b, c, i] + 0.5 * (q[b, c, i] - q_bar)
        out[b, c, i] = ti.min(ti.max(corrected, ti.min(q0, q1)), ti.max(q0, q1))


@ti.kernel
def _semi_lagrangian_2d(
    q: nd4, v: nd4, dt: nd1, out: nd4, bc: ti.template(), g: ti.template(), inv_hy: float, inv_hx: float, serial: ti.template()
):
    """out[b,c,i,k] = q[b,c](i − dt·v_y/h_y, k − dt·v_x/h_x)   (bilinear interpolation)."""
    ti.loop_config(serialize=serial)
    for b, c, i, k in ti.ndrange(q.shape[0], q.shape[1], q.shape[2], q.shape[3]):
        py = i - dt[b] * v[b, 0, i, k] * inv_hy
        px = k - dt[b] * v[b, 1, i, k] * inv_hx
        out[b, c, i, k] = interp_2d(q, b, c, py, px, bc, g)


@ti.kernel
def _maccormack_2d(
    q: nd4,
    q_hat: nd4,
    v: nd4,
    dt: nd1,
    out: nd4,
    bc: ti.template(),
    g: ti.template(),
    inv_hy: float,
    inv_hx: float,
    serial: ti.template(),
):
    """2D MacCormack correction with the min/max limiter over the four back-trace corners."""
    ti.loop_config(serialize=serial)
    for b, c, i, k in ti.ndrange(q.shape[0], q.shape[1], q.shape[2], q.shape[3]):
        sy = dt[b] * v[b, 0, i, k] * inv_hy
        sx = dt[b] * v[b, 1, i, k] * inv_hx
        q00, q01, q10, q11, _, _ = stencil_2d(q, b, c, i - sy, k - sx, bc, g)
        q_bar = interp_2d(q_hat, b, c, i + sy, k + sx, bc, g)
        corrected = q_hat[b, c, i, k] + 0.5 * (q[b, c, i, k] - q_bar)
        lo = ti.min(ti.min(q00, q01), ti.min(q10, q11))
        hi = ti.max(ti.max(q00, q01), ti.max(q10, q11))
        out[b, c, i, k] = ti.min(ti.max(corrected, lo), hi)


_SL = {1: KernelOp(_semi_lagrangian_1d, 3, 1, "semi_lagrangian_1d"), 2: KernelOp(_semi_lagrangian_2d, 3, 1, "semi_lagrangian_2d")}
_MC = {1: KernelOp(_maccormack_1d, 4, 1, "maccormack_1d"), 2: KernelOp(_maccormack_2d, 4, 1, "maccormack_2d")}


# ---------------------------------------------------------------------------------- torch-facing
def advect(
    q: torch.Tensor,
    velocity: torch.Tensor,
    dt: float | torch.Tensor,
    grid: Grid,
    boundary: Boundary,
    scheme: str = "semi_lagrangian",
) -> torch.Tensor:
    """Advect ``q`` by ``velocity`` for one step of size ``dt``.

    Args:
        q: ``(B, C, *grid.shape)`` quantity (any number of channels).
        velocity: ``(B, ndim, *grid.shape)`` cell-centred velocity in physical units (channels in axis
            order: 1D ``(u,)``, 2D ``(v_y, v_x)``); may be ``q`` itself (self-advection).
        dt: time step, a float or a ``(B,)``/0-d tensor (differentiable).
        grid, boundary: where ``q`` lives and its boundary conditions (used for values outside).
        scheme: ``"semi_lagrangian"`` or ``"maccormack"``.

    Returns:
        ``(B, C, *grid.shape)`` advected quantity.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    check_grid_boundary(grid, boundary)
    check_state("q", q, grid.shape)
    check_state("velocity", velocity, grid.shape, channels=grid.ndim, batch=q.shape[0])
    return apply_advection(q, velocity, as_batch_param("dt", dt, q.shape[0]), grid, boundary, scheme)


def apply_advection(
    q: torch.Tensor, velocity: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: Boundary, scheme: str
) -> torch.Tensor:
    """:func:`advect` without input validation (for solvers that validated their state once);
    ``dt`` is a ``(B,)`` tensor."""
    consts = (boundary.codes, boundary.values, *(1.0 / h for h in grid.spacing))
    (q_hat,) = _SL[grid.ndim]((q, velocity, dt), (q.shape,), consts)
    if scheme == "semi_lagrangian":
        return q_hat
    (out,) = _MC[grid.ndim]((q, q_hat, velocity, dt), (q.shape,), consts)
    return out
