"""3D cell-centred operators and steppers (the same dimension-generic kernels as 1D/2D), against the
plain-PyTorch n-D reference; the 3D grid/boundary constructors and their validation."""

import pytest
import torch
from reference import advect as ref_advect
from reference import (
    boundary_term,
    laplacian,
    laplacian_matrix,
    laplacian_nd,
    maccormack,
    maccormack_nd,
    semi_lagrangian,
    semi_lagrangian_nd,
)
from reference import diffuse as ref_diffuse

from taichi_dp import Boundary, Dirichlet, Grid, Periodic, ZeroGradient
from taichi_dp.grid import ConstantOutside
from taichi_dp.ops import advect, diffuse
from taichi_dp.solvers import AdvectionDiffusion, Burgers, rollout

F64 = torch.float64
B = 2
GRID = Grid.box((4, 5, 6), (1.0, 1.25, 1.8))  # (h_z, h_y, h_x) = (0.25, 0.25, 0.3)
GRID_GC = Grid.box((3, 4, 4), (0.75, 1.0, 1.2))  # the same spacing, fewer cells: for gradcheck
GRID_TINY = Grid.box((2, 3, 4), (0.5, 0.75, 1.2))  # the same spacing again: gradcheck through CG solves
BOUNDARIES = {
    "periodic": Boundary.periodic(3),
    # every kind on some side, different per axis
    "mixed": Boundary(((Dirichlet(0.7), ZeroGradient()), (Periodic(), Periodic()), (ConstantOutside(0.3), Dirichlet(-0.4)))),
    "walls": Boundary(((ZeroGradient(), Dirichlet(-0.6)), (Dirichlet(0.5), ConstantOutside(-0.2)), (Periodic(), Periodic()))),
}
ADVECTION = ("semi_lagrangian", "maccormack")
DIFFUSION = ("explicit", "implicit")
DT = (0.1, 0.13)
RTOL = 1e-13  # CG tolerance of implicit diffusion here


def advection_inputs(seed: int, channels: int = 2, cfl_max: float = 1.5, grid: Grid = GRID):
    """Random ``q`` (B, C, D, H, W), velocity (B, 3, D, H, W) with per-axis CFL |v| dt / h in
    [0.2, 1] * cfl_max (random signs), ``dt`` (B,): float64 leaves requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn((B, channels, *grid.shape), generator=gen, dtype=F64)
    mag = 0.2 + 0.8 * torch.rand((B, 3, *grid.shape), generator=gen, dtype=F64)
    sign = torch.where(torch.rand((B, 3, *grid.shape), generator=gen) < 0.5, -1.0, 1.0).to(F64)
    h = torch.tensor(grid.spacing, dtype=F64).view(1, 3, 1, 1, 1)
    v = sign * mag * cfl_max * h / max(DT)
    return q.requires_grad_(), v.requires_grad_(), torch.tensor(DT, dtype=F64).requires_grad_()


def diffusion_inputs(scheme: str, seed: int, channels: int = 2, grid: Grid = GRID):
    """Random ``u`` and per-batch ``nu``, ``dt``: explicit just below its stability limit
    (ν Δt Σ 1/h² ≈ 0.48), implicit far beyond it (≈ 3)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn((B, channels, *grid.shape), generator=gen, dtype=F64)
    nu = (0.06, 0.085) if scheme == "explicit" else (0.5, 0.6)
    return u.requires_grad_(), torch.tensor(nu, dtype=F64).requires_grad_(), torch.tensor(DT, dtype=F64).requires_grad_()


def _assert_grads_match(got, want, names, atol=1e-10):
    for name, g, w in zip(names, got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=atol, msg=lambda m, n=name: f"d/d{n}: {m}")


# ------------------------------------------------------------------------------------- advection
@pytest.mark.parametrize("scheme", ADVECTION)
@pytest.mark.parametrize("bname", ["mixed", "walls"])
def test_advection_gradcheck_3d(scheme, bname):
    boundary = BOUNDARIES[bname]
    q, v, dt = advection_inputs(seed=len(bname), channels=1, grid=GRID_GC)
    assert torch.autograd.gradcheck(lambda q_, v_, dt_: advect(q_, v_, dt_, GRID_GC, boundary, scheme), (q, v, dt))


@pytest.mark.parametrize("scheme", ADVECTION)
@pytest.mark.parametrize("bname", list(BOUNDARIES))
def test_advection_matches_reference_3d(scheme, bname):
    """Values and gradients (w.r.t. q, velocity, dt) against the independent torch reference."""
    boundary = BOUNDARIES[bname]
    q, v, dt = advection_inputs(seed=100 + len(bname))
    out = advect(q, v, dt, GRID, boundary, scheme)
    want = ref_advect(q, v, dt, GRID, boundary, scheme)
    assert out.shape == q.shape and out.dtype == F64
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    cot = torch.randn(q.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    got = torch.autograd.grad(out, (q, v, dt), cot)
    _assert_grads_match(got, torch.autograd.grad(want, (q, v, dt), cot), ("q", "velocity", "dt"))


@pytest.mark.parametrize("scheme", ADVECTION)
@pytest.mark.parametrize("bname", ["periodic", "mixed"])
def test_large_displacement_matches_reference_3d(scheme, bname):
    """CFL up to ~2N: periodic traces wrap around several times, walls clamp the trace."""
    boundary = BOUNDARIES[bname]
    q, v, dt = advection_inputs(seed=300, cfl_max=2.3 * max(GRID.shape))
    with torch.no_grad():
        out = advect(q, v, dt, GRID, boundary, scheme)
        torch.testing.assert_close(out, ref_advect(q, v, dt, GRID, boundary, scheme), rtol=0, atol=1e-12)


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_velocity_channel_order_3d(channel):
    """Velocity channel ``a`` moves along spatial axis ``a`` (tensor dim ``2 + a``): (v_z, v_y, v_x)."""
    grid = Grid.box((4, 4, 8), (1.0, 1.0, 2.0))  # h = 1/4 on every axis
    q = torch.randn(1, 2, 4, 4, 8, dtype=F64)
    v = torch.zeros(1, 3, 4, 4, 8, dtype=F64)
    v[:, channel] = 1.0  # dt v / h = 0.25 * 1 * 4 = 1 cell
    for scheme in ADVECTION:
        out = advect(q, v, 0.25, grid, Boundary.periodic(3), scheme)
        torch.testing.assert_close(out, torch.roll(q, 1, dims=2 + channel), rtol=0, atol=1e-15)


def test_zero_velocity_is_identity_and_limiter_keeps_range_3d():
    q, v, dt = (t.detach() for t in advection_inputs(seed=3))
    for scheme in ADVECTION:
        torch.testing.assert_close(advect(q, torch.zeros_like(v), dt, GRID, BOUNDARIES["mixed"], scheme), q, rtol=0, atol=1e-15)
    out = advect(q, v, dt, GRID, BOUNDARIES["periodic"], "maccormack")
    assert float(out.min()) >= float(q.min()) - 1e-14 and float(out.max()) <= float(q.max()) + 1e-14


# ------------------------------------------------------------------------------------- diffusion
@pytest.mark.parametrize("scheme", DIFFUSION)
@pytest.mark.parametrize("bname", ["mixed", "walls"])
def test_diffusion_gradcheck_3d(scheme, bname):
    boundary = BOUNDARIES[bname]
    grid = GRID_GC if scheme == "explicit" else GRID_TINY  # implicit: one CG solve per perturbation
    u, nu, dt = diffusion_inputs(scheme, seed=len(bname), channels=1, grid=grid)
    assert torch.autograd.gradcheck(lambda u_, nu_, dt_: diffuse(u_, nu_, dt_, grid, boundary, scheme, rtol=RTOL), (u, nu, dt))


@pytest.mark.parametrize("scheme", DIFFUSION)
@pytest.mark.parametrize("bname", list(BOUNDARIES))
def test_diffusion_matches_reference_3d(scheme, bname):
    """Values and gradients (w.r.t. u, nu, dt) against the torch reference (7-point ghost-value
    Laplacian; implicit: dense solve of the Kronecker-sum matrix)."""
    boundary = BOUNDARIES[bname]
    u, nu, dt = diffusion_inputs(scheme, seed=200 + len(bname))
    out = diffuse(u, nu, dt, GRID, boundary, scheme, rtol=RTOL)
    want = ref_diffuse(u, nu, dt, GRID, boundary, scheme)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    cot = torch.randn(u.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    got = torch.autograd.grad(out, (u, nu, dt), cot)
    _assert_grads_match(got, torch.autograd.grad(want, (u, nu, dt), cot), ("u", "nu", "dt"))


@pytest.mark.parametrize("scheme", DIFFUSION)
def test_diffusion_conserves_mass_and_keeps_wall_constant_3d(scheme):
    u, nu, dt = (t.detach() for t in diffusion_inputs(scheme, seed=9))
    no_dirichlet = Boundary(((ZeroGradient(), ZeroGradient()), (Periodic(), Periodic()), (ZeroGradient(), ZeroGradient())))
    out = diffuse(u, nu, dt, GRID, no_dirichlet, scheme, rtol=RTOL)
    torch.testing.assert_close(out.sum(dim=(2, 3, 4)), u.sum(dim=(2, 3, 4)))
    const = torch.full_like(u, 0.7)
    walls = Boundary.uniform(Dirichlet(0.7), 3)
    torch.testing.assert_close(diffuse(const, nu, dt, GRID, walls, scheme, rtol=RTOL), const, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------- the reference itself
@pytest.mark.parametrize("bname", list(BOUNDARIES))
def test_reference_matrix_agrees_with_ghost_laplacian_3d(bname):
    """Ground-truth self-check: the dense 3D L₀ (Kronecker sum) plus the boundary term equals the
    ghost-value Laplacian."""
    boundary = BOUNDARIES[bname]
    u = torch.randn(B, 2, *GRID.shape, dtype=F64)
    l0 = laplacian_matrix(GRID, boundary)
    assert torch.equal(l0, l0.T)
    via_matrix = (u.reshape(B, 2, -1) @ l0.T).reshape(u.shape) + boundary_term(GRID, boundary)
    torch.testing.assert_close(laplacian(u, GRID, boundary), via_matrix, rtol=0, atol=1e-11)


@pytest.mark.parametrize("ndim", [1, 2])
def test_nd_reference_agrees_with_1d_2d_reference(ndim):
    """The n-D reference (used for 3D) reduces to the separately written 1D/2D reference."""
    grid = Grid.line(7) if ndim == 1 else Grid.rect((5, 6), (1.0, 1.5))
    sides = [(Dirichlet(0.7), ZeroGradient()), (ConstantOutside(0.3), Dirichlet(-0.4))][:ndim]
    boundary = Boundary(tuple(sides))
    gen = torch.Generator().manual_seed(ndim)
    q = torch.randn(B, 2, *grid.shape, generator=gen, dtype=F64)
    v = 3.0 * torch.randn(B, ndim, *grid.shape, generator=gen, dtype=F64)
    torch.testing.assert_close(
        semi_lagrangian_nd(q, v, 0.1, grid, boundary), semi_lagrangian(q, v, 0.1, grid, boundary), rtol=0, atol=1e-14
    )
    torch.testing.assert_close(
        maccormack_nd(q, v, 0.1, grid, boundary), maccormack(q, v, 0.1, grid, boundary), rtol=0, atol=1e-14
    )
    torch.testing.assert_close(laplacian_nd(q, grid, boundary), laplacian(q, grid, boundary), rtol=0, atol=1e-12)


# -------------------------------------------------------------------------------------- steppers
@pytest.mark.parametrize(("diffusion", "advection"), [("explicit", "maccormack"), ("implicit", "semi_lagrangian")])
def test_burgers_3d_rollout_gradcheck(diffusion, advection):
    """Three steps of 3D Burgers: d(final state)/d(u0, nu) by gradcheck (tiny grid, batch 2). With
    implicit diffusion every perturbation costs three CG solves, so that case compares vᵀJu for random
    u, v (fast mode; a wrong or zero Jacobian still fails); the implicit operator's full Jacobian is
    checked by ``test_diffusion_gradcheck_3d``."""
    grid = Grid.box((2, 2, 3), (1.0, 1.0, 1.5))  # h = 0.5 on every axis
    boundary = BOUNDARIES["mixed"]  # shares the compiled kernels of the operator tests
    gen = torch.Generator().manual_seed(4)
    u0 = (0.3 * torch.randn(B, 3, *grid.shape, generator=gen, dtype=F64)).requires_grad_()
    nu = torch.tensor([0.2, 0.3], dtype=F64, requires_grad=True)  # explicit: ν Δt Σ 1/h² ≤ 0.36

    def final(u0_, nu_):
        st = Burgers(grid, boundary, nu_, 0.1, diffusion=diffusion, advection=advection, cg_rtol=RTOL)
        return rollout(st, u0_, 3)[:, -1]

    assert torch.autograd.gradcheck(final, (u0, nu), fast_mode=diffusion == "implicit")


def test_burgers_3d_step_matches_reference_composition():
    """A 3D Burgers step is diffusion then self-advection (PBDL splitting), as the references compose."""
    boundary = BOUNDARIES["mixed"]
    u, _, _ = advection_inputs(seed=21, channels=3, cfl_max=0.8)
    u = (0.2 * u).detach().requires_grad_()
    st = Burgers(GRID, boundary, 0.02, 0.05, advection="maccormack")
    out = st(u)
    mid = ref_diffuse(u, 0.02, 0.05, GRID, boundary, "explicit")
    want = ref_advect(mid, mid, 0.05, GRID, boundary, "maccormack")
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    cot = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    _assert_grads_match(torch.autograd.grad(out, u, cot), torch.autograd.grad(want, u, cot), ("u",))


def test_advection_diffusion_3d_stepper():
    """AdvectionDiffusion on a 3D grid with a velocity shared by the batch: advection then diffusion."""
    boundary = BOUNDARIES["walls"]
    q, v, _ = advection_inputs(seed=22)
    v = v.detach()[:1].contiguous().requires_grad_()
    st = AdvectionDiffusion(GRID, boundary, v, kappa=0.03, dt=0.1, diffusion="implicit", cg_rtol=RTOL)
    out = st(q)
    want = ref_diffuse(ref_advect(q, v.expand(B, -1, -1, -1, -1), 0.1, GRID, boundary), 0.03, 0.1, GRID, boundary, "implicit")
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    cot = torch.randn(q.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    _assert_grads_match(torch.autograd.grad(out, (q, v), cot), torch.autograd.grad(want, (q, v), cot), ("q", "velocity"))


# ---------------------------------------------------------------------------- grid and boundary
def test_grid_box():
    grid = Grid.box((4, 5, 6), (1.0, 1.25, 1.8))
    assert grid.shape == (4, 5, 6) and grid.ndim == 3
    assert grid.bounds == ((0.0, 1.0), (0.0, 1.25), (0.0, 1.8))
    assert grid.spacing == pytest.approx((0.25, 0.25, 0.3))
    assert Grid.box((2, 3, 4)).bounds == ((0.0, 1.0),) * 3
    assert Grid.box((5, 6), (1.0, 1.5), ndim=2) == Grid.rect((5, 6), (1.0, 1.5))
    torch.testing.assert_close(grid.centers(2), torch.tensor([0.15, 0.45, 0.75, 1.05, 1.35, 1.65], dtype=F64))
    assert grid.refine(2).shape == (8, 10, 12) and Grid.box((4, 6, 8)).coarsen(2).shape == (2, 3, 4)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Grid.box((4, 5)), ValueError, r"shape must have 3 entries, got 2"),
        (lambda: Grid.box("456"), TypeError, r"shape must be a tuple of 3 entries"),
        (lambda: Grid.box((4, 1, 6)), ValueError, r"shape\[1\] must be >= 2 cells"),
        (lambda: Grid.box((4, 5, 6.5)), TypeError, r"shape\[2\] must be an integer number of cells"),
        (lambda: Grid.box((4, 5, 6), (1.0, 1.0)), ValueError, r"extent must have 3 entries"),
        (lambda: Grid.box((4, 5, 6), (1.0, -1.0, 1.0)), ValueError, r"extent entries must be finite numbers > 0"),
        (lambda: Grid.box((4, 5, 6), ndim=4), ValueError, r"ndim must be 1, 2 or 3, got 4"),
        (lambda: Grid.rect((4, 5, 6)), ValueError, r"shape must have 2 entries, got 3"),
        (lambda: Grid((2, 2, 2, 2), ((0.0, 1.0),) * 4), ValueError, r"Grid.shape must have 1, 2 or 3 axes"),
        (lambda: Boundary.periodic(4), ValueError, r"ndim must be 1, 2 or 3, got 4"),
        (lambda: Boundary.uniform(ZeroGradient(), 0), ValueError, r"ndim must be 1, 2 or 3, got 0"),
        (lambda: Boundary(((Periodic(), Periodic()),) * 4), ValueError, r"Boundary.sides must have 1, 2 or 3"),
        (
            lambda: Boundary(((Periodic(), Periodic()), (Periodic(), Periodic()), (Periodic(), Dirichlet()))),
            ValueError,
            r"sides\[2\]: Periodic",
        ),
    ],
)
def test_grid_and_boundary_validation_3d(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_3d_operators_validate_their_inputs():
    q, v, dt = (t.detach() for t in advection_inputs(seed=1))
    with pytest.raises(ValueError, match=r"boundary has 2 axes but the grid has 3"):
        advect(q, v, dt, GRID, Boundary.periodic(2))
    with pytest.raises(ValueError, match=r"q must have layout \(B, C, D, H, W\), i.e. 5 dims"):
        advect(q[0], v, dt, GRID, Boundary.periodic(3))
    with pytest.raises(ValueError, match=r"velocity must have 3 channel"):
        advect(q, v[:, :2].contiguous(), dt, GRID, Boundary.periodic(3))
    with pytest.raises(ValueError, match=r"explicit diffusion is unstable"):
        diffuse(q, 1.0, 0.1, GRID, Boundary.periodic(3))
    with pytest.raises(ValueError, match=r"u must have spatial shape \(4, 5, 6\)"):
        Burgers(GRID, Boundary.periodic(3), 0.01, 0.01)(torch.zeros(1, 3, 4, 5, 7, dtype=F64))
