"""Viscosity on the staggered (MAC) grid: explicit (forward Euler) diffusion of each velocity component
on its own face grid,

    v⁺ = v + ν Δt L(v)        stable for ν Δt (1/h_y² + 1/h_x²) ≤ 1/2,

with the 5-point Laplacian ``L``. Neighbours along a component's normal axis are faces (boundary faces
included; beyond them the value is extrapolated with zero gradient, periodic axes wrap with period N);
along its tangential axis they are ghost values of :meth:`FlowBoundary.component` (no-slip walls and
inflows: 0 on the wall; slip walls and outflows: zero gradient). Faces next to obstacles hold 0, which
acts as a no-slip obstacle surface. Boundary and obstacle faces are re-imposed by the caller. On a
periodic axis the seam faces ``0`` and ``N`` must be equal on input (as :func:`apply_boundary` leaves
them): face ``N`` reads its tangential neighbours from face ``0``'s row.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti
import torch

from ..bridge import KernelOp
from ..grid import PERIODIC, Grid
from ..grid.staggered import FlowBoundary, apply_boundary, free_faces
from ._stencil import ghost
from .linear_solve import solve_spd
from .staggered_advection import component_bc

nd1 = ti.types.ndarray(ndim=1)
nd4 = ti.types.ndarray(ndim=4)


@ti.func
def _normal_index(i, n_faces, periodic: ti.template()):
    """Face index along a component's normal axis: wrap (period ``n_faces − 1``) or clamp."""
    j = ti.min(ti.max(i, 0), n_faces - 1)
    if ti.static(periodic):
        n = n_faces - 1
        j = (i % n + n) % n
    return j


@ti.func
def _face_value(v: ti.template(), b, c: ti.template(), i, k, bc: ti.template()):
    """Component ``c`` at face ``(i, k)`` (one step outside allowed) with the boundary rules above;
    ``bc``: ``(codes, values)`` of ``FlowBoundary.component(c)``."""
    h1, w1 = v.shape[2], v.shape[3]
    value = 0.0
    codes, g = ti.static(bc[0], bc[1])
    if ti.static(c == 0):
        ji = _normal_index(i, h1, ti.static(codes[0] == PERIODIC))
        jk, a, s = ghost(k, w1 - 1, codes[2], codes[3], g[2], g[3])
        value = a + s * v[b, 0, ji, jk]
    else:
        ji, a, s = ghost(i, h1 - 1, codes[0], codes[1], g[0], g[1])
        jk = _normal_index(k, w1, ti.static(codes[2] == PERIODIC))
        value = a + s * v[b, 1, ji, jk]
    return value


@ti.kernel
def _add_laplacian_mac(
    v: nd4, k: nd1, out: nd4, bc_y: ti.template(), bc_x: ti.template(), inv_hy2: float, inv_hx2: float, serial: ti.template()
):
    """out = v + k[b] · L(v) on every real face (padding stays 0)."""
    ti.loop_config(serialize=serial)
    for b, i, j in ti.ndrange(v.shape[0], v.shape[2], v.shape[3]):
        # v_y face (i, j): real for j < W
        cy = v[b, 0, i, j]
        lap_y = (_face_value(v, b, 0, i - 1, j, bc_y) - 2.0 * cy + _face_value(v, b, 0, i + 1, j, bc_y)) * inv_hy2 + (
            _face_value(v, b, 0, i, j - 1, bc_y) - 2.0 * cy + _face_value(v, b, 0, i, j + 1, bc_y)
        ) * inv_hx2
        out[b, 0, i, j] = ti.select(j < v.shape[3] - 1, cy + k[b] * lap_y, 0.0)
        # v_x face (i, j): real for i < H
        cx = v[b, 1, i, j]
        lap_x = (_face_value(v, b, 1, i - 1, j, bc_x) - 2.0 * cx + _face_value(v, b, 1, i + 1, j, bc_x)) * inv_hy2 + (
            _face_value(v, b, 1, i, j - 1, bc_x) - 2.0 * cx + _face_value(v, b, 1, i, j + 1, bc_x)
        ) * inv_hx2
        out[b, 1, i, j] = ti.select(i < v.shape[2] - 1, cx + k[b] * lap_x, 0.0)


_ADD_LAPLACIAN_MAC = KernelOp(_add_laplacian_mac, 2, 1, "add_laplacian_mac")


def apply_velocity_diffusion(
    v: torch.Tensor, nu: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: FlowBoundary
) -> torch.Tensor:
    """Explicit viscosity step ``v + ν Δt L(v)`` of a staggered velocity (no validation; ``nu``, ``dt``:
    ``(B,)``). Differentiable w.r.t. ``v``, ``nu`` and ``dt``."""
    hy, hx = grid.spacing
    consts = (component_bc(boundary, 0), component_bc(boundary, 1), 1.0 / hy**2, 1.0 / hx**2)
    return _ADD_LAPLACIAN_MAC((v, nu * dt), (v.shape,), consts)[0]


def apply_velocity_diffusion_implicit(
    v: torch.Tensor,
    nu: torch.Tensor,
    dt: torch.Tensor,
    grid: Grid,
    boundary: FlowBoundary,
    fluid: torch.Tensor | None = None,
    *,
    rtol: float = 1e-6,
    max_iter: int = 1000,
) -> torch.Tensor:
    """Backward-Euler viscosity step of a staggered velocity (unconditionally stable; no validation).

    With ``F`` the free faces (:func:`free_faces`) and ``g`` the imposed values on the others, the free
    faces solve the symmetric positive definite system

        F (I − k L₀) F x = F (v + k L(g)),      k = ν Δt,

    where ``L₀`` is the Laplacian with homogeneous boundary values and ``L(g)`` carries the wall
    velocities and the fixed faces into the right-hand side; fixed faces keep ``g``. Solved by CG and
    differentiated implicitly (:func:`~taichi_dp.ops.linear_solve.solve_spd`): gradients flow to ``v``,
    ``nu`` and ``dt`` through one adjoint solve.
    """
    hy, hx = grid.spacing
    free = free_faces(grid, boundary, fluid, v.dtype, v.device)
    g = apply_boundary(v, grid, boundary, fluid) * (1 - free)  # imposed values on fixed faces
    k = nu * dt
    full = (component_bc(boundary, 0), component_bc(boundary, 1), 1.0 / hy**2, 1.0 / hx**2)
    homogeneous = tuple((codes, tuple(0.0 for _ in values)) for codes, values in full[:2]) + full[2:]
    rhs = free * (v + _ADD_LAPLACIAN_MAC((g, k), (g.shape,), full)[0] - g)

    def matvec(x: torch.Tensor, k_: torch.Tensor) -> torch.Tensor:
        fx = free * x
        return free * _ADD_LAPLACIAN_MAC((fx, -k_), (x.shape,), homogeneous)[0] + (1 - free) * x

    x = solve_spd(matvec, rhs.contiguous(), (k,), x0=(free * v).detach().contiguous(), rtol=rtol, max_iter=max_iter)
    return apply_boundary(x * free + g, grid, boundary, fluid)
