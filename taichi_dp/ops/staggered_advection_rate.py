"""The explicit momentum rate on the staggered (MAC) grid, 2D and 3D, for Runge–Kutta time stepping:

    F(v) = −(v · ∇) v + ν ∇²v,

by second-order central differences in the advective MAC form. For the face ``f`` of component ``c``
(layout in :mod:`taichi_dp.grid.staggered`; 2D ``v_x`` face ``(i, j)`` at ``(i, j − ½)``):

    F_c[f] = Σ_a ( −u_a[f] (v_c[f + e_a] − v_c[f − e_a]) / (2 h_a) + ν (v_c[f + e_a] − 2 v_c[f] + v_c[f − e_a]) / h_a² ),

where ``u_c[f] = v_c[f]`` (the face's own component) and, for ``a ≠ c``, ``u_a[f]`` is the mean of the four
faces of component ``a`` around ``f``: faces ``idx[a]`` and ``idx[a] + 1`` along ``a`` times cells
``idx[c] − 1`` and ``idx[c]`` along ``c`` (2D, at a ``v_x`` face: ``v̄_y = ¼ (v_y[i, j−1] + v_y[i, j] +
v_y[i+1, j−1] + v_y[i+1, j])``). The viscous part is the ``(2 nd + 1)``-point Laplacian of
:mod:`taichi_dp.ops.staggered_diffusion` (the same neighbours).

Neighbours follow the staggered diffusion's rules: along a component's normal axis they are faces
(boundary faces included; beyond them zero-gradient extrapolation, i.e. the index is clamped; periodic
axes wrap with period ``N``); along its tangential axes they are ghost values of
:meth:`FlowBoundary.component` (no-slip walls and inflows: the wall velocity on the wall, ``2 g − v``;
slip walls and outflows: zero gradient; periodic: wrap). The four faces of ``u_a`` use component ``a``'s
ghost values along ``c``. On a periodic axis the seam face ``N`` is face ``0``: its rate is face ``0``'s,
read from face ``0`` except for the Laplacian's centre value, its own (as in the staggered diffusion; the
input should have them equal, as :func:`~taichi_dp.grid.staggered.apply_boundary` leaves them). Faces next
to an obstacle read the 0 held on the obstacle's faces (a no-slip surface, as the viscosity does). Padding
faces get 0; the rate on boundary and obstacle faces is computed but meant to be overwritten when the
caller re-imposes the boundary.

Accuracy: second order in space on a uniform grid away from walls (first order in the tangential
derivative next to a no-slip wall, through the ghost value). Stability (of the explicit time stepping that
uses it): central advection has purely imaginary eigenvalues up to ``Σ_a max|u_a| / h_a`` in magnitude, the
Laplacian real ones down to ``−4 ν Σ_a 1/h_a²``; :mod:`taichi_dp.solvers.time_stepping` checks both.

Gradients flow to ``v`` and ``ν`` (``(B,)``) by Taichi autodiff (one kernel, inputs never written).
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti
import torch

from ..bridge import KernelOp
from ..grid import PERIODIC, Grid
from ..grid.staggered import FlowBoundary, check_staggered
from ..runtime import as_batch_param, check_param
from ._stencil import face_value, ghost, normal_index, ordered_sum, replaced
from .staggered_advection import component_bcs

nd1 = ti.types.ndarray(ndim=1)
nda = ti.types.ndarray()  # (B, nd, *(N+1)): the rank, hence the grid dimension, is fixed per compiled instance


@ti.func
def _mean_component(v: ti.template(), jx, c: ti.template(), a: ti.template(), bc_a: ti.template()):
    """Component ``a ≠ c`` at the face ``jx`` of component ``c``: the mean of its faces ``idx[a]``,
    ``idx[a] + 1`` (along ``a``) × cells ``idx[c] − 1``, ``idx[c]`` (along ``c``, ghost values of ``bc_a``).
    The face index along ``a`` goes through :func:`normal_index`: on a periodic axis face ``N`` is read
    as face ``0``; otherwise it is clamped, which keeps padding faces (masked by the caller) in bounds."""
    codes, g = ti.static(bc_a[0], bc_a[1])
    lo, hi = ti.static(2 * c, 2 * c + 1)
    n_c = v.shape[2 + c] - 1
    j0, a0, s0 = ghost(jx[2 + c] - 1, n_c, codes[lo], codes[hi], g[lo], g[hi])
    j1, a1, s1 = ghost(jx[2 + c], n_c, codes[lo], codes[hi], g[lo], g[hi])
    low = replaced(jx, 1, a)
    high = replaced(low, 2 + a, normal_index(jx[2 + a] + 1, v.shape[2 + a], codes[2 * a] == PERIODIC))
    near = (a0 + s0 * v[replaced(low, 2 + c, j0)]) + (a0 + s0 * v[replaced(high, 2 + c, j0)])
    far = (a1 + s1 * v[replaced(low, 2 + c, j1)]) + (a1 + s1 * v[replaced(high, 2 + c, j1)])
    return 0.25 * (near + far)


@ti.func
def _axis_rate(
    v: ti.template(), jx, centre, own, c: ti.template(), a: ti.template(), nu, bcs: ti.template(), inv_h: ti.template()
):
    """``−u_a (v[+1] − v[−1]) / 2h_a + ν (v[+1] − 2 v + v[−1]) / h_a²`` along ``a`` at the face ``jx`` of ``c``
    (``centre = v[jx]`` advects, ``own``: the face's stored value, the Laplacian's centre)."""
    plus = face_value(v, jx, c, a, 1, bcs[c])
    minus = face_value(v, jx, c, a, -1, bcs[c])
    u = centre
    if ti.static(a != c):
        u = _mean_component(v, jx, c, a, bcs[a])
    return -u * (plus - minus) * (0.5 * inv_h[a]) + nu * ((plus - 2.0 * own + minus) * (inv_h[a] * inv_h[a]))


@ti.kernel
def _velocity_rate(
    v: nda,
    nu: nd1,
    out: nda,
    bcs: ti.template(),
    inv_h0: float,
    inv_h1: float,
    inv_h2: float,
    serial: ti.template(),
):
    """out = −(v·∇)v + ν[b] ∇²v on every real face of every component (padding 0; module docstring); one
    loop over ``(b, *idx)`` that fills every component's face ``idx``."""
    ti.loop_config(serialize=serial)
    for J in ti.grouped(ti.ndrange(v.shape[0], *[v.shape[2 + a] for a in ti.static(range(len(v.shape) - 2))])):
        for c in ti.static(range(len(v.shape) - 2)):
            ix = ti.Vector([J[0], c] + [J[1 + a] for a in ti.static(range(len(v.shape) - 2))], dt=ti.i32)
            # the face read as this one: a periodic axis' seam face N is face 0
            jx = replaced(ix, 2 + c, normal_index(ix[2 + c], v.shape[2 + c], bcs[c][0][2 * c] == PERIODIC))
            centre = v[jx]
            own = v[ix]
            inv_h = ti.static((inv_h0, inv_h1, inv_h2))
            rate = ordered_sum(
                [_axis_rate(v, jx, centre, own, c, a, nu[ix[0]], bcs, inv_h) for a in ti.static(range(len(v.shape) - 2))]
            )
            real = True
            for a in ti.static(range(len(v.shape) - 2)):
                if ti.static(a != c):  # real faces: idx[a] < N_a across the component's axis
                    real = real and ix[2 + a] < v.shape[2 + a] - 1
            out[ix] = ti.select(real, rate, 0.0)


_VELOCITY_RATE = KernelOp(_velocity_rate, 2, 1, "velocity_rate_mac")


def _inv_spacing(grid: Grid) -> tuple[float, float, float]:
    """``1/h`` per axis padded with zeros to the kernel's three slots."""
    inv = [1.0 / h for h in grid.spacing]
    return (*inv, *([0.0] * (3 - len(inv))))  # type: ignore[return-value]


def apply_velocity_rate(v: torch.Tensor, nu: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> torch.Tensor:
    """:func:`velocity_rate` without validation: ``v`` a contiguous staggered ``(B, nd, *(N+1))`` tensor,
    ``nu`` a ``(B,)`` tensor. Differentiable w.r.t. ``v`` and ``nu``."""
    return _VELOCITY_RATE((v, nu), (v.shape,), (component_bcs(boundary), *_inv_spacing(grid)))[0]


def velocity_rate(
    v: torch.Tensor, grid: Grid, boundary: FlowBoundary, nu: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """The explicit rate ``−(v·∇)v + ν ∇²v`` of a staggered velocity (module docstring for the stencil and
    the boundaries); ``nu = 0`` gives the advection rate alone.

    Args:
        v: staggered velocity ``(B, nd, *(N+1))`` of the runtime dtype and device (2D ``(B, 2, H+1, W+1)``,
            3D ``(B, 3, D+1, H+1, W+1)``); on periodic axes the seam faces ``0`` and ``N`` equal.
        grid: the 2D or 3D grid.
        boundary: the :class:`~taichi_dp.grid.staggered.FlowBoundary` (one side pair per grid axis).
        nu: kinematic viscosity ≥ 0, a float or a ``(B,)`` tensor (differentiable).

    Returns:
        The rate, a staggered tensor of ``v``'s shape (padding 0).
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a taichi_dp.Grid, got {type(grid).__name__}")
    if not isinstance(boundary, FlowBoundary):
        raise TypeError(f"boundary must be a FlowBoundary, got {type(boundary).__name__}")
    if boundary.ndim != grid.ndim:
        raise ValueError(f"boundary must have one side pair per grid axis ({grid.ndim}), got a {boundary.ndim}D FlowBoundary")
    v = check_staggered("v", v, grid)
    check_param("nu", nu, positive=True)
    return apply_velocity_rate(v.contiguous(), as_batch_param("nu", nu, v.shape[0], positive=True), grid, boundary)
