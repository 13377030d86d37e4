"""Explicit and implicit diffusion, 1D and 2D, against the plain-PyTorch reference."""

import pytest
import torch
from cases import BOUNDARIES, CASES, F64, GRIDS, B, C
from reference import boundary_term, laplacian, laplacian_matrix
from reference import diffuse as ref_diffuse

from taichi_dp import Boundary, Dirichlet
from taichi_dp.ops import diffuse, diffuse_explicit, diffuse_implicit, stability_number

RTOL = 1e-13  # CG tolerance for implicit diffusion in these tests

SCHEMES = ("explicit", "implicit")

# (nu, dt) per batch element. Explicit: max(nu) max(dt) sum(1/h^2) < 0.5 (1D: 0.446, 2D: 0.426);
# implicit: nu dt sum(1/h^2) up to ~2, well beyond the explicit limit.
PARAMS = {
    ("explicit", 1): ((0.06, 0.07), (0.1, 0.13)),
    ("explicit", 2): ((0.06, 0.08), (0.1, 0.13)),
    ("implicit", 1): ((0.2, 0.3), (0.1, 0.13)),
    ("implicit", 2): ((0.3, 0.35), (0.1, 0.13)),
}


def make_inputs(scheme: str, ndim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``u`` (B, C, *shape) and per-batch ``nu``, ``dt`` (B,), float64 leaves requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn((B, C, *GRIDS[ndim].shape), generator=gen, dtype=F64)
    nu, dt = (torch.tensor(x, dtype=F64) for x in PARAMS[scheme, ndim])
    return u.requires_grad_(), nu.requires_grad_(), dt.requires_grad_()


def op(scheme, grid, boundary):
    return lambda u, nu, dt: diffuse(u, nu, dt, grid, boundary, scheme, rtol=RTOL)


def test_parameters_are_in_the_intended_regimes():
    for ndim in (1, 2):
        (_, nu), (_, dt) = PARAMS["explicit", ndim]
        assert 0.3 < stability_number(nu, dt, GRIDS[ndim]) < 0.5
        (_, nu), (_, dt) = PARAMS["implicit", ndim]
        assert stability_number(nu, dt, GRIDS[ndim]) > 1.0


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("ndim", "bname"), CASES)
def test_gradcheck(scheme, ndim, bname):
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    u, nu, dt = make_inputs(scheme, ndim, seed=ndim + len(bname))
    if scheme == "implicit" and ndim == 2:  # one CG solve per perturbation: keep it to one channel
        u = u.detach()[:, :1].contiguous().requires_grad_()
    assert torch.autograd.gradcheck(op(scheme, grid, boundary), (u, nu, dt))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("ndim", "bname"), CASES)
def test_forward_matches_reference(scheme, ndim, bname):
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    u, nu, dt = make_inputs(scheme, ndim, seed=100 + ndim + len(bname))
    out = op(scheme, grid, boundary)(u, nu, dt)
    assert out.shape == u.shape and out.dtype == F64
    torch.testing.assert_close(out, ref_diffuse(u, nu, dt, grid, boundary, scheme), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("ndim", "bname"), CASES)
def test_gradients_match_reference(scheme, ndim, bname):
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    u, nu, dt = make_inputs(scheme, ndim, seed=200 + ndim + len(bname))
    cot = torch.randn(u.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    got = torch.autograd.grad(op(scheme, grid, boundary)(u, nu, dt), (u, nu, dt), cot)
    want = torch.autograd.grad(ref_diffuse(u, nu, dt, grid, boundary, scheme), (u, nu, dt), cot)
    for name, g, w in zip(("u", "nu", "dt"), got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-10, msg=lambda m, n=name: f"d/d{n}: {m}")


@pytest.mark.parametrize(("ndim", "bname"), CASES)
def test_reference_matrix_agrees_with_ghost_laplacian(ndim, bname):
    """Ground-truth self-check: the dense L₀ plus the boundary term equals the ghost-value Laplacian."""
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    u = torch.randn(B, C, *grid.shape, dtype=F64)
    l0 = laplacian_matrix(grid, boundary)
    assert torch.equal(l0, l0.T)
    via_matrix = (u.reshape(B, C, -1) @ l0.T).reshape(u.shape) + boundary_term(grid, boundary)
    torch.testing.assert_close(laplacian(u, grid, boundary), via_matrix, rtol=0, atol=1e-11)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("ndim", "bname"), [(1, "periodic"), (1, "zero_gradient"), (2, "periodic"), (2, "zero_gradient")])
def test_conserves_mass_without_dirichlet(scheme, ndim, bname):
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][bname]
    u, nu, dt = (t.detach() for t in make_inputs(scheme, ndim, seed=9))
    out = op(scheme, grid, boundary)(u, nu, dt)
    torch.testing.assert_close(out.sum(dim=tuple(range(2, u.ndim))), u.sum(dim=tuple(range(2, u.ndim))))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("ndim", [1, 2])
def test_constant_equal_to_wall_value_is_steady(scheme, ndim):
    grid = GRIDS[ndim]
    boundary = Boundary.uniform(Dirichlet(0.7), ndim)
    u = torch.full((B, C, *grid.shape), 0.7, dtype=F64)
    nu, dt = PARAMS[scheme, ndim]
    out = op(scheme, grid, boundary)(u, torch.tensor(nu, dtype=F64), torch.tensor(dt, dtype=F64))
    torch.testing.assert_close(out, u, rtol=0, atol=1e-12)


def test_scheme_wrappers_agree_with_diffuse():
    grid, boundary = GRIDS[1], BOUNDARIES[1]["dirichlet"]
    u, nu, dt = (t.detach() for t in make_inputs("explicit", 1, seed=11))
    torch.testing.assert_close(diffuse_explicit(u, nu, dt, grid, boundary), diffuse(u, nu, dt, grid, boundary))
    a = diffuse_implicit(u, nu, dt, grid, boundary, rtol=RTOL)
    torch.testing.assert_close(a, diffuse(u, nu, dt, grid, boundary, "implicit", rtol=RTOL), rtol=0, atol=1e-14)


def test_scalar_parameters():
    """nu and dt as Python floats / 0-d tensors broadcast over the batch."""
    grid, boundary = GRIDS[2], BOUNDARIES[2]["dirichlet"]
    u, _, _ = make_inputs("explicit", 2, seed=12)
    nu = torch.tensor(0.05, dtype=F64, requires_grad=True)
    for scheme in SCHEMES:
        out = diffuse(u, nu, 0.1, grid, boundary, scheme, rtol=RTOL)
        ref = ref_diffuse(u, nu, 0.1, grid, boundary, scheme)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        (g,) = torch.autograd.grad(out.square().sum(), nu)
        (w,) = torch.autograd.grad(ref.square().sum(), nu)
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
