"""Advection (semi-Lagrangian and MacCormack), 1D and 2D, against the plain-PyTorch reference."""

import pytest
import torch
from cases import BOUNDARIES, CASES, F64, GRIDS, B, C
from reference import advect as ref_advect

from taichi_dp import Boundary, Grid
from taichi_dp.ops import advect

DT = (0.1, 0.13)

SCHEMES = ("semi_lagrangian", "maccormack")


def make_inputs(ndim: int, seed: int, cfl_max: float = 1.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``q`` (B, C, *shape), velocity (B, ndim, *shape) with per-axis CFL |v| dt / h in
    [0.2, 1] * cfl_max (random signs), and ``dt`` (B,), all float64 leaves requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    grid = GRIDS[ndim]
    q = torch.randn((B, C, *grid.shape), generator=gen, dtype=F64)
    mag = 0.2 + 0.8 * torch.rand((B, ndim, *grid.shape), generator=gen, dtype=F64)
    sign = torch.where(torch.rand((B, ndim, *grid.shape), generator=gen) < 0.5, -1.0, 1.0).to(F64)
    h = torch.tensor(grid.spacing, dtype=F64).view(1, ndim, *([1] * ndim))
    v = sign * mag * cfl_max * h / max(DT)
    dt = torch.tensor(DT, dtype=F64)
    return q.requires_grad_(), v.requires_grad_(), dt.requires_grad_()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("ndim", "bname"), CASES)
def test_gradcheck(scheme, ndim, bname):
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    q, v, dt = make_inputs(ndim, seed=10 * ndim + len(bname))
    assert torch.autograd.gradcheck(lambda q_, v_, dt_: advect(q_, v_, dt_, grid, boundary, scheme), (q, v, dt))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("ndim", "bname"), CASES)
def test_forward_matches_reference(scheme, ndim, bname):
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    q, v, dt = make_inputs(ndim, seed=100 + 10 * ndim + len(bname))
    out = advect(q, v, dt, grid, boundary, scheme)
    assert out.shape == q.shape and out.dtype == F64
    torch.testing.assert_close(out, ref_advect(q, v, dt, grid, boundary, scheme), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("ndim", "bname"), CASES)
def test_gradients_match_reference(scheme, ndim, bname):
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    q, v, dt = make_inputs(ndim, seed=200 + 10 * ndim + len(bname))
    cot = torch.randn(q.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    got = torch.autograd.grad(advect(q, v, dt, grid, boundary, scheme), (q, v, dt), cot)
    want = torch.autograd.grad(ref_advect(q, v, dt, grid, boundary, scheme), (q, v, dt), cot)
    for name, g, w in zip(("q", "velocity", "dt"), got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-10, msg=lambda m, n=name: f"d/d{n}: {m}")


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("ndim", "bname"), [(1, "periodic"), (1, "dirichlet"), (2, "periodic_y_walls_x"), (2, "dirichlet")])
def test_large_displacement_matches_reference(scheme, ndim, bname):
    """CFL up to ~2N: periodic traces wrap around the domain several times, walls clamp the trace."""
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    q, v, dt = make_inputs(ndim, seed=300 + ndim, cfl_max=2.3 * max(grid.shape))
    out = advect(q, v, dt, grid, boundary, scheme)
    torch.testing.assert_close(out, ref_advect(q, v, dt, grid, boundary, scheme), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("ndim", "bname"), [(1, "dirichlet"), (2, "walls_y_periodic_x")])
def test_zero_velocity_is_identity(scheme, ndim, bname):
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    q, v, dt = make_inputs(ndim, seed=3)
    out = advect(q, torch.zeros_like(v), dt, grid, boundary, scheme)
    torch.testing.assert_close(out, q.detach(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_periodic_integer_shift_is_roll_1d(scheme):
    """dt v / h = 2 exactly (h = 1/8, dt = 1/4, v = 1): both schemes are an exact roll by 2 cells."""
    grid = Grid.line(8)
    q = torch.randn(1, 2, 8, dtype=F64)
    v = torch.ones(1, 1, 8, dtype=F64)
    out = advect(q, v, 0.25, grid, Boundary.periodic(1), scheme)
    torch.testing.assert_close(out, torch.roll(q, 2, dims=-1), rtol=0, atol=1e-15)


@pytest.mark.parametrize(("axis", "channel"), [(2, 0), (3, 1)])
def test_2d_velocity_channel_order(axis, channel):
    """Channel 0 of the velocity moves along rows (y, dim 2), channel 1 along columns (x, dim 3)."""
    grid = Grid.rect((4, 8), (1.0, 2.0))  # h_y = h_x = 1/4
    q = torch.randn(1, 1, 4, 8, dtype=F64)
    v = torch.zeros(1, 2, 4, 8, dtype=F64)
    v[:, channel] = 1.0  # dt v / h = 0.25 * 1 * 4 = 1 cell
    out = advect(q, v, 0.25, grid, Boundary.periodic(2))
    torch.testing.assert_close(out, torch.roll(q, 1, dims=axis), rtol=0, atol=1e-15)


@pytest.mark.parametrize(("ndim", "bname"), [(1, "periodic"), (2, "zero_gradient")])
def test_maccormack_limiter_keeps_range(ndim, bname):
    """Without Dirichlet values the limited MacCormack step never leaves the range of q."""
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    q, v, dt = make_inputs(ndim, seed=5)
    with torch.no_grad():
        out = advect(q, v, dt, grid, boundary, "maccormack")
    assert float(out.min()) >= float(q.detach().min()) - 1e-14
    assert float(out.max()) <= float(q.detach().max()) + 1e-14


@pytest.mark.parametrize("form", ["float", "0d", "(1,)", "(B,)"])
def test_dt_forms_agree(form):
    grid, boundary = GRIDS[1], BOUNDARIES[1]["dirichlet_lo_zerograd_hi"]
    q, v, _ = make_inputs(1, seed=4)
    dt = {
        "float": 0.12,
        "0d": torch.tensor(0.12, dtype=F64),
        "(1,)": torch.tensor([0.12], dtype=F64),
        "(B,)": torch.full((B,), 0.12, dtype=F64),
    }[form]
    out = advect(q, v, dt, grid, boundary, "maccormack")
    torch.testing.assert_close(out, ref_advect(q, v, 0.12, grid, boundary, "maccormack"), rtol=0, atol=1e-12)
