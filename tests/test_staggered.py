"""Staggered (MAC) layout: flow boundary conditions, centred ⇄ staggered conversion, open faces, apply_boundary."""

import pytest
import torch
from reference import ref_apply_boundary, ref_open_faces

from taichi_dp import Boundary, Dirichlet, Grid, Periodic, ZeroGradient
from taichi_dp.grid.staggered import (
    FlowBoundary,
    Inflow,
    Outflow,
    Wall,
    apply_boundary,
    open_faces,
    staggered_shape,
    to_centred,
    to_staggered,
    valid_faces,
)

F64 = torch.float64
GRID = Grid.rect((4, 5), (1.0, 1.5))  # (h_y, h_x) = (0.25, 0.3)
H, W = GRID.shape
HY, HX = GRID.spacing

SIDES = {
    "wall": Wall(),
    "slip": Wall(slip=True),
    "inflow": Inflow(0.7),
    "inflow_neg": Inflow(-0.3),
    "outflow": Outflow(),
    "periodic": Periodic(),
}
BOUNDARIES = {
    "box": FlowBoundary.box(),
    "slip_box": FlowBoundary.box(slip=True),
    "channel": FlowBoundary(((Inflow(1.0), Outflow()), (Wall(), Wall()))),
    "periodic": FlowBoundary.periodic(),
    "periodic_x_walls_y": FlowBoundary(((Wall(), Wall(slip=True)), (Periodic(), Periodic()))),
    "periodic_y_inout_x": FlowBoundary(((Periodic(), Periodic()), (Inflow(0.7), Outflow()))),
    "mixed": FlowBoundary(((Outflow(), Inflow(-0.8)), (Inflow(0.5), Outflow()))),
}


def obstacle_masks() -> torch.Tensor:
    """(2, 1, H, W): a solid cell in the interior (sample 0) and a solid block touching the y_lo/x_hi corner
    (sample 1); the fluid stays connected."""
    m = torch.ones(2, 1, H, W, dtype=F64)
    m[0, 0, 2, 2] = 0
    m[1, 0, 0:2, W - 2 :] = 0
    return m


def lin_y(y, x):
    return 0.5 + 2.0 * y - x


def lin_x(y, x):
    return -1.0 + 0.5 * y + 3.0 * x


def linear_centred(batch: int = 2) -> torch.Tensor:
    """Centred (B, 2, H, W) field, each component a (different) linear function of (y, x)."""
    y = GRID.centers(0).view(H, 1)
    x = GRID.centers(1).view(1, W)
    c = torch.stack([lin_y(y, x), lin_x(y, x)]).expand(batch, 2, H, W)
    return c * torch.arange(1, batch + 1, dtype=F64).view(-1, 1, 1, 1)


# ------------------------------------------------------------------------------------- FlowBoundary
def test_pressure_boundary_per_side_kind():
    expected = {"wall": ZeroGradient(), "slip": ZeroGradient(), "inflow": ZeroGradient(), "outflow": Dirichlet(0.0)}
    for name, side in SIDES.items():
        if name == "periodic":
            continue
        fb = FlowBoundary(((side, Wall()), (Periodic(), Periodic())))
        assert fb.pressure() == Boundary(((expected.get(name, ZeroGradient()), ZeroGradient()), (Periodic(), Periodic())))
    assert FlowBoundary.periodic().pressure() == Boundary.periodic(2)
    channel = BOUNDARIES["channel"].pressure()
    assert channel == Boundary(((ZeroGradient(), Dirichlet(0.0)), (ZeroGradient(), ZeroGradient())))


@pytest.mark.parametrize(
    ("side", "normal", "tangential"),
    [
        (Wall(), Dirichlet(0.0), Dirichlet(0.0)),
        (Wall(slip=True), Dirichlet(0.0), ZeroGradient()),
        (Inflow(0.7), Dirichlet(0.7), Dirichlet(0.0)),
        (Inflow(-0.3), Dirichlet(-0.3), Dirichlet(0.0)),
        (Outflow(), ZeroGradient(), ZeroGradient()),
        (Periodic(), Periodic(), Periodic()),
    ],
)
def test_component_boundary_per_side_kind(side, normal, tangential):
    # `side` on the high y side and the low x side; the other sides are walls of the other slip kind
    other = Periodic() if isinstance(side, Periodic) else Wall()
    fb = FlowBoundary(((other, side), (side, other)))
    o_n = Periodic() if isinstance(side, Periodic) else Dirichlet(0.0)
    # component 0 (v_y) is normal to the y sides, tangential to the x sides; component 1 the other way round
    assert fb.component(0) == Boundary(((o_n, normal), (tangential, o_n)))
    assert fb.component(1) == Boundary(((o_n, tangential), (normal, o_n)))


def test_has_outflow_and_factories():
    assert not FlowBoundary.box().has_outflow
    assert not FlowBoundary.periodic().has_outflow
    assert BOUNDARIES["channel"].has_outflow
    assert BOUNDARIES["periodic_y_inout_x"].has_outflow
    assert FlowBoundary.box(slip=True).sides == ((Wall(True), Wall(True)), (Wall(True), Wall(True)))
    assert FlowBoundary.periodic().sides == ((Periodic(), Periodic()), (Periodic(), Periodic()))


@pytest.mark.parametrize(
    ("sides", "error", "match"),
    [
        (((Periodic(), Wall()), (Wall(), Wall())), ValueError, r"sides\[0\]: Periodic must be set on both sides"),
        (((Wall(), Wall()), (Outflow(), Periodic())), ValueError, r"sides\[1\]: Periodic must be set on both sides"),
        (((Wall(), Wall()), (Wall(), Dirichlet(0.0))), TypeError, r"sides\[1\] entries must be Wall/Inflow/Outflow/Periodic"),
        (((ZeroGradient(), Wall()), (Wall(), Wall())), TypeError, r"sides\[0\] entries"),
        ((("wall", Wall()), (Wall(), Wall())), TypeError, r"sides\[0\] entries"),
        (((Wall(), Wall()),), ValueError, r"\(\(y_lo, y_hi\), \(x_lo, x_hi\)\)"),
        (((Wall(), Wall(), Wall()), (Wall(), Wall())), ValueError, r"\(\(y_lo, y_hi\), \(x_lo, x_hi\)\)"),
    ],
)
def test_constructor_errors(sides, error, match):
    with pytest.raises(error, match=match):
        FlowBoundary(sides)


# ------------------------------------------------------------------------------------------ layout
def test_shapes_and_padding():
    assert staggered_shape(GRID) == (2, H + 1, W + 1)
    with pytest.raises(ValueError, match="2D grid"):
        staggered_shape(Grid.line(5))
    vf = valid_faces(GRID, F64)
    assert vf.shape == (1, 2, H + 1, W + 1) and vf.dtype == F64
    assert vf.sum() == (H + 1) * W + H * (W + 1)
    assert (vf[0, 0, :, W] == 0).all() and (vf[0, 1, H, :] == 0).all()
    c = torch.randn(3, 2, H, W, dtype=F64)
    for fb in BOUNDARIES.values():
        s = to_staggered(c, fb)
        assert s.shape == (3, 2, H + 1, W + 1)
        assert (s * (1 - vf) == 0).all()  # padding zero
    assert to_centred(torch.randn(3, 2, H + 1, W + 1, dtype=F64)).shape == (3, 2, H, W)


def test_to_centred_reproduces_linear_fields():
    y_face, x_face = torch.arange(H + 1, dtype=F64).view(-1, 1) * HY, torch.arange(W + 1, dtype=F64).view(1, -1) * HX
    yc, xc = GRID.centers(0).view(-1, 1), GRID.centers(1).view(1, -1)
    v = torch.zeros(2, 2, H + 1, W + 1, dtype=F64)
    v[:, 0, :, :W] = lin_y(y_face, xc)
    v[:, 1, :H, :] = lin_x(yc, x_face)
    v[1] *= 2.0
    c = to_centred(v)
    torch.testing.assert_close(c, linear_centred(), rtol=0, atol=1e-14)
    v[:, 0, :, W] = 99.0  # padding is ignored
    v[:, 1, H, :] = -99.0
    torch.testing.assert_close(to_centred(v), c, rtol=0, atol=0)


@pytest.mark.parametrize("bname", BOUNDARIES)
def test_to_staggered_reproduces_linear_fields_in_the_interior(bname):
    s = to_staggered(linear_centred(), BOUNDARIES[bname])
    y_face, x_face = torch.arange(H + 1, dtype=F64).view(-1, 1) * HY, torch.arange(W + 1, dtype=F64).view(1, -1) * HX
    yc, xc = GRID.centers(0).view(-1, 1), GRID.centers(1).view(1, -1)
    scale = torch.tensor([1.0, 2.0], dtype=F64).view(2, 1, 1)
    torch.testing.assert_close(s[:, 0, 1:H, :W], scale * lin_y(y_face[1:H], xc), rtol=0, atol=1e-14)
    torch.testing.assert_close(s[:, 1, :H, 1:W], scale * lin_x(yc, x_face[:, 1:W]), rtol=0, atol=1e-14)


@pytest.mark.parametrize("kind", SIDES)
@pytest.mark.parametrize("axis", [0, 1])
def test_to_staggered_boundary_faces(kind, axis):
    side = SIDES[kind]
    hi = side if isinstance(side, Periodic) else Outflow() if not isinstance(side, Outflow) else Wall()
    pair = (side, hi)
    rest = (Periodic(), Periodic())
    fb = FlowBoundary((pair, rest) if axis == 0 else (rest, pair))
    c = torch.randn(2, 2, H, W, dtype=F64)
    s = to_staggered(c, fb)
    if axis == 0:
        lo_face, hi_face, first, last = s[:, 0, 0, :W], s[:, 0, H, :W], c[:, 0, 0, :], c[:, 0, H - 1, :]
    else:
        lo_face, hi_face, first, last = s[:, 1, :H, 0], s[:, 1, :H, W], c[:, 1, :, 0], c[:, 1, :, W - 1]
    if kind in ("wall", "slip"):
        assert (lo_face == 0).all()
    elif kind.startswith("inflow"):
        assert (lo_face == side.speed).all()
    elif kind == "outflow":
        assert torch.equal(lo_face, first)
        assert (hi_face == 0).all()  # the high side is a wall here
    if kind == "periodic":
        torch.testing.assert_close(lo_face, 0.5 * (first + last), rtol=0, atol=1e-15)
        assert torch.equal(lo_face, hi_face)
    elif kind != "outflow":
        assert torch.equal(hi_face, last)  # the high side is an outflow


@pytest.mark.parametrize("bname", BOUNDARIES)
def test_to_staggered_satisfies_the_boundary_conditions(bname):
    """Round trip through apply_boundary: a field from to_staggered already satisfies the normal-face BCs."""
    fb = BOUNDARIES[bname]
    s = to_staggered(torch.randn(2, 2, H, W, dtype=F64), fb)
    assert torch.equal(apply_boundary(s, GRID, fb), s)


def test_round_trips():
    # centred → staggered → centred reproduces linear fields on cells whose faces are all interior
    for fb in BOUNDARIES.values():
        back = to_centred(to_staggered(linear_centred(), fb))
        torch.testing.assert_close(back[:, 0, 1 : H - 1], linear_centred()[:, 0, 1 : H - 1], rtol=0, atol=1e-14)
        torch.testing.assert_close(back[:, 1, :, 1 : W - 1], linear_centred()[:, 1, :, 1 : W - 1], rtol=0, atol=1e-14)
    # ... and constants exactly everywhere when periodic
    const = torch.tensor([0.3, -1.7], dtype=F64).view(1, 2, 1, 1).expand(2, 2, H, W).contiguous()
    fb = FlowBoundary.periodic()
    torch.testing.assert_close(to_centred(to_staggered(const, fb)), const, rtol=0, atol=1e-15)
    # staggered → centred → staggered reproduces a uniform periodic staggered field
    s = to_staggered(const, fb)
    torch.testing.assert_close(to_staggered(to_centred(s), fb), s, rtol=0, atol=1e-15)


@pytest.mark.parametrize("bname", BOUNDARIES)
def test_gradcheck_conversions(bname):
    fb = BOUNDARIES[bname]
    c = torch.randn(2, 2, H, W, dtype=F64, requires_grad=True)
    v = torch.randn(2, 2, H + 1, W + 1, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: to_staggered(c, fb), (c,))
    assert torch.autograd.gradcheck(to_centred, (v,))
    assert torch.autograd.gradcheck(lambda v: apply_boundary(v, GRID, fb), (v,))
    m = obstacle_masks()
    assert torch.autograd.gradcheck(lambda v: apply_boundary(v, GRID, fb, m), (v,))


# -------------------------------------------------------------------------------------- open faces
def test_open_faces_hand_computed():
    fluid = torch.ones(1, 1, 3, 4, dtype=F64)
    fluid[0, 0, 1, 0] = 0  # solid cell on the x_lo edge, middle row
    grid = Grid.rect((3, 4))
    walls = open_faces(fluid, FlowBoundary.box())
    periodic_x = open_faces(fluid, FlowBoundary(((Wall(), Wall()), (Periodic(), Periodic()))))
    expected = torch.ones(1, 2, 4, 5, dtype=F64) * valid_faces(grid, F64)
    expected[0, 0, 1, 0] = expected[0, 0, 2, 0] = 0  # v_y faces below/above the solid cell
    expected[0, 1, 1, 0] = expected[0, 1, 1, 1] = 0  # v_x faces left (domain edge) / right of it
    torch.testing.assert_close(walls, expected, rtol=0, atol=0)
    expected[0, 1, 1, 4] = 0  # periodic: the seam face x = W is the same face as x = 0, next to the solid cell
    torch.testing.assert_close(periodic_x, expected, rtol=0, atol=0)
    # periodic in y: a solid cell in the last row closes the seam faces 0 and H of its column
    fluid = torch.ones(1, 1, 3, 4, dtype=F64)
    fluid[0, 0, 2, 1] = 0
    got = open_faces(fluid, FlowBoundary(((Periodic(), Periodic()), (Outflow(), Outflow()))))
    expected = torch.ones(1, 2, 4, 5, dtype=F64) * valid_faces(grid, F64)
    expected[0, 0, 2, 1] = expected[0, 0, 3, 1] = expected[0, 0, 0, 1] = 0
    expected[0, 1, 2, 1] = expected[0, 1, 2, 2] = 0
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("bname", BOUNDARIES)
def test_open_faces_match_reference(bname):
    fb = BOUNDARIES[bname]
    m = obstacle_masks()
    got = open_faces(m, fb)
    assert got.shape == (2, 2, H + 1, W + 1)
    expected = torch.stack([ref_open_faces(m[s, 0], GRID, fb) for s in range(2)])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert open_faces(m[:1], fb).shape == (1, 2, H + 1, W + 1)


# ---------------------------------------------------------------------------------- apply_boundary
def test_apply_boundary_hand_computed():
    grid = Grid.rect((3, 4))
    fb = FlowBoundary(((Inflow(0.5), Outflow()), (Wall(), Wall(slip=True))))
    fluid = torch.ones(1, 1, 3, 4, dtype=F64)
    fluid[0, 0, 1, 0] = 0
    v = torch.full((2, 2, 4, 5), 2.0, dtype=F64)  # padding deliberately non-zero
    vy = torch.tensor(
        [
            [0.5, 0.5, 0.5, 0.5, 0.0],  # inflow faces
            [0.0, 2.0, 2.0, 2.0, 0.0],  # (1, 0): below the solid cell
            [0.0, 2.0, 2.0, 2.0, 0.0],  # (2, 0): above the solid cell
            [2.0, 2.0, 2.0, 2.0, 0.0],  # outflow faces: left free
        ],
        dtype=F64,
    )
    vx = torch.tensor(
        [
            [0.0, 2.0, 2.0, 2.0, 0.0],  # walls at x = 0 and x = W (slip or not: zero normal velocity)
            [0.0, 0.0, 2.0, 2.0, 0.0],  # (1, 1): right of the solid cell
            [0.0, 2.0, 2.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],  # padding row
        ],
        dtype=F64,
    )
    expected = torch.stack([vy, vx]).expand(2, 2, 4, 5)
    torch.testing.assert_close(apply_boundary(v, grid, fb, fluid), expected, rtol=0, atol=0)
    # without a mask, only the solid cell's faces change back
    no_mask = apply_boundary(v, grid, fb)
    expected = expected.clone()
    expected[:, 0, 1:3, 0] = 2.0
    expected[:, 1, 1, 1] = 2.0
    torch.testing.assert_close(no_mask, expected, rtol=0, atol=0)


def test_apply_boundary_periodic_seams():
    """Periodic seams are made equal by copying face 0 onto face H (W): face 0 wins."""
    grid = Grid.rect((3, 4))
    v = torch.randn(2, 2, 4, 5, dtype=F64)
    out = apply_boundary(v, grid, FlowBoundary.periodic())
    assert torch.equal(out[:, 0, 3, :4], v[:, 0, 0, :4]) and torch.equal(out[:, 0, 0, :4], v[:, 0, 0, :4])
    assert torch.equal(out[:, 1, :3, 4], v[:, 1, :3, 0]) and torch.equal(out[:, 1, :3, 0], v[:, 1, :3, 0])
    assert torch.equal(out[:, 0, 1:3, :4], v[:, 0, 1:3, :4]) and torch.equal(out[:, 1, :3, 1:4], v[:, 1, :3, 1:4])
    assert (out[:, 0, :, 4] == 0).all() and (out[:, 1, 3, :] == 0).all()


@pytest.mark.parametrize("bname", BOUNDARIES)
@pytest.mark.parametrize("mask", ["none", "per_sample", "broadcast"])
def test_apply_boundary_matches_reference(bname, mask):
    fb = BOUNDARIES[bname]
    m = {"none": None, "per_sample": obstacle_masks(), "broadcast": obstacle_masks()[1:]}[mask]
    v = torch.randn(2, 2, H + 1, W + 1, dtype=F64)
    torch.testing.assert_close(apply_boundary(v, GRID, fb, m), ref_apply_boundary(v, GRID, fb, m), rtol=0, atol=0)
    if m is not None:  # a bool mask gives the same
        torch.testing.assert_close(apply_boundary(v, GRID, fb, m > 0.5), ref_apply_boundary(v, GRID, fb, m), rtol=0, atol=0)


# ------------------------------------------------------------------------------------ inflow profiles
def _profile_stepper(inflow, advection="maccormack"):
    import taichi_dp as tdp
    from taichi_dp.grid.geometry import Disc
    from taichi_dp.solvers import NavierStokes

    tdp.init(precision="f64")
    grid = Grid.rect((16, 32), (1.0, 2.0))
    boundary = FlowBoundary(((Wall(), Wall()), (inflow, Outflow())))
    return NavierStokes(grid, boundary, nu=0.01, dt=0.05, fluid=Disc((0.5, 0.6), 0.15)(grid), advection=advection)


@pytest.mark.parametrize("advection", ["semi_lagrangian", "maccormack"])
def test_a_constant_inflow_profile_steps_exactly_like_the_uniform_inflow(advection):
    """The kernels never read an inflow's value along its own axis (the boundary faces hold it): a profile
    that is constant gives the uniform inflow's rollout bit for bit."""
    outs = []
    for inflow in (Inflow(0.7), Inflow(lambda y: 0.7 + 0 * y)):
        st = _profile_stepper(inflow, advection)
        v = torch.randn(1, *staggered_shape(st.grid), dtype=F64, generator=torch.Generator().manual_seed(0)) * 0.3
        for _ in range(5):
            v = st.step(v)
        outs.append(v)
    assert torch.equal(outs[0], outs[1])


def test_an_inflow_profile_is_imposed_on_the_side_faces_and_kept_by_the_projection():
    def profile(y):
        return 1.0 + torch.sin(3.0 * y)

    st = _profile_stepper(Inflow(profile))
    v = torch.zeros(1, *staggered_shape(st.grid), dtype=F64)
    for _ in range(3):
        v = st.step(v)
    y = st.grid.centers(0, F64)
    torch.testing.assert_close(v[0, 1, :16, 0], profile(y), rtol=0, atol=0)
    assert float(v[0, 0, 1:16, 0].abs().max()) > 0  # the flow is not a copy of the profile everywhere
    # 3D: a profile of the two tangential coordinates (an "ij" mesh of the side)
    g3 = Grid.box((4, 6, 8), (1.0, 1.0, 2.0))
    speeds = Inflow(lambda z, y: y).face_speeds(g3, 2)
    assert speeds.shape == (4, 6)
    torch.testing.assert_close(speeds[2], g3.centers(1, F64))


def test_inflow_profile_flux_balance_and_errors():
    from taichi_dp.ops.pressure import check_flux_balance

    grid = Grid.rect((8, 16), (1.0, 2.0))
    ramp = Inflow(lambda y: 2.0 * y)  # mean 1.0 over the side
    check_flux_balance(grid, FlowBoundary(((Wall(), Wall()), (ramp, Inflow(1.0)))))  # in = out: balanced
    with pytest.raises(ValueError, match=r"net volume flux of 0\.5"):
        check_flux_balance(grid, FlowBoundary(((Wall(), Wall()), (ramp, Inflow(0.5)))))
    assert ramp.flux(grid, 1) == pytest.approx(1.0)
    with pytest.raises(TypeError, match="Inflow speed must be a number or a callable"):
        Inflow("fast")
    with pytest.raises(ValueError, match="the side's faces' shape \\(8,\\) \\(or one number\\), got shape \\(3,\\)"):
        Inflow(lambda y: torch.ones(3)).face_speeds(grid, 1)
    # a 3D profile of one coordinate's line (N0,) broadcast along the wrong axis before; now refused
    g3 = Grid.box((4, 4, 8), (1.0, 1.0, 2.0))
    with pytest.raises(ValueError, match=r"\(4, 4\) \(or one number\), got shape \(4,\)"):
        Inflow(lambda z, y: z[:, 0]).face_speeds(g3, 2)
    assert torch.equal(Inflow(lambda z, y: torch.tensor(0.5)).face_speeds(g3, 2), torch.full((4, 4), 0.5, dtype=F64))
    with pytest.raises(TypeError, match="must return real speeds, got complex"):
        Inflow(lambda y: y + 1j).face_speeds(grid, 1)
    weight = torch.tensor(2.0, dtype=F64, requires_grad=True)  # evaluated once per grid: no gradient reaches it
    with pytest.raises(ValueError, match="requires grad"):
        Inflow(lambda y: weight * y).face_speeds(grid, 1)
    with pytest.raises(ValueError, match="non-finite"):
        Inflow(lambda y: y / 0.0 * 0.0).face_speeds(grid, 1)
    with pytest.raises(TypeError, match="must return a tensor"):
        Inflow(lambda y: "x").face_speeds(grid, 1)
    with pytest.raises(ValueError, match="to_staggered needs grid="):
        to_staggered(torch.zeros(1, 2, 8, 16), FlowBoundary(((Wall(), Wall()), (ramp, Inflow(1.0)))))
    c = torch.zeros(1, 2, 8, 16, dtype=F64)
    faces = to_staggered(c, FlowBoundary(((Wall(), Wall()), (ramp, Inflow(1.0)))), grid)
    torch.testing.assert_close(faces[0, 1, :8, 0], 2.0 * grid.centers(0, F64))
