"""AdvectionDiffusion stepper and the stepper protocol."""

import math

import pytest
import torch

import taichi_dp as tdp
from taichi_dp.ops import NotConvergedWarning
from taichi_dp.solvers import (
    AdvectionDiffusion,
    Burgers,
    NavierStokes,
    PhiFlowNavierStokes,
    Repeated,
    SmokePlume,
    SolveOptions,
    Stepper,
    rollout,
)


def test_pure_advection_by_one_cell_is_an_exact_shift():
    """CFL = 1 on a periodic grid: semi-Lagrangian moves the profile by exactly one cell per step."""
    grid = tdp.Grid.line(16, 0.0, 1.0)
    q = torch.randn(2, 3, 16, dtype=torch.float64)
    v = torch.full((1, 1, 16), 2.0, dtype=torch.float64)
    st = AdvectionDiffusion(grid, tdp.Boundary.periodic(1), v, kappa=0.0, dt=grid.spacing[0] / 2.0)
    out = rollout(st, q, 5)[:, -1]
    assert torch.allclose(out, torch.roll(q, 5, dims=-1), atol=1e-13)


def test_2d_advection_of_a_blob_moves_its_centre_of_mass():
    grid = tdp.Grid.rect((32, 32), (1.0, 1.0))
    y, x = grid.centers(0), grid.centers(1)
    blob = torch.exp(-((y[:, None] - 0.3) ** 2 + (x[None, :] - 0.3) ** 2) / 0.02)[None, None]
    v = torch.zeros(1, 2, 32, 32, dtype=torch.float64)
    v[:, 0], v[:, 1] = 0.2, 0.4  # (v_y, v_x)
    st = AdvectionDiffusion(grid, tdp.Boundary.periodic(2), v, kappa=1e-4, dt=0.05, advection="maccormack")
    q = rollout(st, blob.contiguous(), 10)[:, -1]
    mass = q.sum()
    cy, cx = float((q[0, 0] * y[:, None]).sum() / mass), float((q[0, 0] * x[None, :]).sum() / mass)
    assert cy == pytest.approx(0.3 + 0.2 * 0.5, abs=0.01) and cx == pytest.approx(0.3 + 0.4 * 0.5, abs=0.01)
    assert float(mass) == pytest.approx(float(blob.sum()), rel=0.02)


def test_diffusion_of_a_sine_decays_at_the_analytic_rate():
    """Implicit diffusion of sin(2πx): amplitude decays like exp(-κ (2π)² t) up to O(dt, h²)."""
    grid = tdp.Grid.line(64, 0.0, 1.0)
    q = torch.sin(2 * math.pi * grid.centers(0))[None, None].contiguous()
    kappa, dt, steps = 0.01, 0.01, 50
    st = AdvectionDiffusion(
        grid, tdp.Boundary.periodic(1), torch.zeros(1, 1, 64, dtype=torch.float64), kappa, dt, diffusion="implicit", cg_rtol=1e-10
    )
    out = rollout(st, q, steps)[:, -1]
    ratio = float(out.abs().max() / q.abs().max())
    assert ratio == pytest.approx(math.exp(-kappa * (2 * math.pi) ** 2 * dt * steps), rel=0.01)


# implicit: three CG solves per gradcheck probe (CI only)
@pytest.mark.parametrize("diffusion", ["explicit", pytest.param("implicit", marks=pytest.mark.slow)])
def test_advection_diffusion_gradcheck_wrt_state_velocity_and_kappa(diffusion):
    torch.manual_seed(3)
    grid = tdp.Grid.rect((5, 6), (1.0, 1.2))
    bc = tdp.Boundary(((tdp.Dirichlet(0.5), tdp.ZeroGradient()), (tdp.Periodic(), tdp.Periodic())))
    q = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    v = (0.3 * torch.randn(1, 2, 5, 6, dtype=torch.float64)).requires_grad_()
    kappa = torch.tensor([0.003, 0.002], dtype=torch.float64, requires_grad=True)

    def two_steps(q, v, kappa):
        st = AdvectionDiffusion(grid, bc, v, kappa, 0.2, diffusion=diffusion, advection="maccormack", cg_rtol=1e-13)
        return rollout(st, q, 2)

    assert torch.autograd.gradcheck(two_steps, (q, v, kappa))


def test_steppers_are_pure_and_interleaved_rollouts_do_not_interfere():
    grid = tdp.Grid.line(12, -1, 1)
    st = Burgers(grid, tdp.Boundary.periodic(1), 0.01, 0.05, diffusion="implicit")
    a = torch.sin(math.pi * grid.centers(0))[None, None].contiguous().requires_grad_()
    b = (0.5 * torch.cos(math.pi * grid.centers(0)))[None, None].contiguous().requires_grad_()
    ga = torch.autograd.grad(rollout(st, a, 3)[:, -1].square().sum(), a)[0]
    gb = torch.autograd.grad(rollout(st, b, 3)[:, -1].sum(), b)[0]
    ua, ub = a, b
    for _ in range(3):  # interleave two rollouts step by step
        ua, ub = st(ua), st(ub)
    ga2, gb2 = torch.autograd.grad(ua.square().sum() + ub.sum(), (a, b))
    assert torch.equal(ua, rollout(st, a, 3)[:, -1])
    assert torch.allclose(ga, ga2, rtol=1e-12) and torch.allclose(gb, gb2, rtol=1e-12)


def test_advection_diffusion_errors():
    grid = tdp.Grid.line(8)
    bc = tdp.Boundary.periodic(1)
    v = torch.zeros(2, 1, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="velocity"):
        AdvectionDiffusion(grid, bc, torch.zeros(2, 2, 8, dtype=torch.float64), 0.0, 0.1)
    with pytest.raises(ValueError, match="unstable"):
        AdvectionDiffusion(grid, bc, v, 10.0, 0.1)
    st = AdvectionDiffusion(grid, bc, v, 0.0, 0.1)
    with pytest.raises(ValueError, match="batch size"):
        st(torch.zeros(3, 1, 8, dtype=torch.float64))


# ------------------------------------------------------------------ the stepper contract, Repeated, Scene


def test_repeated_is_n_steps_per_call_validated_once():
    grid = tdp.Grid.line(16, -1, 1)
    fine = Burgers(grid, tdp.Boundary.periodic(1), 0.01, 0.025)
    u = (torch.sin(math.pi * grid.centers(0)))[None, None].contiguous().requires_grad_()
    coarse = Repeated(fine, 3)
    assert isinstance(coarse, Stepper) and coarse.grid == grid and coarse.dt == 3 * 0.025 and coarse.channels == 1
    expected = fine(fine(fine(u)))
    out = coarse(u)
    assert torch.equal(out, expected)
    assert torch.equal(rollout(coarse, u, 2)[:, -1], rollout(fine, u, 6)[:, -1])
    g1 = torch.autograd.grad(out.square().sum(), u)[0]
    g2 = torch.autograd.grad(expected.square().sum(), u)[0]
    assert torch.equal(g1, g2)
    calls = []

    class Counting(Burgers):
        def check(self, state):
            calls.append(1)
            super().check(state)

    Repeated(Counting(grid, tdp.Boundary.periodic(1), 0.01, 0.025), 4)(u)
    assert len(calls) == 1  # the state is validated once per call, not once per inner step
    with pytest.raises(ValueError, match="channel"):
        coarse(torch.zeros(1, 2, 16, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs,error,msg",
    [
        ({"stepper": lambda u: u, "n": 2}, TypeError, "stepper must be a Stepper"),
        ({"n": 0}, ValueError, "n must be an integer >= 1, got 0"),
        ({"n": 2.0}, TypeError, "n must be an integer >= 1, got float"),
        ({"n": True}, TypeError, "n must be an integer >= 1, got bool"),
    ],
)
def test_repeated_errors(kwargs, error, msg):
    fine = Burgers(tdp.Grid.line(8), tdp.Boundary.periodic(1), 0.01, 0.025)
    with pytest.raises(error, match=msg):
        Repeated(**{"stepper": fine, **kwargs})


def test_steppers_follow_the_base_contract():
    """Every stepper validates through ``check`` and steps through ``step``: none re-implements ``__call__``."""
    for cls in (AdvectionDiffusion, Burgers, NavierStokes, PhiFlowNavierStokes, Repeated, SmokePlume):
        assert issubclass(cls, Stepper) and "__call__" not in vars(cls), cls


@pytest.mark.slow  # builds and steps every scene
def test_every_scene_is_a_scene():
    from taichi_dp.scenes import Scene, karman, lid_driven_cavity, pbdl_burgers, pbdl_karman, smoke_plume, taylor_green

    scenes = {
        "pbdl_burgers": pbdl_burgers(n=16),
        "karman": karman(),
        "pbdl_karman": pbdl_karman((16, 8)),
        "lid_driven_cavity": lid_driven_cavity(8),
        "taylor_green": taylor_green(8),
        "smoke_plume": smoke_plume(8),
    }
    for name, scene in scenes.items():
        assert type(scene) is Scene, name
        assert isinstance(scene.stepper, Stepper), name
        assert scene.stepper(scene.state0).shape == scene.state0.shape, name
    assert scenes["pbdl_burgers"].steps == 32 and scenes["karman"].steps is None
    assert isinstance(scenes["smoke_plume"].stepper, SmokePlume)


def test_navier_stokes_solve_options():
    """``pressure=`` and ``viscosity=`` are separate solves: the implicit viscosity uses its own options."""
    from taichi_dp.grid.staggered import FlowBoundary, staggered_shape, valid_faces
    from taichi_dp.solvers.navier_stokes import PRESSURE_DEFAULT, VISCOSITY_DEFAULT

    grid = tdp.Grid.rect((8, 8), (1.0, 1.0))
    st = NavierStokes(grid, FlowBoundary.box(), nu=0.5, dt=0.1, diffusion="implicit")
    assert st.pressure == PRESSURE_DEFAULT == SolveOptions(1e-5, 5000, "mgpcg")
    assert st.viscosity == VISCOSITY_DEFAULT == SolveOptions(1e-5, 1000, "cg")
    torch.manual_seed(0)
    v = torch.randn(1, *staggered_shape(grid), dtype=torch.float64) * valid_faces(grid, torch.float64)
    tight = SolveOptions(rtol=1e-12)
    exact = NavierStokes(grid, FlowBoundary.box(), nu=0.5, dt=0.1, diffusion="implicit", pressure=tight,
                         viscosity=SolveOptions(rtol=1e-12, method="cg"))
    sloppy = NavierStokes(grid, FlowBoundary.box(), nu=0.5, dt=0.1, diffusion="implicit", pressure=tight,
                          viscosity=SolveOptions(rtol=0.5, max_iter=1, method="cg"))
    with pytest.warns(NotConvergedWarning):  # one CG iteration
        far = sloppy(v)
    assert float((far - exact(v)).abs().max()) > 1e-6  # the viscosity options, not the pressure's, decide
    plain = NavierStokes(grid, FlowBoundary.box(), nu=0.5, dt=0.1, pressure=SolveOptions(rtol=1e-12, method="cg"))
    mg = NavierStokes(grid, FlowBoundary.box(), nu=0.5, dt=0.1, pressure=tight)
    torch.testing.assert_close(plain(v), mg(v), rtol=0, atol=1e-9)
