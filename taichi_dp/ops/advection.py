"""Advection of a cell-centred quantity by a cell-centred (collocated) velocity.

    ∂q/∂t + (v · ∇) q = 0

Semi-Lagrangian (first-order Euler back-trace, linear/bilinear/trilinear interpolation in 1D/2D/3D):

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
from ._stencil import interp, replaced, stencil, tree_max, tree_min

nd1 = ti.types.ndarray(ndim=1)
nda = ti.types.ndarray()  # (B, C, *spatial): the rank, hence the grid dimension, is fixed per compiled instance

SCHEMES = ("semi_lagrangian", "maccormack")


# ---------------------------------------------------------------------------------------- kernels
# One kernel per operation for 1D, 2D and 3D: ``for ix in ti.grouped(ti.ndrange(*out.shape))`` runs over
# the array index ``ix = (b, c, *cell)``, whose length (the arrays' rank, i.e. grid dimension + 2) Taichi
# fixes at compile time (a ``ti.types.ndarray()`` without ``ndim`` takes it from the argument, and the
# bridge's plan key includes it); the helpers loop over the spatial axes and interpolation corners with
# ``ti.static``. (Not ``ti.grouped(out)``: a struct-for over an ndarray ignores ``serialize``.) Grid
# spacings come as three floats ``inv_h0..2`` (``1/h`` per axis in axis order; unused trailing entries
# are 0) so that one compiled kernel serves every grid.


@ti.func
def _shift(v: ti.template(), dt: ti.template(), ix, axis: ti.template(), inv_h: ti.template()):
    """Index-space displacement along ``axis`` of the cell ``ix = (b, c, *cell)``: ``dt[b]·v[b, axis, cell]/h``."""
    return dt[ix[0]] * v[replaced(ix, 1, axis)] * inv_h[axis]


@ti.func
def _trace(v: ti.template(), dt: ti.template(), ix, sign: ti.template(), inv_h: ti.template()):
    """The positions ``cell_a + sign · dt·v_a/h_a``, one per spatial axis (``sign = -1``: back-trace)."""
    return [ix[2 + a] + sign * _shift(v, dt, ix, a, inv_h) for a in ti.static(range(len(v.shape) - 2))]


@ti.kernel
def _semi_lagrangian(
    q: nda,
    v: nda,
    dt: nd1,
    out: nda,
    bc: ti.template(),
    g: ti.template(),
    inv_h0: float,
    inv_h1: float,
    inv_h2: float,
    serial: ti.template(),
):
    """out[b,c,x] = q[b,c](x − dt[b]·v[b,:,x]/h)   (per axis ``a``: ``x_a − dt·v_a/h_a``; linear,
    bilinear or trilinear interpolation in index space)."""
    ti.loop_config(serialize=serial)
    for ix in ti.grouped(ti.ndrange(*out.shape)):
        out[ix] = interp(q, ix[0], ix[1], _trace(v, dt, ix, -1, ti.static((inv_h0, inv_h1, inv_h2))), bc, g)


@ti.kernel
def _maccormack(
    q: nda,
    q_hat: nda,
    v: nda,
    dt: nd1,
    out: nda,
    bc: ti.template(),
    g: ti.template(),
    inv_h0: float,
    inv_h1: float,
    inv_h2: float,
    serial: ti.template(),
):
    """out = clamp(q̂ + ½(q − q̄), lo, hi) with q̄ = q̂ interpolated at the forward trace x + dt·v/h and
    [lo, hi] the range of the 2**ndim values of q that q̂[x] was interpolated from (back-trace corners)."""
    ti.loop_config(serialize=serial)
    for ix in ti.grouped(ti.ndrange(*out.shape)):
        inv_h = ti.static((inv_h0, inv_h1, inv_h2))
        corners, _ = stencil(q, ix[0], ix[1], _trace(v, dt, ix, -1, inv_h), bc, g)
        q_bar = interp(q_hat, ix[0], ix[1], _trace(v, dt, ix, 1, inv_h), bc, g)
        corrected = q_hat[ix] + 0.5 * (q[ix] - q_bar)
        out[ix] = ti.min(ti.max(corrected, tree_min(corners)), tree_max(corners))


_SL = KernelOp(_semi_lagrangian, 3, 1, "semi_lagrangian")
_MC = KernelOp(_maccormack, 4, 1, "maccormack")


def _inv_spacing(grid: Grid) -> tuple[float, float, float]:
    """``1/h`` per axis padded with zeros to the kernels' three spacing slots."""
    inv = [1.0 / h for h in grid.spacing]
    return (*inv, *([0.0] * (3 - len(inv))))  # type: ignore[return-value]


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
            order: 1D ``(u,)``, 2D ``(v_y, v_x)``, 3D ``(v_z, v_y, v_x)``); may be ``q`` itself
            (self-advection).
        dt: time step, a float or a ``(B,)``/0-d tensor (differentiable).
        grid: where ``q`` lives.
        boundary: the boundary conditions of ``q`` (used for values outside the grid).
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
    consts = (boundary.codes, boundary.values, *_inv_spacing(grid))
    (q_hat,) = _SL((q, velocity, dt), (q.shape,), consts)
    if scheme == "semi_lagrangian":
        return q_hat
    (out,) = _MC((q, q_hat, velocity, dt), (q.shape,), consts)
    return out
