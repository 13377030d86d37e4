"""Pressure projection of staggered velocities (with obstacles) against the dense plain-PyTorch reference."""

import warnings

import pytest
import torch
from reference import divergence_matrix, ref_project

from taichi_dp import Boundary, Grid, Periodic
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall, open_faces, valid_faces
from taichi_dp.ops import NotConvergedWarning, pressure
from taichi_dp.ops.linear_solve import last_solve
from taichi_dp.ops.pressure import divergence, project

F64 = torch.float64
RTOL = 1e-13  # CG tolerance where values/gradients are compared with the dense reference
GRID = Grid.rect((6, 7), (1.2, 1.0))  # (h_y, h_x) = (0.2, 1/7)
SMALL = Grid.rect((5, 4), (1.0, 1.2))  # (h_y, h_x) = (0.2, 0.3)

BOUNDARIES = {
    "box": FlowBoundary.box(),
    "slip_box": FlowBoundary.box(slip=True),
    "channel": FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall()))),  # the karman layout
    "periodic": FlowBoundary.periodic(),
    "periodic_x_walls_y": FlowBoundary(((Wall(), Wall(slip=True)), (Periodic(), Periodic()))),
    "periodic_y_inout_x": FlowBoundary(((Periodic(), Periodic()), (Inflow(0.7), Outflow()))),
    "reverse_channel": FlowBoundary(((Outflow(), Inflow(-0.8)), (Wall(slip=True), Wall()))),
    "two_outflows": FlowBoundary(((Wall(slip=True), Outflow()), (Inflow(0.5), Outflow()))),
}
# base stream function of a divergence-free field satisfying each boundary (v_y = dψ/dx, v_x = -dψ/dy)
BASE_PSI = {
    "box": lambda y, x: 0 * x,
    "slip_box": lambda y, x: 0 * x,
    "channel": lambda y, x: 1.0 * x + 0 * y,
    "periodic": lambda y, x: 0 * x,
    "periodic_x_walls_y": lambda y, x: -0.6 * y + 0 * x,
    "periodic_y_inout_x": lambda y, x: -0.7 * y + 0 * x,
    "reverse_channel": lambda y, x: -0.8 * x + 0 * y,
    "two_outflows": lambda y, x: -0.5 * y + 0 * x,
}
MASKS = ("none", "disc_box", "disc_broadcast")
# Poisson preconditioners of `project` (None: a version of the package without the option)
PRECONDITIONERS = getattr(pressure, "PRECONDITIONERS", (None,))


def proj(v, grid, fb, mask=None, pc=None, **kw):
    """``project`` with ``preconditioner=pc`` unless ``pc`` is None (the default)."""
    if pc is not None:
        kw["preconditioner"] = pc
    return project(v, grid, fb, mask, **kw)


def disc(grid: Grid) -> torch.Tensor:
    """(H, W) fluid mask with a solid disc in the interior."""
    h, w = grid.shape
    i = torch.arange(h, dtype=F64).view(-1, 1) + 0.5 - h / 2
    k = torch.arange(w, dtype=F64).view(1, -1) + 0.5 - w / 2
    return (i**2 + k**2 >= (0.3 * min(h, w)) ** 2).to(F64)


def block(grid: Grid) -> torch.Tensor:
    """(H, W) fluid mask with a solid 2x2 block in the y_lo/x_hi corner (touching an inflow, a wall, a
    periodic seam or an outflow depending on the boundary)."""
    h, w = grid.shape
    m = torch.ones(h, w, dtype=F64)
    m[:2, w - 2 :] = 0
    return m


def make_mask(name: str, grid: Grid) -> torch.Tensor | None:
    if name == "none":
        return None
    if name == "disc_box":  # different obstacles per sample
        return torch.stack([disc(grid), block(grid)])[:, None].contiguous()
    return disc(grid)[None, None].contiguous()  # (1, 1, H, W), broadcast over the batch


def random_v(grid: Grid, batch: int = 2, seed: int = 0) -> torch.Tensor:
    h, w = grid.shape
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, h + 1, w + 1, generator=gen, dtype=F64) * valid_faces(grid, F64)


def fluid_of(mask: torch.Tensor | None, grid: Grid, batch: int) -> torch.Tensor:
    h, w = grid.shape
    return (torch.ones(1, 1, h, w, dtype=F64) if mask is None else mask).expand(batch, 1, h, w)


def closed_face_values(grid: Grid, fb: FlowBoundary, fluid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2, H+1, W+1) mask of faces whose value is prescribed (walls, inflows, faces touching solid,
    padding) and the prescribed value."""
    h, w = grid.shape
    fixed = 1 - open_faces(fluid, fb) * valid_faces(grid, F64)
    value = torch.zeros_like(fixed)
    for c, (lo, hi) in enumerate(fb.sides):
        for side, idx in ((lo, 0), (hi, (h, w)[c])):
            face = (slice(None), c, idx, slice(None, w)) if c == 0 else (slice(None), c, slice(None, h), idx)
            if isinstance(side, (Wall, Inflow)):
                fixed[face] = 1.0
                if isinstance(side, Inflow):
                    value[face] = side.speed * open_faces(fluid, fb)[face]
    return fixed, value


# ---------------------------------------------------------------------------------------- divergence
def test_divergence_of_an_analytic_field_is_exact():
    grid = Grid.rect((4, 6), (1.0, 3.0))  # (h_y, h_x) = (0.25, 0.5): exact in binary
    h, w = grid.shape
    hy, hx = grid.spacing
    v = torch.zeros(2, 2, h + 1, w + 1, dtype=F64)
    v[:, 0, :, :w] = (torch.arange(h + 1, dtype=F64) * hy).view(-1, 1)  # v_y = y
    v[:, 1, :h, :] = 2.0 * (torch.arange(w + 1, dtype=F64) * hx).view(1, -1)  # v_x = 2 x
    assert torch.equal(divergence(v, grid), torch.full((2, 1, h, w), 3.0, dtype=F64))
    v[:, 0, :, w] = 1e3  # padding is not read
    v[:, 1, h, :] = -1e3
    assert torch.equal(divergence(v, grid), torch.full((2, 1, h, w), 3.0, dtype=F64))


def test_divergence_matches_dense_matrix():
    v = random_v(GRID, 3, seed=1)
    expected = (v.reshape(3, -1) @ divergence_matrix(GRID).T).reshape(3, 1, *GRID.shape)
    torch.testing.assert_close(divergence(v, GRID), expected, rtol=1e-14, atol=1e-13)


# ------------------------------------------------------------------------------------ projection
@pytest.mark.parametrize("pc", PRECONDITIONERS)
@pytest.mark.parametrize("mname", MASKS)
@pytest.mark.parametrize("bname", BOUNDARIES)
def test_divergence_free(bname, mname, pc):
    fb, mask = BOUNDARIES[bname], make_mask(mname, GRID)
    v = random_v(GRID, 2, seed=2)
    out, _ = proj(v, GRID, fb, mask, pc, rtol=1e-10)
    fluid = fluid_of(mask, GRID, 2)
    div = divergence(out, GRID) * fluid
    assert div.abs().max() <= 1e-8
    before = (-divergence(v, GRID) * fluid).flatten(1).norm(dim=1)
    assert (div.flatten(1).norm(dim=1) <= 1e-10 * before.clamp(min=1.0) * 1.01).all()  # the CG guarantee (rough)


@pytest.mark.parametrize("pc", PRECONDITIONERS)
@pytest.mark.parametrize("mname", MASKS)
@pytest.mark.parametrize("bname", BOUNDARIES)
@pytest.mark.parametrize("grid", [SMALL, pytest.param(GRID, marks=pytest.mark.slow)], ids=["5x4", "6x7"])  # 6x7: CI only
def test_matches_dense_reference(grid, bname, mname, pc):
    fb, mask = BOUNDARIES[bname], make_mask(mname, grid)
    v = random_v(grid, 2, seed=3)
    out, p = proj(v, grid, fb, mask, pc, rtol=RTOL)
    ref_out, ref_p = ref_project(v, grid, fb, mask)
    torch.testing.assert_close(p, ref_p, rtol=0, atol=1e-9)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-9)


def test_broadcast_mask_equals_repeated_mask():
    fb, mask = BOUNDARIES["channel"], make_mask("disc_broadcast", GRID)
    v = random_v(GRID, 2, seed=4)
    a = project(v, GRID, fb, mask, rtol=RTOL)
    b = project(v, GRID, fb, mask.expand(2, -1, -1, -1).contiguous(), rtol=RTOL)
    c = project(v, GRID, fb, mask > 0.5, rtol=RTOL)  # bool mask
    for x, y, z in zip(a, b, c):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
        torch.testing.assert_close(x, z, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bname", BOUNDARIES)
def test_gradcheck(bname):
    fb, mask = BOUNDARIES[bname], block(SMALL)[None, None].contiguous()  # touches inflows, walls, seams, outflows
    v = random_v(SMALL, 1, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: project(v, SMALL, fb, mask, rtol=RTOL), (v,))


@pytest.mark.parametrize("pc", PRECONDITIONERS)
@pytest.mark.parametrize("mname", MASKS)
@pytest.mark.parametrize("bname", BOUNDARIES)
def test_gradients_match_reference(bname, mname, pc):
    fb, mask = BOUNDARIES[bname], make_mask(mname, SMALL)
    v = random_v(SMALL, 2, seed=6)
    gen = torch.Generator().manual_seed(7)
    wv = torch.randn(v.shape, generator=gen, dtype=F64)
    wp = torch.randn(2, 1, *SMALL.shape, generator=gen, dtype=F64)

    def grad(fn):
        x = v.clone().requires_grad_()
        out, p = fn(x)
        ((wv * out).sum() + (wp * p).sum() + (out**2).sum()).backward()
        return x.grad

    got = grad(lambda x: proj(x, SMALL, fb, mask, pc, rtol=RTOL))
    expected = grad(lambda x: ref_project(x, SMALL, fb, mask))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("pc", PRECONDITIONERS)
@pytest.mark.parametrize("bname", BOUNDARIES)
def test_idempotent(bname, pc):
    fb, mask = BOUNDARIES[bname], make_mask("disc_box", GRID)
    once, _ = proj(random_v(GRID, 2, seed=8), GRID, fb, mask, pc, rtol=1e-12)
    twice, p = proj(once, GRID, fb, mask, pc, rtol=1e-12)
    torch.testing.assert_close(twice, once, rtol=0, atol=1e-9)
    assert p.abs().max() <= 1e-9


def stream_field(grid: Grid, bname: str, fluid: torch.Tensor, seed: int) -> torch.Tensor:
    """A (1, 2, H+1, W+1) discretely divergence-free field satisfying the boundary conditions: the discrete
    curl of ψ = base + bump on the nodes; the bump vanishes on non-periodic boundary nodes and is periodic on
    periodic axes; ψ is constant on the nodes of the (interior) obstacle."""
    h, w = grid.shape
    hy, hx = grid.spacing
    fb = BOUNDARIES[bname]
    y = (torch.arange(h + 1, dtype=F64) * hy).view(-1, 1)
    x = (torch.arange(w + 1, dtype=F64) * hx).view(1, -1)
    gen = torch.Generator().manual_seed(seed)
    bump = torch.randn(h + 1, w + 1, generator=gen, dtype=F64)
    if isinstance(fb.sides[0][0], Periodic):
        bump[h] = bump[0]
    else:
        bump[0] = bump[h] = 0
    if isinstance(fb.sides[1][0], Periodic):
        bump[:, w] = bump[:, 0]
    else:
        bump[:, 0] = bump[:, w] = 0
    psi = BASE_PSI[bname](y, x) + bump
    solid = 1 - fluid[0, 0]
    nodes = torch.nn.functional.pad(solid, (0, 1, 0, 1)) + torch.nn.functional.pad(solid, (1, 0, 0, 1))
    nodes = nodes + torch.nn.functional.pad(solid, (0, 1, 1, 0)) + torch.nn.functional.pad(solid, (1, 0, 1, 0))
    psi = torch.where(nodes > 0, torch.full_like(psi, 0.3), psi)
    v = torch.zeros(1, 2, h + 1, w + 1, dtype=F64)
    v[0, 0, :, :w] = (psi[:, 1:] - psi[:, :-1]) / hx
    v[0, 1, :h, :] = -(psi[1:] - psi[:-1]) / hy
    return v


@pytest.mark.parametrize("pc", PRECONDITIONERS)
@pytest.mark.parametrize("obstacle", [False, True])
@pytest.mark.parametrize("bname", BOUNDARIES)
def test_divergence_free_field_satisfying_the_bcs_is_unchanged(bname, obstacle, pc):
    mask = disc(GRID)[None, None] if obstacle else None
    fluid = fluid_of(mask, GRID, 1)
    v = stream_field(GRID, bname, fluid, seed=9)
    assert divergence(v, GRID).abs().max() <= 1e-12
    out, p = proj(v, GRID, BOUNDARIES[bname], mask, pc, rtol=1e-12)
    torch.testing.assert_close(out, v, rtol=0, atol=1e-12)
    assert p.abs().max() <= 1e-12


@pytest.mark.parametrize("pc", PRECONDITIONERS)
@pytest.mark.parametrize("bname", BOUNDARIES)
def test_output_constraints(bname, pc):
    """Zero fluid-mean pressure without outflow, prescribed values on closed faces, zero padding (even with
    garbage input padding), equal periodic seam faces."""
    fb, mask = BOUNDARIES[bname], make_mask("disc_box", GRID)
    h, w = GRID.shape
    v = random_v(GRID, 2, seed=10)
    v[:, 0, :, w] = 5.0
    v[:, 1, h, :] = -5.0
    out, p = proj(v, GRID, fb, mask, pc, rtol=1e-10)
    fluid = fluid_of(mask, GRID, 2)
    if not fb.has_outflow:
        mean = (p * fluid).flatten(1).sum(1) / fluid.flatten(1).sum(1)
        assert mean.abs().max() <= 1e-13
    else:
        assert ((p * fluid).flatten(1).sum(1) / fluid.flatten(1).sum(1)).abs().max() > 1e-6  # not forced to zero mean
    fixed, value = closed_face_values(GRID, fb, fluid)
    assert torch.equal(out * fixed, value)
    if isinstance(fb.sides[0][0], Periodic):
        assert torch.equal(out[:, 0, 0], out[:, 0, h])
    if isinstance(fb.sides[1][0], Periodic):
        assert torch.equal(out[:, 1, :, 0], out[:, 1, :, w])


SOLID_P_CASES = [(b, pc) for b in ("channel", "periodic_y_inout_x", "two_outflows", "box", "periodic") for pc in PRECONDITIONERS]


@pytest.mark.parametrize(("bname", "pc"), SOLID_P_CASES)
def test_pressure_is_zero_on_solid_cells(bname, pc):
    """Documented: identity rows with right-hand side 0 on solid cells, so p = 0 there (exactly: the solid
    cells are decoupled from the fluid ones)."""
    fb, mask = BOUNDARIES[bname], make_mask("disc_box", GRID)
    _, p = proj(random_v(GRID, 2, seed=16), GRID, fb, mask, pc)
    solid = 1 - fluid_of(mask, GRID, 2)
    assert torch.equal(p * solid, torch.zeros_like(p))


def test_adjoint_tolerance_is_relative():
    fb, mask = BOUNDARIES["box"], make_mask("disc_box", GRID)
    v = random_v(GRID, 2, seed=11)
    wv = torch.randn(v.shape, dtype=F64, generator=torch.Generator().manual_seed(12))

    def grad(scale: float) -> torch.Tensor:
        x = v.clone().requires_grad_()
        out, p = project(x, GRID, fb, mask)  # default rtol = 1e-5
        (scale * ((wv * out).sum() + (p**2).sum())).backward()
        return x.grad

    unscaled, scaled = grad(1.0), grad(1e-12)
    assert scaled.abs().max() > 0
    torch.testing.assert_close(scaled, 1e-12 * unscaled, rtol=1e-6, atol=0)


@pytest.mark.slow  # several tight (1e-8) solves on a 24x20 channel and a periodic box
@pytest.mark.parametrize("pc", PRECONDITIONERS)
def test_warm_start(pc):
    grid = Grid.rect((24, 20), (1.2, 1.0))
    fb, mask = BOUNDARIES["channel"], disc(grid)[None, None].contiguous()
    v = random_v(grid, 2, seed=13)
    _, p0 = proj(v, grid, fb, mask, pc, rtol=1e-8)
    v2 = v + 1e-3 * random_v(grid, 2, seed=14)
    cold_v, cold_p = proj(v2, grid, fb, mask, pc, rtol=1e-8)
    cold_iters = last_solve.iterations
    warm_v, warm_p = proj(v2, grid, fb, mask, pc, pressure_guess=p0, rtol=1e-8)
    warm_iters = last_solve.iterations
    assert warm_iters < cold_iters
    torch.testing.assert_close(warm_p, cold_p, rtol=0, atol=1e-6)
    torch.testing.assert_close(warm_v, cold_v, rtol=0, atol=1e-6)
    # no-outflow case: the guess's arbitrary constant does not leak into the result
    fb = BOUNDARIES["periodic"]
    _, p0 = proj(v, grid, fb, mask, pc, rtol=1e-8)
    cold_v, cold_p = proj(v2, grid, fb, mask, pc, rtol=1e-8)
    warm_v, warm_p = proj(v2, grid, fb, mask, pc, pressure_guess=(p0 + 3.0).contiguous(), rtol=1e-8)
    torch.testing.assert_close(warm_p, cold_p, rtol=0, atol=1e-6)
    torch.testing.assert_close(warm_v, cold_v, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------- bad input
def test_bad_inputs():
    h, w = SMALL.shape
    fb = FlowBoundary.box()
    v = random_v(SMALL, 2)
    with pytest.raises(ValueError, match=r"staggered velocity.*to_staggered"):
        project(torch.zeros(2, 2, h, w, dtype=F64), SMALL, fb)
    with pytest.raises(ValueError, match="staggered"):
        divergence(torch.zeros(2, 2, h, w, dtype=F64), SMALL)
    with pytest.raises(TypeError, match=r"v must be a torch\.Tensor"):
        project(v.tolist(), SMALL, fb)
    with pytest.raises(ValueError, match=r"fluid must have shape \(1 or 2, 1, 5, 4\)"):
        project(v, SMALL, fb, torch.ones(2, 1, w, h, dtype=F64))
    with pytest.raises(ValueError, match="fluid must have shape"):
        project(v, SMALL, fb, torch.ones(3, 1, h, w, dtype=F64))
    with pytest.raises(ValueError, match="fluid must have shape"):
        project(v, SMALL, fb, torch.ones(h, w, dtype=F64))
    with pytest.raises(TypeError, match=r"fluid must be a torch\.Tensor"):
        project(v, SMALL, fb, [[1.0]])
    empty = torch.ones(2, 1, h, w, dtype=F64)
    empty[1] = 0
    with pytest.raises(ValueError, match=r"no fluid cell in sample\(s\) \[1\]"):
        project(v, SMALL, fb, empty)
    with pytest.raises(TypeError, match=r"dtype torch\.float64"):
        project(v.float(), SMALL, fb)
    bad = v.clone()
    bad[0, 1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        project(bad, SMALL, fb)
    with pytest.raises(TypeError, match="boundary must be a FlowBoundary, got Boundary"):
        project(v, SMALL, Boundary.periodic(2))
    with pytest.raises(ValueError, match="pressure_guess"):
        project(v, SMALL, fb, pressure_guess=torch.zeros(2, 1, w, h, dtype=F64))
    with pytest.raises(ValueError, match="2D grid"):
        project(v, Grid.line(5), fb)


@pytest.mark.parametrize("pc", PRECONDITIONERS)
def test_not_converged_warning(pc):
    grid = Grid.rect((24, 20), (1.2, 1.0))
    v = random_v(grid, 2, seed=15)
    with pytest.warns(NotConvergedWarning, match="did not converge in 1 iterations"):
        proj(v, grid, FlowBoundary.box(), None, pc, rtol=1e-10, max_iter=1)
    assert not last_solve.converged and last_solve.iterations == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proj(v, grid, FlowBoundary.box(), None, pc, rtol=1e-10)
    assert last_solve.converged


@pytest.mark.skipif(PRECONDITIONERS == (None,), reason="no preconditioner option")
def test_unknown_preconditioner():
    with pytest.raises(ValueError, match="preconditioner must be one of"):
        project(random_v(SMALL, 1), SMALL, FlowBoundary.box(), preconditioner="jacobi")
