"""Single precision: every op in float32 agrees with the float64 reference on the same inputs."""

import pytest
import torch
from reference import advect as ref_advect
from reference import diffuse as ref_diffuse

import taichi_dp as tdp
from taichi_dp import Boundary, Dirichlet, Grid, Periodic, ZeroGradient
from taichi_dp.ops import advect, diffuse

pytestmark = pytest.mark.usefixtures("f32")

F32, F64 = torch.float32, torch.float64
GRIDS = {1: Grid.line(16), 2: Grid.rect((8, 10), (1.0, 1.25))}
BOUNDARIES = {
    1: [Boundary.periodic(1), Boundary(((Dirichlet(0.7), ZeroGradient()),))],
    2: [Boundary.uniform(Dirichlet(-0.4), 2), Boundary(((Periodic(), Periodic()), (ZeroGradient(), Dirichlet(0.3))))],
}
CASES = [(ndim, i) for ndim in (1, 2) for i in range(2)]
OPS = [("advect", "semi_lagrangian"), ("advect", "maccormack"), ("diffuse", "explicit"), ("diffuse", "implicit")]


def inputs(ndim: int, seed: int):
    """float32 state, velocity (CFL up to ~1.2) and per-batch nu, dt."""
    gen = torch.Generator().manual_seed(seed)
    grid = GRIDS[ndim]
    q = torch.randn(2, 3, *grid.shape, generator=gen, dtype=F32)
    v = 1.2 * (2 * torch.rand(2, ndim, *grid.shape, generator=gen, dtype=F32) - 1) * min(grid.spacing) / 0.05
    dt = torch.tensor([0.04, 0.05], dtype=F32)
    nu = torch.tensor([0.02, 0.025], dtype=F32) * min(grid.spacing) ** 2 / 0.05 * 4 / ndim
    return q, v, dt, nu


def test_runtime_is_f32():
    rt = tdp.current()
    assert (rt.precision, rt.dtype) == ("f32", F32)


@pytest.mark.parametrize(("kind", "scheme"), OPS)
@pytest.mark.parametrize(("ndim", "b"), CASES)
def test_forward_matches_f64_reference(kind, scheme, ndim, b):
    grid, boundary = GRIDS[ndim], BOUNDARIES[ndim][b]
    q, v, dt, nu = inputs(ndim, seed=10 * ndim + b)
    if kind == "advect":
        out = advect(q, v, dt, grid, boundary, scheme)
        ref = ref_advect(q.double(), v.double(), dt.double(), grid, boundary, scheme)
    else:
        if scheme == "implicit":  # beyond the explicit stability limit
            nu = nu * 10
        out = diffuse(q, nu, dt, grid, boundary, scheme, rtol=1e-6)
        ref = ref_diffuse(q.double(), nu.double(), dt.double(), grid, boundary, scheme)
    assert out.dtype == F32 and out.shape == q.shape
    scale = float(ref.abs().max())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5 * scale)


def test_backward_runs_in_f32():
    grid, boundary = GRIDS[2], BOUNDARIES[2][1]
    q, v, dt, nu = (t.requires_grad_() for t in inputs(2, seed=3))
    out = diffuse(advect(q, v, dt, grid, boundary, "maccormack"), nu, dt, grid, boundary, "implicit")
    out.square().sum().backward()
    for t in (q, v, dt, nu):
        assert t.grad is not None and t.grad.dtype == F32 and bool(torch.isfinite(t.grad).all())


@pytest.mark.parametrize("scheme", ["semi_lagrangian", "maccormack"])
def test_backward_matches_f64_reference_gradients(scheme):
    """float32 gradients of advect → implicit diffuse w.r.t. every input agree with the plain-PyTorch float64
    reference on the same inputs, to 2e-5 of each gradient's largest entry (measured: ≤ 2.6e-6 from float32
    rounding through two ops and a CG solve to rtol 1e-6; a wrong gradient is off by O(1))."""
    grid, boundary = GRIDS[2], BOUNDARIES[2][1]
    q, v, dt, nu = inputs(2, seed=3)
    nu = nu * 10  # beyond the explicit limit: the implicit solve matters
    w = torch.randn(q.shape, generator=torch.Generator().manual_seed(30), dtype=F32)
    got = [t.clone().requires_grad_() for t in (q, v, dt, nu)]
    out = diffuse(advect(got[0], got[1], got[2], grid, boundary, scheme), got[3], got[2], grid, boundary, "implicit", rtol=1e-6)
    assert out.dtype == F32
    (out * w).sum().backward()
    ref = [t.double().requires_grad_() for t in (q, v, dt, nu)]
    out64 = ref_diffuse(ref_advect(ref[0], ref[1], ref[2], grid, boundary, scheme), ref[3], ref[2], grid, boundary, "implicit")
    (out64 * w.double()).sum().backward()
    for name, a, b in zip(("q", "v", "dt", "nu"), got, ref, strict=True):
        assert a.grad is not None and a.grad.dtype == F32, name
        scale = float(b.grad.abs().max())
        assert scale > 0, name
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=0, atol=2e-5 * scale, msg=lambda m, n=name: f"d/d{n}: {m}")


def test_f64_tensor_rejected_in_f32_runtime():
    grid, boundary = GRIDS[1], BOUNDARIES[1][0]
    q, v, dt, _ = inputs(1, seed=4)
    with pytest.raises(TypeError, match=r"^q must have dtype torch.float32"):
        advect(q.double(), v, dt, grid, boundary)
