"""NavierStokes stepper: Taylor–Green decay and convergence, divergence-free steps, gradients through
steps and rollouts (with obstacles), the karman scene, and input errors."""

import math

import pytest
import torch

import taichi_dp as tdp
from taichi_dp.grid.geometry import box, disc
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall, staggered_shape, valid_faces
from taichi_dp.ops.pressure import divergence
from taichi_dp.scenes import karman, taylor_green, taylor_green_velocity
from taichi_dp.solvers import NavierStokes, SolveOptions, rollout


def _tg_error(n: int, advection: str, nu: float = 0.05, t_end: float = 1.0) -> tuple[float, float]:
    dt = 0.05 * 32 / n
    steps = round(t_end / dt)
    scene = taylor_green(n, nu, dt, advection=advection)
    with torch.no_grad():
        v = rollout(scene.stepper, scene.state0, steps)[:, -1]
    exact = taylor_green_velocity(scene.stepper.grid, steps * dt, nu)
    energy_ratio = float((v**2).sum() / (scene.state0**2).sum())
    return float((v - exact).abs().max()), energy_ratio


@pytest.mark.slow  # a convergence study over resolutions
@pytest.mark.parametrize("advection", ["semi_lagrangian", "maccormack"])
def test_taylor_green_converges_to_the_exact_decay(advection):
    """Max error at t = 1 (ν = 0.05, CFL ~0.25). Measured: semi-Lagrangian 0.126, 0.069, 0.036 for
    n = 16, 32, 64 (order ~0.9: its numerical diffusion dominates)."""
    results = [_tg_error(n, advection) for n in (16, 32, 64)]
    errors = [e for e, _ in results]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    print(f"\nTaylor-Green {advection}: max errors {errors}, orders {orders}, energy ratios {[r for _, r in results]}")
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert min(orders) > 0.8
    exact_ratio = math.exp(-4 * 0.05 * 1.0)
    assert abs(results[-1][1] - exact_ratio) < abs(results[0][1] - exact_ratio)  # energy decay approaches the analytic rate


@pytest.mark.slow  # multi-step rollouts
@pytest.mark.parametrize(
    "boundary",
    [FlowBoundary.box(), FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall()))), FlowBoundary.periodic()],
    ids=["box", "channel", "periodic"],
)
def test_every_step_leaves_the_velocity_divergence_free(boundary):
    torch.manual_seed(0)
    grid = tdp.Grid.rect((12, 10), (1.2, 1.0))
    fluid = disc(grid, (0.5, 0.5), 0.2)
    st = NavierStokes(grid, boundary, nu=0.01, dt=0.05, fluid=fluid, pressure=SolveOptions(rtol=1e-10), advection="maccormack")
    v = 0.5 * torch.randn(2, *staggered_shape(grid), dtype=torch.float64) * valid_faces(grid, torch.float64)
    for _ in range(3):
        v = st(v)
        assert float((divergence(v, grid) * fluid).abs().max()) < 1e-7


def _small_channel(nu, forcing=None):
    grid = tdp.Grid.rect((5, 4), (1.0, 0.8))
    fluid = box(grid, (0.35, 0.25), (0.55, 0.45))
    bc = FlowBoundary(((Inflow(0.5), Outflow()), (Wall(), Wall(slip=True))))
    return NavierStokes(grid, bc, nu=nu, dt=0.1, fluid=fluid, forcing=forcing, pressure=SolveOptions(rtol=1e-13)), grid


def test_step_and_rollout_gradcheck_with_obstacle():
    torch.manual_seed(1)
    nu = torch.tensor([0.01, 0.02], dtype=torch.float64, requires_grad=True)
    st, grid = _small_channel(nu)
    v0 = (0.3 * torch.randn(2, *staggered_shape(grid), dtype=torch.float64) * valid_faces(grid, torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda v, nu: _small_channel(nu)[0](v), (v0, nu))
    # fast_mode: checks random projections of the Jacobian (a 4-step full Jacobian costs ~20 s here)
    assert torch.autograd.gradcheck(lambda v: rollout(st, v, 4, include_initial=False), (v0,), fast_mode=True)


def test_gradient_wrt_a_forcing_field():
    torch.manual_seed(2)
    grid = _small_channel(0.01)[1]
    f = (0.2 * torch.randn(1, *staggered_shape(grid), dtype=torch.float64) * valid_faces(grid, torch.float64)).requires_grad_()
    v0 = torch.zeros(1, *staggered_shape(grid), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: rollout(_small_channel(0.01, f)[0], v0, 2, include_initial=False), (f,))


@pytest.mark.slow  # a 32-step unroll
def test_karman_gradients_stay_finite_over_32_unrolled_steps():
    """A known failure of PhiFlow: gradients through 32+ wake steps blow up. Here they stay finite."""
    re = torch.tensor([150.0], dtype=torch.float64, requires_grad=True)
    scene = karman(reynolds=re)
    v0 = scene.state0.clone().requires_grad_()
    v = rollout(scene.stepper, v0, 32, include_initial=False)[:, -1]
    loss = (v**2).mean()
    g_v0, g_re = torch.autograd.grad(loss, (v0, re))
    assert torch.isfinite(g_v0).all() and float(g_v0.abs().max()) > 0
    assert torch.isfinite(g_re).all() and float(g_re.abs()) > 0
    assert float(g_v0.abs().max()) < 1e3


def test_karman_scene_layout():
    scene = karman(scale=1, reynolds=100.0, batch=2)
    st = scene.stepper
    assert st.grid.shape == (64, 32) and st.grid.bounds == ((0.0, 200.0), (0.0, 100.0))
    assert scene.state0.shape == (2, 2, 65, 33) and st.fluid.shape == (1, 1, 64, 32)
    assert float(st.nu[0]) == pytest.approx(0.2) and st.dt == 1.0
    assert int((st.fluid == 0).sum()) > 20  # the cylinder
    v = st(scene.state0)
    assert torch.allclose(v[:, 0, 0, :32], torch.ones(2, 32, dtype=v.dtype))  # inflow face
    assert float((divergence(v, st.grid) * st.fluid).abs().max()) < 1e-2


def test_navier_stokes_input_errors():
    grid = tdp.Grid.rect((6, 5), (1.0, 1.0))
    bc = FlowBoundary.box()
    with pytest.raises(ValueError, match="unstable"):
        NavierStokes(grid, bc, nu=1.0, dt=1.0, viscosity_substeps=1)
    assert NavierStokes(grid, bc, nu=1.0, dt=1.0).viscosity_substeps == 122  # ceil(1·1·(36 + 25) / 0.5): sub-stepped
    with pytest.raises(TypeError, match="FlowBoundary"):
        NavierStokes(grid, tdp.Boundary.periodic(2), nu=0.01, dt=0.1)
    with pytest.raises(ValueError, match="no fluid cell"):
        NavierStokes(grid, bc, nu=0.01, dt=0.1, fluid=torch.zeros(1, 1, 6, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="fluid must have shape"):
        NavierStokes(grid, bc, nu=0.01, dt=0.1, fluid=torch.ones(1, 1, 5, 6, dtype=torch.float64))
    st = NavierStokes(grid, bc, nu=0.01, dt=0.1)
    with pytest.raises(ValueError, match="to_staggered"):
        st(torch.zeros(1, 2, 6, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        st(torch.full((1, 2, 7, 6), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="inflow_mask and inflow_velocity"):
        NavierStokes(grid, bc, nu=0.01, dt=0.1, inflow_mask=torch.zeros(1, 2, 7, 6, dtype=torch.float64))


@pytest.mark.slow  # a multi-step rollout
def test_lid_driven_cavity_forms_the_primary_vortex():
    """Re = 100, 16×16, MacCormack, t = 8: the centre-line u profile has its minimum near mid-height.
    Measured: min u = −0.178 (16²) and −0.194 (24²) at y ≈ 0.47–0.48, approaching Ghia et al.'s
    −0.211 at y = 0.453."""
    from taichi_dp.grid.staggered import to_centred
    from taichi_dp.scenes import lid_driven_cavity

    scene = lid_driven_cavity(16, 100.0, advection="maccormack")
    st = scene.stepper
    with torch.no_grad():
        v = rollout(st, scene.state0, round(8.0 / st.dt))[:, -1]
    c = to_centred(v)[0]
    u_mid = 0.5 * (c[1, :, 7] + c[1, :, 8])
    k = int(torch.argmin(u_mid))
    assert -0.23 < float(u_mid.min()) < -0.15
    assert 0.35 < float(st.grid.centers(0)[k]) < 0.6
    assert float(u_mid[-1]) > 0.5  # dragged along by the lid


def test_boundary_validation():
    grid = tdp.Grid.rect((6, 5), (1.0, 1.0))
    with pytest.raises(ValueError, match="net volume flux"):
        NavierStokes(grid, FlowBoundary(((Inflow(1.0), Wall()), (Wall(), Wall()))), nu=0.01, dt=0.1)
    NavierStokes(grid, FlowBoundary(((Inflow(1.0), Inflow(1.0)), (Wall(), Wall()))), nu=0.01, dt=0.1)  # balanced
    with pytest.raises(ValueError, match="finite"):
        Inflow(float("nan"))
    with pytest.raises(ValueError, match="slip wall"):
        Wall(slip=True, velocity=1.0)
    with pytest.raises(ValueError, match=r"\(\(y_lo, y_hi\), \(x_lo, x_hi\)\)"):
        FlowBoundary((Wall(), Wall()))


def test_implicit_viscosity_step_gradcheck_and_large_dt():
    """Backward-Euler viscosity: unconditionally stable (a step with ν Δt Σ1/h² = 30 stays bounded and
    divergence-free) and differentiable w.r.t. the velocity and ν through the implicit adjoint."""
    torch.manual_seed(3)
    nu = torch.tensor([0.01, 0.02], dtype=torch.float64, requires_grad=True)
    grid = tdp.Grid.rect((5, 4), (1.0, 0.8))
    bc = FlowBoundary(((Inflow(0.5), Outflow()), (Wall(), Wall(velocity=0.3))))

    tight, tight_cg = SolveOptions(rtol=1e-13), SolveOptions(rtol=1e-13, max_iter=1000, method="cg")

    def make(nu):
        fluid = box(grid, (0.35, 0.25), (0.55, 0.45))
        return NavierStokes(grid, bc, nu=nu, dt=0.1, fluid=fluid, diffusion="implicit", pressure=tight, viscosity=tight_cg)

    v0 = (0.3 * torch.randn(2, *staggered_shape(grid), dtype=torch.float64) * valid_faces(grid, torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda v, nu: make(nu)(v), (v0, nu), fast_mode=True)
    loose, loose_cg = SolveOptions(rtol=1e-10), SolveOptions(rtol=1e-10, max_iter=1000, method="cg")
    big = NavierStokes(grid, bc, nu=1.0, dt=0.5, diffusion="implicit", pressure=loose, viscosity=loose_cg)
    v = big(v0.detach())
    assert torch.isfinite(v).all() and float(v.abs().max()) < 2.0
    assert float(divergence(v, grid).abs().max()) < 1e-8


@pytest.mark.slow  # multi-step rollouts
def test_implicit_and_explicit_viscosity_agree_for_small_steps():
    scene = taylor_green(16, nu=0.05, dt=0.01)
    implicit = NavierStokes(
        scene.stepper.grid, scene.stepper.boundary, nu=0.05,
        dt=0.01,
        diffusion="implicit",
        pressure=SolveOptions(rtol=1e-10),
        viscosity=SolveOptions(rtol=1e-10, max_iter=1000, method="cg"),
    )
    a = rollout(scene.stepper, scene.state0, 5)[:, -1]
    b = rollout(implicit, scene.state0, 5)[:, -1]
    assert float((a - b).abs().max()) < 1e-4


@pytest.mark.parametrize(
    "boundary",
    [
        FlowBoundary(((Inflow(0.5), Outflow()), (Wall(), Wall(slip=True)))),
        FlowBoundary.periodic(),
        FlowBoundary.box(),
        FlowBoundary(((Wall(), Wall(velocity=0.7)), (Wall(), Wall()))),
    ],
    ids=["channel", "periodic", "box", "lid"],
)
def test_implicit_viscosity_solves_backward_euler_of_the_reference_laplacian(boundary):
    """x = implicit(v) satisfies x − νΔt·L(x) = v on every free face, with L the plain-PyTorch reference
    Laplacian of tests/reference_mac.py; fixed faces keep their imposed values."""
    from reference_mac import velocity_diffusion as ref_diffusion

    from taichi_dp.grid import Periodic
    from taichi_dp.grid.staggered import apply_boundary, face_constraints, free_faces
    from taichi_dp.ops.staggered_diffusion import apply_velocity_diffusion_implicit

    torch.manual_seed(4)
    grid = tdp.Grid.rect((6, 5), (1.0, 0.8))
    fluid = box(grid, (0.4, 0.3), (0.6, 0.5))
    v = apply_boundary(torch.randn(2, *staggered_shape(grid), dtype=torch.float64), grid, boundary, fluid)
    nu, dt = torch.tensor([0.05, 0.1], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)
    x = apply_velocity_diffusion_implicit(v, nu, dt, grid, boundary, fluid, rtol=1e-13)
    free = free_faces(grid, boundary, fluid, torch.float64, "cpu")
    k_lap = ref_diffusion(x, nu, dt, grid, boundary) - x  # νΔt·L(x)
    assert float(((x - k_lap - v) * free).abs().max()) < 1e-10
    keep, _ = face_constraints(grid, boundary, fluid, torch.float64, "cpu")  # walls, inflows, obstacles, padding
    assert torch.equal(x * (1 - keep), apply_boundary(v, grid, boundary, fluid) * (1 - keep))
    if boundary.sides[0][0] == Periodic():  # seam faces are duplicates of face 0
        assert torch.equal(x[:, 0, -1], x[:, 0, 0]) and torch.equal(x[:, 1, :, -1], x[:, 1, :, 0])


@pytest.mark.parametrize("substeps", [1, 3])
@pytest.mark.parametrize("advection", ["semi_lagrangian", "maccormack"])
def test_viscosity_substeps_split_dt_exactly(substeps, advection):
    """A periodic shear flow ``v_x = sin(2π y)`` is a fixed point of advection and projection, and an
    eigenvector of the discrete Laplacian (eigenvalue ``−λ``, ``λ = (2 − 2 cos(2π h_y)) / h_y²``), so one step
    with ``n`` explicit viscosity sub-steps scales it by exactly ``(1 − ν Δt λ / n)ⁿ``. Catches a sub-step that
    takes the whole ``Δt`` (or the wrong count)."""
    from taichi_dp.grid.staggered import valid_faces

    grid = tdp.Grid.rect((8, 6), (1.0, 0.75))
    hy = grid.spacing[0]
    nu, dt = 0.01, 0.3  # ν Δt Σ 1/h² = 0.384: stable in one sub-step
    lam = (2 - 2 * math.cos(2 * math.pi * hy)) / hy**2
    st = NavierStokes(grid, FlowBoundary.periodic(), nu=nu, dt=dt, advection=advection, viscosity_substeps=substeps,
                      pressure=SolveOptions(rtol=1e-12))
    v0 = torch.zeros(1, *staggered_shape(grid), dtype=torch.float64)
    y = (torch.arange(8, dtype=torch.float64) + 0.5) * hy
    v0[0, 1, :8, :] = torch.sin(2 * math.pi * y)[:, None]
    v0 = v0 * valid_faces(grid, torch.float64)
    v1 = st(v0)
    factor = (1 - nu * dt * lam / substeps) ** substeps
    assert substeps == 1 or abs(factor - (1 - nu * dt * lam) ** substeps) > 1e-2  # whole-Δt sub-steps: far off
    torch.testing.assert_close(v1, factor * v0, rtol=0, atol=1e-12)
