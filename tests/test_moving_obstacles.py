"""Moving rigid bodies (taichi_dp.solvers.moving): divergence-free steps with the body velocity on the body's
faces, Galilean invariance, spin-up by a rotating disc, masks that move by the expected number of cells,
gradients, the scenes, the demo, and input errors."""

import math
import sys
from pathlib import Path

import pytest
import torch

import taichi_dp as tdp
from taichi_dp.grid.sdf import BoxSDF, CapsuleSDF, CircleSDF, SphereSDF, binary_mask
from taichi_dp.grid.staggered import FlowBoundary, face_coordinates, staggered_shape, valid_faces
from taichi_dp.ops.pressure import divergence
from taichi_dp.scenes.moving import oscillating_cylinder, stirring_rod
from taichi_dp.solvers import NavierStokes, SolveOptions, rollout
from taichi_dp.solvers.moving import MovingBodies, MovingBody, pack_moving, unpack_moving
from taichi_dp.solvers.time_stepping import SSPRK3

F64 = torch.float64
TIGHT = SolveOptions(rtol=1e-11, max_iter=20000, method="cg")


def _touching(solid: torch.Tensor) -> torch.Tensor:
    """Faces (staggered layout) with a solid cell on either side, written out cell by cell (the test's own
    version of ``valid_faces − open_faces``; cells outside the domain count as fluid)."""
    h, w = solid.shape[-2:]
    s = solid[0, 0] > 0.5
    out = torch.zeros(1, 2, h + 1, w + 1, dtype=F64)
    for i in range(h + 1):
        for j in range(w):
            out[0, 0, i, j] = float((i > 0 and s[i - 1, j]) or (i < h and s[i, j]))
    for i in range(h):
        for j in range(w + 1):
            out[0, 1, i, j] = float((j > 0 and s[i, j - 1]) or (j < w and s[i, j]))
    return out


def _rigid(grid: tdp.Grid, c, velocity, omega) -> torch.Tensor:
    """``V + ω × (x − c)`` on every face: v_y = V_y + ω (x − c_x), v_x = V_x − ω (y − c_y)."""
    yx = face_coordinates(grid, F64)
    return torch.stack([velocity[0] + omega * (yx[0, 1] - c[1]), velocity[1] - omega * (yx[1, 0] - c[0])])[None]


def _random_velocity(grid: tdp.Grid, batch: int = 1, scale: float = 0.3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, *staggered_shape(grid), generator=gen, dtype=F64) * valid_faces(grid, F64)).contiguous()


def _angular_momentum(v: torch.Tensor, grid: tdp.Grid, fluid: torch.Tensor, c) -> float:
    """``Σ (x − c) × v`` over the faces between two fluid cells (counter-clockwise positive)."""
    yx = face_coordinates(grid, F64)
    open_ = valid_faces(grid, F64) - _touching(1 - fluid)
    lz = (yx[0, 1] - c[1]) * v[0, 0] * open_[0, 0] - (yx[1, 0] - c[0]) * v[0, 1] * open_[0, 1]
    return float(lz.sum()) * grid.spacing[0] * grid.spacing[1]


# ---------------------------------------------------------------------------------------------------- (a)
def test_every_step_is_divergence_free_and_the_body_faces_carry_the_rigid_velocity():
    """A capsule translating and turning in a closed box, from a random velocity: after every step the
    divergence vanishes on every fluid cell, the body's mask is the capsule at its exact pose (built
    here from rotated end points), and every face touching it holds V + ω × (x − c_n)."""
    grid = tdp.Grid.rect((16, 16), (1.0, 1.0))
    velocity, omega, dt = (0.3, -0.2), 2.0, 0.05
    body = MovingBody(CapsuleSDF((0.45, 0.3), (0.45, 0.6), 0.08), (0.45, 0.45), velocity=velocity, omega=omega)
    st = MovingBodies(NavierStokes(grid, FlowBoundary.box(), nu=0.01, dt=dt, advection="maccormack"), body, pressure=TIGHT)
    state = st.initial_state(_random_velocity(grid))
    for n in range(1, 4):
        state = st(state)
        v, step = unpack_moving(state)
        assert step.tolist() == [n]
        t = n * dt
        c = (0.45 + velocity[0] * t, 0.45 + velocity[1] * t)
        a, b = (math.cos(omega * t), math.sin(omega * t))  # (x, y) direction of the rod after turning by ω t
        end = (0.15 * b, 0.15 * a)  # half the rod as a (y, x) offset
        solid = 1 - binary_mask(CapsuleSDF((c[0] - end[0], c[1] - end[1]), (c[0] + end[0], c[1] + end[1]), 0.08), grid)
        fluid = 1 - solid
        assert torch.equal(st.fluid_at(n), fluid)
        assert int(solid.sum()) > 10
        assert float((divergence(v, grid) * fluid).abs().max()) < 1e-8
        faces = _touching(solid)
        assert float((faces * (v - _rigid(grid, c, velocity, omega))).abs().max()) < 1e-12
        assert float((faces * v).abs().max()) > 0.2  # the body faces are not closed


# ---------------------------------------------------------------------------------------------------- (b)
def test_a_body_moving_with_a_uniform_periodic_flow_leaves_it_uniform():
    """Galilean invariance: a disc carried at the velocity U of a uniform flow in a periodic box (crossing
    the x seam on the way) disturbs nothing. The same disc held still (a static obstacle) does."""
    grid = tdp.Grid.rect((16, 16), (1.0, 1.0))
    u = (0.4, -0.7)
    uniform = (torch.tensor(u, dtype=F64).view(1, 2, 1, 1) * valid_faces(grid, F64)).contiguous()
    flow = NavierStokes(grid, FlowBoundary.periodic(), nu=0.01, dt=0.05)
    disc = CircleSDF((0.5, 0.12), 0.15)
    st = MovingBodies(flow, MovingBody(disc, (0.5, 0.12), velocity=u))
    state = st.initial_state(uniform)
    for _ in range(10):
        state = st(state)
        assert float((unpack_moving(state)[0] - uniform).abs().max()) < 1e-10
    moved = st.fluid_at(10)
    expected = binary_mask(CircleSDF((0.7, 0.12 - 0.35 + 1.0), 0.15), grid)  # centre x = 0.12 − 0.35 wraps to 0.77
    assert torch.equal(moved, expected) and not torch.equal(moved, st.fluid_at(0))
    static = NavierStokes(grid, FlowBoundary.periodic(), nu=0.01, dt=0.05, fluid=binary_mask(disc, grid), pressure=TIGHT)
    assert float((static(uniform) - uniform).abs().max()) > 0.1


# ---------------------------------------------------------------------------------------------------- (c)
def _spin(omega: float, steps: int = 6) -> tuple[list[float], list[torch.Tensor]]:
    grid = tdp.Grid.rect((16, 16), (1.0, 1.0))
    body = MovingBody(CircleSDF((0.5, 0.5), 0.2), (0.5, 0.5), omega=omega)
    st = MovingBodies(NavierStokes(grid, FlowBoundary.box(), nu=0.01, dt=0.05), body, pressure=TIGHT)
    state = st.initial_state(torch.zeros(1, *staggered_shape(grid), dtype=F64))
    momenta, masks = [], []
    for n in range(1, steps + 1):
        state = st(state)
        masks.append(st.fluid_at(n))
        momenta.append(_angular_momentum(unpack_moving(state)[0], grid, masks[-1], (0.5, 0.5)))
    return momenta, masks


def test_a_rotating_disc_spins_the_fluid_up_in_its_sense_and_keeps_its_mask():
    ccw, masks = _spin(3.0)
    cw, _ = _spin(-3.0)
    assert all(m > 0 for m in ccw) and all(b > a for a, b in zip(ccw, ccw[1:]))  # grows, counter-clockwise
    assert all(torch.equal(m, masks[0]) for m in masks)  # a disc turning about its centre keeps its cells
    torch.testing.assert_close(torch.tensor(cw), -torch.tensor(ccw), rtol=1e-6, atol=1e-12)  # mirror image


# ---------------------------------------------------------------------------------------------------- (d)
def test_a_translating_mask_moves_by_the_expected_number_of_cells():
    """h = 1/16, V_x = 0.25, Δt = 0.125: half a cell per step, 4 cells after 8 steps; the same with the
    velocity as a callable (midpoint rule), and a box turned by a quarter turn lies along the other axis."""
    grid = tdp.Grid.rect((16, 32), (1.0, 2.0))
    flow = NavierStokes(grid, FlowBoundary.box(), nu=0.0, dt=0.125)
    disc = CircleSDF((0.5, 0.6), 0.2)
    constant = MovingBodies(flow, MovingBody(disc, (0.5, 0.6), velocity=(0.0, 0.25)))
    called = MovingBodies(flow, MovingBody(disc, (0.5, 0.6), velocity=lambda t: (0.0, 0.25)))
    start = constant.fluid_at(0)
    for n, cells in ((6, 3), (8, 4)):
        assert torch.equal(constant.fluid_at(n), torch.roll(start, cells, dims=-1))
        assert torch.equal(called.fluid_at(n), constant.fluid_at(n))
    state = rollout(constant, constant.initial_state(torch.zeros(1, *staggered_shape(grid), dtype=F64)), 8)[:, -1]
    assert unpack_moving(state)[1].tolist() == [8]
    solid = 1 - torch.roll(start, 4, dims=-1)
    rigid = _rigid(grid, (0.5, 0.85), (0.0, 0.25), 0.0)
    assert float((_touching(solid) * (unpack_moving(state)[0] - rigid)).abs().max()) < 1e-12
    bar = MovingBody(BoxSDF((0.45, 0.3), (0.55, 0.9)), (0.5, 0.6), omega=math.pi / 2)
    turned = MovingBodies(NavierStokes(grid, FlowBoundary.box(), nu=0.0, dt=0.25), bar).fluid_at(4)  # θ = π/2
    assert torch.equal(turned, binary_mask(BoxSDF((0.2, 0.55), (0.8, 0.65)), grid))


def test_a_callable_motion_integrates_its_pose_by_the_midpoint_rule():
    """x_c = 0.5 + A sin(2π t / T): after one period the centre is back (to rounding), at a quarter
    period it is at the midpoint rule's A sin(π/2) · (sin(πΔt/T)/(πΔt/T))."""
    grid = tdp.Grid.rect((16, 16), (1.0, 1.0))
    amp, period, dt = 0.1, 1.0, 0.05
    body = MovingBody(
        CircleSDF((0.5, 0.5), 0.1),
        (0.5, 0.5),
        velocity=lambda t: (0.0, amp * 2 * math.pi / period * math.cos(2 * math.pi * t / period)),
    )
    st = MovingBodies(NavierStokes(grid, FlowBoundary.box(), nu=0.0, dt=dt), body)
    assert st.pose(0, 20)[0] == pytest.approx((0.5, 0.5), abs=1e-14)
    x = math.pi * dt / period
    assert st.pose(0, 5)[0][1] - 0.5 == pytest.approx(amp * x / math.sin(x), rel=1e-12)
    assert st.pose(0, 5)[0][1] - 0.5 == pytest.approx(amp, rel=0.01)


def test_samples_at_different_steps_advance_with_their_own_bodies():
    grid = tdp.Grid.rect((12, 12), (1.0, 1.0))
    body = MovingBody(CircleSDF((0.5, 0.4), 0.15), (0.5, 0.4), velocity=(0.0, 0.5))
    st = MovingBodies(NavierStokes(grid, FlowBoundary.box(), nu=0.01, dt=0.1), body, pressure=TIGHT)
    v = _random_velocity(grid, 2, seed=3)
    both = st(pack_moving(v, torch.tensor([0, 3])))
    one = st(pack_moving(v[:1], 0))
    three = st(pack_moving(v[1:], 3))
    torch.testing.assert_close(both, torch.cat([one, three]))
    assert unpack_moving(both)[1].tolist() == [1, 4]
    torch.testing.assert_close(st.step_at(v[1:], 3), unpack_moving(three)[0])


# ------------------------------------------------------------------------------------------------ gradients
def _gradcheck_run(n: int, steps: int):
    grid = tdp.Grid.rect((n, n), (1.0, 1.0))
    body = MovingBody(CircleSDF((0.45, 0.5), 0.2), (0.45, 0.5), velocity=(0.2, 0.1), omega=1.5)

    def run(v0: torch.Tensor, nu: torch.Tensor, forcing: torch.Tensor) -> torch.Tensor:
        flow = NavierStokes(grid, FlowBoundary.box(), nu=nu, dt=0.1, forcing=forcing)
        st = MovingBodies(flow, body, pressure=SolveOptions(rtol=1e-13, max_iter=20000, method="cg"))
        return unpack_moving(rollout(st, pack_moving(v0, 0), steps)[:, -1])[0]

    v0 = _random_velocity(grid, 1, seed=1).requires_grad_()
    forcing = _random_velocity(grid, 1, seed=2).requires_grad_()
    return run, (v0, torch.tensor([0.02], dtype=F64, requires_grad=True), forcing)


def test_rollout_gradcheck_in_the_velocity_the_viscosity_and_the_forcing():
    """The full Jacobian of a 2-step rollout at 6² (v and ν), random projections of a 3-step one at 8²
    (v, ν and the forcing field)."""
    run, (v0, nu, forcing) = _gradcheck_run(6, 2)
    assert torch.autograd.gradcheck(lambda v, nu: run(v, nu, forcing.detach()), (v0, nu))
    run, inputs = _gradcheck_run(8, 3)
    assert torch.autograd.gradcheck(run, inputs, fast_mode=True)


# ---------------------------------------------------------------------------------------------------- scenes
def test_stirring_rod_scene_turns_the_rod_and_stirs_the_fluid_counter_clockwise():
    scene = stirring_rod(16, dt=0.04)
    st = scene.stepper
    assert scene.state0.shape == (1, 3, 17, 17) and scene.steps == 50
    v0 = unpack_moving(scene.state0)[0]  # at rest, projected around the rod that starts turning (impulsive start)
    solid0 = 1 - st.fluid_at(0)
    assert float((_touching(solid0) * (v0 - _rigid(st.grid, (0.5, 0.5), (0.0, 0.0), math.pi))).abs().max()) < 1e-12
    traj = rollout(st, scene.state0, 4)
    v, step = unpack_moving(traj[:, -1])
    fluid = st.fluid_at(4)
    assert step.tolist() == [4] and not torch.equal(fluid, st.fluid_at(0))
    assert float((divergence(v, st.grid) * fluid).abs().max()) < 1e-3
    assert _angular_momentum(v, st.grid, fluid, (0.5, 0.5)) > 0
    half = st.fluid_at(25)  # half a turn: the rod along x again
    assert torch.equal(half, st.fluid_at(0))


def test_oscillating_cylinder_scene_keeps_the_inflow_and_swings_the_cylinder():
    scene = oscillating_cylinder(8, periods=1.0)
    st = scene.stepper
    assert scene.state0.shape == (1, 3, 25, 9) and st.grid.shape == (24, 8)
    traj = rollout(st, scene.state0, 3)
    v = unpack_moving(traj[:, -1])[0]
    assert float((divergence(v, st.grid) * st.fluid_at(3)).abs().max()) < 1e-3
    torch.testing.assert_close(v[0, 0, 0, :8], torch.ones(8, dtype=F64))  # the inflow face
    quarter = st.pose(0, round(0.25 * 2.0 / st.dt))[0][1]
    assert quarter > 0.5 + 0.1 and st.pose(0, scene.steps)[0] == pytest.approx((0.75, 0.5), abs=5e-3)


@pytest.mark.slow  # a subprocess: a Python start and Taichi compiles
def test_stirring_demo_headless(tmp_path):
    import subprocess

    import numpy as np
    from PIL import Image

    root = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TI_SKIP_VERSION_CHECK": "ON"}
    p = subprocess.run(
        [sys.executable, "-m", "demos.stirring", "--headless", "--frames", "3", "--n", "24", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=root,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    frames = sorted(tmp_path.glob("frame_*.png"))
    assert len(frames) == 3
    images = [np.asarray(Image.open(f).convert("L"), dtype=np.float64) for f in frames]
    assert all(img.std() > 5.0 for img in images) and np.abs(images[0] - images[-1]).mean() > 0.1


# ---------------------------------------------------------------------------------------------------- errors
def test_argument_errors_name_the_argument():
    grid = tdp.Grid.rect((12, 12), (1.0, 1.0))
    flow = NavierStokes(grid, FlowBoundary.box(), nu=0.01, dt=0.1)
    disc = CircleSDF((0.5, 0.5), 0.2)
    body = MovingBody(disc, (0.5, 0.5), omega=1.0)
    with pytest.raises(TypeError, match="MovingBody sdf"):
        MovingBody("disc", (0.5, 0.5))
    with pytest.raises(ValueError, match="2D only"):
        MovingBody(SphereSDF((0.5, 0.5, 0.5), 0.2), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="MovingBody centre"):
        MovingBody(disc, (0.5,))
    with pytest.raises(ValueError, match=r"MovingBody velocity must be a \(y, x\) pair"):
        MovingBody(disc, (0.5, 0.5), velocity=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=r"MovingBody velocity\(0.0\)"):
        MovingBody(disc, (0.5, 0.5), velocity=lambda t: (1.0,))
    with pytest.raises(ValueError, match="MovingBody omega must be finite"):
        MovingBody(disc, (0.5, 0.5), omega=float("nan"))
    with pytest.raises(TypeError, match=r"MovingBody omega\(0.0\)"):
        MovingBody(disc, (0.5, 0.5), omega=lambda t: "fast")
    from taichi_dp.grid.cut_cells import CutCells

    cut = NavierStokes(grid, FlowBoundary.box(), nu=0.01, dt=0.1, cut_cells=CutCells.from_sdf(CircleSDF((0.2, 0.2), 0.1), grid))
    with pytest.raises(ValueError, match=r"flow\.cut_cells must be None"):
        MovingBodies(cut, body)
    with pytest.raises(TypeError, match="flow must be a NavierStokes"):
        MovingBodies("flow", body)
    with pytest.raises(ValueError, match="bodies must be"):
        MovingBodies(flow, [])
    with pytest.raises(TypeError, match=r"bodies\[1\]"):
        MovingBodies(flow, [body, disc])
    with pytest.raises(ValueError, match=r"pressure\.method"):
        MovingBodies(flow, body, pressure=SolveOptions())
    with pytest.raises(ValueError, match=r"flow\.diffusion"):
        MovingBodies(NavierStokes(grid, FlowBoundary.box(), nu=0.01, dt=0.1, diffusion="implicit"), body)
    with pytest.raises(ValueError, match=r"flow\.time_stepping"):
        MovingBodies(NavierStokes(grid, FlowBoundary.box(), nu=0.01, dt=0.01, time_stepping=SSPRK3()), body)
    with pytest.raises(TypeError, match=r"flow\.dt must be a float"):
        MovingBodies(NavierStokes(grid, FlowBoundary.box(), nu=0.01, dt=torch.tensor([0.1, 0.2], dtype=F64)), body)
    grid3 = tdp.Grid.box((6, 6, 6))
    with pytest.raises(ValueError, match=r"flow\.grid must be 2D"):
        MovingBodies(NavierStokes(grid3, FlowBoundary.box(ndim=3), nu=0.01, dt=0.1), body)
    st = MovingBodies(flow, body)
    with pytest.raises(ValueError, match="pack_moving"):
        st(torch.zeros(1, 2, 13, 13, dtype=F64))
    bad = pack_moving(torch.zeros(1, 2, 13, 13, dtype=F64), 0)
    bad[0, 2, 3, 3] = 0.5
    with pytest.raises(ValueError, match="state channel 2 must hold the step index"):
        st(bad)
    with pytest.raises(ValueError, match="step must be an integer"):
        pack_moving(torch.zeros(1, 2, 13, 13, dtype=F64), -1)
    with pytest.raises(ValueError, match="n must be a step index"):
        st.fluid_at(-2)
    drifting = MovingBodies(flow, MovingBody(disc, (0.5, 0.5), velocity=(0.0, 1.0)))
    with pytest.raises(ValueError, match=r"bodies\[0\] reaches the x_hi side at step 3"):
        drifting.fluid_at(3)
    pair = MovingBodies(
        flow, [MovingBody(CircleSDF((0.5, 0.3), 0.1), (0.5, 0.3)), MovingBody(CircleSDF((0.5, 0.5), 0.1), (0.5, 0.5))]
    )
    with pytest.raises(ValueError, match=r"bodies\[0\] touches a static obstacle or another body"):
        pair.fluid_at(0)
    with pytest.raises(ValueError, match="n must be an integer >= 8"):
        stirring_rod(4)
    with pytest.raises(ValueError, match="omega must be a finite non-zero"):
        stirring_rod(16, omega=0.0)
    with pytest.raises(ValueError, match="half_length \\+ radius"):
        stirring_rod(16, half_length=0.45)
    with pytest.raises(ValueError, match="amplitude \\+ radius"):
        oscillating_cylinder(16, amplitude=0.4)
    with pytest.raises(ValueError, match="advection must be one of"):
        oscillating_cylinder(16, advection="upwind")
