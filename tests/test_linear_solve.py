"""Conjugate gradients, the implicit adjoint, its tolerance and diagnostics (through implicit diffusion)."""

import re
import warnings

import pytest
import torch
from reference import diffuse_implicit as ref_diffuse_implicit

from taichi_dp import Boundary, Dirichlet, Grid, ZeroGradient
from taichi_dp.ops import NotConvergedWarning, cg, diffuse, linear_solve, solve_spd

F64 = torch.float64
GRID = Grid.rect((5, 6), (1.0, 1.5))
BOUNDARY = Boundary(((Dirichlet(0.7), ZeroGradient()), (Dirichlet(-0.2), Dirichlet(0.4))))


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(2, 2, *GRID.shape, generator=gen, dtype=F64).requires_grad_()
    nu = torch.tensor([0.3, 0.2], dtype=F64, requires_grad=True)
    dt = torch.tensor([0.1, 0.13], dtype=F64, requires_grad=True)
    cot = torch.randn(u.shape, generator=gen, dtype=F64)
    return u, nu, dt, cot


def test_gradcheck_implicit_diffusion_tight_rtol():
    u, nu, dt, _ = inputs(1)
    u = u.detach()[:1, :1].contiguous().requires_grad_()
    nu, dt = nu.detach()[:1].requires_grad_(), dt.detach()[:1].requires_grad_()
    fn = lambda u_, nu_, dt_: diffuse(u_, nu_, dt_, GRID, BOUNDARY, "implicit", rtol=1e-13)
    assert torch.autograd.gradcheck(fn, (u, nu, dt))


def test_gradients_wrt_nu_and_dt_match_dense_reference():
    u, nu, dt, cot = inputs(2)
    out = diffuse(u, nu, dt, GRID, BOUNDARY, "implicit", rtol=1e-13)
    got = torch.autograd.grad(out, (u, nu, dt), cot)
    want = torch.autograd.grad(ref_diffuse_implicit(u, nu, dt, GRID, BOUNDARY), (u, nu, dt), cot)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    assert all(float(g.abs().max()) > 1e-3 for g in got)


def test_adjoint_tolerance_is_relative_to_incoming_gradient():
    """A tiny cotangent (e.g. a mean-squared loss over many cells) must not make the adjoint solve stop
    at once: the gradient is the same, scaled, not zero."""
    u, nu, dt, cot = inputs(3)
    out = diffuse(u, nu, dt, GRID, BOUNDARY, "implicit", rtol=1e-10)
    full = torch.autograd.grad(out, (u, nu, dt), cot, retain_graph=True)
    tiny = torch.autograd.grad(out, (u, nu, dt), cot * 1e-12)
    assert float(tiny[0].abs().max()) > 0.0
    assert linear_solve.last_solve.adjoint and linear_solve.last_solve.iterations > 0
    for f, t in zip(full, tiny, strict=True):
        torch.testing.assert_close(t, f * 1e-12, rtol=1e-8, atol=0.0)


def test_forward_tolerance_is_relative_to_rhs():
    """Homogeneous problem: solving for 1e-12 * u gives 1e-12 * the solution for u."""
    boundary = Boundary.uniform(ZeroGradient(), 2)
    u, nu, dt, _ = (t.detach() for t in inputs(4))
    big = diffuse(u, nu, dt, GRID, boundary, "implicit", rtol=1e-10)
    small = diffuse(u * 1e-12, nu, dt, GRID, boundary, "implicit", rtol=1e-10)
    torch.testing.assert_close(small, big * 1e-12, rtol=1e-8, atol=0.0)
    assert not torch.allclose(small, u * 1e-12, rtol=1e-6, atol=0.0)  # it did iterate


def test_last_solve_reports_forward_and_adjoint():
    u, nu, dt, cot = inputs(5)
    out = diffuse(u, nu, dt, GRID, BOUNDARY, "implicit", rtol=1e-9)
    info = linear_solve.last_solve
    assert not info.adjoint and info.converged
    assert info.iterations > 0 and 0.0 <= info.residual <= 1e-9
    out.backward(cot)
    info = linear_solve.last_solve
    assert info.adjoint and info.converged
    assert info.iterations > 0 and 0.0 <= info.residual <= 1e-9


def test_not_converged_warns_with_residual():
    u, nu, dt, cot = inputs(6)
    with pytest.warns(NotConvergedWarning, match=r"did not converge in 2 iterations: relative residual") as rec:
        out = diffuse(u, nu, dt, GRID, BOUNDARY, "implicit", rtol=1e-12, max_iter=2)
    info = linear_solve.last_solve
    assert not info.converged and info.iterations == 2 and info.residual > 1e-12
    msg = str(rec[0].message)
    assert re.search(r"relative residual (\S+) > rtol", msg).group(1) == f"{info.residual:.3e}"
    with pytest.warns(NotConvergedWarning, match=r"^adjoint CG did not converge in 2 iterations"):
        out.backward(cot)
    assert linear_solve.last_solve.adjoint and not linear_solve.last_solve.converged


def _spd_batch(n: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(2, n, n, generator=gen, dtype=F64)
    return m @ m.transpose(1, 2) + n * torch.eye(n, dtype=F64)


def test_cg_solves_batched_dense_systems():
    a = _spd_batch()
    b = torch.randn(2, 6, dtype=F64)
    b[1] = 0.0  # a zero right-hand side converges at once to zero
    x = cg(lambda v: (a @ v.unsqueeze(-1)).squeeze(-1), b, rtol=1e-13)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=0, atol=1e-11)
    assert torch.equal(x[1], torch.zeros(6, dtype=F64))
    assert linear_solve.last_solve.converged


def test_solve_spd_gradients():
    """Generic implicit differentiation: b and an operator parameter, against a dense solve."""
    a = _spd_batch(seed=1)

    def matvec(x, theta):
        return (a @ x.unsqueeze(-1)).squeeze(-1) + theta.view(-1, 1) * x

    b = torch.randn(2, 6, dtype=F64, requires_grad=True)
    theta = torch.tensor([0.5, 1.5], dtype=F64, requires_grad=True)
    fn = lambda b_, th_: solve_spd(matvec, b_, (th_,), rtol=1e-13)
    assert torch.autograd.gradcheck(fn, (b, theta))
    x0 = torch.randn(2, 6, dtype=F64, requires_grad=True)  # warm start: same answer, no gradient
    x = solve_spd(matvec, b, (theta,), x0=x0, rtol=1e-13)
    ref = torch.linalg.solve(a + theta.view(-1, 1, 1) * torch.eye(6, dtype=F64), b)
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-11)
    got = torch.autograd.grad(x.sum(), (b, theta, x0), allow_unused=True)
    want = torch.autograd.grad(ref.sum(), (b, theta))
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-12)
    assert got[2] is None


def test_zero_rhs_with_warm_start_returns_zero_without_iterating_to_underflow():
    """A batch element with b = 0 has the exact solution 0 even when its warm start is not 0."""
    torch.manual_seed(0)
    m = torch.randn(6, 6, dtype=torch.float64)
    a = m @ m.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.zeros(2, 6, dtype=torch.float64)
    b[0] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)
        x = cg(lambda z: z @ a, b, torch.randn(2, 6, dtype=torch.float64), rtol=1e-10, max_iter=20)
    assert torch.equal(x[1], torch.zeros(6, dtype=torch.float64))
    assert torch.allclose(x[0], torch.linalg.solve(a, b[0]), atol=1e-9)


def test_cg_tolerance_is_relative_to_each_samples_own_rhs():
    """A batch with right-hand sides 10⁶ apart: the small one must still reach rtol relative to itself
    (one tolerance from the largest rhs would stop it at ~10⁶·rtol relative)."""
    from taichi_dp.ops.linear_solve import cg

    gen = torch.Generator().manual_seed(11)
    m = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    a = m @ m.T + 0.1 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(2, 12, generator=gen, dtype=torch.float64) * torch.tensor([[1.0], [1e-6]], dtype=torch.float64)
    x = cg(lambda v: v @ a, b, rtol=1e-8)
    rel = (b - x @ a).norm(dim=1) / b.norm(dim=1)
    assert (rel <= 1e-8 * 1.01).all(), rel
