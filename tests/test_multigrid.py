"""Fused multigrid-preconditioned CG of the pressure Poisson solve: the operator arrays reproduce ``A``,
the Galerkin hierarchy is ``Pᵀ A P``, the V-cycle is symmetric positive definite, iterations stay few as
the grid grows, and the one-launch (serial) and per-iteration (parallel) paths agree with plain CG."""

import dataclasses
import warnings

import pytest
import torch

import taichi_dp as tdp
from taichi_dp.grid import Periodic
from taichi_dp.grid.geometry import disc
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall, staggered_shape
from taichi_dp.ops import linear_solve, multigrid
from taichi_dp.ops.linear_solve import NotConvergedWarning
from taichi_dp.ops.multigrid import PoissonSolver, couplings, diagonal
from taichi_dp.ops.poisson import apply_poisson
from taichi_dp.ops.pressure import divergence, project

CHANNEL = FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall())))
BOUNDARIES = {
    "channel": CHANNEL,
    "box": FlowBoundary.box(),
    "periodic": FlowBoundary.periodic(),
    "periodic_x": FlowBoundary(((Wall(), Outflow()), (Periodic(), Periodic()))),
}


def _karman_like(h: int, w: int):
    grid = tdp.Grid.rect((h, w), (200.0, 100.0))
    return grid, disc(grid, (50.0, 50.0), 10.0)


def _assembled(grid, fluid, codes):
    n = grid.shape[0] * grid.shape[1]
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *grid.shape)
    return apply_poisson(eye, fluid, grid, codes).reshape(n, n).T


@pytest.mark.parametrize("name", list(BOUNDARIES))
def test_operator_arrays_reproduce_the_assembled_operator(name):
    torch.manual_seed(23)
    grid, fluid = _karman_like(8, 6)
    codes = BOUNDARIES[name].pressure().codes
    a = _assembled(grid, fluid, codes)
    assert torch.allclose(a, a.T)  # symmetric
    assert torch.allclose(diagonal(fluid, grid, codes).flatten(), torch.diagonal(a))
    assert torch.allclose(multigrid._dense(diagonal(fluid, grid, codes), *couplings(fluid, grid, codes))[0], a)
    solver = PoissonSolver(grid, fluid, codes)
    x = torch.randn(3, 1, 8, 6, dtype=torch.float64)
    assert torch.allclose(solver.apply(x), apply_poisson(x, fluid, grid, codes), atol=1e-12)


@pytest.mark.parametrize("name", list(BOUNDARIES))
def test_coarse_level_is_the_galerkin_product_on_fluid_cells(name):
    grid, fluid = _karman_like(8, 8)
    codes = BOUNDARIES[name].pressure().codes
    f = fluid.flatten()
    a = _assembled(grid, fluid, codes)
    p = torch.zeros(64, 16, dtype=torch.float64)  # copy to the four children, fluid children only
    for i in range(8):
        for j in range(8):
            p[i * 8 + j, (i // 2) * 4 + j // 2] = f[i * 8 + j]
    fc, d, cy, cx = multigrid._galerkin(fluid, diagonal(fluid, grid, codes), *couplings(fluid, grid, codes))
    coarse = multigrid._dense(d, cy, cx)[0]
    live = fc.flatten() > 0.5
    assert torch.allclose(coarse[live][:, live], (p.T @ a @ p)[live][:, live], atol=1e-12)
    assert torch.equal(coarse[~live][:, ~live], torch.eye(int((~live).sum()), dtype=torch.float64))


@pytest.mark.parametrize("name", list(BOUNDARIES))
@pytest.mark.parametrize("shape", [(16, 16), (66, 66)])  # 66²: the coarsest level (33²) takes Gauss–Seidel sweeps
def test_vcycle_is_symmetric_positive_definite(name, shape):
    grid, fluid = _karman_like(*shape)
    solver = PoissonSolver(grid, fluid, BOUNDARIES[name].pressure().codes)
    assert solver.n_levels >= 2
    assert solver.plan.coarse[0] == (0 if shape == (16, 16) else 1)
    torch.manual_seed(0)
    r1, r2 = torch.randn(2, 1, 1, *shape, dtype=torch.float64) * fluid
    assert float((solver.vcycle(r1) * r2).sum()) == pytest.approx(float((r1 * solver.vcycle(r2)).sum()), rel=1e-10)
    assert float((solver.vcycle(r1) * r1).sum()) > 0


@pytest.mark.slow  # karman scenes up to 256x512
@pytest.mark.parametrize("shape", [(64, 32), (128, 64), (256, 128), (512, 256)])
def test_karman_pressure_iterations_stay_small(shape):
    """Measured (f32, rtol 1e-3, karman layout, random velocity): plain CG 144 / 241 / 442 / 860
    iterations; multigrid-PCG 5 / 5 / 5 / 5 (5 at 1024² on a square channel)."""
    grid, fluid = _karman_like(*shape)
    torch.manual_seed(1)
    v = torch.randn(1, *staggered_shape(grid), dtype=torch.float64)
    out, _ = project(v, grid, CHANNEL, fluid, rtol=1e-3)
    its = linear_solve.last_solve.iterations
    assert 1 <= its <= 10
    rhs = divergence(out, grid)  # divergence-free to the solver tolerance
    assert float((rhs * fluid).norm()) < 1e-3 * float((divergence(v, grid) * fluid).norm())


@pytest.mark.parametrize("name", list(BOUNDARIES))
def test_multigrid_and_plain_cg_give_the_same_projection_and_gradient(name):
    grid, fluid = _karman_like(16, 8)
    torch.manual_seed(2)
    v = torch.randn(2, *staggered_shape(grid), dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, *staggered_shape(grid), dtype=torch.float64)
    results = {}
    for pc in ("multigrid", "none"):
        out, p = project(v, grid, BOUNDARIES[name], fluid, rtol=1e-12, preconditioner=pc)
        results[pc] = (out, p, torch.autograd.grad((out * w).sum() + (p * w[:, :1, :16, :8]).sum(), v)[0])
    for a, b in zip(results["multigrid"], results["none"]):
        assert torch.allclose(a, b, atol=1e-9)


@pytest.mark.slow  # both PCG paths on a 64x128 karman layout
@pytest.mark.parametrize("name", ["channel", "periodic"])
def test_one_launch_and_per_iteration_paths_agree(name, monkeypatch):
    """The CPU path (all iterations in one serial launch) and the GPU path (one parallel launch per
    iteration, convergence read on the host) are the same algorithm: same iterates, same counts."""
    if tdp.current().arch != "cpu":
        pytest.skip("the one-launch serial path is CPU-only (refused elsewhere: see the next test)")
    grid, fluid = _karman_like(32, 16)
    masks = torch.cat([fluid, torch.ones_like(fluid)])  # one mask per sample
    solver = PoissonSolver(grid, masks, BOUNDARIES[name].pressure().codes)
    torch.manual_seed(3)
    b = torch.randn(2, 1, 32, 16, dtype=torch.float64)
    x0 = torch.randn(2, 1, 32, 16, dtype=torch.float64)
    runs = []
    for serial in (True, False):
        monkeypatch.setattr(PoissonSolver, "serial", lambda self, batch, s=serial: s)
        runs.append((solver.solve(b, x0, rtol=1e-8), linear_solve.last_solve.iterations))
    assert runs[0][1] == runs[1][1] > 1
    assert torch.allclose(runs[0][0], runs[1][0], atol=1e-10)


def test_serial_path_is_refused_off_the_cpu_arch(monkeypatch):
    if tdp.current().arch == "cpu":
        pytest.skip("the serial path is the CPU arch's own")
    grid, fluid = _karman_like(16, 8)
    solver = PoissonSolver(grid, fluid, CHANNEL.pressure().codes)
    monkeypatch.setattr(PoissonSolver, "serial", lambda self, batch: True)
    with pytest.raises(RuntimeError, match="CPU-only"):
        solver.solve(torch.randn(2, 1, 16, 8, dtype=torch.float64))


def test_solid_rows_are_identity_and_zero_rhs_gives_zero():
    torch.manual_seed(24)
    grid, fluid = _karman_like(16, 8)
    solver = PoissonSolver(grid, fluid, CHANNEL.pressure().codes)
    b = torch.randn(2, 1, 16, 8, dtype=torch.float64)
    b[1] *= 1 - fluid[0]  # sample 1: nothing on fluid cells
    x = solver.solve(b, torch.randn_like(b), rtol=1e-10)
    assert torch.equal(x * (1 - fluid), b * (1 - fluid))
    assert torch.equal(x[1] * fluid[0], torch.zeros_like(x[1]))
    assert torch.allclose(apply_poisson(x, fluid, grid, CHANNEL.pressure().codes), b, atol=1e-8)


def test_warns_with_the_residual_when_not_converged():
    torch.manual_seed(25)
    grid, fluid = _karman_like(64, 32)
    solver = PoissonSolver(grid, fluid, CHANNEL.pressure().codes)
    b = torch.randn(1, 1, 64, 32, dtype=torch.float64)
    with pytest.warns(NotConvergedWarning, match="relative residual"):
        solver.solve(b, rtol=1e-14, max_iter=1)
    assert not linear_solve.last_solve.converged and linear_solve.last_solve.iterations == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solver.solve(b, rtol=1e-6)
    assert linear_solve.last_solve.converged


def test_bad_settings():
    grid, fluid = _karman_like(16, 8)
    with pytest.raises(ValueError, match="alpha"):
        PoissonSolver(grid, fluid, CHANNEL.pressure().codes, alpha=2.0)
    solver = PoissonSolver(grid, torch.cat([fluid, fluid]), CHANNEL.pressure().codes)
    with pytest.raises(ValueError, match="batch size 2"):
        solver.solve(torch.zeros(3, 1, 16, 8, dtype=torch.float64))


def test_solver_cache_is_keyed_on_the_runtime(monkeypatch):
    """``solver_for`` must never hand back a solver built under another runtime: after ``tdp.init`` switches
    the arch (its arrays live on another device, its plan was chosen for another arch) or the precision
    (its arrays have another dtype), the same grid, boundary and mask tensor get a new solver; switching
    back finds the first one again."""
    from taichi_dp.ops.multigrid import cache

    grid, fluid = _karman_like(16, 8)
    codes = CHANNEL.pressure().codes
    rt = tdp.current()
    first = multigrid.solver_for(grid, fluid, codes)
    assert multigrid.solver_for(grid, fluid, codes) is first
    other_arch = "vulkan" if rt.arch != "vulkan" else "cuda"  # the key only: the solver is built as usual
    monkeypatch.setattr(cache, "ensure_init", lambda: dataclasses.replace(rt, arch=other_arch))
    elsewhere = multigrid.solver_for(grid, fluid, codes)
    assert elsewhere is not first and multigrid.solver_for(grid, fluid, codes) is elsewhere
    monkeypatch.undo()
    assert multigrid.solver_for(grid, fluid, codes) is first
    try:
        f32 = tdp.init(rt.arch, "f32")
        single = multigrid.solver_for(grid, fluid, codes)
        assert single is not first and single.stat.dtype == f32.dtype == torch.float32
    finally:
        tdp.init(rt.arch, rt.precision)
    assert multigrid.solver_for(grid, fluid, codes) is first
