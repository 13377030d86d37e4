"""The staggered (MAC) layer in 3D: layout and validation, flow boundaries, centred ⇄ staggered conversion,
apply_boundary, and the 3D advection / viscosity / flux operators (the same dimension-generic kernels as
2D) against the n-D plain-PyTorch reference of ``reference_mac`` and by float64 gradcheck; plus the n-D
reference against the separately written 2D one."""

import itertools

import pytest
import reference_mac as ref
import torch

from taichi_dp.grid import Boundary, Dirichlet, Grid, Periodic, ZeroGradient
from taichi_dp.grid.staggered import (
    FlowBoundary,
    Inflow,
    Outflow,
    Wall,
    apply_boundary,
    check_staggered,
    face_constraints,
    face_coordinates,
    free_faces,
    open_faces,
    staggered_shape,
    to_centred,
    to_staggered,
    valid_faces,
)
from taichi_dp.ops.flux_advection import apply_flux_advection, cell_courant, flux_advect
from taichi_dp.ops.staggered_advection import apply_scalar_advection, apply_velocity_advection
from taichi_dp.ops.staggered_diffusion import apply_velocity_diffusion, apply_velocity_diffusion_implicit

F64 = torch.float64
B, C = 2, 2
GRID = Grid.box((4, 5, 6), (1.0, 1.25, 1.8))  # (h_z, h_y, h_x) = (0.25, 0.25, 0.3)
GRID_GC = Grid.box((2, 3, 4), (0.5, 0.75, 1.2))  # the same spacing, fewer cells: for gradcheck
D, H, W = GRID.shape
DT = (0.1, 0.07)
NU = (0.02, 0.03)  # ν Δt Σ 1/h² ≤ 0.14: explicit viscosity stable

# Every side kind on some axis; each flow compiles its own kernels, so the operator tests share these three.
FLOWS = {
    # z: inflow/outflow; y: no-slip / slip; x: a wall moving along z and y / a no-slip wall
    "channel": FlowBoundary(((Inflow(0.6), Outflow()), (Wall(), Wall(slip=True)), (Wall(velocity=(0.4, -0.3, 0.0)), Wall()))),
    "periodic": FlowBoundary.periodic(ndim=3),
    # z: a wall moving along y and x / outflow; y: periodic; x: inflow against the axis / slip wall
    "mixed": FlowBoundary(
        ((Wall(velocity=(0.0, 0.5, -0.2)), Outflow()), (Periodic(), Periodic()), (Inflow(-0.4), Wall(slip=True)))
    ),
}
SCALAR_BCS = {  # periodic exactly where the flow is
    "channel": Boundary(((Dirichlet(0.8), ZeroGradient()), (ZeroGradient(), Dirichlet(-0.3)), (Dirichlet(0.2), ZeroGradient()))),
    "periodic": Boundary.periodic(3),
    "mixed": Boundary(((ZeroGradient(), Dirichlet(0.6)), (Periodic(), Periodic()), (Dirichlet(-0.5), ZeroGradient()))),
}
BOUNDARIES = {**FLOWS, "box": FlowBoundary.box(ndim=3), "slip_box": FlowBoundary.box(slip=True, ndim=3)}
SCHEMES = ("semi_lagrangian", "maccormack")
# A 3D kernel's first use in a process costs seconds of Taichi front end (its static loops unroll over axes,
# components and 2**3 corners), and every flow boundary compiles its own instances. The fast suite runs the
# operators on "mixed" (moving wall, outflow, periodic axis, inflow, slip wall); the other flows recompile
# every kernel (~20 s per flow), so they run with the slow tests (CI runs both).
FLOW_PARAMS = [
    "mixed",
    pytest.param("channel", marks=pytest.mark.slow),  # slow: recompiles every 3D kernel for this flow
    pytest.param("periodic", marks=pytest.mark.slow),  # slow: recompiles every 3D kernel for this flow
]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def leaves(*ts: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in ts]


def random_velocity(seed: int, grid: Grid = GRID, cfl: tuple[float, float] = (0.3, 1.5), padding: float = 0.0) -> torch.Tensor:
    """Staggered ``(B, 3, D+1, H+1, W+1)`` velocity with per-axis CFL ``|v| max(dt) / h`` in ``cfl`` and random
    signs; ``padding`` fills the padding entries (the operators must not read them)."""
    g = _gen(seed)
    shape = (B, *staggered_shape(grid))
    mag = cfl[0] + (cfl[1] - cfl[0]) * torch.rand(shape, generator=g, dtype=F64)
    sign = torch.where(torch.rand(shape, generator=g, dtype=F64) < 0.5, -1.0, 1.0)
    h = torch.tensor(grid.spacing, dtype=F64).view(1, 3, 1, 1, 1)
    mask = valid_faces(grid, F64)
    return sign * mag * h / max(DT) * mask + padding * (1 - mask)


def random_scalar(seed: int, grid: Grid = GRID) -> torch.Tensor:
    return torch.randn((B, C, *grid.shape), generator=_gen(seed), dtype=F64)


def dt_tensor() -> torch.Tensor:
    return torch.tensor(DT, dtype=F64)


def nu_tensor() -> torch.Tensor:
    return torch.tensor(NU, dtype=F64)


def obstacle_masks(grid: Grid = GRID) -> torch.Tensor:
    """``(2, 1, D, H, W)``: an interior solid cell (sample 0) and a solid block touching the z_lo/x_hi edge
    (sample 1)."""
    m = torch.ones(2, 1, *grid.shape, dtype=F64)
    m[0, 0, 1, 2, 2] = 0
    m[1, 0, 0:2, 1:3, -2:] = 0
    return m


def assert_grads_equal(got, want, names, atol=1e-10):
    for name, g, w in zip(names, got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=atol, msg=lambda m, n=name: f"d/d{n}: {m}")


# ----------------------------------------------------------------- per-face loop references (independent)
def _faces(grid: Grid):
    """Every real face ``(c, idx)`` of a staggered tensor on ``grid``."""
    for c in range(grid.ndim):
        ranges = [range(n + 1) if a == c else range(n) for a, n in enumerate(grid.shape)]
        for idx in itertools.product(*ranges):
            yield c, idx


def loop_open_faces(fluid: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> torch.Tensor:
    """``(2, ...)`` (per mask sample): a face is open when both cells it separates are fluid; a cell beyond a
    periodic side is the one on the other side, beyond other sides it counts as fluid."""
    out = torch.zeros(fluid.shape[0], *staggered_shape(grid), dtype=F64)
    for c, idx in _faces(grid):
        n = grid.shape[c]
        both = 1.0
        for cell_c in (idx[c] - 1, idx[c]):
            if 0 <= cell_c < n or isinstance(boundary.sides[c][0], Periodic):
                cell = list(idx)
                cell[c] = cell_c % n
                both = both * fluid[:, 0][(slice(None), *cell)]
        out[(slice(None), c, *idx)] = both
    return out


def loop_constraints(grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, fixed)``: walls 0, inflows their speed, outflow/periodic/interior faces kept, faces touching a
    solid cell 0, padding 0."""
    keep = torch.zeros(1, *staggered_shape(grid), dtype=F64)
    fixed = torch.zeros_like(keep)
    for c, idx in _faces(grid):
        side = boundary.sides[c][0] if idx[c] == 0 else boundary.sides[c][1] if idx[c] == grid.shape[c] else None
        if isinstance(side, Inflow):
            fixed[(0, c, *idx)] = side.speed
        elif not isinstance(side, Wall):
            keep[(0, c, *idx)] = 1.0
    if fluid is not None:
        o = loop_open_faces(fluid, grid, boundary)
        keep, fixed = keep * o, fixed * o
    return keep, fixed


def loop_apply_boundary(v: torch.Tensor, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None) -> torch.Tensor:
    keep, fixed = loop_constraints(grid, boundary, fluid)
    out = v * keep + fixed
    for c, idx in _faces(grid):  # periodic seams: face N is face 0
        if isinstance(boundary.sides[c][0], Periodic) and idx[c] == grid.shape[c]:
            src = list(idx)
            src[c] = 0
            out[(slice(None), c, *idx)] = out[(slice(None), c, *src)]
    return out


def linear(c: int, coords: torch.Tensor) -> torch.Tensor:
    """A different linear function of ``(z, y, x)`` per component ``c``."""
    coef = ((0.5, 2.0, -1.0, 0.3), (-1.0, 0.5, 3.0, -0.7), (0.2, -1.5, 0.4, 1.1))[c]
    return coef[0] + coef[1] * coords[0] + coef[2] * coords[1] + coef[3] * coords[2]


def linear_centred(grid: Grid = GRID) -> torch.Tensor:
    """Centred ``(2, 3, D, H, W)``: :func:`linear` at the cell centres, sample 1 twice sample 0."""
    zyx = torch.stack(torch.meshgrid(*(grid.centers(a) for a in range(3)), indexing="ij"))
    c = torch.stack([linear(k, zyx) for k in range(3)])
    return torch.stack([c, 2.0 * c])


def linear_staggered(grid: Grid = GRID) -> torch.Tensor:
    """Staggered ``(2, 3, ...)``: :func:`linear` at the faces (:func:`face_coordinates`), zero padding."""
    fc = face_coordinates(grid)
    v = torch.stack([linear(k, fc[k]) for k in range(3)]) * valid_faces(grid, F64)[0]
    return torch.stack([v, 2.0 * v])


# ------------------------------------------------------------------------------------- layout
def test_staggered_shape_and_valid_faces():
    assert staggered_shape(GRID) == (3, D + 1, H + 1, W + 1)
    assert staggered_shape(Grid.rect((4, 5))) == (2, 5, 6)
    with pytest.raises(ValueError, match="2D grid or a 3D grid, got shape \\(5,\\)"):
        staggered_shape(Grid.line(5))
    vf = valid_faces(GRID, F64)
    assert vf.shape == (1, 3, D + 1, H + 1, W + 1) and vf.dtype == F64
    assert vf.sum() == (D + 1) * H * W + D * (H + 1) * W + D * H * (W + 1)
    # padding: index N_a across the component's axis a != c
    assert (vf[0, 0, :, H] == 0).all() and (vf[0, 0, :, :, W] == 0).all() and (vf[0, 0, :, :H, :W] == 1).all()
    assert (vf[0, 1, D] == 0).all() and (vf[0, 1, :, :, W] == 0).all() and (vf[0, 1, :D, :, :W] == 1).all()
    assert (vf[0, 2, D] == 0).all() and (vf[0, 2, :, H] == 0).all() and (vf[0, 2, :D, :H, :] == 1).all()


def test_check_staggered_3d():
    v = torch.zeros(2, 3, D + 1, H + 1, W + 1, dtype=F64)
    assert check_staggered("v", v, GRID) is v
    assert check_staggered("state", torch.zeros(2, 4, D + 1, H + 1, W + 1, dtype=F64), GRID, channels=4) is not None
    with pytest.raises(ValueError, match=r"v must be a staggered velocity of shape \(B, 3, 5, 6, 7\) for grid \(4, 5, 6\)"):
        check_staggered("v", torch.zeros(2, 3, D, H, W, dtype=F64), GRID)
    with pytest.raises(ValueError, match=r"convert centred \(B, 3, D, H, W\) fields with to_staggered"):
        check_staggered("v", torch.zeros(2, 2, H + 1, W + 1, dtype=F64), GRID)
    with pytest.raises(ValueError, match=r"staggered tensor of shape \(B, 4, 5, 6, 7\)"):
        check_staggered("state", v, GRID, channels=4)
    with pytest.raises(TypeError, match=r"v must be a torch\.Tensor"):
        check_staggered("v", v.numpy(), GRID)
    bad = v.clone()
    bad[0, 2, 1, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        check_staggered("v", bad, GRID)


def test_face_coordinates_3d():
    fc = face_coordinates(GRID)
    assert fc.shape == (3, 3, D + 1, H + 1, W + 1) and fc.dtype == F64 and fc.is_contiguous()
    for c, a in itertools.product(range(3), range(3)):
        (lo, _), h = GRID.bounds[a], GRID.spacing[a]
        i = torch.arange(GRID.shape[a] + 1, dtype=F64)
        want = lo + (i if a == c else i + 0.5) * h  # faces along the own axis, centres across it
        view = [1, 1, 1]
        view[a] = -1
        torch.testing.assert_close(fc[c, a], want.view(view).expand(D + 1, H + 1, W + 1), rtol=0, atol=1e-15)
    assert face_coordinates(GRID, torch.float32).dtype == torch.float32


# -------------------------------------------------------------------------------- FlowBoundary
def test_flow_boundary_factories_and_ndim():
    assert FlowBoundary.box(ndim=3).sides == ((Wall(), Wall()),) * 3
    assert FlowBoundary.box(True, ndim=3).sides == ((Wall(True), Wall(True)),) * 3
    assert FlowBoundary.periodic(ndim=3).sides == ((Periodic(), Periodic()),) * 3
    assert FlowBoundary.box().ndim == 2 and FlowBoundary.periodic(3).ndim == 3  # the default keeps 2D
    assert FLOWS["channel"].has_outflow and not FlowBoundary.box(ndim=3).has_outflow
    assert FLOWS["mixed"].pressure() == Boundary(
        ((ZeroGradient(), Dirichlet(0.0)), (Periodic(), Periodic()), (ZeroGradient(),) * 2)
    )


@pytest.mark.parametrize("c", [0, 1, 2])
def test_component_boundary_3d(c):
    """Across axis ``a != c``: walls are Dirichlet(the wall velocity's component c), inflows Dirichlet(0), slip
    walls and outflows zero gradient; along axis ``c``: walls 0, inflows their speed, outflows zero gradient."""
    fb = FLOWS["channel"]  # z: Inflow(0.6) | Outflow; y: Wall | slip Wall; x: Wall(0.4, -0.3, 0) | Wall
    normal = [(Dirichlet(0.6), ZeroGradient()), (Dirichlet(0.0), Dirichlet(0.0)), (Dirichlet(0.0), Dirichlet(0.0))]
    tangential = [
        (Dirichlet(0.0), ZeroGradient()),
        (Dirichlet(0.0), ZeroGradient()),
        (Dirichlet((0.4, -0.3, 0.0)[c]), Dirichlet(0.0)),
    ]
    want = tuple(normal[a] if a == c else tangential[a] for a in range(3))
    assert fb.component(c) == Boundary(want)
    assert FlowBoundary.periodic(3).component(c) == Boundary.periodic(3)
    with pytest.raises(ValueError, match=r"c must be a velocity component in 0..2"):
        fb.component(3)


def test_wall_velocity_float_and_tuple_agree_in_2d():
    lid_float = FlowBoundary(((Wall(), Wall(velocity=0.7)), (Wall(velocity=-0.4), Outflow())))
    lid_tuple = FlowBoundary(((Wall(), Wall(velocity=(0.0, 0.7))), (Wall(velocity=(-0.4, 0.0)), Outflow())))
    for c in (0, 1):
        assert lid_float.component(c) == lid_tuple.component(c)
    assert lid_tuple.component(1).sides[0] == (Dirichlet(0.0), Dirichlet(0.7))
    assert Wall(velocity=[0.0, 1.0, 2.0]).velocity == (0.0, 1.0, 2.0)  # lists become (hashable) tuples


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: FlowBoundary.box(ndim=1), ValueError, r"ndim must be 2 or 3"),
        (lambda: FlowBoundary.periodic(ndim=4), ValueError, r"ndim must be 2 or 3"),
        (lambda: FlowBoundary.box(ndim="3"), TypeError, r"ndim must be an int"),
        (lambda: FlowBoundary(((Wall(), Wall()),) * 4), ValueError, r"\(\(z_lo, z_hi\), \(y_lo, y_hi\), \(x_lo, x_hi\)\) in 3D"),
        (lambda: FlowBoundary(((Wall(), Wall()),)), ValueError, r"\(\(y_lo, y_hi\), \(x_lo, x_hi\)\) in 2D"),
        (
            lambda: FlowBoundary(((Wall(), Wall()), (Wall(), Wall()), (Outflow(), Periodic()))),
            ValueError,
            r"sides\[2\]: Periodic must be set on both sides",
        ),
        (lambda: FlowBoundary(((Wall(), Wall()), (Wall(), Wall()), (Dirichlet(), Wall()))), TypeError, r"sides\[2\] entries"),
        # the normal entry of a wall velocity must be 0 (here the y wall moving along y)
        (
            lambda: FlowBoundary(((Wall(), Wall()), (Wall(velocity=(0.0, 1.0, 0.0)), Wall()), (Wall(), Wall()))),
            ValueError,
            r"sides\[1\]: Wall velocity must be tangential, its entry 1 \(v_y",
        ),
        (
            lambda: FlowBoundary(((Wall(), Wall(velocity=(1.0, 0.0))), (Wall(), Wall()))),
            ValueError,
            r"sides\[0\]: Wall velocity must be tangential, its entry 0 \(v_y",
        ),
        (
            lambda: FlowBoundary(((Wall(velocity=(0.0, 1.0)), Wall()), (Wall(), Wall()), (Wall(), Wall()))),
            ValueError,
            r"sides\[0\]: Wall velocity must have 3 entries \(v_z, v_y, v_x\) in 3D",
        ),
        (
            lambda: FlowBoundary(((Wall(velocity=0.5), Wall()), (Wall(), Wall()), (Wall(), Wall()))),
            ValueError,
            r"a moving Wall in 3D needs its velocity as a tuple \(v_z, v_y, v_x\)",
        ),
        (lambda: Wall(velocity=(0.0, float("nan"), 0.0)), ValueError, r"Wall velocity\[1\] must be finite"),
        (lambda: Wall(velocity=(0.0, 1.0, 0.0, 0.0)), ValueError, r"tuple of 2 or 3 entries"),
        (lambda: Wall(velocity="fast"), TypeError, r"Wall velocity must be a float or a tuple"),
        (lambda: Wall(slip=True, velocity=(0.0, 0.0, 1.0)), ValueError, r"a slip wall has no tangential velocity"),
    ],
)
def test_flow_boundary_errors_3d(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_zero_float_wall_velocity_is_fine_in_3d():
    assert FlowBoundary(((Wall(velocity=0.0), Wall()), (Wall(), Wall()), (Wall(), Wall()))) == FlowBoundary.box(ndim=3)


# ------------------------------------------------------------------------------------ conversions
def test_to_centred_reproduces_linear_fields_3d():
    s = linear_staggered()
    torch.testing.assert_close(to_centred(s), linear_centred(), rtol=0, atol=1e-14)
    noisy = s + 99.0 * (1 - valid_faces(GRID, F64))  # padding is ignored
    assert torch.equal(to_centred(noisy), to_centred(s))


@pytest.mark.parametrize("bname", BOUNDARIES)
def test_to_staggered_3d(bname):
    """Interior faces reproduce linear fields; boundary faces follow the sides (wall 0, inflow its speed,
    outflow the adjacent cell, periodic the average across the seam on both seam faces); padding 0; the
    result satisfies the boundary conditions."""
    fb = BOUNDARIES[bname]
    s = to_staggered(linear_centred(), fb)
    assert s.shape == (2, 3, D + 1, H + 1, W + 1)
    want = linear_staggered()
    c_ = linear_centred()
    for c in range(3):
        n = GRID.shape[c]
        inner = [slice(None), c] + [slice(1, n) if a == c else slice(0, GRID.shape[a]) for a in range(3)]
        torch.testing.assert_close(s[tuple(inner)], want[tuple(inner)], rtol=0, atol=1e-14)
        for k, (side, face, cell) in enumerate(((fb.sides[c][0], 0, 0), (fb.sides[c][1], n, n - 1))):
            got = s[(slice(None), c, *[face if a == c else slice(0, GRID.shape[a]) for a in range(3)])]
            adjacent = c_[:, c].select(1 + c, cell)
            if isinstance(side, Periodic):
                expected = 0.5 * (c_[:, c].select(1 + c, 0) + c_[:, c].select(1 + c, n - 1))
            elif isinstance(side, Outflow):
                expected = adjacent
            else:
                expected = torch.full_like(adjacent, side.speed if isinstance(side, Inflow) else 0.0)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-15, msg=f"component {c}, side {k}")
    assert (s * (1 - valid_faces(GRID, F64)) == 0).all()
    assert torch.equal(apply_boundary(s, GRID, fb), s)


def test_round_trips_3d():
    fb = FlowBoundary.periodic(3)
    const = torch.tensor([0.3, -1.7, 0.9], dtype=F64).view(1, 3, 1, 1, 1).expand(2, 3, D, H, W).contiguous()
    torch.testing.assert_close(to_centred(to_staggered(const, fb)), const, rtol=0, atol=1e-15)
    s = to_staggered(const, fb)
    torch.testing.assert_close(to_staggered(to_centred(s), fb), s, rtol=0, atol=1e-15)


@pytest.mark.parametrize("bname", ["channel", "mixed"])
def test_gradcheck_conversions_3d(bname):
    fb, grid = FLOWS[bname], GRID_GC
    c = torch.randn(2, 3, *grid.shape, dtype=F64, requires_grad=True)
    v = torch.randn(2, *staggered_shape(grid), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: to_staggered(c, fb), (c,))
    assert torch.autograd.gradcheck(to_centred, (v,))
    m = obstacle_masks(grid)
    assert torch.autograd.gradcheck(lambda v: apply_boundary(v, grid, fb, m), (v,))


# ------------------------------------------------------------------ open faces, apply_boundary, free faces
@pytest.mark.parametrize("bname", BOUNDARIES)
def test_open_faces_3d(bname):
    fb, m = BOUNDARIES[bname], obstacle_masks()
    got = open_faces(m, fb)
    assert got.shape == (2, 3, D + 1, H + 1, W + 1)
    torch.testing.assert_close(got, loop_open_faces(m, GRID, fb), rtol=0, atol=0)


@pytest.mark.parametrize("bname", BOUNDARIES)
@pytest.mark.parametrize("mask", ["none", "per_sample", "broadcast"])
def test_apply_boundary_3d(bname, mask):
    fb = BOUNDARIES[bname]
    m = {"none": None, "per_sample": obstacle_masks(), "broadcast": obstacle_masks()[1:]}[mask]
    v = torch.randn(2, 3, D + 1, H + 1, W + 1, generator=_gen(1), dtype=F64)  # padding deliberately non-zero
    out = apply_boundary(v, GRID, fb, m)
    torch.testing.assert_close(out, loop_apply_boundary(v, GRID, fb, m), rtol=0, atol=0)
    torch.testing.assert_close(apply_boundary(out, GRID, fb, m), out, rtol=0, atol=0)  # idempotent
    keep, fixed = face_constraints(GRID, fb, m, F64, "cpu")
    want_keep, want_fixed = loop_constraints(GRID, fb, m)
    assert torch.equal(keep.expand_as(want_keep), want_keep) and torch.equal(fixed.expand_as(want_fixed), want_fixed)
    # free faces: the kept ones, minus the periodic seam duplicates
    seams = torch.zeros(1, *staggered_shape(GRID), dtype=F64)
    for c in range(3):
        if isinstance(fb.sides[c][0], Periodic):
            seams[(0, c, *[GRID.shape[c] if a == c else slice(None) for a in range(3)])] = 1.0
    torch.testing.assert_close(free_faces(GRID, fb, m, F64, "cpu"), keep * (1 - seams), rtol=0, atol=0)


def test_boundary_dimension_mismatch():
    with pytest.raises(ValueError, match=r"boundary must have one side pair per grid axis \(3\), got a 2D FlowBoundary"):
        apply_boundary(torch.zeros(1, 3, D + 1, H + 1, W + 1, dtype=F64), GRID, FlowBoundary.box())


# --------------------------------------------------------------------------- velocity advection
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("flow", FLOW_PARAMS)
def test_velocity_advection_3d_matches_reference(scheme, flow):
    """Values (padding non-zero on input: never read) and gradients w.r.t. v, velocity and dt."""
    fb = FLOWS[flow]
    v, vel = random_velocity(1, padding=7.0), random_velocity(2, padding=-3.0)
    out = apply_velocity_advection(v, vel, dt_tensor(), GRID, fb, scheme)
    assert out.shape == v.shape and out.dtype == F64
    torch.testing.assert_close(out, ref.velocity_advection_nd(v, vel, dt_tensor(), GRID, fb, scheme), rtol=0, atol=1e-12)
    v, vel, dt = leaves(random_velocity(3), random_velocity(4), dt_tensor())
    cot = torch.randn(v.shape, generator=_gen(5), dtype=F64)
    got = torch.autograd.grad(apply_velocity_advection(v, vel, dt, GRID, fb, scheme), (v, vel, dt), cot)
    want = torch.autograd.grad(ref.velocity_advection_nd(v, vel, dt, GRID, fb, scheme), (v, vel, dt), cot)
    assert_grads_equal(got, want, ("v", "velocity", "dt"))
    # self-advection: both paths into the same tensor
    got = torch.autograd.grad(apply_velocity_advection(vel, vel, dt, GRID, fb, scheme), (vel, dt), cot)
    want = torch.autograd.grad(ref.velocity_advection_nd(vel, vel, dt, GRID, fb, scheme), (vel, dt), cot)
    assert_grads_equal(got, want, ("velocity", "dt"))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_velocity_integer_shift_is_roll_3d(scheme):
    """A constant velocity moving 2 cells per step along the periodic y axis of "mixed": every face value
    rolls (walls and open sides along z and x see no motion)."""
    fb, dt = FLOWS["mixed"], dt_tensor()
    vel = torch.zeros(B, 3, D + 1, H + 1, W + 1, dtype=F64)
    vel[:, 1] = (2 * GRID.spacing[1] / dt).view(B, 1, 1, 1)
    vel = vel * valid_faces(GRID, F64)
    v = apply_boundary(random_velocity(8), GRID, fb)  # seams equal
    out = apply_velocity_advection(v, vel, dt, GRID, fb, scheme)
    vf = valid_faces(GRID, F64)
    want = torch.cat([torch.roll(v[:, :, :, :H], 2, 3), v[:, :, :, H:]], dim=3)  # y face H is the seam copy of 0
    want[:, 1, :, H] = want[:, 1, :, 0]
    torch.testing.assert_close(out, want * vf, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("flow", FLOW_PARAMS[:2])
def test_velocity_advection_gradcheck_3d(scheme, flow):
    """Boundary conditions imposed before and after (boundary faces sit on a clamp kink), as a stepper does."""
    fb, grid = FLOWS[flow], GRID_GC
    v, vel, dt = leaves(random_velocity(6, grid), random_velocity(7, grid), dt_tensor())

    def f(v_, vel_, dt_):
        w = apply_velocity_advection(apply_boundary(v_, grid, fb), apply_boundary(vel_, grid, fb), dt_, grid, fb, scheme)
        return apply_boundary(w, grid, fb)

    assert torch.autograd.gradcheck(f, (v, vel, dt))


# ----------------------------------------------------------------------------- scalar advection
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("flow", FLOW_PARAMS)
def test_scalar_advection_3d_matches_reference(scheme, flow):
    args = (GRID, SCALAR_BCS[flow], FLOWS[flow], scheme)
    q, vel = random_scalar(11), random_velocity(12, padding=5.0)
    out = apply_scalar_advection(q, vel, dt_tensor(), *args)
    assert out.shape == q.shape
    torch.testing.assert_close(out, ref.scalar_advection_nd(q, vel, dt_tensor(), *args), rtol=0, atol=1e-12)
    q, vel, dt = leaves(random_scalar(13), random_velocity(14), dt_tensor())
    cot = torch.randn(q.shape, generator=_gen(15), dtype=F64)
    got = torch.autograd.grad(apply_scalar_advection(q, vel, dt, *args), (q, vel, dt), cot)
    want = torch.autograd.grad(ref.scalar_advection_nd(q, vel, dt, *args), (q, vel, dt), cot)
    assert_grads_equal(got, want, ("q", "velocity", "dt"))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scalar_integer_shift_is_roll_3d(scheme):
    """Constant velocity ``−3`` cells per step along the periodic y axis of "mixed": the scalar rolls."""
    fb, dt = FLOWS["mixed"], dt_tensor()
    vel = torch.zeros(B, 3, D + 1, H + 1, W + 1, dtype=F64)
    vel[:, 1] = (-3 * GRID.spacing[1] / dt).view(B, 1, 1, 1)
    q = random_scalar(18)
    out = apply_scalar_advection(q, vel * valid_faces(GRID, F64), dt, GRID, SCALAR_BCS["mixed"], fb, scheme)
    torch.testing.assert_close(out, torch.roll(q, -3, 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scalar_advection_gradcheck_3d(scheme):
    flow, grid = "mixed", GRID_GC
    args = (grid, SCALAR_BCS[flow], FLOWS[flow], scheme)
    q, vel, dt = leaves(random_scalar(16, grid), random_velocity(17, grid), dt_tensor())
    assert torch.autograd.gradcheck(lambda q_, vel_, dt_: apply_scalar_advection(q_, vel_, dt_, *args), (q, vel, dt))


# ------------------------------------------------------------------------------------ viscosity
@pytest.mark.parametrize("flow", FLOW_PARAMS)
def test_velocity_diffusion_3d_matches_reference(flow):
    fb = FLOWS[flow]
    v = apply_boundary(random_velocity(21), GRID, fb) + 4.0 * (1 - valid_faces(GRID, F64))  # seams equal, padding junk
    out = apply_velocity_diffusion(v, nu_tensor(), dt_tensor(), GRID, fb)
    torch.testing.assert_close(out, ref.velocity_diffusion_nd(v, nu_tensor(), dt_tensor(), GRID, fb), rtol=0, atol=1e-12)
    v = random_velocity(20)  # unequal periodic seams: face N keeps its centre value, face 0's neighbours
    out = apply_velocity_diffusion(v, nu_tensor(), dt_tensor(), GRID, fb)
    torch.testing.assert_close(out, ref.velocity_diffusion_nd(v, nu_tensor(), dt_tensor(), GRID, fb), rtol=0, atol=1e-12)
    v, nu, dt = leaves(random_velocity(22), nu_tensor(), dt_tensor())
    cot = torch.randn(v.shape, generator=_gen(23), dtype=F64)
    got = torch.autograd.grad(apply_velocity_diffusion(apply_boundary(v, GRID, fb), nu, dt, GRID, fb), (v, nu, dt), cot)
    want = torch.autograd.grad(ref.velocity_diffusion_nd(apply_boundary(v, GRID, fb), nu, dt, GRID, fb), (v, nu, dt), cot)
    assert_grads_equal(got, want, ("v", "nu", "dt"))


@pytest.mark.slow  # compiles the viscosity kernel for the all-periodic flow
def test_diffusion_keeps_a_constant_periodic_velocity_3d():
    v = torch.tensor([0.4, -1.3, 0.8], dtype=F64).view(1, 3, 1, 1, 1) * valid_faces(GRID, F64)
    v = v.expand(B, -1, -1, -1, -1).contiguous()
    torch.testing.assert_close(
        apply_velocity_diffusion(v, nu_tensor(), dt_tensor(), GRID, FLOWS["periodic"]), v, rtol=0, atol=1e-13
    )


def test_velocity_diffusion_gradcheck_3d():
    fb, grid = FLOWS["mixed"], GRID_GC
    v, nu, dt = leaves(random_velocity(24, grid), nu_tensor(), dt_tensor())

    def f(v_, nu_, dt_):
        return apply_boundary(apply_velocity_diffusion(apply_boundary(v_, grid, fb), nu_, dt_, grid, fb), grid, fb)

    assert torch.autograd.gradcheck(f, (v, nu, dt))


@pytest.mark.parametrize("flow", FLOW_PARAMS)
def test_implicit_viscosity_3d_solves_backward_euler_of_the_reference_laplacian(flow):
    """``x`` = implicit(v) satisfies ``x − νΔt L(x) = v`` on every free face (``L``: the n-D reference
    Laplacian, wall velocities included), with an obstacle; fixed faces keep their imposed values."""
    fb, m = FLOWS[flow], obstacle_masks()
    v = random_velocity(25)
    nu, dt = torch.tensor([0.5, 0.8], dtype=F64), dt_tensor()  # ν Δt Σ 1/h² up to 2.4: explicit would blow up
    x = apply_velocity_diffusion_implicit(v, nu, dt, GRID, fb, m, rtol=1e-13)
    free = free_faces(GRID, fb, m, F64, "cpu")
    k_lap = ref.velocity_diffusion_nd(x, nu, dt, GRID, fb) - x * valid_faces(GRID, F64)
    assert float(((x - k_lap - v) * free).abs().max()) < 1e-10
    keep, _ = face_constraints(GRID, fb, m, F64, "cpu")
    assert torch.equal(x * (1 - keep), apply_boundary(v, GRID, fb, m) * (1 - keep))
    assert torch.equal(apply_boundary(x, GRID, fb, m), x)


@pytest.mark.slow  # ~10 s: one CG solve per gradcheck perturbation (360 entries of v)
def test_implicit_viscosity_gradcheck_3d():
    fb, grid = FLOWS["mixed"], GRID_GC
    v, nu, dt = leaves(random_velocity(26, grid), torch.tensor([0.5, 0.8], dtype=F64), dt_tensor())
    m = obstacle_masks(grid)[:1]

    def f(v_, nu_, dt_):
        return apply_velocity_diffusion_implicit(v_, nu_, dt_, grid, fb, m, rtol=1e-13)

    assert torch.autograd.gradcheck(f, (v, nu, dt))


# ------------------------------------------------------------------------ conservative flux advection
def loop_cell_courant(velocity: torch.Tensor, dt: torch.Tensor, grid: Grid) -> torch.Tensor:
    out = torch.zeros(velocity.shape[0], dtype=F64)
    for b in range(velocity.shape[0]):
        best = 0.0
        for cell in itertools.product(*(range(n) for n in grid.shape)):
            total = 0.0
            for a, h in enumerate(grid.spacing):
                hi = list(cell)
                hi[a] += 1
                total += (abs(float(velocity[(b, a, *cell)])) + abs(float(velocity[(b, a, *hi)]))) / h
            best = max(best, total)
        out[b] = abs(float(dt[b])) * best
    return out


def test_cell_courant_3d():
    vel = random_velocity(30)
    torch.testing.assert_close(
        cell_courant(vel, dt_tensor(), GRID), loop_cell_courant(vel, dt_tensor(), GRID), rtol=1e-14, atol=0
    )


@pytest.mark.parametrize("flow", FLOW_PARAMS)
def test_flux_advection_3d_matches_reference(flow):
    """Values and gradients with an obstacle mask, sub-stepped to a cell Courant number <= 1."""
    fb, sb, m = FLOWS[flow], SCALAR_BCS[flow], obstacle_masks()
    q, vel, dt = leaves(random_scalar(31), random_velocity(32, cfl=(0.05, 0.3)), dt_tensor())
    n = max(1, int(float(cell_courant(vel, dt, GRID).max())) + 1)
    out = apply_flux_advection(q, vel, dt, GRID, sb, fb, m, substeps=n)
    want = ref.flux_advection_nd(q, vel, dt, GRID, sb, fb, m, substeps=n)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    cot = torch.randn(q.shape, generator=_gen(33), dtype=F64)
    assert_grads_equal(
        torch.autograd.grad(out, (q, vel, dt), cot), torch.autograd.grad(want, (q, vel, dt), cot), ("q", "velocity", "dt")
    )


def test_flux_advection_3d_conserves_on_closed_and_periodic_domains():
    """No open side: ``Σ q`` is unchanged whatever the velocity (walls and solid faces carry no flux)."""
    for fb in (FlowBoundary.periodic(3), FlowBoundary.box(ndim=3)):
        q, vel = random_scalar(34), random_velocity(35, cfl=(0.05, 0.2))
        sb = Boundary.periodic(3) if fb.sides[0][0] == Periodic() else Boundary.uniform(Dirichlet(5.0), 3)
        out = flux_advect(q, vel, dt_tensor(), GRID, fb, sb)
        torch.testing.assert_close(out.sum(dim=(2, 3, 4)), q.sum(dim=(2, 3, 4)), rtol=0, atol=1e-12)
        out = flux_advect(q, vel, dt_tensor(), GRID, fb, sb, fluid=obstacle_masks())
        torch.testing.assert_close(out.sum(dim=(2, 3, 4)), q.sum(dim=(2, 3, 4)), rtol=0, atol=1e-12)
        solid = obstacle_masks() < 0.5  # no flux into or out of solid cells: they keep their values
        assert torch.equal(out[solid.expand_as(q)], q[solid.expand_as(q)])


def test_flux_advect_validates_3d():
    q, vel = random_scalar(36), random_velocity(37)
    with pytest.raises(TypeError, match="scalar_boundary must be a 3D Boundary"):
        flux_advect(q, vel, 0.1, GRID, FLOWS["channel"], Boundary.periodic(2))
    with pytest.raises(ValueError, match=r"periodic exactly where boundary is \(axis 1\)"):
        flux_advect(q, vel, 0.1, GRID, FLOWS["mixed"], SCALAR_BCS["channel"])
    with pytest.raises(ValueError, match="velocity must be a staggered velocity of shape"):
        flux_advect(q, vel[..., :W], 0.1, GRID, FLOWS["channel"])
    with pytest.raises(ValueError, match=r"one side pair per grid axis \(3\)"):
        flux_advect(q, vel, 0.1, GRID, FlowBoundary.box())


def test_flux_advection_gradcheck_3d():
    fb, grid = FLOWS["mixed"], GRID_GC
    sb = SCALAR_BCS["mixed"]
    q, vel, dt = leaves(random_scalar(38, grid), random_velocity(39, grid, cfl=(0.05, 0.25)), dt_tensor())
    m = obstacle_masks(grid)

    def f(q_, vel_, dt_):
        return apply_flux_advection(q_, vel_, dt_, grid, sb, fb, m, substeps=2)

    assert torch.autograd.gradcheck(f, (q, vel, dt))


# ----------------------------------------------------------------------- the n-D reference in 2D
GRID_2D = Grid.rect((5, 4), (0.5, 0.6))
FLOWS_2D = {
    "channel": (
        FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall(slip=True)))),
        Boundary(((Dirichlet(0.8), ZeroGradient()), (ZeroGradient(), Dirichlet(-0.3)))),
    ),
    "periodic": (FlowBoundary.periodic(), Boundary.periodic(2)),
    "moving_walls": (
        FlowBoundary(((Wall(), Wall(velocity=0.7)), (Wall(velocity=-0.4), Outflow()))),
        Boundary(((ZeroGradient(), Dirichlet(0.6)), (ZeroGradient(), ZeroGradient()))),
    ),
    "periodic_x_inflow_y": (
        FlowBoundary(((Outflow(), Inflow(-0.5)), (Periodic(), Periodic()))),
        Boundary(((ZeroGradient(), Dirichlet(0.3)), (Periodic(), Periodic()))),
    ),
}


@pytest.mark.parametrize("flow", FLOWS_2D)
def test_nd_reference_agrees_with_2d_reference(flow):
    """The n-D reference (used for 3D) reduces to the separately written 2D reference: values and gradients."""
    fb, sb = FLOWS_2D[flow]
    g = _gen(40)
    h = torch.tensor(GRID_2D.spacing, dtype=F64).view(1, 2, 1, 1)
    shape = (B, *staggered_shape(GRID_2D))
    vf = valid_faces(GRID_2D, F64)
    v, vel = (torch.randn(shape, generator=g, dtype=F64) * h / max(DT) * vf for _ in range(2))
    q, dt, nu = torch.randn(B, C, *GRID_2D.shape, generator=g, dtype=F64), dt_tensor(), nu_tensor()
    v, vel, q, dt, nu = leaves(v, vel, q, dt, nu)
    pairs = []
    for scheme in SCHEMES:
        for f in (ref.velocity_advection_nd, ref.velocity_advection):
            pairs.append(f(v, vel, dt, GRID_2D, fb, scheme))
        for f in (ref.scalar_advection_nd, ref.scalar_advection):
            pairs.append(f(q, vel, dt, GRID_2D, sb, fb, scheme))
    # viscosity: periodic seams equal on input (the 2D reference reads face N's neighbours from its own row)
    seamed = equal_seams(v, fb)
    pairs += [f(seamed, nu, dt, GRID_2D, fb) for f in (ref.velocity_diffusion_nd, ref.velocity_diffusion)]
    m = torch.ones(1, 1, *GRID_2D.shape, dtype=F64)
    m[0, 0, 2, 1] = 0
    small = 0.2 * vel
    pairs += [f(q, small, dt, GRID_2D, sb, fb, m, substeps=2) for f in (ref.flux_advection_nd, ref.flux_advection)]
    inputs = (v, vel, q, dt, nu)
    for k in range(0, len(pairs), 2):
        nd_out, out_2d = pairs[k], pairs[k + 1]
        torch.testing.assert_close(nd_out, out_2d, rtol=0, atol=1e-13, msg=lambda m_, k=k: f"pair {k // 2}: {m_}")
        cot = torch.randn(out_2d.shape, generator=_gen(41 + k), dtype=F64)
        got = torch.autograd.grad(nd_out, inputs, cot, allow_unused=True, retain_graph=True)
        want = torch.autograd.grad(out_2d, inputs, cot, allow_unused=True, retain_graph=True)
        for name, a, b in zip(("v", "vel", "q", "dt", "nu"), got, want, strict=True):
            assert (a is None) == (b is None), (k, name)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=lambda m_, k=k, n=name: f"pair {k // 2} d/d{n}: {m_}")


def equal_seams(v: torch.Tensor, fb: FlowBoundary) -> torch.Tensor:
    """Copy face 0 onto face N along periodic normal axes (differentiably)."""
    comps = []
    for c in range(fb.ndim):
        u = v[:, c]
        if isinstance(fb.sides[c][0], Periodic):
            n = u.shape[1 + c] - 1
            u = torch.cat([u.narrow(1 + c, 0, n), u.narrow(1 + c, 0, 1)], dim=1 + c)
        comps.append(u)
    return torch.stack(comps, dim=1)
