"""Scene options a user configures: karman's initial state, obstacles, inflow profile and sides; the
cavity's time step; run_to_steady (against Ghia, Ghia & Shin 1982); face_coordinates; init(cpu_threads=)."""

import math

import pytest
import torch

import taichi_dp as tdp
from taichi_dp import runtime
from taichi_dp.grid import Grid, Periodic
from taichi_dp.grid.geometry import Box, Disc, box, disc
from taichi_dp.grid.staggered import (
    FlowBoundary,
    Inflow,
    Outflow,
    Wall,
    face_coordinates,
    staggered_shape,
    valid_faces,
)
from taichi_dp.ops.pressure import divergence
from taichi_dp.scenes import flow, karman, lid_driven_cavity, taylor_green_velocity
from taichi_dp.scenes.flow import karman_grid
from taichi_dp.solvers import NavierStokes, SolveOptions, SteadyStateError, run_to_steady

# --------------------------------------------------------------------------------------------------
# karman: the defaults are today's scene, bit for bit
# --------------------------------------------------------------------------------------------------


def _legacy_karman(scale=1, reynolds=200.0, batch=1, *, dt=1.0, perturbation=0.1):
    """The karman factory as it was before the options (frozen copy): the reference for the defaults."""
    rt = runtime.ensure_init()
    grid = Grid.rect((64 * scale, 32 * scale), (200.0, 100.0))
    boundary = FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall())))
    re = (
        reynolds.reshape(-1)
        if isinstance(reynolds, torch.Tensor)
        else torch.full((batch,), float(reynolds), dtype=rt.dtype, device=rt.device)
    )
    nu = 20.0 / re
    faces = valid_faces(grid, rt.dtype, rt.device)
    h = grid.spacing[0]
    y_face = torch.arange(grid.shape[0] + 1, dtype=rt.dtype, device=rt.device) * h
    y_centre = (torch.arange(grid.shape[0] + 1, dtype=rt.dtype, device=rt.device) + 0.5) * h
    band = torch.stack(
        [(y_face < 5.0)[:, None].expand(-1, grid.shape[1] + 1), (y_centre < 5.0)[:, None].expand(-1, grid.shape[1] + 1)]
    )
    inflow_mask = (band[None].to(rt.dtype) * faces).contiguous()
    inflow_velocity = torch.zeros_like(inflow_mask)
    inflow_velocity[:, 0] = 1.0
    inflow_velocity = (inflow_velocity * faces).contiguous()
    stepper = NavierStokes(
        grid, boundary, nu=nu, dt=dt, fluid=disc(grid, (50.0, 50.0), 10.0), inflow_mask=inflow_mask,
        inflow_velocity=inflow_velocity, pressure=SolveOptions(rtol=1e-3),
    )
    v0 = torch.zeros(re.shape[0], *staggered_shape(grid), dtype=rt.dtype, device=rt.device)
    v0[:, 0] = 1.0
    x = grid.centers(1, rt.dtype, rt.device)
    yc = grid.centers(0, rt.dtype, rt.device)
    bump = torch.exp(-((yc[:, None] - 80.0) ** 2) / 200.0) * torch.sin(math.pi * x[None, :] / 100.0)
    v0[:, 1, :-1, 1:-1] = perturbation * 0.5 * (bump[:, 1:] + bump[:, :-1])
    return stepper, stepper.impose(v0 * faces).contiguous()


def _same_scene(new, old_stepper, old_v0):
    s = new.stepper
    assert torch.equal(new.state0, old_v0)
    assert s.boundary == old_stepper.boundary and s.dt == old_stepper.dt
    assert torch.equal(torch.as_tensor(s.nu), torch.as_tensor(old_stepper.nu))
    for name in ("fluid", "inflow_mask", "inflow_velocity"):
        assert torch.equal(getattr(s, name), getattr(old_stepper, name)), name
    with torch.no_grad():
        assert torch.equal(s(new.state0), old_stepper(old_v0))  # one step, bit for bit


@pytest.mark.slow  # karman steps against a frozen copy
def test_karman_defaults_are_the_previous_scene_bit_for_bit():
    old = _legacy_karman()
    scene = karman()
    _same_scene(scene, *old)
    # Captured from the code before the options existed (float64, CPU): v0 and one step.
    v1 = scene.stepper(scene.state0)
    if runtime.current().dtype == torch.float64:
        assert float(scene.state0.sum()) == pytest.approx(2058.2190374164484, rel=1e-12)
        assert float(v1.sum()) == pytest.approx(2080.433242173399, rel=1e-9)
        assert float((v1**2).sum()) == pytest.approx(2155.673495126745, rel=1e-9)


@pytest.mark.slow  # karman steps at scale 2
def test_karman_defaults_unchanged_with_scale_batch_and_reynolds_tensor():
    rt = runtime.current()
    re = torch.tensor([100.0, 500.0], dtype=rt.dtype, device=rt.device)
    _same_scene(karman(2, re, perturbation=0.5, dt=0.5), *_legacy_karman(2, re, perturbation=0.5, dt=0.5))
    _same_scene(karman(batch=3, reynolds=300.0), *_legacy_karman(batch=3, reynolds=300.0))


# --------------------------------------------------------------------------------------------------
# karman options
# --------------------------------------------------------------------------------------------------


def test_karman_user_v0_gets_the_boundary_conditions():
    rt = runtime.current()
    grid = karman_grid()
    yx = face_coordinates(grid, rt.dtype, rt.device)
    v = torch.stack([0.5 + 0.1 * torch.sin(yx[0, 1] / 10), 0.2 * torch.cos(yx[1, 0] / 20)])[None]
    scene = karman(v0=v.expand(2, -1, -1, -1).contiguous(), batch=2)
    s = scene.stepper
    assert scene.state0.shape == (2, *staggered_shape(grid))
    assert torch.equal(scene.state0, s.impose(scene.state0))  # already satisfies every constraint
    band = (yx[0, 0] < 5.0) & (valid_faces(grid, rt.dtype, rt.device)[0, 0] > 0)
    assert bool((scene.state0[:, 0][:, band] == 1.0).all())  # the inflow band is imposed
    assert bool((scene.state0[:, 1, :, 0] == 0).all()) and bool((scene.state0[:, 1, :, -1] == 0).all())  # side walls
    away = (yx[0, 0] > 100) & (yx[0, 1] < 90)
    assert torch.equal(scene.state0[0, 0][away], v[0, 0][away])  # elsewhere the user's values
    # batch 1 broadcasts to the scene's batch; gradients flow back to the user's v0
    v1 = v.clone().requires_grad_(True)
    scene = karman(v0=v1, batch=2)
    scene.state0.sum().backward()
    assert v1.grad is not None and float(v1.grad.abs().sum()) > 0


@pytest.mark.slow  # karman steps per obstacle option
def test_karman_obstacles_mask_list_and_none():
    grid = karman_grid()
    shapes = [Disc((50.0, 30.0), 8.0), Box((100.0, 60.0), (120.0, 80.0))]
    scene = karman(obstacles=shapes)
    assert torch.equal(scene.stepper.fluid, disc(grid, (50.0, 30.0), 8.0) * box(grid, (100.0, 60.0), (120.0, 80.0)))
    as_mask = karman(obstacles=scene.stepper.fluid.bool())
    assert torch.equal(as_mask.stepper.fluid, scene.stepper.fluid) and torch.equal(as_mask.state0, scene.state0)
    for empty in (None, [], ()):
        s = karman(obstacles=empty).stepper
        assert bool((s.fluid == 1).all())
    per_sample = torch.cat([disc(grid, (50.0, 50.0), 10.0), disc(grid, (60.0, 40.0), 6.0)])
    scene = karman(batch=2, obstacles=per_sample)
    v = scene.stepper(scene.state0)
    assert v.shape[0] == 2 and bool(torch.isfinite(v).all())
    assert float(divergence(v, grid)[:, :, 8:].abs().max()) < 1e-2  # projected (pressure rtol 1e-3)
    # an obstacle in the inflow band keeps its faces closed
    scene = karman(obstacles=[Box((0.0, 40.0), (4.0, 60.0))])
    solid = scene.stepper.fluid[0, 0] == 0
    inside = torch.nn.functional.pad(solid, (0, 1, 0, 1)) | torch.nn.functional.pad(solid, (0, 1, 1, 0))
    assert bool((scene.state0[0, 0][inside] == 0).all()) and bool((scene.stepper.inflow_mask[0, 0][inside] == 0).all())


@pytest.mark.slow  # karman steps
def test_karman_inflow_profile_parabolic():
    grid = karman_grid()
    h, w = grid.shape

    def parabola(x):
        return 1.5 * 4 * x * (100.0 - x) / 100.0**2

    scene = karman(inflow_profile=parabola, reynolds=100.0)
    s = scene.stepper
    x = grid.centers(1, scene.state0.dtype)
    expected = parabola(x)
    assert torch.allclose(s.inflow_velocity[0, 0, 0, :w].cpu(), expected)
    assert torch.equal(scene.state0[0, 0, 0, :w].cpu(), s.inflow_velocity[0, 0, 0, :w].cpu())  # the boundary row
    assert torch.allclose(scene.state0[0, 0, h // 2, :w].cpu(), expected)  # the initial state follows the profile
    mean = float(expected.mean())
    assert s.boundary.sides[0][0] == Inflow(mean)
    assert float(torch.as_tensor(s.nu).reshape(-1)[0]) == pytest.approx(20.0 * mean / 100.0)
    v = s(scene.state0)
    assert bool(torch.isfinite(v).all())
    # a uniform number scales the speed (and ν = U·D/Re)
    fast = karman(inflow_profile=2.0)
    assert fast.stepper.boundary.sides[0][0] == Inflow(2.0) and float(fast.state0[0, 0, 40, 5]) == 2.0
    assert float(torch.as_tensor(fast.stepper.nu).reshape(-1)[0]) == pytest.approx(40.0 / 200.0)


@pytest.mark.slow  # karman rollouts per side option
@pytest.mark.parametrize(
    "sides, expected",
    [
        ("slip", (Wall(slip=True), Wall(slip=True))),
        ("periodic", (Periodic(), Periodic())),
        (Wall(slip=True), (Wall(slip=True), Wall(slip=True))),
        ((Wall(), Outflow()), (Wall(), Outflow())),
    ],
)
def test_karman_sides(sides, expected):
    scene = karman(sides=sides)
    assert scene.stepper.boundary.sides[1] == expected
    v = scene.stepper(scene.state0)
    assert bool(torch.isfinite(v).all())
    if expected[0] == Periodic():
        assert torch.equal(v[:, 1, :, 0], v[:, 1, :, -1])  # the seam faces are one face


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"v0": [[0.0]]}, TypeError, "v0 must be a torch.Tensor"),
        ({"v0": torch.zeros(1, 2, 10, 10)}, ValueError, "v0 must be a staggered velocity of shape"),
        ({"v0": "nan"}, ValueError, "v0 contains"),
        ({"v0": "batch"}, ValueError, "v0 must have batch size 1 or 2"),
        ({"v0": "dtype"}, TypeError, "v0 must have dtype"),
        ({"obstacles": "cylinder"}, TypeError, "obstacles must be"),
        ({"obstacles": [Disc((50.0, 50.0), 10.0), 3]}, TypeError, "obstacles[1]"),
        ({"obstacles": torch.ones(1, 1, 8, 8)}, ValueError, "obstacles must be a fluid mask of shape (1 or 2, 1, 64, 32)"),
        ({"obstacles": torch.full((1, 1, 64, 32), 0.5)}, ValueError, "only 0 (solid) and 1 (fluid)"),
        ({"obstacles": torch.zeros(1, 1, 64, 32)}, ValueError, "no fluid cell"),
        ({"obstacles": torch.ones(1, 1, 64, 32, dtype=torch.int64)}, TypeError, "bool or floating-point"),
        ({"obstacles": lambda grid: 1.0}, TypeError, "must return a torch.Tensor mask"),
        ({"inflow_profile": 0.0}, ValueError, "inflow_profile must be a finite speed > 0"),
        ({"inflow_profile": "parabolic"}, TypeError, "inflow_profile must be a number > 0 or a callable"),
        ({"inflow_profile": lambda x: torch.ones(5, dtype=x.dtype)}, ValueError, "must return shape (32,)"),
        ({"inflow_profile": lambda x: -x}, ValueError, "finite speeds >= 0"),
        ({"sides": "open"}, ValueError, "sides must be one of ('no_slip', 'slip', 'periodic')"),
        ({"sides": Inflow(1.0)}, TypeError, "an inflow enters at y = 0 only"),
        ({"sides": (Periodic(), Wall())}, ValueError, "Periodic must be set on both x sides"),
        ({"reynolds": 0.0}, ValueError, "reynolds must be a finite number > 0"),
        ({"batch": 0}, ValueError, "batch must be an integer >= 1"),
        ({"perturbation": float("nan")}, ValueError, "perturbation must be a finite number"),
        ({"perturbation": None}, TypeError, "perturbation must be a finite number"),
        ({"scale": "2"}, TypeError, "scale must be a positive integer"),
    ],
)
def test_karman_options_are_validated_before_any_kernel_runs(monkeypatch, kwargs, error, words):
    rt = runtime.current()
    grid = karman_grid()
    good = torch.ones(1, *staggered_shape(grid), dtype=rt.dtype, device=rt.device)
    special = {
        "nan": good.clone().fill_(float("nan")),
        "batch": good.expand(3, -1, -1, -1).contiguous(),
        "dtype": good.to(torch.float32 if rt.dtype == torch.float64 else torch.float64),
    }
    if isinstance(kwargs.get("v0"), str):
        kwargs = {**kwargs, "v0": special[kwargs["v0"]]}
    if isinstance(kwargs.get("v0"), torch.Tensor):
        kwargs["v0"] = kwargs["v0"].to(rt.device)
    if isinstance(kwargs.get("obstacles"), torch.Tensor):
        kwargs["obstacles"] = kwargs["obstacles"].to(rt.device)

    def no_kernel(*args, **kw):
        raise AssertionError("a NavierStokes stepper was built before the options were validated")

    monkeypatch.setattr(flow, "NavierStokes", no_kernel)
    with pytest.raises(error) as info:
        karman(**{"batch": 2, **kwargs})
    assert words in str(info.value)


# --------------------------------------------------------------------------------------------------
# face_coordinates
# --------------------------------------------------------------------------------------------------


def test_face_coordinates_layout_and_padding():
    grid = Grid((4, 6), ((1.0, 3.0), (-1.0, 2.0)))  # h = (0.5, 0.5), non-zero lower corner
    yx = face_coordinates(grid)
    assert yx.shape == (2, 2, 5, 7) and yx.dtype == torch.float64 and yx.is_contiguous()
    y_c, x_c = grid.centers(0), grid.centers(1)
    # v_y faces: y on the horizontal faces (0 and H on the boundary), x at the cell centres
    assert torch.allclose(yx[0, 0, :, 0], 1.0 + 0.5 * torch.arange(5, dtype=torch.float64))
    assert torch.allclose(yx[0, 1, 0, :6], x_c)
    # v_x faces: y at the cell centres, x on the vertical faces
    assert torch.allclose(yx[1, 0, :4, 0], y_c)
    assert torch.allclose(yx[1, 1, 0, :], -1.0 + 0.5 * torch.arange(7, dtype=torch.float64))
    # padding: the same formula one cell outside (finite, so a mask product zeroes it)
    assert float(yx[0, 1, 0, 6]) == pytest.approx(2.25) and float(yx[1, 0, 4, 0]) == pytest.approx(3.25)
    assert bool(torch.isfinite(yx).all())
    assert face_coordinates(grid, torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="2D grid"):
        face_coordinates(Grid.line(8))


def test_face_coordinates_match_taylor_green_and_karman():
    grid = Grid.rect((12, 16), (2 * math.pi, 2 * math.pi))
    (h, w), (hy, hx) = grid.shape, grid.spacing
    # taylor_green_velocity's former hand-made face positions: its result is unchanged, bit for bit
    yf = torch.arange(h + 1, dtype=torch.float64) * hy
    xc = (torch.arange(w + 1, dtype=torch.float64) + 0.5) * hx
    yc = (torch.arange(h + 1, dtype=torch.float64) + 0.5) * hy
    xf = torch.arange(w + 1, dtype=torch.float64) * hx
    decay = math.exp(-2.0 * 0.01 * 0.3)
    vy = -torch.cos(xc[None, :]) * torch.sin(yf[:, None]) * decay
    vx = torch.sin(xf[None, :]) * torch.cos(yc[:, None]) * decay
    legacy = torch.stack([vy, vx])[None] * valid_faces(grid, torch.float64)
    rt = runtime.current()
    assert torch.equal(taylor_green_velocity(grid, 0.3, 0.01), legacy.to(rt.dtype).to(rt.device))
    # karman's inflow band is exactly the faces whose y < 5
    scene = karman()
    yx = face_coordinates(karman_grid(), rt.dtype, rt.device)
    band = (yx[:, 0] < 5.0)[None].to(rt.dtype) * valid_faces(karman_grid(), rt.dtype, rt.device)
    assert torch.equal(scene.stepper.inflow_mask, band)


# --------------------------------------------------------------------------------------------------
# lid_driven_cavity(dt=)
# --------------------------------------------------------------------------------------------------


def test_cavity_time_step_option():
    auto = lid_driven_cavity(16)
    h, nu = 1.0 / 16, 1.0 / 100.0
    assert auto.stepper.dt == min(0.5 * h, 0.125 * h * h / nu)
    given = lid_driven_cavity(16, dt=0.05)
    assert given.stepper.dt == 0.05 and given.stepper.viscosity_substeps == 1
    sub = lid_driven_cavity(16, reynolds=1.0, dt=0.05)  # far beyond the explicit-viscosity limit: sub-stepped
    assert sub.stepper.viscosity_substeps == math.ceil(0.05 * 1.0 * 2 * 16**2 / 0.5)
    with pytest.warns(RuntimeWarning, match="CFL"):
        lid_driven_cavity(16, dt=0.1)  # CFL 1.6
    for bad, error in ((0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), ("0.1", TypeError)):
        with pytest.raises(error, match="dt must be a finite number > 0"):
            lid_driven_cavity(16, dt=bad)
    with pytest.raises(ValueError, match="lid_speed"):
        lid_driven_cavity(16, lid_speed=0.0)


# --------------------------------------------------------------------------------------------------
# run_to_steady
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # runs to a steady state
def test_run_to_steady_cavity_converges_and_reports_failure():
    scene = lid_driven_cavity(16, 100.0)
    res = run_to_steady(scene.stepper, scene.state0, tol=1e-5)
    v, steps, residual = res
    assert residual <= 1e-5 and steps % 10 == 0 and 100 < steps < 10_000
    assert not v.requires_grad
    # the returned state is steady: more steps barely change it (by the residual's definition)
    w = run_to_steady(scene.stepper, v, tol=1e-5).v
    assert float((w - v).abs().max() / v.abs().max()) < 1e-5 * 10 * scene.stepper.dt * 2
    # not converged: an exception carrying the state, or a warning and a residual > tol
    with pytest.raises(SteadyStateError, match="not converged after max_steps=25") as info:
        run_to_steady(scene.stepper, scene.state0, tol=1e-6, max_steps=25)
    assert info.value.steps == 25 and info.value.residual > 1e-6 and info.value.v.shape == scene.state0.shape
    with pytest.warns(RuntimeWarning, match="not converged"):
        out = run_to_steady(scene.stepper, scene.state0, tol=1e-6, max_steps=20, on_fail="warn")
    assert out.steps == 20 and out.residual > 1e-6


def test_run_to_steady_validates_its_arguments():
    scene = lid_driven_cavity(8)
    cases = [
        ({"tol": 0.0}, ValueError, "tol"),
        ({"max_steps": 0}, ValueError, "max_steps"),
        ({"check_every": 2.5}, TypeError, "check_every"),
        ({"on_fail": "ignore"}, ValueError, "on_fail"),
        ({"velocity_scale": -1.0}, ValueError, "velocity_scale"),
        ({"dt": float("nan")}, ValueError, "dt"),
    ]
    for kwargs, error, words in cases:
        with pytest.raises(error, match=words):
            run_to_steady(scene.stepper, scene.state0, **kwargs)
    with pytest.raises(TypeError, match=r"no \.dt attribute; pass dt="):
        run_to_steady(lambda v: v, scene.state0)
    # a stepper that does nothing is steady at once (given dt)
    res = run_to_steady(lambda v: v, scene.state0 + 1.0, dt=0.1, check_every=3)
    assert res.steps == 3 and res.residual == 0.0


# Ghia, Ghia & Shin (1982), Table I, Re = 100: u along the vertical centre line x = 0.5.
GHIA_Y = [1.0, 0.9766, 0.9688, 0.9609, 0.9531, 0.8516, 0.7344, 0.6172, 0.5, 0.4531, 0.2813, 0.1719, 0.1016,
          0.0703, 0.0625, 0.0547, 0.0]
GHIA_U = [1.0, 0.84123, 0.78871, 0.73722, 0.68717, 0.23151, 0.00332, -0.13641, -0.20581, -0.21090, -0.15662,
          -0.10150, -0.06434, -0.04775, -0.04192, -0.03717, 0.0]


def _centreline_u(v: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """u on x = 0.5 (the v_x faces of column n/2) with the wall values: y, u (float64, CPU)."""
    u = v[0, 1, :n, n // 2].detach().to("cpu", torch.float64)
    y = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.cat([torch.zeros(1), y, torch.ones(1)]), torch.cat([torch.zeros(1), u, torch.ones(1)])


def _interp(y: torch.Tensor, u: torch.Tensor, at: list[float]) -> torch.Tensor:
    at_t = torch.tensor(at, dtype=torch.float64)
    k = torch.searchsorted(y, at_t).clamp(1, y.numel() - 1)
    t = (at_t - y[k - 1]) / (y[k] - y[k - 1])
    return u[k - 1] + t * (u[k] - u[k - 1])


@pytest.mark.slow  # runs to a steady state
@pytest.mark.parametrize(
    "advection, min_rel_error, profile_error",
    # measured at n = 32 (tol 1e-6): semi-Lagrangian min u −0.1932 (8.4% short) at y = 0.484, profile max
    # |Δu| at Ghia's 17 points 0.0245; MacCormack −0.2024 (4.0% short) at y = 0.453, 0.0096.
    # (MacCormack at n = 64: −0.2111, +0.07%; 20 s, not run here.)
    [("semi_lagrangian", 0.10, 0.035), ("maccormack", 0.05, 0.015)],
)
def test_cavity_steady_state_matches_ghia_at_re_100(advection, min_rel_error, profile_error):
    n = 32
    scene = lid_driven_cavity(n, 100.0, advection=advection)
    v, steps, residual = run_to_steady(scene.stepper, scene.state0, tol=1e-6, max_steps=5000)
    y, u = _centreline_u(v, n)
    u_min = float(u.min())
    rel = abs(u_min / -0.21090 - 1)
    diff = float((_interp(y, u, GHIA_Y) - torch.tensor(GHIA_U, dtype=torch.float64)).abs().max())
    print(f"\nGhia Re=100 n={n} {advection}: {steps} steps, residual {residual:.2e}, min u {u_min:.4f} "
          f"(Ghia -0.2109, rel. error {rel:.3f}) at y = {float(y[int(u.argmin())]):.4f}; profile max |du| {diff:.4f}")
    assert rel < min_rel_error
    assert diff < profile_error
    assert 0.4 < float(y[int(u.argmin())]) < 0.5  # the minimum sits where Ghia's does (y ≈ 0.4531)


# --------------------------------------------------------------------------------------------------
# init(cpu_threads=)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)])
def test_init_rejects_bad_cpu_threads_before_touching_taichi(monkeypatch, bad, error):
    before = tdp.current()

    def no_start(*args, **kwargs):
        raise AssertionError("Taichi was (re)initialised before cpu_threads was validated")

    monkeypatch.setattr(runtime, "_start", no_start)
    with pytest.raises(error, match="cpu_threads must be an integer >= 1"):
        tdp.init(before.arch, "f32" if before.precision == "f64" else "f64", cpu_threads=bad)
    assert tdp.current() is before


def test_init_cpu_threads_sets_taichi_and_torch():
    import taichi as ti

    before, torch_threads = tdp.current(), torch.get_num_threads()
    try:
        rt = tdp.init(before.arch, before.precision, cpu_threads=1)
        assert rt.cpu_threads == 1 and ti.lang.impl.current_cfg().cpu_max_num_threads == 1
        assert torch.get_num_threads() == 1
        assert tdp.init(before.arch, before.precision) is rt  # None keeps the setting: no re-initialisation
        grid = Grid.line(8)
        u = torch.randn(1, 1, 8, dtype=rt.dtype, device=rt.device)
        assert bool(torch.isfinite(tdp.solvers.Burgers(grid, tdp.Boundary.periodic(1), 0.01, 0.05)(u)).all())
    finally:
        tdp.init(before.arch, before.precision, cpu_threads=before.cpu_threads)
        torch.set_num_threads(torch_threads)
    assert tdp.current().cpu_threads == before.cpu_threads
