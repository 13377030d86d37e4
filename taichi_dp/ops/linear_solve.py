"""Batched conjugate gradients with an implicit (adjoint) backward pass.

For a symmetric positive definite operator ``A(θ)`` applied matrix-free by ``matvec(x, *θ)``:

    forward:   solve  A(θ) x = b
    backward:  given  ḡ = ∂L/∂x,  solve the adjoint system  Aᵀ λ = ḡ   (Aᵀ = A here)
               ∂L/∂b = λ
               ∂L/∂θ = −λᵀ (∂A/∂θ) x          (a vector-Jacobian product of matvec at fixed x)

The backward never differentiates through the CG iterations: it is one more solve with the same
operator, whose tolerance is *relative to the incoming gradient* ``‖ḡ‖`` (an absolute tolerance
silently returns zero gradients when ``‖ḡ‖`` is small, e.g. for a mean-squared loss). ``matvec``
itself must be differentiable in ``θ`` (a bridged Taichi op is), which gives ``∂A/∂θ`` for free.

Each batch element is its own system with its own step sizes; iteration stops when every element
satisfies ``‖r‖ ≤ max(rtol·‖b‖, atol)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


class NotConvergedWarning(RuntimeWarning):
    """A linear solve stopped at ``max_iter`` above its tolerance."""


@dataclass
class SolveInfo:
    """Diagnostics of the most recent solve (read-only reporting; never affects results)."""

    iterations: int = 0
    residual: float = 0.0  # max over the batch of ‖r‖ / ‖b‖
    converged: bool = True
    adjoint: bool = False


last_solve = SolveInfo()


def _bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-batch dot product, shape ``(B, 1, 1, ...)`` broadcastable against ``a``."""
    return (a * b).flatten(1).sum(1).view(-1, *([1] * (a.ndim - 1)))


def cg(
    apply_a: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    rtol: float = 1e-6,
    atol: float = 0.0,
    max_iter: int = 1000,
    adjoint: bool = False,
    precond: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Solve ``A x = b`` for every batch element by (preconditioned) conjugate gradients (no autograd).

    Args:
        apply_a: ``x ↦ A x`` on ``(B, ...)`` tensors; ``A`` symmetric positive definite per element.
        b: right-hand side ``(B, ...)``.
        x0: initial guess (warm start), default zeros.
        rtol: relative tolerance: stop when ``‖r_b‖ ≤ max(rtol·‖b_b‖, atol)`` for every element ``b``.
        atol: absolute tolerance (see ``rtol``).
        max_iter: iteration cap; reaching it warns with the residual (:class:`NotConvergedWarning`).
        precond: ``r ↦ M⁻¹ r``, a fixed symmetric positive definite approximation of ``A⁻¹`` (e.g. a
            multigrid V-cycle); ``None`` for plain CG.
    """
    with torch.no_grad():
        b_norm = _bdot(b, b).sqrt()
        if x0 is None:
            x, r = torch.zeros_like(b), b.clone()
        else:  # warm start; an element with b = 0 has the exact solution 0, whatever its guess
            x = torch.where(b_norm == 0, torch.zeros_like(x0), x0)
            r = b - apply_a(x)
        target = torch.clamp(rtol * b_norm, min=atol)
        z = r if precond is None else precond(r)
        p = z.clone()
        rz = _bdot(r, z)
        rr = _bdot(r, r)
        it = 0
        done = rr.sqrt() <= target
        zero = torch.zeros_like(rr)
        while not bool(done.all()) and it < max_iter:
            ap = apply_a(p)
            pap = _bdot(p, ap)
            alpha = torch.where(done | (pap == 0), zero, rz / torch.where(pap == 0, torch.ones_like(pap), pap))
            x += alpha * p
            r -= alpha * ap
            z = r if precond is None else precond(r)
            rz_new = _bdot(r, z)
            beta = torch.where(done | (rz == 0), zero, rz_new / torch.where(rz == 0, torch.ones_like(rz), rz))
            p = z + beta * p
            rz = rz_new
            rr = _bdot(r, r)
            it += 1
            done = rr.sqrt() <= target
        rel = (rr.sqrt() / torch.clamp(b_norm, min=torch.finfo(b.dtype).tiny)).max()
        converged = bool(done.all())
        last_solve.iterations, last_solve.residual = it, float(rel)
        last_solve.converged, last_solve.adjoint = converged, adjoint
        if not converged:
            warnings.warn(
                f"{'adjoint ' if adjoint else ''}CG did not converge in {max_iter} iterations: "
                f"relative residual {float(rel):.3e} > rtol {rtol:.1e}",
                NotConvergedWarning,
                stacklevel=3,
            )
        return x


def solve_spd(
    matvec: Callable[..., torch.Tensor],
    b: torch.Tensor,
    params: tuple[torch.Tensor, ...] = (),
    *,
    x0: torch.Tensor | None = None,
    rtol: float = 1e-6,
    atol: float = 0.0,
    max_iter: int = 1000,
    precond: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Differentiable solve of ``A(θ) x = b`` with ``A`` applied by ``matvec(x, *params)``.

    Gradients flow to ``b`` and to every tensor in ``params`` through the implicit adjoint (see module
    docstring); ``x0`` is a warm start and receives no gradient. The adjoint solve uses ``rtol``
    relative to the incoming gradient and the same ``max_iter`` and preconditioner (which must not depend
    on ``params``).
    """
    opts = dict(rtol=rtol, atol=atol, max_iter=max_iter, precond=precond)
    if torch.is_grad_enabled() and (b.requires_grad or any(p.requires_grad for p in params)):
        return _ImplicitSolve.apply(matvec, opts, x0, b, *params)
    return cg(lambda x: matvec(x, *params), b, x0, **opts)


class _ImplicitSolve(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, matvec: Callable, opts: dict, x0: torch.Tensor | None, b: torch.Tensor, *params: torch.Tensor
    ) -> torch.Tensor:
        dparams = tuple(p.detach() for p in params)
        x = cg(lambda v: matvec(v, *dparams), b.detach(), None if x0 is None else x0.detach(), **opts)
        ctx.matvec, ctx.opts = matvec, opts
        ctx.save_for_backward(x, *params)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_x: torch.Tensor) -> Any:
        x, *params = ctx.saved_tensors
        dparams = tuple(p.detach() for p in params)
        # Adjoint system Aᵀ λ = ḡ (A symmetric); tolerance relative to ‖ḡ‖, never absolute.
        opts = dict(ctx.opts, atol=0.0)
        lam = cg(lambda v: ctx.matvec(v, *dparams), grad_x.contiguous(), adjoint=True, **opts)
        grads_params: list[torch.Tensor | None] = [None] * len(params)
        need = [i for i, p in enumerate(params) if ctx.needs_input_grad[4 + i]]
        if need:
            with torch.enable_grad():
                leaves = [p.detach().requires_grad_(True) for p in params]
                ax = ctx.matvec(x, *leaves)
                got = torch.autograd.grad(ax, [leaves[i] for i in need], grad_outputs=-lam, allow_unused=True)
            for i, g in zip(need, got):
                grads_params[i] = g
        return (None, None, None, lam if ctx.needs_input_grad[3] else None, *grads_params)
