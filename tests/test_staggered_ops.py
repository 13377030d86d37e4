"""Staggered (MAC) advection and viscosity against the plain-PyTorch reference in ``reference_mac``."""

import pytest
import reference_mac as ref
import torch

from taichi_dp.grid import Boundary, Dirichlet, Grid, Periodic, ZeroGradient
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall, apply_boundary, valid_faces
from taichi_dp.ops.staggered_advection import apply_scalar_advection, apply_velocity_advection
from taichi_dp.ops.staggered_diffusion import apply_velocity_diffusion

F64 = torch.float64
B, C = 2, 2
GRID = Grid.rect((5, 4), (0.5, 0.6))  # (h_y, h_x) = (0.1, 0.15)
DT = (0.1, 0.07)
NU = (0.02, 0.035)  # nu dt (1/hy² + 1/hx²) <= 0.2

FLOWS = {
    "channel": FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall(slip=True)))),
    "box": FlowBoundary.box(),
    "periodic": FlowBoundary.periodic(),
    "periodic_x_walls_y": FlowBoundary(((Wall(), Wall()), (Periodic(), Periodic()))),
    # moving walls: a lid at y_hi sliding along x, the x_lo wall sliding along y (tangential ghost values)
    "moving_walls": FlowBoundary(((Wall(), Wall(velocity=0.7)), (Wall(velocity=-0.4), Outflow()))),
}
SCALAR_BCS = {  # one per flow case (each distinct Boundary compiles its own kernels)
    "channel": Boundary(((Dirichlet(0.8), ZeroGradient()), (ZeroGradient(), Dirichlet(-0.3)))),
    "box": Boundary(((ZeroGradient(), Dirichlet(0.4)), (Dirichlet(-0.2), ZeroGradient()))),
    "periodic": Boundary.periodic(2),
    "periodic_x_walls_y": Boundary(((Dirichlet(0.5), ZeroGradient()), (Periodic(), Periodic()))),
    "moving_walls": Boundary(((ZeroGradient(), Dirichlet(0.6)), (ZeroGradient(), ZeroGradient()))),
}
SCHEMES = ("semi_lagrangian", "maccormack")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_velocity(seed: int, cfl: tuple[float, float] = (0.3, 1.5), padding: float = 0.0) -> torch.Tensor:
    """Staggered (B, 2, H+1, W+1) velocity with per-axis CFL |v| max(dt) / h in ``cfl`` and random signs;
    ``padding`` fills the padding entries (the ops must not read them)."""
    g = _gen(seed)
    shape = (B, 2, GRID.shape[0] + 1, GRID.shape[1] + 1)
    mag = cfl[0] + (cfl[1] - cfl[0]) * torch.rand(shape, generator=g, dtype=F64)
    sign = torch.where(torch.rand(shape, generator=g, dtype=F64) < 0.5, -1.0, 1.0)
    h = torch.tensor(GRID.spacing, dtype=F64).view(1, 2, 1, 1)
    mask = valid_faces(GRID, F64)
    return sign * mag * h / max(DT) * mask + padding * (1 - mask)


def dt_tensor() -> torch.Tensor:
    return torch.tensor(DT, dtype=F64)


def leaves(*ts: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in ts]


def assert_grads_equal(got, want, names, atol=1e-10):
    for name, g, w in zip(names, got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=atol, msg=lambda m, n=name: f"d/d{n}: {m}")


# ------------------------------------------------------------------------------ velocity advection
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("flow", FLOWS)
def test_velocity_advection_forward(scheme, flow):
    v, vel = random_velocity(1, padding=7.0), random_velocity(2, padding=-3.0)
    out = apply_velocity_advection(v, vel, dt_tensor(), GRID, FLOWS[flow], scheme)
    want = ref.velocity_advection(v, vel, dt_tensor(), GRID, FLOWS[flow], scheme)
    assert out.shape == v.shape and out.dtype == F64
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    # self-advection (velocity is v itself)
    out = apply_velocity_advection(vel, vel, dt_tensor(), GRID, FLOWS[flow], scheme)
    torch.testing.assert_close(out, ref.velocity_advection(vel, vel, dt_tensor(), GRID, FLOWS[flow], scheme), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("flow", FLOWS)
def test_velocity_advection_gradients(scheme, flow):
    v, vel, dt = leaves(random_velocity(3), random_velocity(4), dt_tensor())
    cot = torch.randn(v.shape, generator=_gen(5), dtype=F64)
    got = torch.autograd.grad(apply_velocity_advection(v, vel, dt, GRID, FLOWS[flow], scheme), (v, vel, dt), cot)
    want = torch.autograd.grad(ref.velocity_advection(v, vel, dt, GRID, FLOWS[flow], scheme), (v, vel, dt), cot)
    assert_grads_equal(got, want, ("v", "velocity", "dt"))
    # self-advection: both paths into the same tensor
    got = torch.autograd.grad(apply_velocity_advection(vel, vel, dt, GRID, FLOWS[flow], scheme), (vel, dt), cot)
    want = torch.autograd.grad(ref.velocity_advection(vel, vel, dt, GRID, FLOWS[flow], scheme), (vel, dt), cot)
    assert_grads_equal(got, want, ("velocity", "dt"))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("flow", FLOWS)
def test_velocity_advection_gradcheck(scheme, flow):
    """Boundary faces sit on a clamp kink (their back-trace starts on the boundary): impose the boundary
    conditions before and after the op, as a stepper does."""
    fb = FLOWS[flow]
    v, vel, dt = leaves(random_velocity(6), random_velocity(7), dt_tensor())

    def f(v_, vel_, dt_):
        return apply_boundary(
            apply_velocity_advection(apply_boundary(v_, GRID, fb), apply_boundary(vel_, GRID, fb), dt_, GRID, fb, scheme),
            GRID,
            fb,
        )

    def f_self(v_, dt_):
        w = apply_boundary(v_, GRID, fb)
        return apply_boundary(apply_velocity_advection(w, w, dt_, GRID, fb, scheme), GRID, fb)

    assert torch.autograd.gradcheck(f, (v, vel, dt))
    assert torch.autograd.gradcheck(f_self, (vel, dt))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_velocity_integer_shift_is_roll(scheme):
    """Constant velocity with dt v / h = (2, -1) cells on a periodic grid: the face values roll."""
    fb, (h, w), (hy, hx) = FLOWS["periodic"], GRID.shape, GRID.spacing
    dt = dt_tensor()
    vel = torch.zeros(B, 2, h + 1, w + 1, dtype=F64)
    vel[:, 0, :, :w] = (2 * hy / dt).view(B, 1, 1)
    vel[:, 1, :h, :] = (-1 * hx / dt).view(B, 1, 1)
    v = apply_boundary(random_velocity(8), GRID, fb)  # seams equal
    out = apply_velocity_advection(v, vel, dt, GRID, fb, scheme)
    torch.testing.assert_close(out[:, 0, :h, :w], torch.roll(v[:, 0, :h, :w], (2, -1), (1, 2)), rtol=0, atol=1e-12)
    torch.testing.assert_close(out[:, 1, :h, :w], torch.roll(v[:, 1, :h, :w], (2, -1), (1, 2)), rtol=0, atol=1e-12)
    torch.testing.assert_close(out, apply_boundary(out, GRID, fb), rtol=0, atol=1e-12)  # seams stay equal, padding 0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_constant_velocity_preserved_by_self_advection(scheme):
    fb, (h, w) = FLOWS["periodic"], GRID.shape
    v = torch.zeros(B, 2, h + 1, w + 1, dtype=F64)
    v[:, 0, :, :w], v[:, 1, :h, :] = 0.37, -0.81  # CFL (0.37, 0.54) in batch 0
    out = apply_velocity_advection(v, v, dt_tensor(), GRID, fb, scheme)
    torch.testing.assert_close(out, v, rtol=0, atol=1e-13)


# -------------------------------------------------------------------------------- scalar advection
def random_scalar(seed: int) -> torch.Tensor:
    return torch.randn((B, C, *GRID.shape), generator=_gen(seed), dtype=F64)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("flow", FLOWS)
def test_scalar_advection_forward(scheme, flow):
    q, vel = random_scalar(11), random_velocity(12, padding=5.0)
    args = (GRID, SCALAR_BCS[flow], FLOWS[flow], scheme)
    out = apply_scalar_advection(q, vel, dt_tensor(), *args)
    assert out.shape == q.shape and out.dtype == F64
    torch.testing.assert_close(out, ref.scalar_advection(q, vel, dt_tensor(), *args), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("flow", FLOWS)
def test_scalar_advection_gradients(scheme, flow):
    q, vel, dt = leaves(random_scalar(13), random_velocity(14), dt_tensor())
    args = (GRID, SCALAR_BCS[flow], FLOWS[flow], scheme)
    cot = torch.randn(q.shape, generator=_gen(15), dtype=F64)
    got = torch.autograd.grad(apply_scalar_advection(q, vel, dt, *args), (q, vel, dt), cot)
    want = torch.autograd.grad(ref.scalar_advection(q, vel, dt, *args), (q, vel, dt), cot)
    assert_grads_equal(got, want, ("q", "velocity", "dt"))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("flow", FLOWS)
def test_scalar_advection_gradcheck(scheme, flow):
    q, vel, dt = leaves(random_scalar(16), random_velocity(17), dt_tensor())
    args = (GRID, SCALAR_BCS[flow], FLOWS[flow], scheme)
    assert torch.autograd.gradcheck(lambda q_, vel_, dt_: apply_scalar_advection(q_, vel_, dt_, *args), (q, vel, dt))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scalar_integer_shift_is_roll(scheme):
    fb, (h, w), (hy, hx) = FLOWS["periodic"], GRID.shape, GRID.spacing
    dt = dt_tensor()
    vel = torch.zeros(B, 2, h + 1, w + 1, dtype=F64)
    vel[:, 0, :, :w] = (-1 * hy / dt).view(B, 1, 1)
    vel[:, 1, :h, :] = (3 * hx / dt).view(B, 1, 1)
    q = random_scalar(18)
    out = apply_scalar_advection(q, vel, dt, GRID, SCALAR_BCS["periodic"], fb, scheme)
    torch.testing.assert_close(out, torch.roll(q, (-1, 3), (2, 3)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scalar_dirichlet_value_enters_at_inflow(scheme):
    """Channel flow along +y with dt v_y / h_y = 1: the first row is traced back past the inflow face and
    takes the Dirichlet value 0.8 there; the interior rows move up by one cell."""
    fb, sb, (h, w), hy = FLOWS["channel"], SCALAR_BCS["channel"], GRID.shape, GRID.spacing[0]
    dt = dt_tensor()
    vel = torch.zeros(B, 2, h + 1, w + 1, dtype=F64)
    vel[:, 0, :, :w] = (hy / dt).view(B, 1, 1)
    q = random_scalar(19)
    out = apply_scalar_advection(q, vel, dt, GRID, sb, fb, scheme)
    torch.testing.assert_close(out[:, :, 0], torch.full_like(out[:, :, 0], 0.8), rtol=0, atol=1e-12)
    # interior rows shift; the last row differs for MacCormack (its forward trace clamps at the outflow)
    torch.testing.assert_close(out[:, :, 1:-1], q[:, :, :-2], rtol=0, atol=1e-12)
    torch.testing.assert_close(out, ref.scalar_advection(q, vel, dt, GRID, sb, fb, scheme), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------- diffusion
def nu_tensor() -> torch.Tensor:
    return torch.tensor(NU, dtype=F64)


def equal_seams(v: torch.Tensor, fb: FlowBoundary) -> torch.Tensor:
    """Copy face 0 onto face N along periodic normal axes (differentiably). Inputs of the diffusion must have
    equal seams: for face N the kernel reads its own value but the tangential neighbours of face 0."""
    h, w = GRID.shape
    vy, vx = v[:, 0], v[:, 1]
    if isinstance(fb.sides[0][0], Periodic):
        vy = torch.cat([vy[:, :h], vy[:, :1]], dim=1)
    if isinstance(fb.sides[1][0], Periodic):
        vx = torch.cat([vx[:, :, :w], vx[:, :, :1]], dim=2)
    return torch.stack([vy, vx], dim=1)


@pytest.mark.parametrize("flow", FLOWS)
def test_velocity_diffusion_forward_and_gradients(flow):
    fb = FLOWS[flow]
    v = equal_seams(random_velocity(21, padding=4.0), fb)
    out = apply_velocity_diffusion(v, nu_tensor(), dt_tensor(), GRID, fb)
    want = ref.velocity_diffusion(v, nu_tensor(), dt_tensor(), GRID, fb)
    assert out.shape == want.shape and out.dtype == F64
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)

    v, nu, dt = leaves(random_velocity(22), nu_tensor(), dt_tensor())
    cot = torch.randn(v.shape, generator=_gen(23), dtype=F64)
    got = torch.autograd.grad(apply_velocity_diffusion(equal_seams(v, fb), nu, dt, GRID, fb), (v, nu, dt), cot)
    want = torch.autograd.grad(ref.velocity_diffusion(equal_seams(v, fb), nu, dt, GRID, fb), (v, nu, dt), cot)
    assert_grads_equal(got, want, ("v", "nu", "dt"))


@pytest.mark.parametrize("flow", FLOWS)
def test_velocity_diffusion_gradcheck(flow):
    fb = FLOWS[flow]
    v, nu, dt = leaves(random_velocity(24), nu_tensor(), dt_tensor())

    def f(v_, nu_, dt_):
        return apply_boundary(apply_velocity_diffusion(apply_boundary(v_, GRID, fb), nu_, dt_, GRID, fb), GRID, fb)

    assert torch.autograd.gradcheck(f, (v, nu, dt))


def test_diffusion_preserves_constant_periodic_velocity():
    (h, w) = GRID.shape
    v = torch.zeros(B, 2, h + 1, w + 1, dtype=F64)
    v[:, 0, :, :w], v[:, 1, :h, :] = 0.4, -1.3
    out = apply_velocity_diffusion(v, nu_tensor(), dt_tensor(), GRID, FLOWS["periodic"])
    torch.testing.assert_close(out, v, rtol=0, atol=1e-13)


# --------------------------------------------------------------------------- reference self-checks
def test_reference_f32_matches_f64():
    fb, sb = FLOWS["channel"], SCALAR_BCS["channel"]
    v, vel, q = random_velocity(31), random_velocity(32), random_scalar(33)
    for cast in (torch.float32, F64):
        a = [t.to(cast) for t in (v, vel, q, dt_tensor(), nu_tensor())]
        res = (
            ref.velocity_advection(a[0], a[1], a[3], GRID, fb, "maccormack"),
            ref.scalar_advection(a[2], a[1], a[3], GRID, sb, fb, "maccormack"),
            ref.velocity_diffusion(a[0], a[4], a[3], GRID, fb),
        )
        if cast == torch.float32:
            r32 = res
            assert all(r.dtype == torch.float32 for r in res)
    for a, b in zip(r32, res):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=2e-5)
