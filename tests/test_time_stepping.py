"""Runge–Kutta time stepping of NavierStokes: the observed temporal order on the Taylor–Green vortex, the
explicit MAC rate ``−(v·∇)v + ν∇²v`` against the plain-PyTorch reference (2D and 3D, periodic, wall and
open sides; float64 gradcheck), the Shu–Osher tables as stability polynomials, gradients through RK steps,
obstacles and inflow regions per stage, and the argument checks."""

import dataclasses
import math

import pytest
import reference_mac as ref
import torch

import taichi_dp as tdp
from taichi_dp.grid import Periodic
from taichi_dp.grid.geometry import box, sphere
from taichi_dp.grid.staggered import (
    FlowBoundary,
    Inflow,
    Outflow,
    Wall,
    apply_boundary,
    face_constraints,
    face_coordinates,
    staggered_shape,
    valid_faces,
)
from taichi_dp.ops.pressure import divergence
from taichi_dp.ops.staggered_advection_rate import velocity_rate
from taichi_dp.scenes import taylor_green
from taichi_dp.solvers import NavierStokes, SolveOptions
from taichi_dp.solvers.time_stepping import (
    SSPRK2,
    SSPRK3,
    ForwardEuler,
    RungeKutta,
    SplitStep,
    advective_courant,
)

F64 = torch.float64
TIGHT = SolveOptions(rtol=1e-13)


def _random_staggered(grid, boundary, batch=2, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    v = scale * torch.randn(batch, *staggered_shape(grid), generator=gen, dtype=F64)
    return apply_boundary(v, grid, boundary)


# ------------------------------------------------------------------------------ temporal order
def _taylor_green_orders(method, amplitude: float) -> tuple[list[float], list[float]]:
    """Max differences at t = 0.64 between ``n = 8, 16, 32`` steps and a 256-step run of the same scheme
    (ν = 0.1, 32², so the spatial error cancels), and the observed orders ``log2(e_n / e_2n)``.
    ``amplitude`` adds a shifted k = 2 Taylor–Green mode: with it the advection is nonlinear."""
    scene = taylor_green(32, nu=0.1, dt=0.08)
    grid, t_end = scene.stepper.grid, 0.64
    yx = face_coordinates(grid, F64)
    mode = torch.stack(
        [
            -torch.cos(2 * (yx[0, 1] - 0.7)) * torch.sin(2 * (yx[0, 0] - 0.3)),
            torch.sin(2 * (yx[1, 1] - 0.7)) * torch.cos(2 * (yx[1, 0] - 0.3)),
        ]
    )[None] * valid_faces(grid, F64)
    v0 = scene.state0 + amplitude * mode

    def run(steps: int) -> torch.Tensor:
        stepper = dataclasses.replace(scene.stepper, dt=t_end / steps, time_stepping=method, pressure=TIGHT)
        v = v0
        with torch.no_grad():
            for _ in range(steps):
                v = stepper(v)
        return v

    fine = run(256)
    errors = [float((run(n) - fine).abs().max()) for n in (8, 16, 32)]
    return errors, [math.log2(a / b) for a, b in zip(errors, errors[1:])]


@pytest.mark.parametrize(
    ("method", "least", "most"),
    [(ForwardEuler(), 0.9, 1.3), (SSPRK2(), 1.8, 2.3), (SSPRK3(), 2.7, 3.3)],
    ids=["euler", "rk2", "rk3"],
)
def test_temporal_order_on_the_taylor_green_vortex(method, least, most):
    """Measured: Euler 1.03, 1.05; SSPRK2 2.01, 2.01; SSPRK3 3.01, 3.01 (max differences 8.9e-4 / 4.8e-6 /
    1.9e-8 at n = 8)."""
    errors, orders = _taylor_green_orders(method, 0.0)
    print(f"\n{type(method).__name__}: differences {errors}, orders {orders}")
    assert all(least <= p <= most for p in orders), orders


@pytest.mark.parametrize(("method", "least"), [(SSPRK2(), 1.8), (SSPRK3(), 2.7)], ids=["rk2", "rk3"])
def test_temporal_order_with_nonlinear_advection(method, least):
    """Taylor–Green plus a shifted k = 2 mode (amplitude 0.3), where the advection does not reduce to a
    gradient. Measured: SSPRK2 2.05, 2.04; SSPRK3 3.02, 3.02."""
    errors, orders = _taylor_green_orders(method, 0.3)
    print(f"\n{type(method).__name__}: differences {errors}, orders {orders}")
    assert min(orders) >= least, orders


def test_split_step_is_the_default_and_unchanged():
    scene = taylor_green(16, nu=0.05, dt=0.1)
    assert isinstance(scene.stepper.time_stepping, SplitStep)
    explicit = dataclasses.replace(scene.stepper, time_stepping=SplitStep())
    v1, p1 = scene.stepper.step_with_pressure(scene.state0)
    v2, p2 = explicit.step_with_pressure(scene.state0)
    v3, p3 = scene.stepper.split_step(scene.state0)
    assert torch.equal(v1, v2) and torch.equal(p1, p2) and torch.equal(v1, v3) and torch.equal(p1, p3)


# ------------------------------------------------------------------------------ the rate operator
GRID2 = tdp.Grid.rect((5, 6), (1.0, 1.5))
GRID3 = tdp.Grid.box((3, 4, 5), (0.75, 1.0, 1.5))
FLOWS2 = {
    "periodic": FlowBoundary.periodic(),
    "box": FlowBoundary(((Wall(), Wall(velocity=0.7)), (Wall(), Wall()))),
    "open": FlowBoundary(((Inflow(0.6), Outflow()), (Wall(velocity=0.3), Wall(slip=True)))),
    "mixed": FlowBoundary(((Periodic(), Periodic()), (Inflow(-0.4), Outflow()))),
}
FLOWS3 = {
    "periodic": FlowBoundary.periodic(ndim=3),
    "box": FlowBoundary.box(ndim=3),
    "mixed": FlowBoundary(
        ((Wall(velocity=(0.0, 0.5, -0.2)), Outflow()), (Periodic(), Periodic()), (Inflow(-0.4), Wall(slip=True)))
    ),
}
CASES = [(GRID2, b, f"2d-{k}") for k, b in FLOWS2.items()] + [(GRID3, b, f"3d-{k}") for k, b in FLOWS3.items()]


def _reference_rate(v, grid, boundary, nu):
    lap = ref.assemble_nd(ref.velocity_laplacian_nd(v, grid, boundary), grid)
    return ref.velocity_advection_rate_nd(v, grid, boundary) + nu.view(-1, *[1] * (grid.ndim + 1)) * lap


@pytest.mark.parametrize(("grid", "boundary"), [c[:2] for c in CASES], ids=[c[2] for c in CASES])
def test_rate_matches_the_reference_values_and_gradients(grid, boundary):
    v = _random_staggered(grid, boundary).requires_grad_()
    nu = torch.tensor([0.03, 0.11], dtype=F64, requires_grad=True)
    out, expected = velocity_rate(v, grid, boundary, nu), _reference_rate(v, grid, boundary, nu)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert float(expected.detach().abs().max()) > 1.0  # not a trivial comparison
    torch.testing.assert_close(velocity_rate(v, grid, boundary), ref.velocity_advection_rate_nd(v, grid, boundary))
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    got = torch.autograd.grad((out * w).sum(), (v, nu))
    want = torch.autograd.grad((expected * w).sum(), (v, nu))
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize(
    ("grid", "boundary"),
    [
        (tdp.Grid.rect((3, 4), (0.6, 1.0)), FLOWS2["open"]),
        (tdp.Grid.rect((3, 4), (0.6, 1.0)), FLOWS2["periodic"]),
        (tdp.Grid.box((2, 3, 2), (0.5, 0.75, 0.6)), FLOWS3["mixed"]),
    ],
    ids=["2d-open", "2d-periodic", "3d-mixed"],
)
def test_rate_gradcheck(grid, boundary):
    v = _random_staggered(grid, boundary, seed=4).requires_grad_()
    nu = torch.tensor([0.05, 0.02], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, nu: velocity_rate(v, grid, boundary, nu), (v, nu))


def test_rate_of_a_uniform_flow_is_zero_and_of_a_shear_is_exact():
    """A uniform periodic flow has no rate; ``v_x = sin(y)`` (a steady shear in the advection) has the
    viscous rate ``−ν sin y`` up to the Laplacian's O(h²)."""
    grid = tdp.Grid.rect((32, 8), (2 * math.pi, 1.0))
    boundary = FlowBoundary.periodic()
    uniform = torch.stack([torch.full((33, 9), 0.3, dtype=F64), torch.full((33, 9), -0.8, dtype=F64)])[None]
    uniform = uniform * valid_faces(grid, F64)
    assert float(velocity_rate(uniform, grid, boundary, 0.1).abs().max()) < 1e-14
    yx = face_coordinates(grid, F64)
    shear = torch.stack([torch.zeros_like(yx[0, 0]), torch.sin(yx[1, 0])])[None] * valid_faces(grid, F64)
    rate = velocity_rate(shear, grid, boundary, 0.1)
    torch.testing.assert_close(rate, -0.1 * shear, rtol=0, atol=0.1 * (2 * math.pi / 32) ** 2 / 12 * 1.01)


def test_rate_errors_name_the_argument():
    boundary = FlowBoundary.periodic()
    v = torch.zeros(1, *staggered_shape(GRID2), dtype=F64)
    with pytest.raises(ValueError, match="v must be a staggered velocity"):
        velocity_rate(v[:, :, :-1], GRID2, boundary)
    with pytest.raises(TypeError, match="boundary must be a FlowBoundary"):
        velocity_rate(v, GRID2, "periodic")
    with pytest.raises(ValueError, match="boundary must have one side pair per grid axis"):
        velocity_rate(v, GRID2, FlowBoundary.periodic(ndim=3))
    with pytest.raises(ValueError, match="nu"):
        velocity_rate(v, GRID2, boundary, -0.1)


# ------------------------------------------------------------------------------ Shu–Osher tables
@pytest.mark.parametrize(
    ("method", "poly"),
    [
        (ForwardEuler(), lambda z: 1 + z),
        (SSPRK2(), lambda z: 1 + z + z**2 / 2),
        (SSPRK3(), lambda z: 1 + z + z**2 / 2 + z**3 / 6),
    ],
    ids=["euler", "rk2", "rk3"],
)
def test_tables_give_the_stability_polynomial(method, poly):
    """On ``v' = λ v`` with ``P`` the identity one step multiplies by ``R(λ Δt)``, the Taylor polynomial of
    ``exp`` of the method's order; the rate is evaluated once per stage."""
    lam = torch.tensor([-0.7, 1.3, -2.4], dtype=F64)
    dt = torch.tensor([0.5, 0.2, 0.9], dtype=F64)
    calls = []

    def rate(v):
        calls.append(1)
        return lam.view(-1, 1) * v

    v0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=F64)
    v1, _ = method.integrate(v0, dt, rate, lambda v, guess: (v, torch.zeros(())))
    torch.testing.assert_close(v1, poly(lam * dt).view(-1, 1) * v0, rtol=1e-14, atol=1e-14)
    assert len(calls) == method.stages == method.order


def test_runge_kutta_tables_are_validated():
    with pytest.raises(ValueError, match=r"alpha\[1\] must have 2 entries"):
        RungeKutta(alpha=((1.0,), (1.0,)), beta=((1.0,), (0.0, 1.0)), order=2, courant_limit=1.0, diffusion_limit=0.5)
    with pytest.raises(ValueError, match=r"alpha\[1\] must sum to 1"):
        RungeKutta(alpha=((1.0,), (0.5, 0.2)), beta=((1.0,), (0.0, 1.0)), order=2, courant_limit=1.0, diffusion_limit=0.5)
    with pytest.raises(ValueError, match="beta must be 2 rows"):
        RungeKutta(alpha=((1.0,), (0.5, 0.5)), beta=((1.0,),), order=2, courant_limit=1.0, diffusion_limit=0.5)
    with pytest.raises(ValueError, match=r"beta\[0\] must sum to a value > 0"):
        RungeKutta(alpha=((1.0,),), beta=((0.0,),), order=1, courant_limit=1.0, diffusion_limit=0.5)
    with pytest.raises(TypeError, match=r"alpha\[0\] entries must be finite floats"):
        RungeKutta(alpha=(("1",),), beta=((1.0,),), order=1, courant_limit=1.0, diffusion_limit=0.5)
    with pytest.raises(ValueError, match="courant_limit must be a finite float > 0"):
        SSPRK3(courant_limit=0.0)
    with pytest.raises(ValueError, match="order must be an integer >= 1"):
        SSPRK2(order=0)


# ------------------------------------------------------------------------------ NavierStokes with RK
def _channel(nu, method, forcing=None, dt=0.1):
    grid = tdp.Grid.rect((5, 4), (1.0, 0.8))
    fluid = box(grid, (0.35, 0.25), (0.55, 0.45))
    bc = FlowBoundary(((Inflow(0.5), Outflow()), (Wall(), Wall(slip=True))))
    st = NavierStokes(grid, bc, nu=nu, dt=dt, fluid=fluid, forcing=forcing, pressure=TIGHT, time_stepping=method)
    return st, grid


def test_ssprk3_step_gradcheck_wrt_v0_and_nu():
    """The full Jacobian of one SSPRK3 step (three rate kernels, three projections with their implicit
    adjoints) in a channel with an obstacle."""
    torch.manual_seed(1)
    nu = torch.tensor([0.02], dtype=F64, requires_grad=True)
    grid = _channel(nu, SSPRK3())[1]
    v0 = (0.3 * torch.randn(1, *staggered_shape(grid), dtype=F64) * valid_faces(grid, F64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda v, nu: _channel(nu, SSPRK3())[0](v), (v0, nu))


def test_ssprk2_step_gradcheck_wrt_v0_nu_and_forcing():
    """Random projections of the Jacobian (fast mode) of one SSPRK2 step w.r.t. a batch of states, per-sample
    viscosities and a forcing field."""
    torch.manual_seed(2)
    nu = torch.tensor([0.01, 0.02], dtype=F64, requires_grad=True)
    grid = _channel(nu, SSPRK2())[1]
    v0 = (0.3 * torch.randn(2, *staggered_shape(grid), dtype=F64) * valid_faces(grid, F64)).requires_grad_()
    f = (0.2 * torch.randn(1, *staggered_shape(grid), dtype=F64) * valid_faces(grid, F64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda v, nu, f: _channel(nu, SSPRK2(), f)[0](v), (v0, nu, f), fast_mode=True)


def test_runge_kutta_gradient_wrt_dt():
    dt = torch.tensor([0.1, 0.05], dtype=F64, requires_grad=True)
    grid = tdp.Grid.rect((4, 5), (0.8, 1.0))
    v0 = _random_staggered(grid, FlowBoundary.periodic(), scale=0.3)

    def step(dt):
        return NavierStokes(grid, FlowBoundary.periodic(), nu=0.02, dt=dt, pressure=TIGHT, time_stepping=SSPRK3())(v0)

    assert torch.autograd.gradcheck(step, (dt,))


@pytest.mark.parametrize("method", [SSPRK2(), SSPRK3()], ids=["rk2", "rk3"])
def test_runge_kutta_keeps_obstacle_walls_inflow_and_divergence(method):
    """Every step leaves the velocity divergence-free on the fluid cells, zero on faces touching the
    obstacle and on the walls, the inflow speed on the inflow side, and the inflow region's velocity."""
    grid = tdp.Grid.rect((12, 10), (1.2, 1.0))  # h = 0.1, dt = 0.025: C = 0.25 Σ_a max|v_a|
    fluid = box(grid, (0.4, 0.35), (0.6, 0.6))
    bc = FlowBoundary(((Inflow(0.8), Outflow()), (Wall(), Wall())))
    band = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    band[:, 0, 1:3] = 1.0
    band = band * valid_faces(grid, F64)
    inflow_velocity = 0.8 * band  # v_y = 0.8 in the first two rows of faces
    band_mask = band.clone()
    band_mask[:, 1, 1:3] = 1.0  # and v_x = 0 there
    band_mask = band_mask * valid_faces(grid, F64)
    st = NavierStokes(
        grid, bc, nu=0.01, dt=0.025, fluid=fluid, pressure=SolveOptions(rtol=1e-12), time_stepping=method,
        inflow_mask=band_mask, inflow_velocity=inflow_velocity,
    )  # fmt: skip
    keep, fixed = face_constraints(grid, bc, fluid, F64, "cpu")
    v = 0.2 * torch.randn(2, *staggered_shape(grid), generator=torch.Generator().manual_seed(5), dtype=F64)
    v = v * valid_faces(grid, F64)
    for _ in range(4):
        v, p = st.step_with_pressure(v)
        assert float((divergence(v, grid) * fluid).abs().max()) < 1e-9
        assert torch.equal(v * (1 - keep), fixed.expand_as(v))  # walls, inflow side, obstacle faces, padding
        assert torch.isfinite(p).all()
    # the band is imposed before each projection, which only changes it near the obstacle-free inlet a little
    assert float((v[:, 0, 1:3, :10] - 0.8).abs().max()) < 0.2


def test_runge_kutta_in_3d_with_an_obstacle():
    grid = tdp.Grid.box((5, 4, 4), (1.0, 0.8, 0.8))
    fluid = sphere(grid, (0.5, 0.4, 0.4), 0.2)
    assert int((fluid == 0).sum()) > 0
    bc = FlowBoundary(((Inflow(0.5), Outflow()), (Wall(), Wall()), (Periodic(), Periodic())))
    st = NavierStokes(grid, bc, nu=0.01, dt=0.05, fluid=fluid, pressure=SolveOptions(rtol=1e-12), time_stepping=SSPRK3())
    v = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    for _ in range(3):
        v = st(v)
    keep, fixed = face_constraints(grid, bc, fluid, F64, "cpu")
    assert float((divergence(v, grid) * fluid).abs().max()) < 1e-9
    assert torch.equal(v * (1 - keep), fixed.expand_as(v))
    assert float(v[:, 0].abs().max()) > 0.4  # the flow goes through


def test_runge_kutta_pressure_is_dt_scaled_like_the_split_step():
    """The returned ``p`` is the last stage's potential over its weight ``Σ_k β_sk``: for a uniform body
    force ``f`` along y in a closed box (hydrostatic: the projection removes all of it, nothing moves) every
    method returns ``p`` with ``∂p/∂y = Δt f``, the split step's scaling."""
    grid = tdp.Grid.rect((6, 5), (1.2, 1.0))
    force = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    force[:, 0] = 0.7
    force = force * valid_faces(grid, F64)
    v0 = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    y = (torch.arange(6, dtype=F64) + 0.5) * 0.2
    hydrostatic = (0.1 * 0.7 * (y - y.mean())).view(1, 1, 6, 1).expand(1, 1, 6, 5)
    for method in (ForwardEuler(), SSPRK2(), SSPRK3()):
        st = NavierStokes(grid, FlowBoundary.box(), nu=0.01, dt=0.1, forcing=force, pressure=TIGHT, time_stepping=method)
        v, p = st.step_with_pressure(v0)
        assert float(v.abs().max()) < 1e-12, type(method).__name__
        torch.testing.assert_close(p - p.mean(), hydrostatic, rtol=0, atol=1e-10)
        v, p = st.step_with_pressure(v0, pressure_guess=p)  # warm start in the same units: still exact
        torch.testing.assert_close(p - p.mean(), hydrostatic, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------ argument checks
def test_time_stepping_argument_errors():
    grid = tdp.Grid.rect((8, 8), (1.0, 1.0))
    bc = FlowBoundary.periodic()
    with pytest.raises(TypeError, match=r"time_stepping must be a taichi_dp\.solvers\.time_stepping\.TimeStepping"):
        NavierStokes(grid, bc, nu=0.01, dt=0.01, time_stepping="ssprk3")
    with pytest.raises(TypeError, match="time_stepping must be"):
        NavierStokes(grid, bc, nu=0.01, dt=0.01, time_stepping=SSPRK3)  # the class, not an instance
    with pytest.raises(ValueError, match="diffusion must be 'explicit' with time_stepping=SSPRK3"):
        NavierStokes(grid, bc, nu=0.01, dt=0.01, diffusion="implicit", time_stepping=SSPRK3())
    with pytest.raises(ValueError, match="advection must be left at 'semi_lagrangian' with time_stepping=SSPRK2"):
        NavierStokes(grid, bc, nu=0.01, dt=0.01, advection="maccormack", time_stepping=SSPRK2())
    with pytest.raises(ValueError, match="viscosity_substeps must be None or 1 with time_stepping=SSPRK3"):
        NavierStokes(grid, bc, nu=0.01, dt=0.01, viscosity_substeps=2, time_stepping=SSPRK3())
    # ν Δt Σ 1/h² = 0.6 · 128 · dt: SSPRK3 accepts up to 0.628, SSPRK2 only 0.5
    NavierStokes(grid, bc, nu=0.6, dt=0.6 / (0.6 * 128), time_stepping=SSPRK3())
    with pytest.raises(ValueError, match=r"nu, dt: explicit viscosity in SSPRK2 is unstable: .* > 0\.5"):
        NavierStokes(grid, bc, nu=0.6, dt=0.6 / (0.6 * 128), time_stepping=SSPRK2())
    assert NavierStokes(grid, bc, nu=0.01, dt=0.01, viscosity_substeps=1, time_stepping=SSPRK3()).viscosity_substeps == 1


def test_courant_number_is_checked_every_step():
    grid = tdp.Grid.rect((8, 8), (1.0, 1.0))  # h = 1/8
    bc = FlowBoundary.periodic()
    v = torch.zeros(2, *staggered_shape(grid), dtype=F64)
    v[1, 1] = 2.0  # sample 1: v_x = 2, so C = dt · 2 · 8
    v = v * valid_faces(grid, F64)
    dt = torch.tensor([0.12, 0.1], dtype=F64)
    torch.testing.assert_close(advective_courant(v, dt, grid), torch.tensor([0.0, 1.6], dtype=F64))
    NavierStokes(grid, bc, nu=0.0, dt=dt, time_stepping=SSPRK3())(v)  # 1.6 <= sqrt(3)
    with pytest.raises(ValueError, match=r"dt too large for SSPRK2 time stepping: .* = 1\.6 exceeds 1"):
        NavierStokes(grid, bc, nu=0.0, dt=dt, time_stepping=SSPRK2())(v)
    with pytest.raises(ValueError, match=r"dt too large for SSPRK3 time stepping: .* = 1\.92 exceeds 1\.732"):
        NavierStokes(grid, bc, nu=0.0, dt=0.12, time_stepping=SSPRK3())(v)
