"""Tests written to *bite*: each one fails on a specific plausible one-line bug (named in its docstring)
that the rest of the suite let through. Exact or hand-computed answers only, so a wrong result cannot
hide inside a tolerance."""

import warnings

import pytest
import torch

import taichi_dp as tdp
from taichi_dp.grid.geometry import disc
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall, staggered_shape, valid_faces
from taichi_dp.learn.metrics import relative_errors
from taichi_dp.ops import advect, diffuse, linear_solve
from taichi_dp.ops.multigrid import PoissonSolver
from taichi_dp.ops.poisson import apply_poisson
from taichi_dp.solvers import Burgers, NavierStokes, SolveOptions

F64 = torch.float64
CHANNEL = FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall())))


# ------------------------------------------------------------------ batched solves: every sample converges
def _karman_like(h: int, w: int):
    grid = tdp.Grid.rect((h, w), (200.0, 100.0))
    return grid, disc(grid, (50.0, 50.0), 10.0)


def _mixed_batch(grid, fluid, codes, easy: int):
    """Batch of 3: one easy sample (zero right-hand side: converged before the first iteration) at
    index ``easy``, two hard ones (random right-hand sides that need several iterations)."""
    gen = torch.Generator().manual_seed(11)
    b = torch.randn(3, 1, *grid.shape, generator=gen, dtype=F64) * fluid
    b[easy] = 0.0
    return b


@pytest.mark.parametrize("serial", [True, False], ids=["one_launch", "per_iteration"])
@pytest.mark.parametrize("easy", [0, 1, 2])
def test_multigrid_pcg_batch_waits_for_every_sample(serial, easy, monkeypatch):
    """Bug: the batch stops when ANY sample has converged (``.any()`` for ``.all()`` in the host loop of
    ``PoissonSolver._run``, or the in-kernel loop of ``_pcg_all`` reading another sample's flag). Each
    sample of a batch with an easy (already converged) sample must reach its own tolerance, and equal
    the solution of the same system solved alone."""
    monkeypatch.setattr(PoissonSolver, "serial", lambda self, batch: serial)
    grid, fluid = _karman_like(32, 16)
    codes = CHANNEL.pressure().codes
    solver = PoissonSolver(grid, fluid, codes)
    b = _mixed_batch(grid, fluid, codes, easy)
    rtol = 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NotConvergedWarning is a failure too
        x = solver.solve(b, rtol=rtol)
    assert linear_solve.last_solve.converged and linear_solve.last_solve.iterations > 1
    r = apply_poisson(x, fluid, grid, codes) - b
    for s in range(3):
        assert float((r[s] * fluid).norm()) <= 10 * rtol * float((b[s] * fluid).norm()), s  # 0 for the easy one
        alone = solver.solve(b[s : s + 1].clone(), rtol=rtol)
        torch.testing.assert_close(x[s : s + 1], alone, rtol=0, atol=1e-7 * max(1.0, float(alone.abs().max())))
    assert not bool((x[easy] * fluid[0]).any())


@pytest.mark.parametrize("serial", [True, False], ids=["one_launch", "per_iteration"])
def test_multigrid_pcg_batch_with_an_exact_warm_start(serial, monkeypatch):
    """Same bug, other trigger: a sample whose warm start is already the solution is done at start; the
    other sample must still iterate to its tolerance."""
    monkeypatch.setattr(PoissonSolver, "serial", lambda self, batch: serial)
    grid, fluid = _karman_like(32, 16)
    codes = CHANNEL.pressure().codes
    solver = PoissonSolver(grid, fluid, codes)
    gen = torch.Generator().manual_seed(12)
    b = torch.randn(2, 1, *grid.shape, generator=gen, dtype=F64) * fluid
    exact0 = solver.solve(b[:1].clone(), rtol=1e-12)
    x0 = torch.cat([exact0, torch.zeros_like(exact0)])
    x = solver.solve(b, x0, rtol=1e-8)
    r = (apply_poisson(x, fluid, grid, codes) - b) * fluid
    for s in range(2):
        assert float(r[s].norm()) <= 1e-7 * float((b[s] * fluid).norm()), s


def test_plain_cg_batch_waits_for_every_sample():
    """Bug: ``linear_solve.cg`` stops when ANY element converged (``done.any()``). A batch of one zero
    right-hand side (done at once) and a hard system must solve the hard one to tolerance."""
    gen = torch.Generator().manual_seed(13)
    n = 24
    m = torch.randn(n, n, generator=gen, dtype=F64)
    a = m @ m.T + 0.1 * torch.eye(n, dtype=F64)  # SPD, badly conditioned enough for ~n iterations

    def apply_a(x):
        return (x.view(x.shape[0], n) @ a).view(x.shape)

    for easy in (0, 1):
        b = torch.randn(2, 1, n, generator=gen, dtype=F64)
        b[easy] = 0.0
        x = linear_solve.cg(apply_a, b, rtol=1e-10, max_iter=500)
        assert linear_solve.last_solve.converged and linear_solve.last_solve.iterations > 3
        expected = torch.linalg.solve(a, b.view(2, n).T).T.view(2, 1, n)
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-6 * float(expected.abs().max()))


# ------------------------------------------------------------------ init(check_inputs=False) is honoured
@pytest.fixture
def checks_off():
    rt = tdp.current()
    tdp.init(rt.arch, rt.precision, check_inputs=False)
    try:
        yield
    finally:
        tdp.init(rt.arch, rt.precision, check_inputs=True)


def _nan_state(grid):
    u = torch.linspace(-1, 1, grid.shape[0], dtype=F64).repeat(2, 1, 1)
    u[1, 0, 3] = float("nan")
    return u


def test_checks_on_reject_a_nan_state():
    grid = tdp.Grid.line(8)
    u = _nan_state(grid)
    v = torch.zeros_like(u)
    with pytest.raises(ValueError, match="NaN"):
        advect(u, v, 0.1, grid, tdp.Boundary.periodic(1))
    with pytest.raises(ValueError, match="NaN"):
        diffuse(u, 0.01, 0.1, grid, tdp.Boundary.periodic(1))
    with pytest.raises(ValueError, match="NaN"):
        Burgers(grid, tdp.Boundary.periodic(1), 0.01, 0.05)(u)
    with pytest.raises(ValueError, match="NaN"):
        tdp.runtime.check_param("nu", torch.tensor([0.01, float("nan")], dtype=F64))


def test_checks_off_let_bad_input_through_as_wrong_numbers(checks_off):
    """Bug: ``init(check_inputs=False)`` ignored (the flag not stored, or ``check_state`` not reading it).
    Documented (runtime.init): with checks off, bad input gives wrong numbers, not errors."""
    assert not tdp.current().check_inputs
    grid = tdp.Grid.line(8)
    u = _nan_state(grid)
    v = torch.zeros_like(u)
    out = advect(u, v, 0.1, grid, tdp.Boundary.periodic(1))  # no ValueError
    assert bool(torch.isnan(out[1]).any())
    assert torch.equal(out[0], u[0])  # zero velocity: the clean sample is untouched
    out = Burgers(grid, tdp.Boundary.periodic(1), 0.01, 0.05)(u)
    assert bool(torch.isnan(out[1]).any()) and bool(torch.isfinite(out[0]).all())
    tdp.runtime.check_param("nu", torch.tensor([0.01, float("nan")], dtype=F64))  # no ValueError
    g = tdp.Grid.rect((6, 5), (1.0, 1.0))
    st = NavierStokes(g, FlowBoundary.periodic(), nu=0.0, dt=0.1)
    vs = torch.zeros(1, *staggered_shape(g), dtype=F64)
    vs[0, 0, 2, 2] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the NaN solve may report non-convergence: that is the "wrong number"
        st(vs)  # no ValueError


# ------------------------------------------------------------------ metrics: L1 is L1
def test_relative_errors_by_hand():
    """Bug: the "L1" metric computed as L2 (``p`` ignored or defaulted). Hand-computed on a tiny case:
    pred − ref = (3, −4) against ref = (1, 1): L1 7/2, L2 5/√2."""
    ref = torch.ones(1, 2, 2, dtype=F64)
    pred = ref + torch.tensor([[[3.0, -4.0], [0.0, 0.0]]], dtype=F64)
    l1 = relative_errors(pred, ref, 1)
    l2 = relative_errors(pred, ref, 2)
    assert l1.shape == (1, 2)
    torch.testing.assert_close(l1, torch.tensor([[3.5, 0.0]], dtype=F64))
    torch.testing.assert_close(l2, torch.tensor([[5.0 / 2**0.5, 0.0]], dtype=F64))
    torch.testing.assert_close(relative_errors(pred, ref), l2)  # the default is L2
    # per-sample and per-step, over every remaining dimension
    ref = torch.tensor([[[[1.0, -2.0], [2.0, 1.0]]], [[[0.5, 0.5], [0.5, 0.5]]]], dtype=F64)  # (S=2, T=1, 2, 2)
    pred = ref + torch.tensor([[[[1.0, 0.0], [0.0, -1.0]]], [[[0.0, 0.0], [0.0, 2.0]]]], dtype=F64)
    torch.testing.assert_close(relative_errors(pred, ref, 1), torch.tensor([[2.0 / 6.0], [2.0 / 2.0]], dtype=F64))
    torch.testing.assert_close(relative_errors(pred, ref, 2), torch.tensor([[2**0.5 / 10**0.5], [2.0 / 1.0]], dtype=F64))


@pytest.mark.slow  # a karman evaluation
def test_karman_evaluation_reports_l1_as_l1():
    """Bug: the karman evaluation (``Experiment.rollouts``) computing its ``"l1"`` entry with ``p=2``. The reported L1 and
    L2 errors must be those of the returned trajectory against the reference."""
    from taichi_dp.learn.experiment import Trajectories
    from taichi_dp.learn.karman_experiment import KarmanExperiment, KarmanExperimentConfig
    from taichi_dp.scenes import karman

    exp = KarmanExperiment(KarmanExperimentConfig.preset("tiny"))
    scene = karman(reynolds=200.0)
    gen = torch.Generator().manual_seed(14)
    v0 = scene.state0[0]
    frames = [v0] + [v0 * (1 + 0.1 * k) + 0.01 * torch.randn(v0.shape, generator=gen, dtype=F64) for k in (1, 2)]
    test = Trajectories(torch.stack(frames)[None], torch.tensor([200.0], dtype=F64), (200.0,), torch.arange(1))
    out = exp.rollouts({"source": None}, test)["source"]
    traj, ref = out["traj"].double(), test.reference[:, 1:]
    d = (traj - ref).flatten(2)
    l1 = d.abs().sum(2) / ref.flatten(2).abs().sum(2)
    l2 = d.norm(dim=2) / ref.flatten(2).norm(dim=2)
    assert out["l1"].shape == (1, 2)
    torch.testing.assert_close(out["l1"], l1, rtol=1e-5, atol=0)  # traj comes back as float32
    torch.testing.assert_close(out["l2"], l2, rtol=1e-5, atol=0)
    assert float((l1 - l2).abs().min()) > 1e-3 * float(l1.min())  # the two really differ here


# ------------------------------------------------------------------ Navier–Stokes forcing: v + Δt f
@pytest.mark.parametrize("advection", ["semi_lagrangian", "maccormack"])
def test_navier_stokes_forcing_is_scaled_by_dt(advection):
    """Bug: forcing applied as ``v + f`` instead of ``v + Δt f``. Zero velocity, uniform force, periodic
    box: viscosity and advection leave a uniform field unchanged and the projection too (it is
    divergence-free), so one step gives exactly ``Δt f`` (per-sample Δt ≠ 1)."""
    grid = tdp.Grid.rect((8, 6), (1.0, 0.75))
    faces = valid_faces(grid, F64)
    f = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    f[:, 0] = 0.7  # uniform force along y
    f[:, 1] = -0.4  # and along x
    f = f * faces
    dt = torch.tensor([0.1, 0.25], dtype=F64)
    st = NavierStokes(
        grid, FlowBoundary.periodic(), nu=0.01, dt=dt, forcing=f, advection=advection, pressure=SolveOptions(rtol=1e-12)
    )
    v0 = torch.zeros(2, *staggered_shape(grid), dtype=F64)
    v1 = st(v0)
    torch.testing.assert_close(v1 * faces, dt.view(-1, 1, 1, 1) * f, rtol=0, atol=1e-12)
    v2 = st(v1)  # and it keeps accelerating uniformly
    torch.testing.assert_close(v2 * faces, 2 * dt.view(-1, 1, 1, 1) * f, rtol=0, atol=1e-11)


# ------------------------------------------------------------------ explicit diffusion: the limit is 1/2
@pytest.mark.parametrize("ndim", [1, 2])
def test_explicit_diffusion_stability_limit_is_exactly_one_half(ndim):
    """Bug: a laxer limit (``s > 1`` instead of ``s > 1/2``). Forward Euler on the 5-point Laplacian
    amplifies the highest mode by ``|1 − 4s|`` (1D; ``s = ν Δt Σ 1/h²``): ``s = 0.6`` must be refused,
    ``s = 0.5`` accepted."""
    grid = tdp.Grid.line(10) if ndim == 1 else tdp.Grid.rect((6, 8), (1.0, 1.5))
    inv_h2 = sum(1.0 / h**2 for h in grid.spacing)
    dt = 0.01
    u = torch.zeros(1, 1, *grid.shape, dtype=F64)
    bc = tdp.Boundary.periodic(ndim)
    diffuse(u, 0.5 / (dt * inv_h2), dt, grid, bc)  # on the limit: accepted
    with pytest.raises(ValueError, match="unstable"):
        diffuse(u, 0.6 / (dt * inv_h2), dt, grid, bc)
