"""Fluid enclosed by solid (an isolated pocket) inside a larger flow: what the projection guarantees.

Each pocket is its own all-Neumann block of the pressure system, singular by one constant. Its
right-hand side sums to zero (every face between the pocket and the solid is closed), so the system is
consistent and CG converges; the velocity is projected exactly, while the pocket's pressure level is
arbitrary (it depends on the start vector), so only its gradient means something.
"""

import pytest
import torch
from test_pressure import BOUNDARIES, PRECONDITIONERS, proj, random_v

from taichi_dp import Grid
from taichi_dp.ops.pressure import divergence, project

F64 = torch.float64
GRID = Grid.rect((16, 16), (1.0, 1.0))


def ring_with_pocket() -> torch.Tensor:
    """(1, 1, 16, 16) fluid mask: a solid square ring (cells 4..11) enclosing a 4×4 fluid pocket."""
    m = torch.ones(16, 16, dtype=F64)
    m[4:12, 4:12] = 0
    m[6:10, 6:10] = 1
    return m[None, None].contiguous()


@pytest.mark.parametrize("pc", PRECONDITIONERS)
@pytest.mark.parametrize("bname", ["channel", "box", "periodic"])
def test_a_pocket_is_projected_divergence_free(bname, pc):
    fluid = ring_with_pocket()
    v = random_v(GRID, 2, seed=5)
    out, p = proj(v, GRID, BOUNDARIES[bname], fluid, pc, rtol=1e-10)
    div = divergence(out, GRID) * fluid
    assert div.abs().max() <= 1e-8
    pocket = div[..., 6:10, 6:10]
    assert pocket.abs().max() <= 1e-8 and divergence(v, GRID)[..., 6:10, 6:10].abs().max() > 0.1  # it was not before
    assert torch.isfinite(p).all()


@pytest.mark.parametrize("bname", ["channel", "box"])
def test_pocket_velocity_is_unique_but_its_pressure_level_is_not(bname):
    """Two start vectors: the same projected velocity everywhere, pressures that differ in the pocket by
    a constant (the pocket's null space) and agree elsewhere up to the outer system's own freedom."""
    fluid = ring_with_pocket()
    v = random_v(GRID, 1, seed=9)
    fb = BOUNDARIES[bname]
    guess = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=F64) * 3
    out0, p0 = project(v, GRID, fb, fluid, rtol=1e-12)
    out1, p1 = project(v, GRID, fb, fluid, rtol=1e-12, pressure_guess=guess)
    torch.testing.assert_close(out1, out0, rtol=0, atol=1e-9)
    dp = (p1 - p0)[..., 6:10, 6:10]
    assert float(dp.max() - dp.min()) <= 1e-8  # a constant shift inside the pocket


def test_gradient_through_the_velocity_of_a_pocket():
    fluid = ring_with_pocket()
    v = random_v(GRID, 1, seed=3).requires_grad_()
    w = random_v(GRID, 1, seed=4)
    fb = BOUNDARIES["channel"]
    assert torch.autograd.gradcheck(lambda x: project(x, GRID, fb, fluid, rtol=1e-13)[0] * w, (v,), fast_mode=True)
