"""Cut cells (:mod:`taichi_dp.grid.cut_cells`, :mod:`taichi_dp.ops.cut_cell`): the face-weighted projection
against the binary-mask projection and its own constraint, its multigrid operator, gradients with respect to
the velocity and the obstacle's shape, the ghost-fluid no-slip coefficient, and plane Poiseuille flow
between walls that cut through cells (second order, where the staircase is first order)."""

import math

import pytest
import torch

import taichi_dp as tdp
from taichi_dp.grid import Grid
from taichi_dp.grid.cut_cells import CutCells
from taichi_dp.grid.geometry import Disc
from taichi_dp.grid.sdf import BoxSDF, CapsuleSDF, CircleSDF, SphereSDF, face_fractions, union
from taichi_dp.grid.staggered import (
    FlowBoundary,
    Inflow,
    Outflow,
    Periodic,
    Wall,
    apply_boundary,
    open_faces,
    staggered_shape,
    valid_faces,
)
from taichi_dp.ops import multigrid
from taichi_dp.ops.cut_cell import cut_cell_projection, open_cells
from taichi_dp.ops.pressure import apply_divergence, apply_projection
from taichi_dp.solvers import NavierStokes, SolveOptions, run_to_steady

F64 = torch.float64
BOUNDARIES = {
    "channel": FlowBoundary(((Wall(), Wall()), (Inflow(1.0), Outflow()))),
    "box": FlowBoundary.box(),
    "periodic_y": FlowBoundary(((Periodic(), Periodic()), (Wall(), Outflow()))),
}


@pytest.fixture(autouse=True)
def _f64():
    tdp.init(precision="f64")


def _random_v(grid, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *staggered_shape(grid), dtype=F64, generator=g)


@pytest.mark.parametrize("name", list(BOUNDARIES))
def test_binary_openings_reproduce_the_binary_mask_projection(name):
    """θ = the open faces of a binary mask: the cut-cell system is exactly the mask's (same v and p)."""
    grid, boundary = Grid.rect((16, 32), (1.0, 2.0)), BOUNDARIES[name]
    fluid = Disc((0.5, 0.6), 0.2)(grid)
    theta = open_faces(fluid, boundary) * valid_faces(grid, F64)
    v = _random_v(grid)
    v1, p1 = apply_projection(apply_boundary(v, grid, boundary, fluid), grid, boundary, fluid, rtol=1e-12, max_iter=10000)
    v2, p2 = cut_cell_projection(v, grid, boundary, theta, rtol=1e-12, max_iter=10000)
    torch.testing.assert_close(v2, v1, rtol=0, atol=1e-9)
    torch.testing.assert_close(p2, p1, rtol=0, atol=1e-9)
    # its multigrid operator is the mask's, array for array
    codes = boundary.pressure().codes
    f, d, *c = multigrid.face_operator(theta, grid, codes)
    assert torch.equal(f, fluid.double()) and torch.equal(d, multigrid.diagonal(fluid.double(), grid, codes))
    for a, b in zip(c, multigrid.couplings(fluid.double(), grid, codes)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(BOUNDARIES))
def test_fractional_openings_make_the_open_fluxes_divergence_free(name):
    grid, boundary = Grid.rect((16, 32), (1.0, 2.0)), BOUNDARIES[name]
    theta = face_fractions(CircleSDF((0.47, 0.63), 0.21), grid)
    assert 0 < float(((theta > 0) & (theta < 1)).sum())  # the disc cuts faces
    v, p = cut_cell_projection(_random_v(grid), grid, boundary, theta, rtol=1e-12, max_iter=10000)
    cells = open_cells(theta, grid, boundary.pressure().codes)
    assert float((apply_divergence(theta * v, grid) * cells).abs().max()) < 1e-9
    assert float(v[(theta == 0).expand_as(v)].abs().max()) == 0.0  # closed faces (and padding) stay 0
    assert float(p[(cells == 0).expand_as(p)].abs().max()) == 0.0
    assert tdp.ops.linear_solve.last_solve.iterations <= 40  # the V-cycle of the θ-weighted operator


def test_3d_cut_cell_projection():
    grid = Grid.box((8, 8, 16), (1.0, 1.0, 2.0))
    boundary = FlowBoundary(((Wall(), Wall()), (Wall(), Wall()), (Inflow(1.0), Outflow())))
    theta = face_fractions(SphereSDF((0.5, 0.45, 0.7), 0.27), grid)
    v, _ = cut_cell_projection(_random_v(grid, 1), grid, boundary, theta, rtol=1e-12, max_iter=10000)
    assert float((apply_divergence(theta * v, grid) * open_cells(theta, grid, boundary.pressure().codes)).abs().max()) < 1e-9


def test_gradients_wrt_velocity_and_shape_parameters():
    """gradcheck of the projection in v and in the disc's centre and radius (through face_fractions: the
    implicit adjoint's −λᵀ (∂A/∂θ) p and the right-hand side's θ)."""
    grid, boundary = Grid.rect((8, 8), (1.0, 1.0)), BOUNDARIES["channel"]
    v = _random_v(grid, 1).requires_grad_(True)
    centre = torch.tensor([0.43, 0.52], dtype=F64, requires_grad=True)
    radius = torch.tensor(0.23, dtype=F64, requires_grad=True)

    def f(v, centre, radius):
        theta = face_fractions(CircleSDF((centre[0], centre[1]), radius), grid)
        out, p = cut_cell_projection(v, grid, boundary, theta, rtol=1e-13, max_iter=10000)
        return out, p

    assert torch.autograd.gradcheck(f, (v, centre, radius), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_wall_coefficient_of_a_plane_wall_is_the_ghost_fluid_distance():
    """A wall at y = 0.3 on a grid with h = 0.1: the v_x faces at y = 0.35 (first above the wall) have the
    wall at δ = 0.5 cell below, k = (1 − δ)/(δ h²) = 100; faces inside are exterior 0; no_slip zeroes them."""
    grid = Grid.rect((10, 10), (1.0, 1.0))
    cells = CutCells.from_sdf(BoxSDF((-1.0, -1.0), (0.3, 2.0)), grid)
    k, ext = cells.wall[0, 1], cells.exterior[0, 1]
    torch.testing.assert_close(k[3, :10], torch.full((10,), 100.0, dtype=F64))
    assert float(k[4:10].abs().max()) == 0.0 and float(ext[:3, :10].abs().max()) == 0.0 and float(ext[3:10, :10].min()) == 1.0
    v = torch.ones(1, *staggered_shape(grid), dtype=F64) * valid_faces(grid, F64)
    out = cells.no_slip(v, torch.tensor([0.001], dtype=F64))
    torch.testing.assert_close(out[0, 1, 3, :10], torch.full((10,), 1 / 1.1, dtype=F64))
    assert float(out[0, 1, :3].abs().max()) == 0.0


def _poiseuille_error(n, stepper_kw):
    a, b, nu, f = 0.13, 0.81, 0.1, 1.0
    grid = Grid.rect((n, 4), (1.0, 4.0 / n))
    boundary = FlowBoundary(((Wall(), Wall()), (Periodic(), Periodic())))
    force = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    force[:, 1] = f
    body = union(BoxSDF((-1.0, -1.0), (a, 2.0)), BoxSDF((b, -1.0), (2.0, 2.0)))
    kw = {"cut_cells": CutCells.from_sdf(body, grid)} if stepper_kw == "cut" else {"fluid": body(grid)}
    st = NavierStokes(grid, boundary, nu=nu, dt=0.2 / n**2 / nu, forcing=force * valid_faces(grid, F64), **kw)
    steady = run_to_steady(st, torch.zeros(1, *staggered_shape(grid), dtype=F64), tol=1e-9, max_steps=100_000, check_every=200)
    y = grid.centers(0, F64)
    exact = f / (2 * nu) * (y - a) * (b - y)
    inside = (y > a + 1.0 / n) & (y < b - 1.0 / n)
    return float((steady.v[0, 1, :n, 0] - exact)[inside].abs().max() / exact.max())


@pytest.mark.slow  # ~30 s: steady states at 16 and 32 rows
def test_poiseuille_between_cut_walls_converges_at_second_order():
    """Walls at y = 0.13 and 0.81, off the grid lines, as cut cells: the steady profile's error is second
    order (measured 5.3e-3 → 1.5e-3 from 16 to 32 rows, order 1.83); the staircase of the same walls is first
    order and far larger (22% → 12%)."""
    cut16, cut32 = _poiseuille_error(16, "cut"), _poiseuille_error(32, "cut")
    stair16 = _poiseuille_error(16, "stair")
    assert cut32 < 2.5e-3 and math.log2(cut16 / cut32) > 1.6
    assert stair16 > 10 * cut16


def test_navier_stokes_cut_cell_errors():
    grid, boundary = Grid.rect((8, 16), (1.0, 2.0)), BOUNDARIES["channel"]
    cells = CutCells.from_sdf(CircleSDF((0.5, 0.6), 0.2), grid)
    with pytest.raises(ValueError, match="not both"):
        NavierStokes(grid, boundary, nu=0.01, dt=0.01, fluid=Disc((0.5, 0.6), 0.2)(grid), cut_cells=cells)
    with pytest.raises(ValueError, match="method='mgpcg'"):
        NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=cells, pressure=SolveOptions(method="cg"))
    with pytest.raises(TypeError, match=r"cut_cells must be a taichi_dp\.grid\.cut_cells\.CutCells"):
        NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=cells.openings)
    from taichi_dp.solvers import SSPRK2

    with pytest.raises(ValueError, match="cut_cells needs time_stepping=SplitStep"):
        NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=cells, time_stepping=SSPRK2())
    with pytest.raises(ValueError, match="cut_cells needs diffusion='explicit'"):
        NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=cells, diffusion="implicit")
    with pytest.raises(ValueError, match="openings must have shape"):
        NavierStokes(Grid.rect((8, 8), (1.0, 1.0)), boundary, nu=0.01, dt=0.01, cut_cells=cells)
    st = NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=cells)
    assert st.pressure.method == "mgpcg"
    two = CutCells(*(torch.cat([x, x]) for x in (cells.openings, cells.wall, cells.exterior, cells.closing)))
    st2 = NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=two)
    with pytest.raises(ValueError, match="cut_cells has batch size 2 but v has 3"):
        st2(torch.zeros(3, *staggered_shape(grid), dtype=F64))


def test_openings_that_differ_across_a_periodic_seam_are_refused():
    """An SDF is not periodic: a body across the seam gives the two copies of a seam face different openings,
    an inconsistent system (CG diverged to a residual of 2e6 before this check)."""
    grid = Grid.rect((8, 16), (1.0, 2.0))
    boundary = FlowBoundary(((Wall(), Wall()), (Periodic(), Periodic())))
    cells = CutCells.from_sdf(CircleSDF((0.45, 1.9), 0.3), grid)
    with pytest.raises(ValueError, match="openings differ across the periodic seam of axis 1"):
        cut_cell_projection(_random_v(grid, 1), grid, boundary, cells.openings)
    with pytest.raises(ValueError, match="openings differ across the periodic seam of axis 1"):
        NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=cells)
    inside = CutCells.from_sdf(CircleSDF((0.45, 1.0), 0.3), grid)  # away from the seam: accepted
    NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=inside)



def test_navier_stokes_keeps_cut_cell_bodies_a_cell_away_from_a_periodic_seam():
    """CutCells.from_sdf does not wrap: the no-slip coefficient of a face whose neighbour across the seam
    lies in the body was 0 instead of (1 − δ)/(δ h²) (64 at 16 cells, 0.3 cells from the seam), silently.
    The stepper refuses a body within one cell of a periodic seam unless it is invariant across it (the
    walls of a periodic channel); the projection alone (no wall coefficient) still accepts it."""
    grid = Grid.rect((16, 16), (1.0, 1.0))
    boundary = FlowBoundary(((Wall(), Outflow()), (Periodic(), Periodic())))
    h, r = 1 / 16, 0.2
    near = CutCells.from_sdf(CircleSDF((0.5, r + 0.3 * h), r), grid)  # 0.3 cells right of the seam x = 0
    with pytest.raises(ValueError, match="within one cell of the periodic seam of axis 1"):
        NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=near)
    cut_cell_projection(_random_v(grid, 1), grid, boundary, near.openings)
    clear = CutCells.from_sdf(CircleSDF((0.5, r + 1.2 * h), r), grid)  # 1.2 cells away
    NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=clear)

# ------------------------------------------------------------------ bodies flush with the domain's sides
FLUSH_BOX = BoxSDF((0.25, 0.0), (0.75, 0.25))  # its x_lo side lies on the domain's x_lo side (φ = 0 there)


@pytest.mark.parametrize("name", list(BOUNDARIES))
def test_a_body_flush_with_a_domain_side_leaves_no_cell_without_a_coupling(name):
    """The face the box shares with the domain's side is open (its corners have φ = 0) while the cell's
    other faces are closed: such a cell couples to nothing (a wall or inflow face is not an unknown), so it
    is no unknown of the projection — before, it was, with an all-zero row: under an Inflow the solve
    could not reduce its rhs U/h and returned NaN after max_iter (only a warning)."""
    grid, boundary = Grid.rect((8, 8), (1.0, 1.0)), BOUNDARIES[name]
    theta = CutCells.from_sdf(FLUSH_BOX, grid).openings
    codes = boundary.pressure().codes
    unknown = open_cells(theta, grid, codes)
    assert torch.equal(unknown, multigrid.face_operator(theta, grid, codes)[0])  # one definition of the unknowns
    assert unknown[0, 0, 3:5, 0].tolist() == [0.0, 0.0] and float(unknown.sum()) > 40  # the dead cells exist
    v = _random_v(grid)
    v2, p = cut_cell_projection(v, grid, boundary, theta, rtol=1e-10, max_iter=300)
    assert bool(torch.isfinite(v2).all() and torch.isfinite(p).all())
    assert float((apply_divergence(theta * v2, grid) * unknown).abs().max()) < 1e-8
    assert float((p * (1 - unknown)).abs().max()) == 0.0
    # no face of a cell that is not an unknown carries flow
    assert float((v2 * (1 - open_faces(unknown, boundary))).abs().max()) == 0.0


def test_a_step_flush_with_the_inflow_side_blocks_the_inflow_there_like_a_mask():
    """A backward-facing step whose upstream side lies on the Inflow side: a uniform inflow over the whole
    side gives the flow of an inflow profile that is 0 on the step (the body blocks it, as a binary mask
    does); before, the inflow faces on the step fed cells without an exit and the solve returned NaN."""
    grid = Grid.rect((8, 16), (1.0, 2.0))
    step = CutCells.from_sdf(BoxSDF((0.0, 0.0), (0.5, 0.5)), grid)

    def flow(inflow: Inflow) -> torch.Tensor:
        boundary = FlowBoundary(((Wall(), Wall()), (inflow, Outflow())))
        ns = NavierStokes(grid, boundary, nu=0.01, dt=0.01, cut_cells=step)
        v = ns(ns(torch.zeros(1, *staggered_shape(grid), dtype=F64)))
        assert bool(torch.isfinite(v).all())
        assert float((apply_divergence(step.openings * v, grid) * ns.fluid).abs().max()) < 1e-4
        return v

    uniform = flow(Inflow(1.0))
    assert float(uniform[0, 1, :4, 0].abs().max()) == 0.0 and float(uniform[0, 1, 4:8, 0].min()) == 1.0
    torch.testing.assert_close(uniform, flow(Inflow(lambda y: (y > 0.5).to(y.dtype))), rtol=0, atol=1e-12)


@pytest.mark.parametrize("radius", [0.2, 0.6])
def test_closing_and_no_slip_are_continuous_when_a_thin_tip_crosses_a_face_centre(radius):
    """A capsule's tip (half-width ``radius`` cells) crossing an x-face centre along the diagonal: no axis
    neighbour of that face is inside the body, so the wall distance δ along the axes never falls below 1;
    the face's own distance φ_f bounds it, and both factors reach 0 continuously as φ_f → 0 (before:
    1 → 0 over a 2e-9 move, a jump autograd does not see)."""
    n = 16
    h = 1.0 / n
    grid = Grid.rect((n, n), (1.0, 1.0))
    centre = torch.tensor([(8 + 0.5) * h, 8 * h], dtype=F64)  # the x-face (8, 8)
    d = torch.tensor([1.0, 1.0], dtype=F64) / math.sqrt(2)
    nu_dt = torch.tensor([1e-3], dtype=F64)
    ones = torch.ones(1, *staggered_shape(grid), dtype=F64)
    values = []
    for eps in (1e-9, -1e-9, 0.05 * h):
        a = centre + (eps + radius * h) * d
        cells = CutCells.from_sdf(CapsuleSDF(tuple(a.tolist()), tuple((a + 0.3 * d).tolist()), radius * h), grid)
        values.append((float(cells.closing[0, 1, 8, 8]), float(cells.no_slip(ones, nu_dt)[0, 1, 8, 8])))
    (c_out, s_out), (c_in, s_in), (c_half, s_half) = values
    assert c_in == s_in == 0.0 and abs(c_out) < 1e-6 and abs(s_out) < 1e-6  # inside 0, just outside ~0
    assert c_half == pytest.approx(0.5, rel=1e-3) and s_half == pytest.approx(0.5, rel=1e-3)  # φ_f = 0.05 h
