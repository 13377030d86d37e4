"""Viscosity on the staggered (MAC) grid, 2D and 3D: explicit (forward Euler) diffusion of each velocity
component on its own face grid,

    v⁺ = v + ν Δt L(v)        stable for ν Δt Σ_a 1/h_a² ≤ 1/2,

with the ``(2 nd + 1)``-point Laplacian ``L`` (5-point in 2D, 7-point in 3D). Neighbours along a
component's normal axis are faces (boundary faces included; beyond them the value is extrapolated with
zero gradient, periodic axes wrap with period N); along its tangential axes they are ghost values of
:meth:`FlowBoundary.component` (no-slip walls and inflows: the wall velocity on the wall; slip walls and
outflows: zero gradient). Faces next to obstacles hold 0, which acts as a no-slip obstacle surface.
Boundary and obstacle faces are re-imposed by the caller. On a periodic axis the seam faces ``0`` and
``N`` must be equal on input (as :func:`apply_boundary` leaves them): face ``N`` reads its tangential
neighbours from face ``0``'s row.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

import taichi as ti
import torch

from ..bridge import KernelOp
from ..grid import Grid
from ..grid.staggered import FlowBoundary, apply_boundary, free_faces
from ._stencil import face_value, ordered_sum
from .linear_solve import solve_spd
from .staggered_advection import component_bcs

nd1 = ti.types.ndarray(ndim=1)
nda = ti.types.ndarray()  # (B, nd, *(N+1)): the rank, hence the grid dimension, is fixed per compiled instance


@ti.func
def _axis_term(v: ti.template(), ix, centre, c: ti.template(), axis: ti.template(), bc: ti.template(), inv_h2: ti.template()):
    """``(v[−1] − 2 v + v[+1]) / h²`` along ``axis`` at the face ``ix`` of component ``c``."""
    return (face_value(v, ix, c, axis, -1, bc) - 2.0 * centre + face_value(v, ix, c, axis, 1, bc)) * inv_h2[axis]


@ti.kernel
def _add_laplacian_mac(
    v: nda,
    k: nd1,
    out: nda,
    bcs: ti.template(),
    inv_h2_0: float,
    inv_h2_1: float,
    inv_h2_2: float,
    serial: ti.template(),
):
    """out = v + k[b] · L(v) on every real face of every component (padding stays 0); one loop over
    ``(b, *idx)`` that updates every component's face ``idx``."""
    ti.loop_config(serialize=serial)
    for J in ti.grouped(ti.ndrange(v.shape[0], *[v.shape[2 + a] for a in ti.static(range(len(v.shape) - 2))])):
        for c in ti.static(range(len(v.shape) - 2)):
            ix = ti.Vector([J[0], c] + [J[1 + a] for a in ti.static(range(len(v.shape) - 2))], dt=ti.i32)
            centre = v[ix]
            inv_h2 = ti.static((inv_h2_0, inv_h2_1, inv_h2_2))
            lap = ordered_sum([_axis_term(v, ix, centre, c, a, bcs[c], inv_h2) for a in ti.static(range(len(v.shape) - 2))])
            real = True
            for a in ti.static(range(len(v.shape) - 2)):
                if ti.static(a != c):  # real faces: idx[a] < N_a across the component's axis
                    real = real and ix[2 + a] < v.shape[2 + a] - 1
            out[ix] = ti.select(real, centre + k[ix[0]] * lap, 0.0)


_ADD_LAPLACIAN_MAC = KernelOp(_add_laplacian_mac, 2, 1, "add_laplacian_mac")


def _inv_spacing2(grid: Grid) -> tuple[float, float, float]:
    """``1/h²`` per axis padded with zeros to the kernel's three slots."""
    inv = [1.0 / h**2 for h in grid.spacing]
    return (*inv, *([0.0] * (3 - len(inv))))  # type: ignore[return-value]


def apply_velocity_diffusion(
    v: torch.Tensor, nu: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: FlowBoundary
) -> torch.Tensor:
    """Explicit viscosity step ``v + ν Δt L(v)`` of a staggered velocity ``(B, nd, *(N+1))`` (no
    validation; ``nu``, ``dt``: ``(B,)``). Differentiable w.r.t. ``v``, ``nu`` and ``dt``."""
    consts = (component_bcs(boundary), *_inv_spacing2(grid))
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
    """Backward-Euler viscosity step of a staggered velocity ``(B, nd, *(N+1))`` (unconditionally stable; no validation).

    With ``F`` the free faces (:func:`free_faces`) and ``g`` the imposed values on the others, the free
    faces solve the symmetric positive definite system

        F (I − k L₀) F x = F (v + k L(g)),      k = ν Δt,

    where ``L₀`` is the Laplacian with homogeneous boundary values and ``L(g)`` carries the wall
    velocities and the fixed faces into the right-hand side; fixed faces keep ``g``. Solved by CG and
    differentiated implicitly (:func:`~taichi_dp.ops.linear_solve.solve_spd`): gradients flow to ``v``,
    ``nu`` and ``dt`` through one adjoint solve.
    """
    free = free_faces(grid, boundary, fluid, v.dtype, v.device)
    g = apply_boundary(v, grid, boundary, fluid) * (1 - free)  # imposed values on fixed faces
    k = nu * dt
    bcs = component_bcs(boundary)
    full = (bcs, *_inv_spacing2(grid))
    homogeneous = (tuple((codes, tuple(0.0 for _ in values)) for codes, values in bcs), *_inv_spacing2(grid))
    rhs = free * (v + _ADD_LAPLACIAN_MAC((g, k), (g.shape,), full)[0] - g)

    def matvec(x: torch.Tensor, k_: torch.Tensor) -> torch.Tensor:
        fx = free * x
        return free * _ADD_LAPLACIAN_MAC((fx, -k_), (x.shape,), homogeneous)[0] + (1 - free) * x

    x = solve_spd(matvec, rhs.contiguous(), (k,), x0=(free * v).detach().contiguous(), rtol=rtol, max_iter=max_iter)
    return apply_boundary(x * free + g, grid, boundary, fluid)
