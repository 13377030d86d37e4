"""The pressure projection in 3D (and the dimension-generic dense reference in 2D): values and gradients
against the plain-PyTorch dense reference (:mod:`reference_projection`), divergence-free results with
obstacles for every boundary combination, the multigrid hierarchy's Galerkin levels, iteration counts."""

import pytest
import reference_projection as rp
import torch
from reference import ref_project

from taichi_dp import Grid, Periodic
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall
from taichi_dp.ops import multigrid
from taichi_dp.ops.linear_solve import last_solve
from taichi_dp.ops.poisson import apply_poisson
from taichi_dp.ops.pressure import divergence, project

F64 = torch.float64
GRID = Grid((4, 6, 8), ((0.0, 1.0), (0.0, 1.2), (0.0, 2.0)))  # (h_z, h_y, h_x) = (0.25, 0.2, 0.25)

W, S, P = Wall(), Wall(slip=True), Periodic()
BOUNDARIES = {
    "box": FlowBoundary(((W, W), (W, W), (W, W))),
    "slip_box": FlowBoundary(((S, S), (S, S), (S, S))),
    "channel_x": FlowBoundary(((W, W), (W, S), (Inflow(1.0), Outflow()))),
    "periodic": FlowBoundary(((P, P), (P, P), (P, P))),
    "periodic_z_outflow_y": FlowBoundary(((P, P), (Inflow(0.5), Outflow()), (W, W))),
    "two_outflows": FlowBoundary(((Outflow(), W), (S, S), (Inflow(-0.3), Outflow()))),
    "moving_lid": FlowBoundary(((W, W), (W, Wall(velocity=(0.0, 0.0, 1.0))), (W, W))),
}


def masks(grid: Grid) -> dict[str, torch.Tensor | None]:
    """No obstacle; a solid block (shared); one obstacle per sample (batch 2), one touching a wall."""
    d, h, w = grid.shape
    block = torch.ones(1, 1, d, h, w, dtype=F64)
    block[0, 0, 1:3, 2:4, 3:6] = 0
    per_sample = torch.ones(2, 1, d, h, w, dtype=F64)
    per_sample[0, 0, 1:3, 1:3, 1:3] = 0
    per_sample[1, 0, 0:2, 3:6, 5:7] = 0  # touches the z = 0 and y = 1.2 sides
    return {"none": None, "block": block, "per_sample": per_sample}


def velocity(grid: Grid, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(batch, 3, *(n + 1 for n in grid.shape), dtype=F64)


SLOW = pytest.mark.slow  # every boundary × mask combination compiles its own multigrid kernels (~5 s each)


def _combos(fast: set[tuple[str, str]]) -> list:
    return [
        pytest.param(b, m, marks=() if (b, m) in fast else (SLOW,), id=f"{b}-{m}")
        for b in BOUNDARIES
        for m in ("none", "block", "per_sample")
    ]


FAST = {("box", "per_sample"), ("channel_x", "block"), ("periodic", "per_sample"), ("moving_lid", "none"),
        ("periodic_z_outflow_y", "per_sample")}


@pytest.mark.parametrize(("bname", "mname"), _combos(FAST))
@pytest.mark.parametrize("pc", ["multigrid", "none"])
def test_projection_matches_the_dense_reference(bname, mname, pc):
    fb, fluid = BOUNDARIES[bname], masks(GRID)[mname]
    v = velocity(GRID)
    out, p = project(v, GRID, fb, fluid, rtol=1e-12, max_iter=500, preconditioner=pc)
    ref_v, ref_p = rp.project(v, GRID, fb, fluid)
    assert torch.allclose(out, ref_v, atol=1e-9), float((out - ref_v).abs().max())
    assert torch.allclose(p, ref_p, atol=1e-9), float((p - ref_p).abs().max())


@pytest.mark.parametrize(("bname", "mname"), _combos(FAST))
def test_projection_is_divergence_free_on_fluid_cells(bname, mname):
    fb, fluid = BOUNDARIES[bname], masks(GRID)[mname]
    out, _ = project(velocity(GRID), GRID, fb, fluid, rtol=1e-10)
    f = torch.ones(1, 1, *GRID.shape, dtype=F64) if fluid is None else fluid
    div = divergence(out, GRID) * f
    assert float(div.abs().max()) < 1e-7
    again, _ = project(out, GRID, fb, fluid, rtol=1e-10)  # a projection: idempotent
    assert torch.allclose(again, out, atol=1e-7)


@pytest.mark.parametrize("bname", ["channel_x", "periodic", "two_outflows"])
@pytest.mark.parametrize("pc", ["multigrid", pytest.param("none", marks=SLOW)])  # plain CG: ~40 s per case
def test_projection_gradcheck(bname, pc):
    grid = Grid((4, 4, 6), ((0.0, 1.0), (0.0, 1.0), (0.0, 1.5)))
    fluid = torch.ones(1, 1, 4, 4, 6, dtype=F64)
    fluid[0, 0, 1:3, 1:3, 2:4] = 0
    v = torch.randn(1, 3, 5, 5, 7, dtype=F64, requires_grad=True)

    def f(x):
        out, p = project(x, grid, BOUNDARIES[bname], fluid, rtol=1e-13, max_iter=500, preconditioner=pc)
        return out, p

    assert torch.autograd.gradcheck(f, (v,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("bname", ["box", "channel_x", "periodic_z_outflow_y"])
def test_projection_gradient_matches_the_reference_gradient(bname):
    fb, fluid = BOUNDARIES[bname], masks(GRID)["per_sample"]
    v = velocity(GRID).requires_grad_(True)
    w_v, w_p = torch.randn(2, 3, 5, 7, 9, dtype=F64), torch.randn(2, 1, 4, 6, 8, dtype=F64)
    out, p = project(v, GRID, fb, fluid, rtol=1e-12, max_iter=500)
    (g,) = torch.autograd.grad((out * w_v).sum() + (p * w_p).sum(), v)
    vr = v.detach().clone().requires_grad_(True)
    ro, rpr = rp.project(vr, GRID, fb, fluid)  # both pressures have zero fluid mean without an outflow
    (gr,) = torch.autograd.grad((ro * w_v).sum() + (rpr * w_p).sum(), vr)
    assert torch.allclose(g, gr, atol=1e-8), float((g - gr).abs().max())


def test_the_nd_reference_agrees_with_the_2d_reference():
    """The dense reference written for any dimension reproduces the older 2D one (two independent texts)."""
    grid = Grid.rect((5, 6), (1.0, 1.2))
    fb = FlowBoundary(((Inflow(0.7), Outflow()), (Wall(), Wall(slip=True))))
    fluid = torch.ones(1, 1, 5, 6, dtype=F64)
    fluid[0, 0, 2:4, 2:4] = 0
    v = torch.randn(2, 2, 6, 7, dtype=F64)
    a_v, a_p = rp.project(v, grid, fb, fluid)
    b_v, b_p = ref_project(v, grid, fb, fluid)
    assert torch.allclose(a_v, b_v, atol=1e-12) and torch.allclose(a_p, b_p, atol=1e-12)


@pytest.mark.parametrize("bname", ["box", "channel_x", "periodic"])
def test_multigrid_operator_and_galerkin_levels_in_3d(bname):
    """The solver's operator equals the Poisson operator, and each coarse level equals ``Pᵀ A P`` restricted
    to fluid cells, assembled densely here (P copies a coarse value to its eight children)."""
    grid = Grid((8, 8, 8), ((0.0, 1.0),) * 3)
    fluid = torch.ones(1, 1, 8, 8, 8, dtype=F64)
    fluid[0, 0, 2:5, 3:6, 1:4] = 0
    codes = BOUNDARIES[bname].pressure().codes
    solver = multigrid.PoissonSolver(grid, fluid, codes, min_size=2)
    x = torch.randn(2, 1, 8, 8, 8, dtype=F64)
    assert torch.allclose(solver.apply(x), apply_poisson(x, fluid, grid, codes), atol=1e-10)
    d = multigrid.diagonal(fluid, grid, codes)
    fine = (fluid, d, *multigrid.couplings(fluid, grid, codes))
    a = multigrid._dense(*fine[1:])[0]
    coarse = multigrid._galerkin(*fine)
    n, nc = 512, 64
    prol = torch.zeros(n, nc, dtype=F64)
    for i in range(8):
        for j in range(8):
            for k in range(8):
                if fluid[0, 0, i, j, k] > 0.5:
                    prol[(i * 8 + j) * 8 + k, ((i // 2) * 4 + j // 2) * 4 + k // 2] = 1.0
    galerkin = prol.T @ a @ prol
    fc = coarse[0].flatten() > 0.5
    ours = multigrid._dense(*coarse[1:])[0]
    assert torch.allclose(ours[fc][:, fc], galerkin[fc][:, fc], atol=1e-9)


@pytest.mark.slow  # a 64³ multigrid solve (~3 s)
def test_multigrid_iterations_stay_few_in_3d():
    """Multigrid-preconditioned CG needs few iterations in 3D with an obstacle (measured: see RESULTS.md)."""
    n = 64
    grid = Grid((n, n, n), ((0.0, 1.0),) * 3)
    fluid = torch.ones(1, 1, n, n, n, dtype=F64)
    c = torch.arange(n, dtype=F64) + 0.5
    r2 = (c.view(-1, 1, 1) - n / 2) ** 2 + (c.view(1, -1, 1) - n / 3) ** 2 + (c.view(1, 1, -1) - n / 2) ** 2
    fluid[0, 0][r2 <= (n / 8) ** 2] = 0
    fb = FlowBoundary(((W, W), (W, Outflow()), (W, W)))
    v = torch.randn(1, 3, n + 1, n + 1, n + 1, dtype=F64)
    project(v, grid, fb, fluid, rtol=1e-5)
    assert last_solve.converged and last_solve.iterations <= 10, last_solve.iterations
