"""Buoyant smoke: packing, the plume rises, divergence-free velocity, gradients w.r.t. state, buoyancy
and source."""

import pytest
import torch

import taichi_dp as tdp
from taichi_dp.grid.staggered import FlowBoundary, staggered_shape, valid_faces
from taichi_dp.ops.pressure import divergence
from taichi_dp.scenes import smoke_plume
from taichi_dp.solvers import NavierStokes, SmokePlume, SolveOptions, pack_smoke, rollout, unpack_smoke


def test_pack_unpack_round_trip():
    v = torch.randn(2, 2, 6, 5, dtype=torch.float64)
    rho = torch.randn(2, 1, 5, 4, dtype=torch.float64)
    state = pack_smoke(v, rho)
    assert state.shape == (2, 3, 6, 5) and torch.equal(state[:, 2, -1], torch.zeros(2, 5, dtype=torch.float64))
    v2, rho2 = unpack_smoke(state)
    assert torch.equal(v2, v) and torch.equal(rho2, rho)


@pytest.mark.slow  # a multi-step smoke plume
def test_plume_rises_and_stays_divergence_free():
    scene = smoke_plume(32)
    stepper, state = scene.stepper, scene.state0
    assert stepper.density_advection == "flux"
    y = stepper.grid.centers(0)
    hy, hx = stepper.grid.spacing
    injected = float(stepper.source.sum()) * float(stepper.dt) * hy * hx  # per step
    heights = []
    with torch.no_grad():
        for k in range(3):
            state = rollout(stepper, state, 10)[:, -1]
            v, rho = unpack_smoke(state)
            heights.append(float((rho[0, 0] * y[:, None]).sum() / rho.sum()))
            assert float(divergence(v, stepper.grid).abs().max()) < 1e-3
            assert float(rho.min()) >= 0.0  # the limited flux form (sub-stepped) keeps the density non-negative
            assert abs(float(rho.sum()) * hy * hx - 10 * (k + 1) * injected) < 1e-9 * injected  # and conserves it
    assert heights[0] < heights[1] < heights[2]  # the smoke's centre of mass keeps rising
    assert heights[0] > 10.0  # above the source


def test_smoke_step_gradcheck():
    torch.manual_seed(0)
    grid = tdp.Grid.rect((5, 4), (1.0, 0.8))
    flow = NavierStokes(grid, FlowBoundary.box(), nu=0.01, dt=0.1, pressure=SolveOptions(rtol=1e-13))
    source = torch.rand(1, 1, 5, 4, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    v = 0.3 * torch.randn(2, *staggered_shape(grid), dtype=torch.float64) * valid_faces(grid, torch.float64)
    state = pack_smoke(v, torch.rand(2, 1, 5, 4, dtype=torch.float64)).requires_grad_()

    def step(s, beta, source):
        return SmokePlume(flow, buoyancy=beta, source=source, density_advection="semi_lagrangian")(s)

    assert torch.autograd.gradcheck(step, (state, beta, source), fast_mode=True)


def test_smoke_errors():
    scene = smoke_plume(16)
    stepper, state = scene.stepper, scene.state0
    with pytest.raises(ValueError, match="pack_smoke"):
        stepper(state[:, :2])
    with pytest.raises(TypeError, match="NavierStokes"):
        SmokePlume(flow=None)
    with pytest.raises(ValueError, match="density_advection"):
        SmokePlume(stepper.flow, density_advection="upwind")


@pytest.mark.parametrize("scheme", ["flux", "maccormack", "semi_lagrangian"])
def test_source_enters_as_dt_times_s(scheme):
    """At rest with no smoke, one step of length dt injects exactly dt·s (per sample dt 0.25 and 0.5)."""
    grid = tdp.Grid.rect((8, 8), (1.0, 1.0))
    dt = torch.tensor([0.25, 0.5], dtype=torch.float64)
    flow = NavierStokes(grid, FlowBoundary.box(), nu=0.0, dt=dt)
    source = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    state = pack_smoke(torch.zeros(2, *staggered_shape(grid), dtype=torch.float64), torch.zeros(2, 1, 8, 8, dtype=torch.float64))
    _, rho = unpack_smoke(SmokePlume(flow, buoyancy=0.0, source=source, density_advection=scheme)(state))
    torch.testing.assert_close(rho, dt.view(-1, 1, 1, 1) * source, rtol=1e-12, atol=1e-14)
