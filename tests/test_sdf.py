"""Signed-distance obstacles (taichi_dp.grid.sdf): exact distances, combinators, transforms, fractional cell
volumes and face openings (exact for planes, second order for curved bodies), their gradients with respect to
the shapes' parameters, and compatibility with the binary masks of taichi_dp.grid.geometry."""

import math

import pytest
import torch

from taichi_dp.grid import Grid
from taichi_dp.grid.geometry import Box, Cylinder, Disc, Sphere, Union, fluid_masks
from taichi_dp.grid.sdf import (
    BoxSDF,
    CapsuleSDF,
    CircleSDF,
    CylinderSDF,
    SphereSDF,
    binary_mask,
    cell_fractions,
    difference,
    face_fractions,
    intersection,
    rotate,
    scale,
    translate,
    union,
)
from taichi_dp.grid.staggered import valid_faces

F64 = torch.float64


def pts(*rows):
    return torch.tensor(rows, dtype=F64)


def close(a, b, tol=1e-12):
    assert torch.allclose(a.cpu(), torch.as_tensor(b, dtype=F64).cpu(), atol=tol, rtol=0), (a, b)


def solid_measure(frac, grid):
    return (1 - frac).sum() * math.prod(grid.spacing)


# ---------------------------------------------------------------- exact distances of the primitives


def test_sphere_distances_2d_and_3d():
    c = SphereSDF((0.5, 0.5), 0.25)
    close(c(pts((0.5, 1.0), (0.5, 0.5), (0.8, 0.9))), [0.25, -0.25, 0.25])  # |(0.3, 0.4)| = 0.5
    s = SphereSDF((0.0, 0.0, 0.0), 1.0)
    close(s(pts((0.0, 3.0, 4.0), (0.0, 0.0, 0.5))), [4.0, -0.5])
    assert c.ndim == 2 and s.ndim == 3 and CircleSDF((0.0, 0.0), 1.0).ndim == 2


def test_box_distances():
    b = BoxSDF((0.0, 0.0), (1.0, 2.0))
    # outside the corner (1, 2) by (2, 4); outside a face by 1; inside: nearest face at 0.5 and at 0.1
    close(b(pts((3.0, 6.0), (0.5, 3.0), (0.5, 1.0), (0.2, 1.9))), [math.sqrt(20.0), 1.0, -0.5, -0.1])
    b3 = BoxSDF((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    close(b3(pts((2.0, 3.0, 4.0), (0.5, 0.5, 1.5), (0.5, 0.5, 0.5))), [math.sqrt(14.0), 0.5, -0.5])


def test_cylinder_distances():
    c = CylinderSDF((0.0, 0.0, 0.0), 1.0, axis=0, length=2.0)  # along z, |z| <= 1
    got = c(pts((0.0, 3.0, 4.0), (3.0, 0.0, 0.5), (3.0, 0.0, 2.0), (0.0, 0.0, 0.0), (0.9, 0.0, 0.0)))
    close(got, [4.0, 2.0, math.sqrt(5.0), -1.0, -0.1])
    infinite = CylinderSDF((0.0, 0.0, 0.0), 1.0, axis=0)
    close(infinite(pts((100.0, 0.0, 3.0))), [2.0])
    along_x = CylinderSDF((0.0, 0.0, 0.0), 1.0, axis=2, length=2.0)
    close(along_x(pts((0.0, 0.0, 3.0), (4.0, 3.0, 0.0))), [2.0, 4.0])


def test_capsule_distances():
    cap = CapsuleSDF((0.0, 0.0), (0.0, 2.0), 0.5)  # segment along x from 0 to 2
    close(cap(pts((1.0, 1.0), (0.0, 3.0), (0.0, -1.0), (0.0, 1.0), (3.0, 6.0))), [0.5, 0.5, 0.5, -0.5, 4.5])
    cap3 = CapsuleSDF((0.0, 0.0, 0.0), (2.0, 0.0, 0.0), 0.25)
    close(cap3(pts((1.0, 0.0, 1.0), (3.0, 0.0, 0.0))), [0.75, 0.75])


# ---------------------------------------------------------------- combinators and transforms


def test_union_intersection_difference():
    a, b = SphereSDF((0.0, 0.0), 1.0), SphereSDF((0.0, 1.5), 1.0)
    p = pts((0.0, -0.5), (0.0, 0.75), (0.0, 2.0), (0.0, 5.0))  # in a only, in both, in b only, in neither
    pa, pb = a(p), b(p)
    close((a | b)(p), torch.minimum(pa, pb))
    close(union(a, b)(p), torch.minimum(pa, pb))
    close((a & b)(p), torch.maximum(pa, pb))
    close((a - b)(p), torch.maximum(pa, -pb))
    assert ((a | b)(p) < 0).tolist() == [True, True, True, False]
    assert (intersection(a, b)(p) < 0).tolist() == [False, True, False, False]
    assert (difference(a, b)(p) < 0).tolist() == [True, False, False, False]
    three = union(a, union(b, SphereSDF((3.0, 0.0), 0.5)))
    assert len(three.sdfs) == 3  # nested unions flatten


def test_rotated_box_is_the_box_at_rotated_points():
    box = BoxSDF((0.2, 0.1), (0.6, 0.9))
    theta, about = 0.7, (0.4, 0.5)
    rotated = rotate(box, theta, about=about)
    p = torch.rand(200, 2, dtype=F64) * 2 - 0.5
    y, x = p[:, 0] - about[0], p[:, 1] - about[1]
    c, s = math.cos(theta), math.sin(theta)  # undo a counter-clockwise (x, y) rotation: rotate by -theta
    back = torch.stack([-x * s + y * c + about[0], x * c + y * s + about[1]], -1)
    close(rotated(p), box(back))
    # the corner (x, y) = (1, 1) of [-1, 1]² turned by 45° lands at (x, y) = (0, √2)
    square = rotate(BoxSDF((-1.0, -1.0), (1.0, 1.0)), math.pi / 4)
    close(square(pts((math.sqrt(2) + 0.1, 0.0), (0.0, 0.0))), [0.1, -1.0])
    # a quarter turn about the centre swaps the extents
    quarter = rotate(BoxSDF((0.0, 0.0), (1.0, 3.0)), math.pi / 2, about=(0.5, 1.5))
    close(quarter(p), BoxSDF((-1.0, 1.0), (2.0, 2.0))(p), 1e-12)


def test_rotation_3d_about_z_is_the_2d_rotation_and_right_handed():
    theta = 0.45
    box3 = BoxSDF((-5.0, 0.2, 0.1), (5.0, 0.6, 0.9))  # tall in z: z faces far from the test points
    rotated3 = rotate(box3, theta, axis=(2.0, 0.0, 0.0), about=(0.0, 0.4, 0.5))  # axis need not be unit
    rotated2 = rotate(BoxSDF((0.2, 0.1), (0.6, 0.9)), theta, about=(0.4, 0.5))
    p2 = torch.rand(100, 2, dtype=F64)
    p3 = torch.cat([torch.zeros(100, 1, dtype=F64), p2], -1)
    close(rotated3(p3), rotated2(p2))
    # right-handed about x: +y goes to +z
    ball = SphereSDF((0.0, 1.0, 0.0), 0.1).rotate(math.pi / 2, axis=(0.0, 0.0, 1.0))
    close(ball(pts((1.0, 0.0, 0.0))), [-0.1])


def test_translate_and_scale():
    p = torch.rand(50, 2, dtype=F64) * 2 - 0.5
    close(translate(SphereSDF((0.1, 0.2), 0.3), (0.4, -0.1))(p), SphereSDF((0.5, 0.1), 0.3)(p))
    close(scale(SphereSDF((0.1, 0.2), 0.3), 2.0, about=(0.1, 0.2))(p), SphereSDF((0.1, 0.2), 0.6)(p))
    close(SphereSDF((0.1, 0.2), 0.3).scale(0.5)(p), SphereSDF((0.05, 0.1), 0.15)(p))  # about the origin
    close(BoxSDF((0.0, 0.0), (1.0, 1.0)).translate((1.0, 2.0))(p), BoxSDF((1.0, 2.0), (2.0, 3.0))(p))


# ---------------------------------------------------------------- fractions: exact for planes


def test_axis_aligned_half_plane_fractions_are_exact():
    grid = Grid.rect((8, 10))  # h = (1/8, 1/10); solid where x < d
    d = 0.3137
    plane = BoxSDF((-10.0, -10.0), (10.0, d))
    x0 = torch.arange(10, dtype=F64) / 10
    column = ((x0 + 0.1 - d) / 0.1).clamp(0, 1)  # fluid share of [x0, x0 + 0.1]
    vol = cell_fractions(plane, grid)
    assert vol.shape == (1, 1, 8, 10)
    close(vol[0, 0], column.expand(8, 10))
    faces = face_fractions(plane, grid)
    assert faces.shape == (1, 2, 9, 11)
    close(faces[0, 0, :, :10], column.expand(9, 10))  # v_y faces: horizontal segments of the columns
    close(faces[0, 1, :8, :], (torch.arange(11, dtype=F64) / 10 > d).to(F64).expand(8, 11))  # v_x faces at x = j/10
    close(faces * (1 - valid_faces(grid, F64)), torch.zeros_like(faces))  # padding stays 0


def test_a_face_whose_corners_all_lie_on_the_surface_is_closed():
    """φ = 0 at every corner: the face lies on a flat side of the body (a zero-volume gap between the body
    and the grid line) or is a chord of a convex body, and counts as solid — as a cell centre on the
    surface does for masks. Open, such faces let flow into cells that are wholly inside the body (a step
    flush with an inflow side leaked through its top layer). (Bit-exact zeros: sides on grid lines.)"""
    grid = Grid.rect((8, 8), (1.0, 1.0))
    box = BoxSDF((0.25, 0.25), (0.75, 0.5))  # every side on a grid line
    faces = face_fractions(box, grid)
    assert faces[0, 0, 2, 2:4].tolist() == [0.0, 0.0] and faces[0, 0, 6, 2:4].tolist() == [0.0, 0.0]  # bottom, top
    assert faces[0, 1, 2:6, 2].tolist() == [0.0] * 4 and faces[0, 1, 2:6, 4].tolist() == [0.0] * 4  # left, right
    assert faces[0, 0, 1, 2:4].tolist() == [1.0, 1.0] and faces[0, 1, 2:6, 1].tolist() == [1.0] * 4  # one cell away
    cube = face_fractions(BoxSDF((0.25, 0.25, 0.25), (0.75, 0.75, 0.5)), Grid.box((4, 4, 4), (1.0, 1.0, 1.0)))
    assert cube[0, 2, 1:3, 1:3, 1].flatten().tolist() == [0.0] * 4  # 3D: square faces on a flat side
    assert cube[0, 2, 1:3, 1:3, 0].flatten().tolist() == [1.0] * 4


def test_tilted_half_plane_fractions_are_exact_2d():
    grid = Grid((6, 7), ((0.0, 0.6), (0.0, 0.7)))  # h = 0.1
    theta, d = 0.6, 0.4
    cos, sin = math.cos(theta), math.sin(theta)  # fluid: x cos + y sin > d; φ is exactly linear in the domain
    plane = rotate(BoxSDF((-10.0, -10.0), (10.0, d)), theta)
    p = torch.rand(20, 2, dtype=F64)
    close(plane(p), p[:, 1] * cos + p[:, 0] * sin - d)
    faces = face_fractions(plane, grid)[0]
    h = 0.1
    for i in range(7):  # v_y faces: y = i h, x in [j h, (j + 1) h]
        for j in range(7):
            xs = torch.tensor((d - i * h * sin) / cos, dtype=F64)
            close(faces[0, i, j], ((j + 1) * h - xs).clamp(0, h) / h, 1e-12)
    for i in range(6):  # v_x faces: x = j h, y in [i h, (i + 1) h]
        for j in range(8):
            ys = torch.tensor((d - j * h * cos) / sin, dtype=F64)
            close(faces[1, i, j], ((i + 1) * h - ys).clamp(0, h) / h, 1e-12)
    vol = cell_fractions(plane, grid)[0, 0]
    s = torch.linspace(0, 1, 20001, dtype=F64)  # fine trapezoid rule across each cell in x
    for i in range(6):
        for j in range(7):
            x = (j + s) * h
            ys = (d - x * cos) / sin
            share = ((i + 1) * h - ys).clamp(0, h) / h
            want = torch.trapezoid(share, s)
            close(vol[i, j], want, 1e-8)


def test_tilted_plane_fractions_are_exact_3d():
    grid = Grid.box((4, 5, 6), (0.4, 0.5, 0.6))  # h = 0.1
    n = torch.tensor([0.5, 0.3, 0.8], dtype=F64)
    n = n / n.norm()  # fluid: n · (z, y, x) > 0.35
    # build the tilted plane from the x-normal one: turn (0, 0, 1) onto n about (0, 0, 1) × n
    x_axis = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    axis_xyz = torch.linalg.cross(x_axis.flip(0), n.flip(0))
    angle = math.asin(float(axis_xyz.norm()))
    plane = rotate(BoxSDF((-10.0, -10.0, -10.0), (10.0, 10.0, 0.35)), angle, axis=tuple(axis_xyz.flip(0).tolist()))
    p = torch.rand(20, 3, dtype=F64) * 0.5
    close(plane(p), p @ n - 0.35, 1e-12)
    # total solid volume in the box and total open area of the z faces at each level, by quadrature in (y, x)
    s = torch.linspace(0, 1, 2001, dtype=F64)
    y, x = torch.meshgrid(s * 0.5, s * 0.6, indexing="ij")
    zs = (0.35 - n[1] * y - n[2] * x) / n[0]  # fluid above z = zs(y, x)
    solid = torch.trapezoid(torch.trapezoid(zs.clamp(0, 0.4), s * 0.6), s * 0.5)
    close(solid_measure(cell_fractions(plane, grid), grid), solid, 1e-7)
    faces = face_fractions(plane, grid)[0]
    for k in range(5):
        open_area = torch.trapezoid(torch.trapezoid((zs < k * 0.1).to(F64), s * 0.6), s * 0.5)
        close(faces[0, k, :5, :6].sum() * 0.01, open_area, 2e-3)  # step integrand: quadrature error ~1/2000


def test_fraction_range_far_field_and_deep_inside():
    grid = Grid.rect((40, 40))
    body = SphereSDF((0.5, 0.5), 0.3)
    vol, faces = cell_fractions(body, grid), face_fractions(body, grid)
    assert float(vol.min()) >= 0 and float(vol.max()) <= 1 and float(faces.min()) >= 0 and float(faces.max()) <= 1
    assert vol.dtype == F64 and faces.dtype == F64  # the runtime's dtype (the test suite runs in f64)
    yc = grid.centers(0)
    r = ((yc[:, None] - 0.5) ** 2 + (yc[None, :] - 0.5) ** 2).sqrt().to(vol.device)
    far, deep = r > 0.3 + 0.05, r < 0.3 - 0.05
    assert bool((vol[0, 0][far] == 1).all()) and bool((vol[0, 0][deep] == 0).all())
    cut = (vol[0, 0] > 0) & (vol[0, 0] < 1)
    assert bool(((r[cut] - 0.3).abs() < 0.75 / 40 * math.sqrt(2)).all())  # partial cells straddle the circle
    assert cell_fractions(body, grid, dtype=torch.float32).dtype == torch.float32
    f3 = cell_fractions(SphereSDF((0.5, 0.5, 0.5), 0.3), Grid.box((12, 12, 12)))
    assert f3.shape == (1, 1, 12, 12, 12) and float(f3[0, 0, 6, 6, 6]) == 0 and float(f3[0, 0, 0, 0, 0]) == 1
    assert face_fractions(SphereSDF((0.5, 0.5, 0.5), 0.3), Grid.box((4, 5, 6))).shape == (1, 3, 5, 6, 7)


# ---------------------------------------------------------------- second-order convergence


def _orders(errors):
    return [math.log2(errors[k] / errors[k + 1]) for k in range(len(errors) - 1)]


def test_circle_area_converges_at_second_order():
    circle = SphereSDF((0.5123, 0.4871), 0.2531)
    exact = math.pi * 0.2531**2
    errors = []
    for n in (24, 48, 96):
        grid = Grid.rect((n, n))
        errors.append(abs(float(solid_measure(cell_fractions(circle, grid), grid)) - exact))
    assert errors[-1] < 1e-4
    assert min(_orders(errors)) >= 1.8, errors


def test_sphere_volume_converges_at_second_order():
    ball = SphereSDF((0.5123, 0.4871, 0.503), 0.2531)
    exact = 4 / 3 * math.pi * 0.2531**3
    errors = []
    for n in (12, 24, 48):
        grid = Grid.box((n, n, n))
        errors.append(abs(float(solid_measure(cell_fractions(ball, grid), grid)) - exact))
    assert min(_orders(errors)) >= 1.8, errors


def test_face_openings_converge_to_the_chords():
    """The closed length of the v_x faces on each grid line x = j h is the circle's chord there; the mean
    (over lines, and over 8 fixed centres: single lines near tangency are noisy) error is second order."""
    r, centres = 0.2531, [(0.45 + 0.013 * k, 0.55 - 0.011 * k) for k in range(8)]
    errors = []
    for n in (24, 48, 96):
        grid, x = Grid.rect((n, n)), torch.arange(n + 1, dtype=F64) / n
        err = 0.0
        for cy, cx in centres:
            closed = (1 - face_fractions(SphereSDF((cy, cx), r), grid)[0, 1, :n, :]).sum(0).cpu() / n
            err += float((closed - 2 * (r**2 - (x - cx) ** 2).clamp(min=0).sqrt()).abs().mean())
        errors.append(err / len(centres))
    assert min(_orders(errors)) >= 1.8, errors


def test_3d_fractions_of_an_extruded_disc_are_the_2d_ones():
    """An infinite cylinder along z: every z slice of the 3D cell fractions, z-face and y/x-face openings is
    the 2D answer for the disc (checks the 3D staggered layout against the 2D one)."""
    g2, g3 = Grid.rect((9, 11), (0.9, 1.1)), Grid.box((3, 9, 11), (0.3, 0.9, 1.1))
    disc, rod = SphereSDF((0.43, 0.61), 0.27), CylinderSDF((0.0, 0.43, 0.61), 0.27, axis=0)
    close(cell_fractions(rod, g3)[0, 0], cell_fractions(disc, g2)[0, 0].expand(3, 9, 11))
    f2, f3 = face_fractions(disc, g2)[0], face_fractions(rod, g3)[0]
    close(f3[0, :, :9, :11], cell_fractions(disc, g2)[0, 0].expand(4, 9, 11))  # z faces: the 2D cells
    close(f3[1, :3], f2[0].expand(3, 10, 12), 1e-12)  # y faces: the 2D v_y segments
    close(f3[2, :3], f2[1].expand(3, 10, 12), 1e-12)  # x faces: the 2D v_x segments
    close(f3[1:, 3], torch.zeros(2, 10, 12))  # z padding


# ---------------------------------------------------------------- gradients w.r.t. the shape's parameters


def _fd(f, x, eps=1e-6):
    g = torch.zeros_like(x)
    for k in range(x.numel()):
        e = torch.zeros_like(x)
        e.view(-1)[k] = eps
        g.view(-1)[k] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def test_area_gradient_wrt_radius_is_the_circumference():
    grid = Grid.rect((64, 64))
    area = lambda r: solid_measure(cell_fractions(SphereSDF((0.5123, 0.4871), r), grid), grid)
    r = torch.tensor(0.2531, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(area(r), r)
    close(g, _fd(area, r.detach()), 1e-6)
    assert abs(float(g) - 2 * math.pi * 0.2531) < 0.01 * 2 * math.pi * 0.2531


def test_moment_gradient_wrt_centre():
    """d/dc ∫_solid x dA = (0, area) for a disc of centre c = (c_y, c_x)."""
    grid = Grid.rect((64, 64))
    x = grid.centers(1)[None, :]

    def moment(c):
        return ((1 - cell_fractions(SphereSDF(c, 0.2531), grid)[0, 0]) * x.to(c.device)).sum() / 64**2

    c = torch.tensor([0.5123, 0.4871], dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(moment(c), c)
    close(g, _fd(moment, c.detach()), 1e-6)
    area = math.pi * 0.2531**2
    assert abs(float(g[0])) < 0.01 * area and abs(float(g[1]) - area) < 0.01 * area
    # a centre given as a tuple mixing a number and a 0-d tensor carries the gradient too
    cx = torch.tensor(0.4871, dtype=F64, requires_grad=True)
    (gx,) = torch.autograd.grad(moment_from_tuple(grid, x, cx), cx)
    close(gx, g[1], 1e-12)


def moment_from_tuple(grid, x, cx):
    return ((1 - cell_fractions(SphereSDF((0.5123, cx), 0.2531), grid)[0, 0]) * x.to(cx.device)).sum() / 64**2


def test_gradient_wrt_rotation_angle():
    grid = Grid.rect((48, 48))
    y, x = grid.centers(0)[:, None], grid.centers(1)[None, :]
    w = (x - 0.5) * (y - 0.5)  # the product moment changes with the angle (the area does not)

    def loss(a):
        body = rotate(BoxSDF((0.4, 0.3), (0.6, 0.7)), a, about=(0.5, 0.5))
        return ((1 - cell_fractions(body, grid)[0, 0]) * w.to(a.device)).sum() / 48**2

    a = torch.tensor(0.3, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(loss(a), a)
    close(g, _fd(loss, a.detach()), 1e-6)
    # analytic: ∫ x y over the box (half-sides 0.2 along x, 0.1 along y) turned by a is (Iₓ − I_y) sin(2a) / 2
    ix, iy = 0.4**3 * 0.2 / 12, 0.2**3 * 0.4 / 12
    want = (ix - iy) * math.cos(2 * 0.3)
    assert abs(float(g) - want) < 0.05 * abs(want)  # the weight at cell centres is a first-order quadrature


def _projected(*tensors):
    """Three fixed random projections of the flattened outputs: gradcheck then compares vᵀJ for three v
    (every entry of J contributes) with one backward each instead of one per output entry."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    w = torch.rand(3, flat.numel(), dtype=F64, generator=torch.Generator().manual_seed(1)).to(flat.device)
    return w @ flat


def test_gradcheck_fractions_2d_and_3d():
    grid2 = Grid.rect((7, 8))
    c = torch.tensor([0.47, 0.53], dtype=F64, requires_grad=True)
    r = torch.tensor(0.31, dtype=F64, requires_grad=True)
    a = torch.tensor(0.37, dtype=F64, requires_grad=True)

    def both(c, r, a):
        body = SphereSDF(c, r) | rotate(CapsuleSDF((0.2, 0.2), (0.3, 0.8), 0.07), a, about=c)
        return _projected(cell_fractions(body, grid2), face_fractions(body, grid2))

    assert torch.autograd.gradcheck(both, (c, r, a))
    grid3 = Grid.box((4, 5, 5))
    c3 = torch.tensor([0.48, 0.51, 0.53], dtype=F64, requires_grad=True)
    r3 = torch.tensor(0.33, dtype=F64, requires_grad=True)
    a3 = torch.tensor(0.21, dtype=F64, requires_grad=True)

    def three(c, r, a):
        body = SphereSDF(c, r) - rotate(BoxSDF((0.4, 0.3, 0.45), (0.9, 0.6, 0.55)), a, axis=(0.3, 1.0, 0.2), about=c)
        return _projected(cell_fractions(body, grid3), face_fractions(body, grid3))

    assert torch.autograd.gradcheck(three, (c3, r3, a3))


def test_volume_gradient_wrt_radius_3d():
    grid = Grid.box((24, 24, 24))
    vol = lambda r: solid_measure(cell_fractions(SphereSDF((0.5123, 0.4871, 0.503), r), grid), grid)
    r = torch.tensor(0.2531, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(vol(r), r)
    close(g, _fd(vol, r.detach()), 1e-6)
    assert abs(float(g) - 4 * math.pi * 0.2531**2) < 0.02 * 4 * math.pi * 0.2531**2


# ---------------------------------------------------------------- binary masks and geometry compatibility


def test_binary_mask_matches_geometry_shapes():
    g2 = Grid((12, 18), ((-1.0, 2.0), (0.5, 5.0)))
    assert torch.equal(binary_mask(SphereSDF((0.4, 2.6), 0.9), g2), Disc((0.4, 2.6), 0.9)(g2))
    assert torch.equal(binary_mask(BoxSDF((0.1, 1.1), (1.3, 2.9)), g2), Box((0.1, 1.1), (1.3, 2.9))(g2))
    g3 = Grid.box((6, 8, 10), (0.6, 0.8, 1.0))
    assert torch.equal(binary_mask(SphereSDF((0.3, 0.41, 0.52), 0.23), g3), Sphere((0.3, 0.41, 0.52), 0.23)(g3))
    cyl, cyl_sdf = Cylinder((0.3, 0.41, 0.52), 0.23, 2, 0.47), CylinderSDF((0.3, 0.41, 0.52), 0.23, 2, 0.47)
    assert torch.equal(binary_mask(cyl_sdf, g3), cyl(g3))
    # an SDF called with a grid is its mask, so it mixes with geometry shapes and fluid_masks
    sdf = SphereSDF((0.4, 2.6), 0.9)
    assert torch.equal(sdf(g2), binary_mask(sdf, g2))
    mixed = Union(Disc((0.0, 1.0), 0.4), sdf)(g2)
    assert torch.equal(mixed, Disc((0.0, 1.0), 0.4)(g2) * Disc((0.4, 2.6), 0.9)(g2))
    assert fluid_masks(g2, [sdf, None]).shape == (2, 1, 12, 18)


# ---------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: SphereSDF((0.5,), 1.0), ValueError, "SphereSDF centre"),
        (lambda: SphereSDF((0.0, 0.0), -1.0), ValueError, "SphereSDF radius"),
        (lambda: SphereSDF((0.0, 0.0), "1"), TypeError, "SphereSDF radius"),
        (lambda: SphereSDF((0.0, float("nan")), 1.0), ValueError, "SphereSDF centre[1]"),
        (lambda: SphereSDF((0.0, 0.0), torch.tensor([1.0, 2.0])), TypeError, "SphereSDF radius"),
        (lambda: SphereSDF(torch.zeros(2, 2), 1.0), ValueError, "SphereSDF centre"),
        (lambda: CircleSDF((0.0, 0.0, 0.0), 1.0), ValueError, "CircleSDF centre"),
        (lambda: BoxSDF((0.0, 0.0), (1.0, 0.0)), ValueError, "upper > lower"),
        (lambda: BoxSDF((0.0, 0.0), (1.0, 1.0, 1.0)), ValueError, "same length"),
        (lambda: CylinderSDF((0.0, 0.0, 0.0), 1.0, 3), ValueError, "CylinderSDF axis"),
        (lambda: CylinderSDF((0.0, 0.0, 0.0), 1.0, 0, 0.0), ValueError, "CylinderSDF length"),
        (lambda: CapsuleSDF((0.0, 1.0), (0.0, 1.0), 0.1), ValueError, "must differ"),
        (lambda: union(SphereSDF((0.0, 0.0), 1.0), SphereSDF((0.0, 0.0, 0.0), 1.0)), ValueError, "mixes 2D and 3D"),
        (lambda: union(SphereSDF((0.0, 0.0), 1.0), 3), TypeError, "sdfs[1]"),
        (lambda: union(), ValueError, "at least one"),
        (lambda: rotate(SphereSDF((0.0, 0.0, 0.0), 1.0), 0.1), ValueError, "axis is required"),
        (lambda: rotate(SphereSDF((0.0, 0.0), 1.0), 0.1, axis=(1.0, 0.0, 0.0)), ValueError, "RotatedSDF axis"),
        (lambda: rotate(SphereSDF((0.0, 0.0, 0.0), 1.0), 0.1, axis=(0.0, 0.0, 0.0)), ValueError, "non-zero"),
        (lambda: rotate("disc", 0.1), TypeError, "RotatedSDF sdf"),
        (lambda: scale(SphereSDF((0.0, 0.0), 1.0), 0.0), ValueError, "ScaledSDF factor"),
        (lambda: translate(SphereSDF((0.0, 0.0), 1.0), (1.0, 2.0, 3.0)), ValueError, "TranslatedSDF offset"),
    ],
)
def test_shape_validation(make, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        make()


def test_grid_and_points_validation():
    disc, grid = SphereSDF((0.5, 0.5), 0.2), Grid.rect((8, 8))
    with pytest.raises(ValueError, match=r"SDF is 3D .* grid is 2D"):
        cell_fractions(SphereSDF((0.5, 0.5, 0.5), 0.2), grid)
    with pytest.raises(TypeError, match="face_fractions sdf"):
        face_fractions(Disc((0.5, 0.5), 0.2), grid)
    with pytest.raises(TypeError, match="cell_fractions grid"):
        cell_fractions(disc, (8, 8))
    with pytest.raises(ValueError, match="2D or 3D"):
        binary_mask(disc, Grid.line(8))
    with pytest.raises(TypeError, match="dtype"):
        cell_fractions(disc, grid, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"points must have shape \(\.\.\., 2\)"):
        disc(torch.zeros(4, 3, dtype=F64))
    with pytest.raises(TypeError, match="points"):
        disc(torch.zeros(4, 2, dtype=torch.int64))
