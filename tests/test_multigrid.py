"""Multigrid preconditioner of the pressure Poisson solve: a symmetric positive operator, the exact
diagonal, few CG iterations as the grid grows, and the same projection (and gradient) as plain CG."""

import pytest
import torch

import taichi_dp as tdp
from taichi_dp.grid import Periodic
from taichi_dp.grid.geometry import disc
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall, staggered_shape
from taichi_dp.ops import linear_solve
from taichi_dp.ops.multigrid import Multigrid, diagonal
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


@pytest.mark.parametrize("name", list(BOUNDARIES))
def test_diagonal_matches_the_assembled_operator(name):
    grid, fluid = _karman_like(8, 6)
    codes = BOUNDARIES[name].pressure().codes
    n = 48
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, 8, 6)
    a = apply_poisson(eye, fluid, grid, codes).reshape(n, n)
    assert torch.allclose(a, a.T)  # symmetric
    assert torch.allclose(diagonal(fluid, grid, codes).flatten(), torch.diagonal(a))


@pytest.mark.parametrize("name", list(BOUNDARIES))
def test_vcycle_is_symmetric_positive(name):
    grid, fluid = _karman_like(16, 16)
    mg = Multigrid(grid, fluid, BOUNDARIES[name].pressure().codes)
    assert len(mg.levels) >= 2
    torch.manual_seed(0)
    r1, r2 = torch.randn(2, 1, 1, 16, 16, dtype=torch.float64)
    assert float((mg(r1) * r2).sum()) == pytest.approx(float((r1 * mg(r2)).sum()), rel=1e-10)
    assert float((mg(r1) * r1).sum()) > 0


@pytest.mark.parametrize("shape", [(64, 32), (128, 64), (256, 128)])
def test_karman_pressure_iterations_stay_below_30(shape):
    """Measured (f32, rtol 1e-3, karman layout): plain CG 144 / 241 / 442 iterations, multigrid-PCG
    8 / 11 / 14; 860 vs 20 at 512×256."""
    grid, fluid = _karman_like(*shape)
    torch.manual_seed(1)
    v = torch.randn(1, *staggered_shape(grid), dtype=torch.float64)
    out, _ = project(v, grid, CHANNEL, fluid, rtol=1e-3)
    its = linear_solve.last_solve.iterations
    print(f"\n{shape}: multigrid-PCG {its} iterations")
    assert its <= 30
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
        results[pc] = (out, p, torch.autograd.grad((out * w).sum(), v)[0])
    for a, b in zip(results["multigrid"], results["none"]):
        assert torch.allclose(a, b, atol=1e-9)
