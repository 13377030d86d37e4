r"""The differentiable projection: :func:`project` and its autograd Function with a hand-written adjoint
(one more solve, never a differentiation of the kernels).

Derivation. With ``f`` the fluid mask, ``D`` the divergence (faces → cells), ``G`` the pressure gradient
(cells → faces) and ``S`` the solution operator of the masked system (``S = Π A⁻¹ Π`` on fluid cells, with
``Π`` the removal of the fluid mean on singular systems and the identity otherwise), the forward pass is

    p  = S(−f·D v)
    v⁺ = v − G p = v + G S f D v

linear in ``v``. For incoming gradients ``(g_out, g_p)`` of ``(v⁺, p)`` the vector–Jacobian product is

    g_v = g_out + Dᵀ f Sᵀ Gᵀ g_out − Dᵀ f Sᵀ g_p
        = g_out − Dᵀ (f·λ),      λ = S (g_p − Gᵀ g_out)

using ``Sᵀ = S`` (``A`` is symmetric and ``Π`` an orthogonal projection). So the backward pass is one solve
with right-hand side ``g_p − Gᵀ g_out`` (:class:`.modes.ProjectAdjoint`), its tolerance ``rtol`` relative to
that right-hand side, then ``g_v = g_out − Dᵀ λ`` on real faces (``λ`` is already zero on solid cells).
The warm start ``x0`` only changes where the iteration begins, so it gets no gradient.
"""

from __future__ import annotations

from typing import Any

import torch

from .solver import PoissonSolver


def project(
    solver: PoissonSolver, v: torch.Tensor, x0: torch.Tensor | None = None, *, rtol: float = 1e-5, max_iter: int = 5000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable :meth:`PoissonSolver.project`: ``(v⁺, p)``; the backward pass is
    :meth:`PoissonSolver.project_adjoint` (one solve); ``x0`` gets no gradient."""
    if torch.is_grad_enabled() and v.requires_grad:
        return _Project.apply(solver, rtol, max_iter, v, x0)
    return solver.project(v, x0, rtol=rtol, max_iter=max_iter)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, solver: PoissonSolver, rtol: float, max_iter: int, v: torch.Tensor, x0: Any) -> Any:
        ctx.solver, ctx.rtol, ctx.max_iter = solver, rtol, max_iter
        ctx.shapes = (v.shape, (v.shape[0], 1, *solver.grid.shape))
        return solver.project(v, x0, rtol=rtol, max_iter=max_iter)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_out: torch.Tensor | None, g_p: torch.Tensor | None) -> Any:
        ref = g_out if g_out is not None else g_p
        g_out = torch.zeros(ctx.shapes[0], dtype=ref.dtype, device=ref.device) if g_out is None else g_out
        g_p = torch.zeros(ctx.shapes[1], dtype=ref.dtype, device=ref.device) if g_p is None else g_p
        g_v = ctx.solver.project_adjoint(g_out, g_p, rtol=ctx.rtol, max_iter=ctx.max_iter)
        return None, None, None, g_v, None
