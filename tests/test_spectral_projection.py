"""The spectral (FFT) pressure projection of fully periodic boxes (:mod:`taichi_dp.ops.spectral_projection`):
its symbol against the dense MAC Laplacian, values against the multigrid path and the dense reference
(:mod:`reference_projection`) in 2D and 3D (odd and even N, anisotropic h), divergence-free and idempotent
results, gradients (gradcheck, double backward, autograd through the dense reference, the multigrid
adjoint), float32, the refusal messages, the selection through ``SolveOptions(method="fft")`` and the
periodic Taylor–Green scene stepped identically by both methods."""

import dataclasses
import math

import pytest
import reference_projection as rp
import torch

from taichi_dp import Grid, Periodic
from taichi_dp.grid.staggered import FlowBoundary, Outflow, Wall, apply_boundary
from taichi_dp.ops.pressure import apply_projection, divergence, fluid_mask, project
from taichi_dp.ops.solve_options import METHODS, SolveOptions, projection_kwargs
from taichi_dp.ops.spectral_projection import (
    apply_spectral_projection,
    check_spectral,
    laplacian_symbol,
    spectral_applicable,
)
from taichi_dp.runtime import ensure_init
from taichi_dp.scenes import taylor_green

F64 = torch.float64


def grid_of(shape: tuple[int, ...], extent: tuple[float, ...]) -> Grid:
    return Grid(shape, tuple((0.0, e) for e in extent))


# 2D even × even and odd × odd, 3D mixed; every one anisotropic (h differs per axis)
GRIDS = {
    "2d_even": grid_of((6, 8), (1.0, 1.7)),
    "2d_odd": grid_of((5, 7), (0.9, 2.0)),
    "3d_mixed": grid_of((4, 5, 6), (1.0, 0.6, 2.1)),
}


def velocity(grid: Grid, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rt = ensure_init()
    v = torch.randn(batch, grid.ndim, *(n + 1 for n in grid.shape), generator=gen, dtype=F64)
    return v.to(rt.device)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


def fft(v: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    return project(v, grid, FlowBoundary.periodic(grid.ndim), preconditioner="fft")


@pytest.mark.parametrize("name", ["2d_odd", "3d_mixed"])
def test_symbol_is_the_eigenvalue_of_the_dense_mac_laplacian(name):
    """``L e_k = λ(k) e_k`` for every Fourier mode of the half-spectrum, with ``L = D G`` assembled densely."""
    grid = GRIDS[name]
    bnd = FlowBoundary.periodic(grid.ndim)
    lap = rp.divergence_matrix(grid) @ rp.gradient_matrix(grid, bnd, torch.ones(grid.shape, dtype=F64))
    lam = laplacian_symbol(grid.shape, grid.spacing)
    idx = torch.meshgrid(*(torch.arange(n, dtype=F64) for n in grid.shape), indexing="ij")
    for k in torch.cartesian_prod(*(torch.arange(m) for m in lam.shape)).view(-1, grid.ndim).tolist():
        phase = sum(2 * math.pi * k[a] * idx[a] / grid.shape[a] for a in range(grid.ndim))
        mode = torch.polar(torch.ones_like(phase), phase).reshape(-1)
        torch.testing.assert_close(lap.to(mode.dtype) @ mode, lam[tuple(k)] * mode, atol=1e-10, rtol=0)
    assert float(lam.flatten()[0]) == 0.0 and bool((lam.flatten()[1:] < 0).all())


@pytest.mark.parametrize("name", list(GRIDS))
def test_matches_the_dense_reference_and_is_divergence_free(name):
    grid = GRIDS[name]
    v = velocity(grid, batch=3)
    out, p = fft(v, grid)
    ref_out, ref_p = rp.project(v.cpu(), grid, FlowBoundary.periodic(grid.ndim))
    torch.testing.assert_close(out.cpu(), ref_out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(p.cpu(), ref_p, atol=1e-12, rtol=1e-12)
    assert float(divergence(out, grid).abs().max()) < 1e-12 * float(divergence(v, grid).abs().max())
    assert float(p.flatten(1).mean(1).abs().max()) < 1e-14  # the multigrid path's gauge: zero mean
    core = out[(..., *(slice(0, n) for n in grid.shape))]
    for c, n in enumerate(grid.shape):  # face N copies face 0; padding 0 (the staggered layout)
        torch.testing.assert_close(out.select(2 + c, n)[:, c], out.select(2 + c, 0)[:, c], atol=0, rtol=0)
        for a, m in enumerate(grid.shape):
            if a != c:
                assert float(out[:, c].select(1 + a, m).abs().max()) == 0.0
    assert core.shape == (3, grid.ndim, *grid.shape)


@pytest.mark.parametrize(
    "grid",
    [grid_of((12, 9), (1.0, 1.7)), grid_of((4, 6, 5), (1.0, 0.6, 2.1))],
    ids=["2d", "3d"],
)
def test_matches_the_multigrid_projection_to_its_tolerance(grid):
    """Multigrid PCG at rtol 1e-10 in float64 against the exact FFT solve: ≤ 1e-9 relative, values and
    gradients (the multigrid's implicit adjoint against the FFT backward)."""
    v = velocity(grid).requires_grad_()
    bnd = FlowBoundary.periodic(grid.ndim)
    out_f, p_f = project(v, grid, bnd, preconditioner="fft")
    out_m, p_m = project(v, grid, bnd, rtol=1e-10, preconditioner="multigrid")
    assert rel(out_f, out_m) <= 1e-9 and rel(p_f, p_m) <= 1e-9
    w_out, w_p = torch.randn_like(out_f), torch.randn_like(p_f)
    g_f = torch.autograd.grad((out_f * w_out).sum() + (p_f * w_p).sum(), v)[0]
    g_m = torch.autograd.grad((out_m * w_out).sum() + (p_m * w_p).sum(), v)[0]
    assert rel(g_f, g_m) <= 1e-9


@pytest.mark.slow  # compiling a multigrid hierarchy of this depth takes ~10 s
def test_multigrid_agreement_with_several_levels():
    """A grid large enough for a real multigrid hierarchy (not just the dense coarsest solve)."""
    grid = grid_of((32, 24), (2.0, 1.0))
    v = velocity(grid, batch=1)
    bnd = FlowBoundary.periodic(2)
    out_f, p_f = project(v, grid, bnd, preconditioner="fft")
    out_m, p_m = project(v, grid, bnd, rtol=1e-10, preconditioner="multigrid")
    assert rel(out_f, out_m) <= 1e-9 and rel(p_f, p_m) <= 1e-9


@pytest.mark.parametrize("name", ["2d_even", "3d_mixed"])
def test_idempotent_and_self_adjoint(name):
    grid = GRIDS[name]
    v = apply_boundary(velocity(grid), grid, FlowBoundary.periodic(grid.ndim))
    once, _ = fft(v, grid)
    twice, p2 = fft(once, grid)
    torch.testing.assert_close(twice, once, atol=1e-13, rtol=0)
    assert float(p2.abs().max()) < 1e-13  # nothing left to remove
    w = apply_boundary(velocity(grid, seed=1), grid, FlowBoundary.periodic(grid.ndim))
    core = (..., *(slice(0, n) for n in grid.shape))  # P is symmetric on the periodic unknowns
    pw = fft(w, grid)[0]
    torch.testing.assert_close((once[core] * w[core]).sum(), (v[core] * pw[core]).sum(), atol=1e-11, rtol=0)


@pytest.mark.parametrize(
    "grid", [grid_of((3, 4), (1.0, 1.7)), grid_of((2, 3, 3), (0.7, 1.0, 1.3))], ids=["2d", "3d"]
)
def test_gradcheck_through_velocity_and_pressure(grid):
    """Full float64 gradcheck of ``(v⁺, p)`` through ``project``, on grids small enough for a Jacobian
    column per input, each output alone too (the backward's ``None`` branches); double backward in fast
    mode (``vᵀ J u`` for random ``u``, ``v``)."""
    v = velocity(grid, batch=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: fft(x, grid), (v,))
    assert torch.autograd.gradgradcheck(lambda x: fft(x, grid), (v,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda x: fft(x, grid)[1], (v,))  # the pressure alone (g_out None)
    assert torch.autograd.gradcheck(lambda x: fft(x, grid)[0], (v,))  # the velocity alone (g_p None)
    out, p = fft(v, grid)
    assert out.requires_grad and p.requires_grad


@pytest.mark.parametrize("name", list(GRIDS))
def test_gradient_matches_autograd_through_the_dense_reference(name):
    grid = GRIDS[name]
    v = velocity(grid).requires_grad_()
    v_ref = v.detach().cpu().requires_grad_()
    out, p = fft(v, grid)
    ref_out, ref_p = rp.project(v_ref, grid, FlowBoundary.periodic(grid.ndim))
    gen = torch.Generator().manual_seed(5)
    w_out, w_p = torch.randn(out.shape, generator=gen, dtype=F64), torch.randn(p.shape, generator=gen, dtype=F64)
    (g,) = torch.autograd.grad((out * w_out.to(out.device)).sum() + (p * w_p.to(p.device)).sum(), v)
    (g_ref,) = torch.autograd.grad((ref_out * w_out).sum() + (ref_p * w_p).sum(), v_ref)
    torch.testing.assert_close(g.cpu(), g_ref, atol=1e-11, rtol=1e-11)


def test_float32_and_the_no_grad_path():
    """Pure torch: float32 agrees with float64 to single precision; with and without autograd the same values."""
    grid = GRIDS["3d_mixed"]
    v = apply_boundary(velocity(grid), grid, FlowBoundary.periodic(3))
    out64, p64 = apply_spectral_projection(v, grid)
    out32, p32 = apply_spectral_projection(v.float(), grid)
    assert out32.dtype == p32.dtype == torch.float32
    assert rel(out32.double(), out64) < 1e-5 and rel(p32.double(), p64) < 1e-5
    out_g, p_g = apply_spectral_projection(v.clone().requires_grad_(), grid)
    torch.testing.assert_close(out_g, out64, atol=0, rtol=0)
    torch.testing.assert_close(p_g, p64, atol=0, rtol=0)


def test_float32_gradient():
    grid = GRIDS["2d_even"]
    v64 = apply_boundary(velocity(grid), grid, FlowBoundary.periodic(2))
    w = torch.randn(v64.shape, dtype=F64, generator=torch.Generator().manual_seed(2)).to(v64.device)
    grads = []
    for dtype in (torch.float32, F64):
        x = v64.to(dtype).requires_grad_()
        out, p = apply_spectral_projection(x, grid)
        grads.append(torch.autograd.grad((out * w.to(dtype)).sum() + p.sum(), x)[0])
    assert grads[0].dtype == torch.float32 and rel(grads[0].double(), grads[1]) < 1e-5


def test_refusals_name_what_is_not_periodic():
    grid = GRIDS["2d_even"]
    v = velocity(grid)
    wall_y = FlowBoundary(((Wall(), Wall()), (Periodic(), Periodic())))
    with pytest.raises(ValueError, match=r"method='fft'.*every boundary side must be Periodic, got sides\[0\]\[0\] = Wall, "
                       r"sides\[0\]\[1\] = Wall; use method='mgpcg' or 'cg'"):
        project(v, grid, wall_y, preconditioner="fft")
    solid = torch.ones(1, 1, *grid.shape, dtype=F64)
    solid[0, 0, 2, 3] = 0
    with pytest.raises(ValueError, match=r"it takes no obstacle, but the fluid mask has 1 solid cell\(s\)"):
        project(v, grid, FlowBoundary.periodic(2), solid, preconditioner="fft")
    mixed = FlowBoundary(((Periodic(), Periodic()), (Wall(), Outflow())))
    with pytest.raises(ValueError, match=r"sides\[1\]\[0\] = Wall, sides\[1\]\[1\] = Outflow"):  # the unvalidated entry
        apply_projection(v, grid, mixed, fluid_mask(None, grid, 2), preconditioner="fft")
    with pytest.raises(ValueError, match=r"preconditioner must be one of \('multigrid', 'none', 'fft'\), got 'spectral'"):
        project(v, grid, FlowBoundary.periodic(2), preconditioner="spectral")
    with pytest.raises(ValueError, match="needs a FlowBoundary with 2 axes"):
        check_spectral(grid, FlowBoundary.periodic(3))


def test_spectral_applicable_and_the_all_fluid_mask():
    grid = GRIDS["2d_odd"]
    per = FlowBoundary.periodic(2)
    ones = torch.ones(2, 1, *grid.shape, dtype=F64)
    solid = ones.clone()
    solid[1, 0, 0, 0] = 0
    assert spectral_applicable(grid, per) and spectral_applicable(grid, per, ones)
    assert not spectral_applicable(grid, per, solid)
    assert not spectral_applicable(grid, FlowBoundary.box())
    assert not spectral_applicable(grid, FlowBoundary(((Periodic(), Periodic()), (Wall(), Wall()))))
    assert not spectral_applicable(GRIDS["3d_mixed"], per)  # a 2D boundary on a 3D grid
    v = velocity(grid)
    with_mask = project(v, grid, per, ones, preconditioner="fft")
    without = project(v, grid, per, preconditioner="fft")
    for a, b in zip(with_mask, without, strict=True):  # an all-ones mask is no obstacle: same answer
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_solve_options_name_the_fft_method():
    assert "fft" in METHODS
    opts = SolveOptions(method="fft")
    assert projection_kwargs(opts) == {"rtol": 1e-5, "max_iter": 5000, "preconditioner": "fft"}
    grid = GRIDS["2d_even"]
    v = velocity(grid)
    out, p = apply_projection(v, grid, FlowBoundary.periodic(2), fluid_mask(None, grid, 2), **projection_kwargs(opts))
    ref_out, ref_p = rp.project(v.cpu(), grid, FlowBoundary.periodic(2))
    torch.testing.assert_close(out.cpu(), ref_out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(p.cpu(), ref_p, atol=1e-12, rtol=1e-12)


def test_taylor_green_projected_and_stepped_identically_by_both_methods():
    scene = taylor_green(n=16, batch=2)
    stepper, grid = scene.stepper, scene.stepper.grid
    noise = velocity(grid, seed=7).to(scene.state0.dtype)
    v = scene.state0 + 0.1 * noise  # not divergence-free any more
    bnd = stepper.boundary
    out_f, p_f = project(v, grid, bnd, stepper.fluid, preconditioner="fft")
    out_m, p_m = project(v, grid, bnd, stepper.fluid, rtol=1e-10, preconditioner="multigrid")
    assert rel(out_f, out_m) <= 1e-9 and rel(p_f, p_m) <= 1e-9
    assert spectral_applicable(grid, bnd, stepper.fluid)
    fft_stepper = dataclasses.replace(stepper, pressure=SolveOptions(method="fft"))
    mg_stepper = dataclasses.replace(stepper, pressure=SolveOptions(rtol=1e-12))
    a, b = v, v
    for _ in range(3):
        a, b = fft_stepper(a), mg_stepper(b)
    assert rel(a, b) <= 1e-9
    assert float(divergence(a, grid).abs().max()) < 1e-12


def test_navier_stokes_picks_the_fft_solve_for_a_periodic_box_without_obstacles():
    from taichi_dp.grid.geometry import Disc
    from taichi_dp.solvers import NavierStokes
    from taichi_dp.solvers.navier_stokes import PRESSURE_DEFAULT, PRESSURE_SPECTRAL

    grid = Grid.rect((8, 12), (1.0, 1.5))
    per = FlowBoundary.periodic(2)
    assert NavierStokes(grid, per, nu=0.0, dt=0.1).pressure == PRESSURE_SPECTRAL
    assert NavierStokes(grid, per, nu=0.0, dt=0.1, fluid=fluid_mask(None, grid, 1)).pressure == PRESSURE_SPECTRAL
    assert taylor_green(n=8).stepper.pressure.method == "fft"
    # an obstacle, a wall, or the user's own choice: multigrid (or what was asked for)
    obstacle = Disc((0.5, 0.75), 0.2)(grid)
    assert NavierStokes(grid, per, nu=0.0, dt=0.1, fluid=obstacle).pressure == PRESSURE_DEFAULT
    assert NavierStokes(grid, FlowBoundary.box(), nu=0.0, dt=0.1).pressure == PRESSURE_DEFAULT
    mine = SolveOptions(rtol=1e-9)
    assert NavierStokes(grid, per, nu=0.0, dt=0.1, pressure=mine).pressure is mine
    # asking for the FFT where it cannot apply fails at construction, naming what is not periodic
    with pytest.raises(ValueError, match="periodic"):
        NavierStokes(grid, FlowBoundary.box(), nu=0.0, dt=0.1, pressure=PRESSURE_SPECTRAL)
    with pytest.raises(ValueError, match="solid"):
        NavierStokes(grid, per, nu=0.0, dt=0.1, fluid=obstacle, pressure=PRESSURE_SPECTRAL)
