"""pbdl_karman: PhiFlow 3.4's karman step reproduced from taichi_dp operators.

Checked against (1) PhiFlow's own velocities stored in ``tests/data/pbdl_karman_phiflow.npz``
(``benchmarks/pbdl_karman_reference.py``; no PhiFlow needed), (2) live PhiFlow when it is installed,
(3) the independent plain-PyTorch reference ``tests/reference_pbdl.py`` (values and gradients), and
(4) float64 gradchecks of the step and of the operators with the new :class:`ConstantOutside` ghosts.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import reference_pbdl as ref
import torch

from taichi_dp.grid import Boundary, ConstantOutside, Grid, ZeroGradient
from taichi_dp.grid.phiflow import PhiFlowBoundary, box_faces, soft_disc_faces
from taichi_dp.grid.staggered import FlowBoundary, Outflow, Wall
from taichi_dp.ops.diffusion import diffuse_explicit
from taichi_dp.ops.pressure import apply_projection, fluid_mask, project
from taichi_dp.ops.staggered_advection import apply_velocity_advection
from taichi_dp.ops.staggered_diffusion import apply_velocity_diffusion
from taichi_dp.scenes import Scene, pbdl_karman
from taichi_dp.solvers import SolveOptions
from taichi_dp.solvers.phiflow_navier_stokes import PhiFlowNavierStokes

DATA = Path(__file__).parent / "data" / "pbdl_karman_phiflow.npz"
HAS_PHI = importlib.util.find_spec("phi") is not None
BOUNDARY = PhiFlowBoundary(((Wall(), Outflow()), (Wall(), Wall())))
CG_TIGHT = SolveOptions(rtol=1e-13, max_iter=20000, method="cg")  # plain CG (as PhiFlow), converged


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def _random_state(h: int, w: int, batch: int = 1, seed: int = 0, open_bottom: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = 0.3 * torch.randn(batch, 2, h + 1, w + 1, generator=g, dtype=torch.float64)
    v[:, 0] += 1.0
    return ref._zero_bc(v, open_bottom)


@pytest.mark.slow  # 13 float64 steps, plain CG to 1e-8
@pytest.mark.parametrize("bottom", ["open", "closed"])
def test_matches_stored_phiflow_reference(bottom):
    data = np.load(DATA)
    scene = pbdl_karman(
        tuple(int(n) for n in data["resolution"]),
        float(data["reynolds"]),
        v0=torch.tensor(data[f"{bottom}_v0"]),
        bottom=Outflow() if bottom == "open" else Wall(),
    )
    v, errors = scene.state0, {}
    for k in range(1, int(data["steps"].max()) + 1):
        v = scene.stepper(v)
        if f"{bottom}_v{k}" in data:
            errors[k] = _rel(v, torch.tensor(data[f"{bottom}_v{k}"]))
    assert set(errors) == {1, 13}
    assert max(errors.values()) <= 1e-4, errors
    assert errors[13] <= 1e-6, errors  # measured ≈ 4e-8 at pressure rtol 1e-8 (≈ 1e-12 at 1e-12)


@pytest.mark.slow  # PhiFlow 3.4 steps (bench extra)
@pytest.mark.skipif(not HAS_PHI, reason="PhiFlow 3.4 not installed (pip install -e .[bench])")
@pytest.mark.parametrize("open_bottom", [True, False])
def test_matches_live_phiflow(open_bottom):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the benchmarks package
    from benchmarks.pbdl_karman_reference import initial_velocity, phiflow_rollout

    v0 = initial_velocity((32, 16), seed=1, noise=0.2, open_bottom=open_bottom)
    expected = phiflow_rollout(v0, 2, reynolds=100.0, open_bottom=open_bottom)
    scene = pbdl_karman((32, 16), 100.0, v0=torch.tensor(v0), bottom=Outflow() if open_bottom else Wall())
    v = scene.state0
    for k in range(2):
        v = scene.stepper(v)
        assert _rel(v, torch.tensor(expected[k])) <= 1e-6  # measured ≈ 1e-8 (pressure rtol 1e-8)


def test_closed_bottom_stops_the_through_flow():
    """PhiFlow's ``y- = 0`` (benchmarks/phiflow_karman.py): no flux can cross a closed bottom."""
    closed = pbdl_karman((32, 16), bottom=Wall())
    opened = pbdl_karman((32, 16))
    assert float(closed.stepper(closed.state0)[:, 0, 8:24, :16].mean()) < 0.01
    assert float(opened.stepper(opened.state0)[:, 0, 8:24, :16].mean()) > 0.9


def test_scene_contract():
    scene = pbdl_karman(batch=2)
    assert isinstance(scene, Scene) and isinstance(scene.stepper, PhiFlowNavierStokes)
    assert scene.state0.shape == (2, 2, 65, 33)
    v1 = scene.stepper(scene.state0)
    assert torch.isfinite(v1).all() and v1.shape == scene.state0.shape
    assert (v1[:, 1, :, 0] == 0).all() and (v1[:, 1, :, -1] == 0).all()  # no-slip side walls
    assert (pbdl_karman(bottom=Wall()).stepper(scene.state0)[:, 0, 0] == 0).all()  # a closed bottom stays closed
    re = torch.tensor([100.0, 400.0], dtype=torch.float64)
    assert pbdl_karman(reynolds=re).state0.shape[0] == 2


@pytest.mark.parametrize("open_bottom", [True, False])
def test_stages_match_plain_torch_reference(open_bottom):
    h, w = 32, 16
    grid = Grid.rect((h, w), (200.0, 100.0))
    hc = 100.0 / w
    boundary = PhiFlowBoundary(((Outflow() if open_bottom else Wall(), Outflow()), (Wall(), Wall())))
    v = _random_state(h, w, batch=2, open_bottom=open_bottom)
    nu = torch.tensor([0.5, 2.0], dtype=torch.float64)
    dt = torch.ones(2, dtype=torch.float64)
    diffused = apply_velocity_diffusion(v, nu, dt, grid, boundary)
    expected = v + nu.view(-1, 1, 1, 1) * ref.laplacian(v, hc, open_bottom)
    interior = torch.ones_like(v)
    interior[:, 0, h] = interior[:, 0, 0] = 0  # outflow faces: PhiFlow does not diffuse them (nor the stepper)
    assert torch.allclose(ref._zero_bc(diffused * interior + v * (1 - interior), open_bottom), expected, atol=1e-12)
    advected = apply_velocity_advection(v, v, 3.0 * dt, grid, boundary, "semi_lagrangian")
    assert torch.allclose(ref._zero_bc(advected, open_bottom), ref.advect(v, 3.0, hc, open_bottom), atol=1e-12)
    solid = soft_disc_faces(grid, ref.CENTRE, ref.RADIUS)
    m, acc, _ = ref.masks(h, w, open_bottom=open_bottom)
    assert torch.allclose(solid[0], m) and torch.equal(fluid_mask(None, grid, 1), torch.ones(1, 1, h, w, dtype=torch.float64))
    from taichi_dp.grid.geometry import disc

    fluid = disc(grid, ref.CENTRE, ref.RADIUS)
    assert torch.equal(fluid[0, 0], acc)
    projected, p = apply_projection(
        v * (1 - solid), grid, boundary, fluid, rtol=1e-13, preconditioner="none", close_solid_faces=False
    )
    ref_v, ref_p = ref.make_incompressible(v, open_bottom)
    assert torch.allclose(projected, ref_v, atol=1e-10) and torch.allclose(p[:, 0], ref_p, atol=1e-8)
    band = box_faces(grid, (0.0, 0.0), (5.0, 100.0))  # h = 6.25: v_y faces y = 0 (in), 6.25 (out); v_x row y = 3.125 (in)
    assert band[0, 0, 0, :w].eq(1).all() and band[0, 0, 1:].eq(0).all()
    assert band[0, 1, 0].eq(1).all() and band[0, 1, 1:].eq(0).all()


@pytest.mark.parametrize("open_bottom", [True, False])
def test_step_and_gradient_match_plain_torch_reference(open_bottom):
    bottom = Outflow() if open_bottom else Wall()
    scene = pbdl_karman(
        (16, 8), 50.0, v0=_random_state(16, 8, seed=3, open_bottom=open_bottom), bottom=bottom, pressure=CG_TIGHT
    )
    v0 = scene.state0.clone().requires_grad_(True)
    out = scene.stepper(v0)
    v0_ref = scene.state0.clone().requires_grad_(True)
    out_ref = ref.step(v0_ref, 20.0 / 50.0, open_bottom=open_bottom)
    assert torch.allclose(out, out_ref, atol=1e-11)
    weights = torch.randn_like(out)
    (g,) = torch.autograd.grad((out * weights).sum(), v0)
    (g_ref,) = torch.autograd.grad((out_ref * weights).sum(), v0_ref)
    assert torch.allclose(g, g_ref, atol=1e-9), float((g - g_ref).abs().max())


def test_gradcheck_step():
    grid_shape = (16, 8)
    base = pbdl_karman(grid_shape, 50.0, v0=_random_state(*grid_shape, seed=4), pressure=CG_TIGHT)

    def f(v: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        s = base.stepper
        stepper = PhiFlowNavierStokes(
            s.grid, s.boundary, nu, s.dt, s.fluid, s.solid_faces, s.inflow_mask, s.inflow_velocity, pressure=CG_TIGHT
        )
        return stepper(v)

    v = base.state0.clone().requires_grad_(True)
    nu = torch.tensor([0.4], dtype=torch.float64, requires_grad=True)
    # fast mode (random projections vᵀJu): the full Jacobian costs 2 × 306 converged solves (65 s here)
    assert torch.autograd.gradcheck(f, (v, nu), atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradcheck_constant_outside_operators():
    grid = Grid.rect((6, 5), (3.0, 2.5))
    g = torch.Generator().manual_seed(5)
    v = torch.randn(1, 2, 7, 6, dtype=torch.float64, generator=g) * 0.3
    v[:, 0, :, 5] = 0
    v[:, 1, 6] = 0
    v.requires_grad_(True)
    one = torch.ones(1, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: apply_velocity_diffusion(x, 0.05 * one, one, grid, BOUNDARY), (v,))
    assert torch.autograd.gradcheck(lambda x: apply_velocity_advection(x, x, 0.7 * one, grid, BOUNDARY, "semi_lagrangian"), (v,))


def test_constant_outside_cell_centred_diffusion():
    """ConstantOutside on a cell-centred grid: the ghost cell holds the value (not the face)."""
    grid = Grid.line(6, 0.0, 6.0)
    bc = Boundary(((ConstantOutside(2.0), ZeroGradient()),))
    u = torch.randn(2, 1, 6, dtype=torch.float64)
    padded = torch.cat([torch.full_like(u[..., :1], 2.0), u, u[..., -1:]], dim=-1)
    expected = u + 0.1 * (padded[..., :-2] - 2 * u + padded[..., 2:])
    assert torch.allclose(diffuse_explicit(u, 0.1, 1.0, grid, bc), expected, atol=1e-14)


def test_validation():
    with pytest.raises(ValueError, match="resolution"):
        pbdl_karman((3, 3))
    with pytest.raises(TypeError, match="resolution"):
        pbdl_karman(64)
    with pytest.raises(ValueError, match="reynolds"):
        pbdl_karman(reynolds=-1.0)
    with pytest.raises(ValueError, match="bottom"):
        pbdl_karman(bottom=Wall(slip=True))
    with pytest.raises(ValueError, match="v0"):
        pbdl_karman(v0=torch.zeros(1, 2, 10, 10, dtype=torch.float64))
    scene = pbdl_karman()
    s = scene.stepper
    with pytest.raises(TypeError, match="PhiFlowBoundary"):
        PhiFlowNavierStokes(s.grid, FlowBoundary(BOUNDARY.sides), 0.1, 1.0)
    with pytest.raises(ValueError, match="explicit"):
        PhiFlowNavierStokes(s.grid, s.boundary, 0.1, 1.0, diffusion="implicit")
    with pytest.raises(ValueError, match=r"stab"):
        PhiFlowNavierStokes(s.grid, s.boundary, 100.0, 1.0)
    with pytest.raises(ValueError, match="multigrid"):
        apply_projection(scene.state0, s.grid, s.boundary, s.fluid, preconditioner="multigrid")
    with pytest.raises(ValueError, match="multigrid"):
        project(scene.state0, s.grid, FlowBoundary(BOUNDARY.sides), s.fluid, close_solid_faces=False)
    with pytest.raises(TypeError, match="close_solid_faces"):
        project(scene.state0, s.grid, FlowBoundary(BOUNDARY.sides), s.fluid, close_solid_faces="no")
    with pytest.raises(ValueError, match="ConstantOutside"):
        ConstantOutside(float("nan"))
