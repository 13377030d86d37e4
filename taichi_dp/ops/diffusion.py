"""Diffusion ``∂u/∂t = ν ∇²u`` with the standard 3-point (1D) / 5-point (2D) / 7-point (3D) Laplacian ``L``.

Explicit (forward Euler), stable for ``ν Δt Σ_a 1/h_a² ≤ 1/2``:

    u⁺ = u + ν Δt L(u)

Implicit (backward Euler), unconditionally stable; with ``L(u) = L₀u + l_g`` split into its linear
part ``L₀`` (homogeneous boundary conditions) and the boundary term ``l_g = L(0)`` (Dirichlet values):

    (I − ν Δt L₀) u⁺ = u + ν Δt l_g

``I − νΔt L₀`` is symmetric positive definite for every boundary kind here, so it is solved by CG and
differentiated implicitly (:func:`taichi_dp.ops.linear_solve.solve_spd`): the backward pass is one
adjoint solve with the same operator, and ``∂L/∂ν`` follows from ``−λᵀ (∂A/∂ν) u⁺``.
``ν`` and ``Δt`` may be per-batch ``(B,)`` tensors and receive gradients.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.
import taichi as ti
import torch

from ..bridge import KernelOp
from ..grid import Boundary, Grid, check_grid_boundary
from ..runtime import as_batch_param, check_state, ensure_init
from ._stencil import neighbour
from .linear_solve import solve_spd

nd1 = ti.types.ndarray(ndim=1)
nda = ti.types.ndarray()  # (B, C, *spatial): the rank, hence the grid dimension, is fixed per compiled instance


# ---------------------------------------------------------------------------------------- kernels
@ti.func
def _second_difference(u: ti.template(), ix, centre, axis: ti.template(), bc: ti.template(), g: ti.template()):
    """``u[x − e_axis] − 2u[x] + u[x + e_axis]`` at the array index ``ix = (b, c, *x)`` (ghost values from ``bc``, ``g``)."""
    return neighbour(u, ix, axis, -1, bc, g) - 2.0 * centre + neighbour(u, ix, axis, 1, bc, g)


@ti.func
def _laplacian_sum(u: ti.template(), ix, centre, bc: ti.template(), g: ti.template(), inv_h2: ti.template()):
    """``Σ_a (u[x − e_a] − 2u[x] + u[x + e_a]) / h_a²`` over the spatial axes, summed in axis order."""
    acc = _second_difference(u, ix, centre, 0, bc, g) * inv_h2[0]
    for a in ti.static(range(1, len(u.shape) - 2)):
        acc = acc + _second_difference(u, ix, centre, a, bc, g) * inv_h2[a]
    return acc


@ti.kernel
def _add_laplacian(
    u: nda,
    k: nd1,
    out: nda,
    bc: ti.template(),
    g: ti.template(),
    inv_h2_0: float,
    inv_h2_1: float,
    inv_h2_2: float,
    serial: ti.template(),
):
    """out[b,c,x] = u + k[b] · Σ_a (u[x − e_a] − 2u[x] + u[x + e_a]) / h_a²   (3/5/7-point Laplacian in
    1D/2D/3D; ghost values from ``bc``, ``g``; ``inv_h2_a = 1/h_a²``, unused trailing slots 0).

    One kernel for every grid dimension: ``ix = (b, c, *x)`` runs over ``ti.ndrange`` of the array's
    shape, whose rank Taichi fixes at compile time; the axes are unrolled with ``ti.static``."""
    ti.loop_config(serialize=serial)
    for ix in ti.grouped(ti.ndrange(*out.shape)):
        centre = u[ix]
        out[ix] = centre + k[ix[0]] * _laplacian_sum(u, ix, centre, bc, g, ti.static((inv_h2_0, inv_h2_1, inv_h2_2)))


_ADD_LAPLACIAN = KernelOp(_add_laplacian, 2, 1, "add_laplacian")


def add_laplacian(u: torch.Tensor, k: torch.Tensor, grid: Grid, boundary: Boundary, homogeneous: bool = False) -> torch.Tensor:
    """``u + k L(u)`` for a per-batch ``(B,)`` coefficient ``k`` (no input validation; internal building
    block). ``homogeneous=True`` uses zero Dirichlet values, i.e. the linear part ``L₀``."""
    values = tuple(0.0 for _ in boundary.values) if homogeneous else boundary.values
    inv_h2 = [1.0 / h**2 for h in grid.spacing]
    consts = (boundary.codes, values, *inv_h2, *([0.0] * (3 - len(inv_h2))))
    return _ADD_LAPLACIAN((u, k), (u.shape,), consts)[0]


def stability_number(nu: float, dt: float, grid: Grid) -> float:
    """``ν Δt Σ_a 1/h_a²``; explicit diffusion is stable for values ≤ 1/2."""
    return nu * dt * sum(1.0 / h**2 for h in grid.spacing)


def check_explicit_stability(nu: float | torch.Tensor, dt: float | torch.Tensor, grid: Grid) -> None:
    """Raise ``ValueError`` if explicit diffusion with these parameters would blow up: the largest
    per-batch-element ``ν Δt Σ 1/h²`` must be ≤ 1/2 (``nu``, ``dt``: floats or ``(B,)`` tensors)."""
    if not ensure_init().check_inputs:
        return
    nu_t = torch.as_tensor(nu).detach().reshape(-1).abs().double().cpu()
    dt_t = torch.as_tensor(dt).detach().reshape(-1).abs().double().cpu()
    if nu_t.numel() != dt_t.numel() and 1 not in (nu_t.numel(), dt_t.numel()):
        raise ValueError(f"nu has {nu_t.numel()} values but dt has {dt_t.numel()}; give one per batch element or a scalar")
    k = nu_t * dt_t
    worst = int(torch.argmax(k))
    s = float(k[worst]) * sum(1.0 / h**2 for h in grid.spacing)
    if s > 0.5:
        nu_w, dt_w = float(nu_t[worst % nu_t.numel()]), float(dt_t[worst % dt_t.numel()])
        raise ValueError(
            f"explicit diffusion is unstable: nu*dt*sum(1/h^2) = {s:.3g} > 0.5 "
            f"(nu={nu_w:.3g}, dt={dt_w:.3g}, h={grid.spacing}); use the implicit scheme or "
            f"dt <= {0.5 / (nu_w * sum(1.0 / h**2 for h in grid.spacing)):.3g}"
        )


# ---------------------------------------------------------------------------------- torch-facing
SCHEMES = ("explicit", "implicit")


def diffuse(
    u: torch.Tensor,
    nu: float | torch.Tensor,
    dt: float | torch.Tensor,
    grid: Grid,
    boundary: Boundary,
    scheme: str = "explicit",
    *,
    rtol: float = 1e-6,
    max_iter: int = 1000,
) -> torch.Tensor:
    """One diffusion step ``∂u/∂t = ν ∇²u`` of size ``dt``.

    Args:
        u: ``(B, C, *grid.shape)``.
        nu: viscosity/diffusivity ≥ 0, float or ``(B,)`` tensor (differentiable).
        dt: time step > 0, float or ``(B,)`` tensor (differentiable).
        scheme: ``"explicit"`` (forward Euler; raises ``ValueError`` when ``ν Δt Σ 1/h² > 1/2``) or
            ``"implicit"`` (backward Euler by CG, unconditionally stable, implicit adjoint).
        rtol: CG tolerance for ``"implicit"``, relative to the right-hand side (and in backward to the
            incoming gradient).
        max_iter: CG iteration cap for ``"implicit"``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    check_grid_boundary(grid, boundary)
    check_state("u", u, grid.shape)
    nu_b = as_batch_param("nu", nu, u.shape[0], positive=True)
    dt_b = as_batch_param("dt", dt, u.shape[0], positive=True)
    if scheme == "explicit":
        check_explicit_stability(nu_b, dt_b, grid)
    return apply_diffusion(u, nu_b, dt_b, grid, boundary, scheme, rtol=rtol, max_iter=max_iter)


def diffuse_explicit(
    u: torch.Tensor, nu: float | torch.Tensor, dt: float | torch.Tensor, grid: Grid, boundary: Boundary
) -> torch.Tensor:
    """Forward-Euler step ``u + ν Δt L(u)``; see :func:`diffuse`."""
    return diffuse(u, nu, dt, grid, boundary, "explicit")


def diffuse_implicit(
    u: torch.Tensor,
    nu: float | torch.Tensor,
    dt: float | torch.Tensor,
    grid: Grid,
    boundary: Boundary,
    *,
    rtol: float = 1e-6,
    max_iter: int = 1000,
) -> torch.Tensor:
    """Backward-Euler step: solves ``(I − ν Δt L₀) u⁺ = u + ν Δt L(0)`` by CG; see :func:`diffuse`."""
    return diffuse(u, nu, dt, grid, boundary, "implicit", rtol=rtol, max_iter=max_iter)


def apply_diffusion(
    u: torch.Tensor,
    nu: torch.Tensor,
    dt: torch.Tensor,
    grid: Grid,
    boundary: Boundary,
    scheme: str,
    *,
    rtol: float = 1e-6,
    max_iter: int = 1000,
) -> torch.Tensor:
    """:func:`diffuse` without input validation (for solvers that validated once); ``nu``, ``dt``: ``(B,)``."""
    k = nu * dt
    if scheme == "explicit":
        return add_laplacian(u, k, grid, boundary)
    rhs = u
    if any(v != 0.0 for v in boundary.values):  # Dirichlet boundary term ν Δt L(0)
        rhs = u + add_laplacian(torch.zeros_like(u), k, grid, boundary)

    def matvec(x: torch.Tensor, k_: torch.Tensor) -> torch.Tensor:
        return add_laplacian(x, -k_, grid, boundary, homogeneous=True)

    return solve_spd(matvec, rhs, (k,), x0=u.detach(), rtol=rtol, max_iter=max_iter)
