"""Forces on obstacles (:mod:`taichi_dp.ops.forces`): exact discrete cases (Poiseuille wall shear, Archimedes,
rest), symmetry, additivity over obstacles, a loop-by-loop reference, float64 gradchecks and argument errors."""

import math

import pytest
import torch

import taichi_dp as tdp
from taichi_dp.grid.geometry import disc
from taichi_dp.grid.staggered import FlowBoundary, Periodic, Wall, face_coordinates, open_faces, staggered_shape, valid_faces
from taichi_dp.ops.forces import ObstacleForces, control_volume_forces, force_coefficients, surface_forces
from taichi_dp.solvers import NavierStokes, SolveOptions

F64 = torch.float64


def _rows_channel(n_y: int = 10, n_x: int = 8, h: float = 0.1):
    """A channel periodic in x whose bottom and top rows are solid: two obstacles (the walls)."""
    grid = tdp.Grid.rect((n_y, n_x), (n_y * h, n_x * h))
    bottom = torch.ones(1, 1, n_y, n_x, dtype=F64)
    bottom[..., 0, :] = 0
    top = torch.ones(1, 1, n_y, n_x, dtype=F64)
    top[..., -1, :] = 0
    return grid, bottom, top


def test_poiseuille_wall_shear_is_the_driving_force_exactly():
    """Body-force-driven Poiseuille flow between two solid rows: the parabola through the solid rows'
    centres is the solver's exact steady state, and the wall shear on both walls together balances the
    driving force on the fluid exactly (each wall takes half); no pressure force."""
    tdp.init(precision="f64")
    n_y, n_x, h, f, nu = 10, 8, 0.1, 0.3, 0.05
    grid, bottom, top = _rows_channel(n_y, n_x, h)
    ya, yb = 0.5 * h, (n_y - 0.5) * h  # the no-slip lines: centres of the solid rows
    yx = face_coordinates(grid, F64)
    v = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    v[0, 1] = f / (2 * nu) * (yx[1, 0] - ya) * (yb - yx[1, 0])
    boundary = FlowBoundary(((Wall(), Wall()), (Periodic(), Periodic())))
    fluid = bottom * top
    v = v * valid_faces(grid, F64) * open_faces(fluid, boundary)
    forcing = torch.zeros_like(v)
    forcing[:, 1] = f
    forcing = forcing * valid_faces(grid, F64)
    st = NavierStokes(grid, boundary, nu=nu, dt=0.02, fluid=fluid, forcing=forcing, pressure=SolveOptions(rtol=1e-12))
    v1, p1 = st.step_with_pressure(v)
    torch.testing.assert_close(v1, v, rtol=0, atol=1e-11)  # the solver's steady state
    p = p1 / 0.02
    forces = surface_forces(v1, p, grid, [bottom, top], nu, boundary=boundary)
    fluid_area = (n_y - 2) * h * n_x * h
    expected = torch.tensor([[[0.0, 0.5 * f * fluid_area], [0.0, 0.5 * f * fluid_area]]], dtype=F64)
    torch.testing.assert_close(forces.viscous, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(forces.pressure, torch.zeros_like(expected), rtol=0, atol=1e-9)
    # ρ ν ∂u/∂y at the no-slip line is f (yb − ya)/2 per unit length: the discrete flux lags it by one cell
    shear_exact = f * (yb - ya) / 2 * n_x * h
    assert abs(float(forces.viscous[0, 0, 1]) - shear_exact) / shear_exact == pytest.approx(h / (yb - ya), rel=1e-9)


def test_force_on_a_body_in_fluid_at_rest_is_zero():
    tdp.init(precision="f64")
    grid = tdp.Grid.rect((16, 20), (1.6, 2.0))
    fluid = disc(grid, (0.8, 0.9), 0.35)
    v = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    p = torch.full((1, 1, 16, 20), 3.7, dtype=F64) * fluid
    s = surface_forces(v, p, grid, fluid, 0.01)
    assert float(s.total.abs().max()) < 1e-12
    c = control_volume_forces(v, p, grid, ((0.3, 1.3), (0.4, 1.5)), 0.01)
    assert float(c.total.abs().max()) < 1e-12


def test_linear_pressure_gives_archimedes_force_on_the_staircase():
    """``p = p0 + g·x``: the force is ``−g × (solid area)``, exact thanks to the linear extrapolation."""
    tdp.init(precision="f64")
    grid = tdp.Grid.rect((20, 24), (2.0, 2.4))
    fluid = disc(grid, (1.0, 1.1), 0.42)
    y, x = grid.centers(0), grid.centers(1)
    g = (-0.8, 0.3)
    p = (1.5 + g[0] * y[:, None] + g[1] * x[None, :])[None, None] * fluid
    forces = surface_forces(torch.zeros(1, *staggered_shape(grid), dtype=F64), p, grid, fluid, 0.0)
    area = float((1 - fluid).sum()) * 0.01
    torch.testing.assert_close(forces.pressure[0, 0], torch.tensor([-g[0] * area, -g[1] * area], dtype=F64))


def _symmetric_state(grid: tdp.Grid, fluid: torch.Tensor, seed: int = 0):
    """A random velocity and pressure mirror-symmetric about the horizontal mid-line (v_x, p even; v_y odd)."""
    gen = torch.Generator().manual_seed(seed)
    n_y, n_x = grid.shape
    r = torch.rand(n_y, n_x + 1, generator=gen, dtype=F64)
    s = torch.rand(n_y + 1, n_x, generator=gen, dtype=F64)
    q = torch.rand(n_y, n_x, generator=gen, dtype=F64)
    v = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    v[0, 1, :n_y] = r + r.flip(0)
    v[0, 0, :, :n_x] = s - s.flip(0)
    boundary = FlowBoundary.box()
    v = v * valid_faces(grid, F64) * open_faces(fluid, boundary)
    return v, ((q + q.flip(0))[None, None] * fluid)


def test_symmetric_flow_gives_zero_lift():
    tdp.init(precision="f64")
    grid = tdp.Grid.rect((16, 20), (1.6, 2.0))
    fluid = disc(grid, (0.8, 0.9), 0.35)
    assert torch.equal(fluid, fluid.flip(2))
    v, p = _symmetric_state(grid, fluid)
    for forces in (surface_forces(v, p, grid, fluid, 0.02), control_volume_forces(v, p, grid, ((0.3, 1.3), (0.4, 1.5)), 0.02)):
        assert float(forces.total[0, 0, 0].abs()) < 1e-12  # lift
        assert float(forces.total[0, 0, 1].abs()) > 1e-3  # drag is not zero


def test_per_obstacle_forces_add_up_to_the_union():
    tdp.init(precision="f64")
    grid = tdp.Grid.rect((16, 24), (1.6, 2.4))
    a, b = disc(grid, (0.8, 0.6), 0.3), disc(grid, (0.7, 1.7), 0.35)
    gen = torch.Generator().manual_seed(1)
    v = torch.rand(2, *staggered_shape(grid), generator=gen, dtype=F64) * valid_faces(grid, F64)
    v = v * open_faces(a * b, FlowBoundary.box())
    p = torch.rand(2, 1, 16, 24, generator=gen, dtype=F64) * a * b
    nu = torch.tensor([0.01, 0.03], dtype=F64)
    split = surface_forces(v, p, grid, [a, b], nu)
    assert split.total.shape == (2, 2, 2)
    union = surface_forces(v, p, grid, a * b, nu)
    torch.testing.assert_close(split.pressure.sum(1, keepdim=True), union.pressure)
    torch.testing.assert_close(split.viscous.sum(1, keepdim=True), union.viscous)


def _surface_reference(v, p, fluid, solid, nu, h):
    """Loop-by-loop surface integral on a 2D grid with square cells ``h``: pressure on each face between
    a solid cell of the obstacle and a fluid cell (extrapolated from the fluid side), and the diffusive
    flux ν (v_q − v_r)/h between each open face q and each neighbouring face r touching the solid."""
    n_y, n_x = fluid.shape
    out_p, out_v = [0.0, 0.0], [0.0, 0.0]

    def F(i, j):
        return 0 <= i < n_y and 0 <= j < n_x and fluid[i, j] > 0.5

    def S(i, j):
        return 0 <= i < n_y and 0 <= j < n_x and solid[i, j] > 0.5

    for i in range(n_y):
        for j in range(n_x):
            if not S(i, j):
                continue
            for a, (di, dj) in enumerate(((1, 0), (0, 1))):
                for sgn in (1, -1):  # fluid neighbour at + or − along a; outward normal sgn·e_a
                    i1, j1, i2, j2 = i + sgn * di, j + sgn * dj, i + 2 * sgn * di, j + 2 * sgn * dj
                    if F(i1, j1):
                        pf = 1.5 * p[i1, j1] - 0.5 * p[i2, j2] if F(i2, j2) else p[i1, j1]
                        out_p[a] -= sgn * pf * h
    for c in range(2):
        shape = v[c].shape

        def cells(c, i, j):  # the two cells beside face (i, j) of component c
            return ((i - 1, j), (i, j)) if c == 0 else ((i, j - 1), (i, j))

        def real(c, i, j, shape=shape):
            return 0 <= i < shape[0] and 0 <= j < shape[1] and (j < n_x if c == 0 else i < n_y)

        def is_open(c, i, j):
            return real(c, i, j) and all(not (0 <= a < n_y and 0 <= b < n_x) or fluid[a, b] > 0.5 for a, b in cells(c, i, j))

        def touch(c, i, j):
            return real(c, i, j) and any(S(a, b) for a, b in cells(c, i, j))

        for i in range(shape[0]):
            for j in range(shape[1]):
                if not is_open(c, i, j):
                    continue
                for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    if touch(c, i + di, j + dj):
                        out_v[c] += nu * (v[c, i, j] - v[c, i + di, j + dj]) / h * h
    return out_p, out_v


def test_surface_forces_match_a_loop_reference():
    tdp.init(precision="f64")
    grid = tdp.Grid.rect((12, 14), (1.2, 1.4))
    fluid = disc(grid, (0.55, 0.7), 0.3)
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(1, *staggered_shape(grid), generator=gen, dtype=F64) * valid_faces(grid, F64)
    v = v * open_faces(fluid, FlowBoundary.box())
    p = torch.randn(1, 1, 12, 14, generator=gen, dtype=F64) * fluid
    got = surface_forces(v, p, grid, fluid, 0.07)
    ref_p, ref_v = _surface_reference(v[0], p[0, 0], fluid[0, 0], 1 - fluid[0, 0], 0.07, 0.1)
    torch.testing.assert_close(got.pressure[0, 0], torch.tensor(ref_p, dtype=F64))
    torch.testing.assert_close(got.viscous[0, 0], torch.tensor(ref_v, dtype=F64))


def test_control_volume_forces_do_not_depend_on_the_box_for_uniform_flow():
    """A uniform flow with a linear pressure: every box gives ``−∇p × (box area)``; the momentum flux cancels."""
    tdp.init(precision="f64")
    grid = tdp.Grid.rect((20, 24), (2.0, 2.4))
    v = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    v[:, 1], v[:, 0] = 0.7, -0.2
    v = v * valid_faces(grid, F64)
    y, x = grid.centers(0), grid.centers(1)
    p = (0.4 * y[:, None] - 0.9 * x[None, :])[None, None]
    for box in (((0.4, 1.6), (0.3, 2.0)), ((0.6, 1.2), (0.8, 1.4))):
        area = (box[0][1] - box[0][0]) * (box[1][1] - box[1][0])
        got = control_volume_forces(v, p, grid, box, 0.05)
        torch.testing.assert_close(got.total[0, 0], torch.tensor([-0.4 * area, 0.9 * area], dtype=F64))


def test_gradcheck_surface_and_control_volume_forces():
    tdp.init(precision="f64")
    grid = tdp.Grid.rect((8, 10), (0.8, 1.0))
    fluid = disc(grid, (0.4, 0.45), 0.2)
    gen = torch.Generator().manual_seed(3)
    v = (torch.randn(2, *staggered_shape(grid), generator=gen, dtype=F64) * valid_faces(grid, F64)).requires_grad_()
    p = torch.randn(2, 1, 8, 10, generator=gen, dtype=F64).requires_grad_()
    nu = torch.tensor([0.02, 0.05], dtype=F64, requires_grad=True)

    def surface(v, p, nu):
        f = surface_forces(v, p, grid, fluid, nu)
        return f.pressure, f.viscous

    def volume(v, p, nu):
        f = control_volume_forces(v, p, grid, ((0.2, 0.6), (0.2, 0.8)), nu)
        return f.pressure, f.viscous

    assert torch.autograd.gradcheck(surface, (v, p, nu))
    assert torch.autograd.gradcheck(volume, (v, p, nu))


def test_force_coefficients_convention():
    """Schäfer & Turek: c = 2 F / (ρ Ū² D)."""
    f = torch.tensor([0.0111575, 0.000106], dtype=F64)
    torch.testing.assert_close(force_coefficients(f, 0.2, 0.1), f * 500.0)
    assert math.isclose(float(force_coefficients(torch.tensor(1.0), 2.0, 0.5, rho=2.0)), 0.5)
    with pytest.raises(ValueError, match="speed must be a finite number > 0"):
        force_coefficients(f, 0.0, 0.1)


def test_argument_errors():
    tdp.init(precision="f64")
    grid = tdp.Grid.rect((8, 10), (0.8, 1.0))
    fluid = disc(grid, (0.4, 0.45), 0.2)
    v = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    p = torch.zeros(1, 1, 8, 10, dtype=F64)
    with pytest.raises(TypeError, match="obstacles must be a fluid mask tensor"):
        surface_forces(v, p, grid, "disc", 0.01)
    with pytest.raises(ValueError, match=r"obstacles\[1\] must be a fluid mask of shape \(B or 1, 1, 8, 10\)"):
        surface_forces(v, p, grid, [fluid, fluid[..., :5]], 0.01)
    with pytest.raises(ValueError, match=r"p must"):
        surface_forces(v, p[..., :5], grid, fluid, 0.01)
    with pytest.raises(ValueError, match=r"box\[1\] = \(0\.05, 0\.9\) must be an interval at least two cells inside"):
        control_volume_forces(v, p, grid, ((0.2, 0.6), (0.05, 0.9)), 0.01)
    with pytest.raises(ValueError, match="box must be one"):
        control_volume_forces(v, p, grid, ((0.2, 0.6),), 0.01)
    with pytest.raises(ValueError, match="nu must be"):
        surface_forces(v, p, grid, fluid, -1.0)
    assert isinstance(surface_forces(v, p, grid, fluid, 0.01), ObstacleForces)
