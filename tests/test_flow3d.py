"""3D flows end to end: the ABC exact solution and its convergence order, the 3D smoke plume around an obstacle,
flow past a sphere, 3D rollout gradients (float64 gradcheck through several steps), the 3D solver steps
against the plain-PyTorch step built from the references."""

import math

import pytest
import torch

from taichi_dp import Grid
from taichi_dp.grid.geometry import Sphere
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall, open_faces, staggered_shape, valid_faces
from taichi_dp.ops.pressure import divergence
from taichi_dp.ops.solve_options import SolveOptions
from taichi_dp.scenes import abc_flow, abc_velocity, smoke_plume_3d, sphere_channel
from taichi_dp.solvers import NavierStokes, SmokePlume, pack_smoke, rollout, unpack_smoke

F64 = torch.float64


def _abc_error(n: int, advection: str, t_end: float = 1.0) -> float:
    steps = n // 2
    scene = abc_flow(n, nu=0.05, dt=t_end / steps, advection=advection)
    v = rollout(scene.stepper, scene.state0, steps, include_initial=False)[:, -1]
    exact = abc_velocity(scene.stepper.grid, t_end, 0.05)
    return float((v - exact).norm() / exact.norm())


def test_abc_flow_is_an_exact_solution_at_rest_of_the_discretisation_error():
    """The initial ABC field is divergence-free on the MAC grid to round-off, and one step at n = 8 stays
    within the expected first-order error of the exact decay."""
    scene = abc_flow(8, nu=0.05)
    assert float(divergence(scene.state0, scene.stepper.grid).abs().max()) < 1e-12
    err = _abc_error(8, "maccormack")
    assert 1e-3 < err < 0.1, err  # measured 6.0e-2 (first order: see the convergence test)


@pytest.mark.slow  # three resolutions up to 32³, 16 steps (~30 s)
def test_abc_flow_converges_at_first_order():
    """Error after t = 1 against the exact ``exp(−ν t)`` decay at n = 8, 16, 32 with dt ∝ h (CFL fixed).
    Measured (MacCormack): 6.0e-2, 2.9e-2, 1.5e-2, orders 1.05 and 0.96: the fractional step
    (viscosity, advection, projection applied one after another) is first order in time, and dt ∝ h."""
    errors = [_abc_error(n, "maccormack") for n in (8, 16, 32)]
    orders = [math.log2(errors[k] / errors[k + 1]) for k in range(2)]
    assert all(o > 0.85 for o in orders), (errors, orders)
    assert errors[-1] < 0.02, errors


def test_smoke_plume_3d_conserves_smoke_and_respects_the_obstacle():
    scene = smoke_plume_3d(16)
    st = scene.stepper
    grid = st.grid
    state = scene.state0
    assert state.shape == (1, 4, 17, 17, 17)
    for _ in range(6):
        state = st(state)
    v, rho = unpack_smoke(state)
    cell = math.prod(grid.spacing)
    injected = 6 * float(st.source.sum()) * cell  # dt = 1, closed box, conservative flux advection
    assert math.isclose(float(rho.sum()) * cell, injected, rel_tol=1e-5)
    assert float(rho.min()) >= -1e-6 and float(rho.max()) > 0
    assert float(v[:, 1].max()) > 0  # the plume rises along +y
    closed = 1 - open_faces(st.flow.fluid, st.flow.boundary)
    assert float((v * closed * valid_faces(grid, v.dtype)).abs().max()) == 0.0  # no flow into the sphere
    assert float((divergence(v, grid) * st.flow.fluid).abs().max()) < 1e-2  # rtol 1e-4 solve


def test_sphere_channel_flows_around_the_sphere():
    scene = sphere_channel(8, reynolds=50.0)
    st = scene.stepper
    v = rollout(st, scene.state0, 4, include_initial=False)[:, -1]
    grid = st.grid
    closed = 1 - open_faces(st.fluid, st.boundary)
    assert float((v * closed * valid_faces(grid, v.dtype)).abs().max()) == 0.0
    assert float((divergence(v, grid) * st.fluid).abs().max()) < 1e-2
    # mass flux through every x cross-section equals the inflow (1 · 4 · 4)
    h = grid.spacing
    flux = v[0, 2, :8, :8, :].sum(dim=(0, 1)) * h[0] * h[1]
    assert torch.allclose(flux, torch.full_like(flux, 16.0), rtol=1e-3)


TIGHT = SolveOptions(rtol=1e-12, max_iter=500)


def _small_flow(boundary: FlowBoundary, advection: str) -> NavierStokes:
    grid = Grid((4, 4, 6), ((0.0, 1.0), (0.0, 1.0), (0.0, 1.5)))
    fluid = Sphere((0.5, 0.5, 0.75), 0.26)(grid)
    return NavierStokes(grid, boundary, nu=0.01, dt=0.1, fluid=fluid, advection=advection, pressure=TIGHT)


@pytest.mark.slow  # ~3000 three-step 3D rollouts per case (~40 s each on 2 cores)
@pytest.mark.parametrize("advection", ["semi_lagrangian", "maccormack"])
@pytest.mark.parametrize(
    "boundary",
    [
        FlowBoundary(((Wall(), Wall()), (Wall(slip=True), Wall()), (Inflow(0.5), Outflow()))),
        FlowBoundary.periodic(ndim=3),
    ],
    ids=["channel", "periodic"],
)
def test_rollout_gradcheck_3d(boundary, advection):
    """float64 gradcheck of a 3-step 3D rollout (viscosity, advection, obstacle, projection) w.r.t. the
    initial velocity and the viscosity."""
    st = _small_flow(boundary, advection)
    torch.manual_seed(1)
    v0 = st.impose(0.3 * torch.randn(1, *staggered_shape(st.grid), dtype=F64)).detach().requires_grad_(True)
    nu = torch.tensor([0.01], dtype=F64, requires_grad=True)

    def f(v, nu_):
        s = NavierStokes(st.grid, st.boundary, nu=nu_, dt=0.1, fluid=st.fluid, advection=advection, pressure=TIGHT)
        return rollout(s, v, 3, include_initial=False)

    assert torch.autograd.gradcheck(f, (v0, nu), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # ~1500 two-step 3D smoke steps (~30 s)
def test_smoke_3d_gradcheck_two_steps():
    """float64 gradcheck of two 3D smoke steps w.r.t. the initial state and the buoyancy."""
    grid = Grid((4, 6, 4), ((0.0, 1.0), (0.0, 1.5), (0.0, 1.0)))
    flow = NavierStokes(grid, FlowBoundary.box(ndim=3), nu=0.0, dt=0.1, pressure=TIGHT)
    torch.manual_seed(2)
    v = flow.impose(0.2 * torch.randn(1, 3, 5, 7, 5, dtype=F64))
    rho = torch.rand(1, 1, 4, 6, 4, dtype=F64)
    s0 = pack_smoke(v, rho).detach().requires_grad_(True)
    beta = torch.tensor([0.5], dtype=F64, requires_grad=True)

    def f(s, b):
        st = SmokePlume(flow, buoyancy=b, density_advection="maccormack")
        return st(st(s))

    assert torch.autograd.gradcheck(f, (s0, beta), eps=1e-6, atol=1e-5, rtol=1e-4)
