"""Conservative flux-form advection (``taichi_dp.ops.flux_advection``): gradients, the plain-PyTorch
reference, exact conservation, boundedness, the Courant limit and the smoke plume's density budget."""

import dataclasses
import math

import pytest
import reference_mac as ref
import torch

from taichi_dp.grid import Boundary, Dirichlet, Grid, Periodic, ZeroGradient
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall, valid_faces
from taichi_dp.ops import flux_advect
from taichi_dp.ops.flux_advection import cell_courant, flux_substeps
from taichi_dp.ops.staggered_advection import apply_scalar_advection
from taichi_dp.scenes import smoke_plume
from taichi_dp.solvers import SmokePlume, unpack_smoke

F64 = torch.float64
B, C = 2, 2
GRID = Grid.rect((5, 4), (0.5, 0.6))  # (h_y, h_x) = (0.1, 0.15)
DT = (0.1, 0.07)

FLOWS = {
    "box": FlowBoundary.box(),
    "periodic": FlowBoundary.periodic(),
    "channel": FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall()))),
    "open_x": FlowBoundary(((Wall(), Wall(slip=True)), (Outflow(), Inflow(-0.5)))),
    "periodic_x_walls_y": FlowBoundary(((Wall(), Wall()), (Periodic(), Periodic()))),
}
SCALAR_BCS = {  # Dirichlet values on walls must not matter (no flux there); on open sides they enter
    "box": Boundary(((ZeroGradient(), Dirichlet(0.4)), (Dirichlet(-0.2), ZeroGradient()))),
    "periodic": Boundary.periodic(2),
    "channel": Boundary(((Dirichlet(0.8), ZeroGradient()), (ZeroGradient(), ZeroGradient()))),
    "open_x": Boundary(((ZeroGradient(), ZeroGradient()), (ZeroGradient(), Dirichlet(0.6)))),
    "periodic_x_walls_y": Boundary(((Dirichlet(0.5), ZeroGradient()), (Periodic(), Periodic()))),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_velocity(seed: int, scale: float = 0.15, grid: Grid = GRID, batch: int = B) -> torch.Tensor:
    """An arbitrary (not divergence-free, walls not imposed) staggered velocity, zero padding."""
    v = scale * torch.randn(batch, 2, grid.shape[0] + 1, grid.shape[1] + 1, generator=_gen(seed), dtype=F64)
    return (v * valid_faces(grid, F64)).contiguous()


def divergence_free_velocity(seed: int, grid: Grid, periodic: bool, scale: float = 1.0, batch: int = B) -> torch.Tensor:
    """``v = curl ψ`` from a random stream function on the cell corners: discretely divergence-free;
    ψ = 0 on the boundary (walls) or wrapped (periodic), so no normal flow through walls."""
    h, w = grid.shape
    hy, hx = grid.spacing
    psi = scale * torch.rand(batch, h + 1, w + 1, generator=_gen(seed), dtype=F64)
    if periodic:
        psi[:, h] = psi[:, 0]
        psi[:, :, w] = psi[:, :, 0]
    else:
        psi[:, 0] = psi[:, h] = psi[:, :, 0] = psi[:, :, w] = 0.0
    v = torch.zeros(batch, 2, h + 1, w + 1, dtype=F64)
    v[:, 0, :, :w] = -(psi[:, :, 1:] - psi[:, :, :-1]) / hx  # v_y at (i, k+½)
    v[:, 1, :h, :] = (psi[:, 1:, :] - psi[:, :-1, :]) / hy  # v_x at (i+½, k)
    return v.contiguous()


def mask(batch: int = 1, grid: Grid = GRID) -> torch.Tensor:
    m = torch.ones(batch, 1, *grid.shape, dtype=F64)
    m[:, 0, 2, 1] = 0.0
    m[-1, 0, 3, 2] = 0.0  # per-sample obstacles differ when batch > 1
    m[:, 0, 0, 3] = 0.0  # a solid cell on the boundary
    return m.contiguous()


def _dt() -> torch.Tensor:
    return torch.tensor(DT, dtype=F64)


def total(q: torch.Tensor, grid: Grid) -> torch.Tensor:
    hy, hx = grid.spacing
    return q.sum(dim=(1, 2, 3)) * hy * hx


# ------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("case", list(FLOWS))
@pytest.mark.parametrize("masked", [False, True], ids=["open", "obstacles"])
def test_gradcheck_scalar_velocity_dt(case, masked):
    q = torch.rand(B, C, *GRID.shape, generator=_gen(1), dtype=F64).requires_grad_()
    v = random_velocity(2).requires_grad_()
    dt = _dt().requires_grad_()
    fluid = mask(B if case == "channel" else 1) if masked else None
    assert flux_substeps(v, dt, GRID) == 1

    def f(q, v, dt):
        return flux_advect(q, v, dt, GRID, FLOWS[case], SCALAR_BCS[case], fluid)

    assert torch.autograd.gradcheck(f, (q, v, dt))


def test_gradcheck_with_substeps():
    q = torch.rand(B, 1, *GRID.shape, generator=_gen(3), dtype=F64).requires_grad_()
    v = random_velocity(4, scale=0.6).requires_grad_()
    dt = _dt().requires_grad_()
    assert flux_substeps(v, dt, GRID) >= 2

    def f(q, v, dt):
        return flux_advect(q, v, dt, GRID, FLOWS["channel"], SCALAR_BCS["channel"], mask())

    assert torch.autograd.gradcheck(f, (q, v, dt), fast_mode=True)


# ------------------------------------------------------------------------------------------ reference
@pytest.mark.parametrize("case", list(FLOWS))
@pytest.mark.parametrize("masked", [False, True], ids=["open", "obstacles"])
@pytest.mark.parametrize("scale", [0.15, 0.8], ids=["one_step", "substeps"])
def test_matches_reference_values_and_gradients(case, masked, scale):
    q = torch.rand(B, C, *GRID.shape, generator=_gen(5), dtype=F64)
    v = random_velocity(6, scale)
    dt = _dt()
    fluid = mask(B) if masked else None
    n = flux_substeps(v, dt, GRID)
    assert (n == 1) == (scale < 0.5)
    args = (GRID, SCALAR_BCS[case], FLOWS[case])

    ins = [t.clone().requires_grad_() for t in (q, v, dt)]
    out = flux_advect(ins[0], ins[1], ins[2], GRID, FLOWS[case], SCALAR_BCS[case], fluid, substeps=n)
    ref_ins = [t.clone().requires_grad_() for t in (q, v, dt)]
    expected = ref.flux_advection(*ref_ins, *args, fluid, substeps=n)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)

    g = torch.randn(out.shape, generator=_gen(7), dtype=F64)
    grads = torch.autograd.grad(out, ins, g)
    ref_grads = torch.autograd.grad(expected, ref_ins, g)
    for name, a, e in zip(("q", "velocity", "dt"), grads, ref_grads):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"d/d{name}: {m}")


# ------------------------------------------------------------------------------------- conservation
@pytest.mark.parametrize("case", ["box", "periodic", "periodic_x_walls_y"])
@pytest.mark.parametrize("masked", [False, True], ids=["open", "obstacles"])
def test_exact_conservation_with_any_velocity(case, masked):
    """Flux form conserves Σ q h_y h_x in closed/periodic domains whatever the velocity (here random,
    not divergence-free, non-zero on the walls and on faces touching obstacles), to round-off."""
    fluid = mask() if masked else None
    q = torch.rand(B, C, *GRID.shape, generator=_gen(8), dtype=F64)
    if fluid is not None:
        q = q * fluid
    v = random_velocity(9, scale=0.5)
    before = total(q, GRID)
    for _ in range(200):
        q = flux_advect(q, v, _dt(), GRID, FLOWS[case], SCALAR_BCS[case], fluid)
    torch.testing.assert_close(total(q, GRID), before, rtol=1e-12, atol=1e-13)
    if fluid is not None:
        assert float((q * (1 - fluid)).abs().max()) == 0.0  # nothing flows into solid cells


def test_open_boundary_budget():
    """With inflow/outflow the change of the total is exactly what the open faces carried: inflow with
    the scalar's Dirichlet value (or the adjacent cell for zero gradient), outflow with the adjacent cell."""
    case = "channel"
    q = torch.rand(B, 1, *GRID.shape, generator=_gen(10), dtype=F64)
    v = random_velocity(11)
    v[0, 0, 0] = v[0, 0, 0].abs()  # sample 0 flows in at y_lo, sample 1 keeps mixed signs
    v[0, 0, -1] = v[0, 0, -1].abs()  # and out at y_hi
    dt = _dt()
    out = flux_advect(q, v, dt, GRID, FLOWS[case], SCALAR_BCS[case])
    hx = GRID.spacing[1]
    u_lo, u_hi = v[:, 0, 0, :-1], v[:, 0, -1, :-1]
    q_lo = torch.where(u_lo > 0, torch.full_like(u_lo, 0.8), q[:, 0, 0])  # Dirichlet 0.8 enters at y_lo
    q_hi = torch.where(u_hi > 0, q[:, 0, -1], q[:, 0, -1])  # zero gradient at y_hi: the adjacent cell
    budget = dt * ((u_lo * q_lo).sum(-1) - (u_hi * q_hi).sum(-1)) * hx
    torch.testing.assert_close(total(out, GRID) - total(q, GRID), budget, rtol=1e-12, atol=1e-13)


# -------------------------------------------------------------------------------------- boundedness
@pytest.mark.parametrize("periodic", [False, True], ids=["box", "periodic"])
def test_bounded_for_divergence_free_velocity(periodic):
    """Under the Courant limit (automatic sub-steps; here C ≈ 3–4 per step) a discretely divergence-free
    flow creates no new extrema: min/max of q hold to round-off, and the total is kept."""
    grid = Grid.rect((16, 12), (1.6, 1.2))
    boundary = FlowBoundary.periodic() if periodic else FlowBoundary.box()
    sb = Boundary.periodic(2) if periodic else Boundary.uniform(ZeroGradient(), 2)
    v = divergence_free_velocity(12, grid, periodic, scale=0.2)
    dt = torch.tensor([1.0, 0.6], dtype=F64)
    assert float(cell_courant(v, dt, grid).max()) > 2.0
    q = torch.zeros(B, 1, *grid.shape, dtype=F64)
    q[:, :, 4:9, 3:7] = 1.0  # a sharp blob: the hardest case for a limiter
    q[:, :, 10:12, 2:10] = 0.5
    before = total(q, grid)
    for _ in range(30):
        q = flux_advect(q, v, dt, grid, boundary, sb)
    assert float(q.min()) >= -1e-13
    assert float(q.max()) <= 1.0 + 1e-13
    assert float(q[:, :, 4:9, 3:7].min()) < 0.99  # it did move
    torch.testing.assert_close(total(q, grid), before, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------------ Courant limit
def test_courant_number_and_substeps():
    v = torch.zeros(1, 2, 6, 5, dtype=F64)
    grid = Grid.rect((5, 4), (0.5, 0.6))
    v[0, 1, 2, 2] = 3.0  # one v_x face: the two cells beside it see |u|/h_x = 20
    dt = torch.tensor([0.1], dtype=F64)
    torch.testing.assert_close(cell_courant(v, dt, grid), torch.tensor([2.0], dtype=F64))
    assert flux_substeps(v, dt, grid) == 2
    assert flux_substeps(v, dt, grid, courant=0.5) == 4
    assert flux_substeps(torch.zeros_like(v), dt, grid) == 1


def test_explicit_substeps_are_checked():
    q = torch.rand(1, 1, *GRID.shape, generator=_gen(13), dtype=F64)
    v = random_velocity(14, scale=1.0, batch=1)
    n = flux_substeps(v, torch.tensor([0.1], dtype=F64), GRID)
    assert n >= 2
    with pytest.raises(ValueError, match=r"dt too large.*substeps"):
        flux_advect(q, v, 0.1, GRID, FLOWS["box"], substeps=n - 1)
    torch.testing.assert_close(flux_advect(q, v, 0.1, GRID, FLOWS["box"], substeps=n), flux_advect(q, v, 0.1, GRID, FLOWS["box"]))
    with pytest.raises(ValueError, match="courant"):
        flux_advect(q, v, 0.1, GRID, FLOWS["box"], courant=1.5)
    with pytest.raises(ValueError, match="substeps"):
        flux_advect(q, v, 0.1, GRID, FLOWS["box"], substeps=0)
    with pytest.raises(ValueError, match="periodic"):
        flux_advect(q, v, 0.1, GRID, FLOWS["box"], Boundary.periodic(2))
    with pytest.raises(TypeError, match="FlowBoundary"):
        flux_advect(q, v, 0.1, GRID, Boundary.periodic(2))


def test_large_steps_stay_bounded_by_substepping():
    """Without sub-steps a Courant number of 8 blows the explicit scheme up; the operator sub-steps."""
    grid = Grid.rect((12, 12), (1.2, 1.2))
    v = divergence_free_velocity(15, grid, periodic=True, scale=1.0, batch=1)
    dt = torch.tensor([1.0], dtype=F64)
    c = float(cell_courant(v, dt, grid).max())
    assert c > 5.0
    q = torch.rand(1, 1, *grid.shape, generator=_gen(16), dtype=F64)
    args = (grid, Boundary.periodic(2), FlowBoundary.periodic())
    good = flux_advect(q, v, dt, grid, FlowBoundary.periodic(), Boundary.periodic(2))
    assert flux_substeps(v, dt, grid) == math.ceil(c)
    assert float(good.min()) >= float(q.min()) - 1e-13 and float(good.max()) <= float(q.max()) + 1e-13
    overshoot = q.clone()
    for _ in range(20):  # one unsplit step at C > 5 (forced through the unchecked kernel call)
        overshoot = _single_step_unchecked(overshoot, v, dt, *args)
    assert float(overshoot.abs().max()) > 10.0 * float(q.abs().max())


def _single_step_unchecked(q, v, dt, grid, sb, boundary):
    from taichi_dp.ops import flux_advection as fa

    hy, hx = grid.spacing
    fluid = torch.ones(1, 1, *grid.shape, dtype=F64)
    consts = (fluid, sb.codes, sb.values, fa.side_kinds(boundary), 1.0 / hy, 1.0 / hx)
    return fa._FLUX_SCALAR((q, v, dt), (q.shape,), consts)[0]


# ------------------------------------------------------------------------------ routing and the scene
def test_scalar_advection_routes_flux():
    q = torch.rand(B, C, *GRID.shape, generator=_gen(17), dtype=F64)
    v = random_velocity(18)
    args = (v, _dt(), GRID, SCALAR_BCS["channel"], FLOWS["channel"])
    out = apply_scalar_advection(q, *args, "flux", mask())
    torch.testing.assert_close(out, flux_advect(q, v, _dt(), GRID, FLOWS["channel"], SCALAR_BCS["channel"], mask()))


@pytest.mark.slow  # a 100-step smoke plume
def test_smoke_plume_density_budget_closes():
    """The issue's budget: the shipped plume (closed box, n = 64, 100 steps of dt = 1) holds exactly what
    was injected (MacCormack gained +122% and semi-Lagrangian +56% here); the density stays ≥ 0."""
    scene = smoke_plume()
    stepper, state = scene.stepper, scene.state0
    assert stepper.density_advection == "flux"
    grid = stepper.grid
    hy, hx = grid.spacing
    dt = float(stepper.dt)
    injected_per_step = dt * float((stepper.source * stepper.flow.fluid).sum()) * hy * hx
    steps = 100
    with torch.no_grad():
        for _ in range(steps):
            state = stepper(state)
    rho = unpack_smoke(state)[1]
    injected = steps * injected_per_step
    assert abs(float(total(rho, grid)) - injected) <= 0.01 * injected
    assert abs(float(total(rho, grid)) - injected) <= 1e-9 * injected  # in fact to round-off
    assert float(rho.min()) >= 0.0
    assert float(rho.max()) > 0.5 * float(stepper.source.max()) * dt  # the smoke is there, not smeared away


def test_smoke_schemes_stay_selectable():
    scene = smoke_plume(16)
    stepper, state = scene.stepper, scene.state0
    for scheme in ("maccormack", "semi_lagrangian"):
        other = dataclasses.replace(stepper, density_advection=scheme)
        assert isinstance(other, SmokePlume)
        with torch.no_grad():
            out = other(other(state))
        assert float(unpack_smoke(out)[1].sum()) > 0.0
