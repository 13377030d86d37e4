"""Obstacle geometry (taichi_dp.grid.geometry): 2D and 3D shapes → fluid masks (1 = fluid, 0 = solid)."""

import dataclasses
import math

import pytest
import torch

import taichi_dp as tdp
from taichi_dp.grid import Grid
from taichi_dp.grid.geometry import (
    Box,
    Cylinder,
    Disc,
    Mask,
    Sphere,
    Union,
    box,
    cylinder,
    disc,
    fluid_masks,
    sphere,
)

CUBE = Grid.box((32, 32, 32))  # unit cube, h = 1/32
GRID3 = Grid.box((6, 8, 10), (0.6, 0.8, 1.0))  # h = 0.1 on every axis
GRID2 = Grid((12, 18), ((-1.0, 2.0), (0.5, 5.0)))  # h = (0.25, 0.25), offset origin


def solid_volume(mask: torch.Tensor, grid: Grid) -> float:
    return float((1 - mask).sum()) * math.prod(grid.spacing)


def centres(grid: Grid) -> list[list[float]]:
    return [[lo + (i + 0.5) * h for i in range(n)] for n, (lo, _), h in zip(grid.shape, grid.bounds, grid.spacing)]


# ---------------------------------------------------------------- analytic volumes


@pytest.mark.parametrize("n", [32, 48])
def test_sphere_volume_converges(n):
    grid = Grid.box((n, n, n))
    r = 0.3
    vol = solid_volume(Sphere((0.5, 0.5, 0.5), r)(grid), grid)
    assert vol == pytest.approx(4 / 3 * math.pi * r**3, rel=0.03)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_cylinder_volume_infinite_and_finite(axis):
    grid = Grid.box((48, 48, 48), (1.0, 1.0, 1.0))
    r = 0.3
    inf = Cylinder((0.5, 0.5, 0.5), r, axis)(grid)
    assert solid_volume(inf, grid) == pytest.approx(math.pi * r**2 * 1.0, rel=0.03)
    # infinite: the same cross-section on every slice along the axis
    assert bool((inf == inf.narrow(2 + axis, 0, 1)).all())
    fin = Cylinder((0.5, 0.5, 0.5), r, axis, length=0.5)(grid)
    assert solid_volume(fin, grid) == pytest.approx(math.pi * r**2 * 0.5, rel=0.03)
    assert bool((fin >= inf).all())  # the finite one is part of the infinite one


def test_box_volume_exact_on_cell_aligned_bounds():
    # bounds halfway between centres: the box holds exactly the cells inside it
    m = Box((0.2, 0.1, 0.3), (0.5, 0.6, 0.8))(GRID3)
    assert solid_volume(m, GRID3) == pytest.approx(0.3 * 0.5 * 0.5, rel=1e-12)
    m2 = Box((0.0, 1.0), (1.0, 3.0))(GRID2)
    assert solid_volume(m2, GRID2) == pytest.approx(1.0 * 2.0, rel=1e-12)


# ---------------------------------------------------------------- per-cell formulas


def test_3d_shapes_match_the_per_cell_formula():
    zs, ys, xs = centres(GRID3)
    c, r = (0.25, 0.42, 0.61), 0.27
    s = Sphere(c, r)(GRID3)[0, 0]
    cy = Cylinder(c, r, 2, length=0.4)(GRID3)[0, 0]
    b = Box((0.1, 0.2, 0.3), (0.45, 0.7, 0.75))(GRID3)[0, 0]
    for i, z in enumerate(zs):
        for j, y in enumerate(ys):
            for k, x in enumerate(xs):
                assert s[i, j, k] == (0.0 if (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r**2 else 1.0)
                inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 <= r**2 and abs(x - c[2]) <= 0.2
                assert cy[i, j, k] == (0.0 if inside else 1.0)
                assert b[i, j, k] == (0.0 if 0.1 <= z <= 0.45 and 0.2 <= y <= 0.7 and 0.3 <= x <= 0.75 else 1.0)


def test_2d_disc_and_box_unchanged():
    ys, xs = centres(GRID2)
    c, r = (0.6, 2.3), 0.9
    lo, hi = (-0.3, 1.1), (1.4, 3.9)
    d, b = disc(GRID2, c, r), box(GRID2, lo, hi)
    assert d.shape == b.shape == (1, 1, 12, 18)
    assert torch.equal(Disc(c, r)(GRID2), d) and torch.equal(Box(lo, hi)(GRID2), b)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            assert d[0, 0, i, j] == (0.0 if (y - c[0]) ** 2 + (x - c[1]) ** 2 <= r**2 else 1.0)
            assert b[0, 0, i, j] == (0.0 if lo[0] <= y <= hi[0] and lo[1] <= x <= hi[1] else 1.0)
    # the karman cylinder: 100 x 100 unit cells, boundary centres included (exact in any precision)
    k = Disc((50.0, 50.0), 10.0)(Grid.rect((100, 100), (100.0, 100.0)))
    assert int((k == 0).sum()) == sum((i + 0.5 - 50) ** 2 + (j + 0.5 - 50) ** 2 <= 100 for i in range(100) for j in range(100))


def test_runtime_dtype_device_and_functional_forms():
    rt = tdp.current()
    for m in (
        sphere(GRID3, (0.3, 0.4, 0.5), 0.2),
        cylinder(GRID3, (0.3, 0.4, 0.5), 0.2, 1),
        box(GRID3, (0.1, 0.1, 0.1), (0.2, 0.3, 0.4)),
        disc(GRID2, (0.0, 1.0), 0.5),
    ):
        assert m.dtype == rt.dtype and m.device.type == rt.device.type and m.is_contiguous()
        assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(sphere(GRID3, (0.3, 0.4, 0.5), 0.2), Sphere((0.3, 0.4, 0.5), 0.2)(GRID3))
    assert torch.equal(cylinder(GRID3, (0.3, 0.4, 0.5), 0.2, 1, 0.3), Cylinder((0.3, 0.4, 0.5), 0.2, 1, 0.3)(GRID3))


# ---------------------------------------------------------------- symmetry


def test_symmetry():
    m = Sphere((0.5, 0.5, 0.5), 0.3)(CUBE)
    for d in (2, 3, 4):
        assert torch.equal(m, m.flip(d))
    assert torch.equal(m, m.permute(0, 1, 3, 2, 4)) and torch.equal(m, m.permute(0, 1, 4, 3, 2))
    cz = Cylinder((0.5, 0.5, 0.5), 0.3, 0, length=0.4)(CUBE)
    cx = Cylinder((0.5, 0.5, 0.5), 0.3, 2, length=0.4)(CUBE)
    assert torch.equal(cz.permute(0, 1, 4, 3, 2), cx)  # swapping z and x swaps the axis
    for d in (2, 3, 4):
        assert torch.equal(cz, cz.flip(d))
    # a shape and its mirror image give mirrored masks
    a = Sphere((0.3, 0.4, 0.7), 0.2)(CUBE)
    assert torch.equal(a.flip(4), Sphere((0.3, 0.4, 0.3), 0.2)(CUBE))
    grid2 = Grid.rect((20, 20))
    d = Disc((0.5, 0.5), 0.3)(grid2)
    assert torch.equal(d, d.flip(2)) and torch.equal(d, d.flip(3)) and torch.equal(d, d.transpose(2, 3))


# ---------------------------------------------------------------- union and masks


def test_union_is_logical_or():
    a, b = Sphere((0.3, 0.3, 0.3), 0.2), Box((0.4, 0.0, 0.5), (0.6, 1.0, 0.9))
    c = Cylinder((0.5, 0.8, 0.5), 0.1, 2)
    solid = (a(CUBE) == 0) | (b(CUBE) == 0) | (c(CUBE) == 0)
    u = Union(a, b, c)(CUBE)
    assert u.shape == (1, 1, 32, 32, 32) and u.dtype == tdp.current().dtype
    assert torch.equal(u == 0, solid)
    assert torch.equal((a | b | c)(CUBE), u) and torch.equal(Union([a, b, c])(CUBE), u)
    assert Union(Union(a, b), c).shapes == (a, b, c)  # nested unions flatten
    assert torch.equal(Union(a)(CUBE), a(CUBE))
    d1, d2 = Disc((0.3, 0.3), 0.2), Box((0.5, 0.5), (0.9, 0.7))
    g2 = Grid.rect((16, 16))
    assert torch.equal(Union(d1, d2)(g2), d1(g2) * d2(g2))
    # a plain callable joins a union too
    own = lambda grid: box(grid, (0.0, 0.0), (0.2, 0.2))
    assert torch.equal((d1 | own)(g2), d1(g2) * own(g2)) and torch.equal((own | d1)(g2), d1(g2) * own(g2))


def test_mask_round_trip():
    m = Sphere((0.2, 0.4, 0.5), 0.2)(GRID3)
    assert torch.equal(Mask(m)(GRID3), m)
    assert torch.equal(Mask(m.bool())(GRID3), m) and torch.equal(Mask(m.float())(GRID3), m)
    assert torch.equal(Mask.from_solid(m == 0)(GRID3), m) and torch.equal(Mask.from_solid(1 - m)(GRID3), m)
    src = m.clone()
    shape = Mask(src)
    src.zero_()  # the Mask holds a copy
    assert torch.equal(shape(GRID3), m)
    two = torch.cat([m, Box((0.0, 0.0, 0.0), (0.3, 0.3, 0.3))(GRID3)])
    assert torch.equal(Mask(two)(GRID3), two) and Mask(two).batch == 2 and Mask(two).ndim == 3
    # a batched Mask in a Union broadcasts the other shapes over the batch
    s = Sphere((0.3, 0.5, 0.5), 0.1)
    assert torch.equal(Union(Mask(two), s)(GRID3), two * s(GRID3))
    assert "Mask(shape=(2, 1, 6, 8, 10)" in repr(Mask(two))
    assert Mask(m) != Mask(m) and len({Mask(m), Mask(m)}) == 2  # identity semantics, hashable


def test_fluid_masks_stacks_samples():
    s, b = Sphere((0.3, 0.4, 0.5), 0.2), Box((0.0, 0.0, 0.0), (0.2, 0.3, 0.3))
    out = fluid_masks(GRID3, [s, [s, b], None, Union(b), [], Mask(b(GRID3))])
    assert out.shape == (6, 1, 6, 8, 10) and out.dtype == tdp.current().dtype and out.is_contiguous()
    assert torch.equal(out[0:1], s(GRID3)) and torch.equal(out[1:2], Union(s, b)(GRID3))
    assert bool((out[2] == 1).all()) and bool((out[4] == 1).all())
    assert torch.equal(out[3:4], b(GRID3)) and torch.equal(out[5:6], b(GRID3))
    out2 = fluid_masks(GRID2, (Disc((0.5, 2.0), 0.6), Box((0.0, 1.0), (1.0, 3.0))))
    assert out2.shape == (2, 1, 12, 18)


def test_shapes_are_frozen_values():
    d = Disc((1, 2), 3)
    assert d.centre == (1.0, 2.0) and isinstance(d.radius, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.radius = 4.0
    assert Sphere((0, 0, 0), 1) == Sphere((0.0, 0.0, 0.0), 1.0) and hash(Box((0, 0), (1, 1))) == hash(Box([0, 0], [1, 1]))
    assert Cylinder((0, 0, 0), 1, 2).length is None and Cylinder((0, 0, 0), 1, 2, 3).length == 3.0
    assert (Disc((0, 0), 1).ndim, Sphere((0, 0, 0), 1).ndim, Box((0, 0, 0), (1, 1, 1)).ndim) == (2, 3, 3)


# ---------------------------------------------------------------- validation


M2 = torch.ones(1, 1, 12, 18)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        # fields
        (lambda: Disc((1.0,), 1.0), ValueError, r"Disc centre must be a \(y, x\) pair of finite numbers"),
        (lambda: Disc((0.0, 0.0), 0.0), ValueError, r"Disc radius must be a finite number > 0, got 0"),
        (lambda: Disc((0.0, 0.0), True), ValueError, r"Disc radius must be a finite number > 0"),
        (lambda: Sphere((0.0, 0.0), 1.0), ValueError, r"Sphere centre must be a \(z, y, x\) triple of finite numbers"),
        (lambda: Sphere((0.0, 0.0, math.nan), 1.0), ValueError, r"Sphere centre must be .* finite numbers, got"),
        (lambda: Sphere((0.0, 0.0, 0.0), -1.0), ValueError, r"Sphere radius must be a finite number > 0, got -1.0"),
        (lambda: Sphere((0.0, 0.0, 0.0), math.inf), ValueError, r"Sphere radius must be a finite number > 0, got inf"),
        (lambda: Cylinder((0.0, 0.0, 0.0), 1.0, 3), ValueError,
            r"Cylinder axis must be a grid axis 0 \(z\), 1 \(y\) or 2 \(x\), got 3"),
        (lambda: Cylinder((0.0, 0.0, 0.0), 1.0, 1.0), ValueError, r"Cylinder axis must be .*, got 1.0"),
        (lambda: Cylinder((0.0, 0.0, 0.0), 1.0, True), ValueError, r"Cylinder axis must be .*, got True"),
        (lambda: Cylinder((0.0, 0.0, 0.0), 0.0, 0), ValueError, r"Cylinder radius must be a finite number > 0"),
        (lambda: Cylinder((0.0, 0.0), 1.0, 0), ValueError, r"Cylinder centre must be a \(z, y, x\) triple"),
        (lambda: Cylinder((0.0, 0.0, 0.0), 1.0, 0, 0.0), ValueError,
            r"Cylinder length must be None \(infinite\) or a finite number > 0, got 0.0"),
        (lambda: Box((0.0, 0.0), (1.0, 0.0)), ValueError,
            r"Box needs upper > lower on both axes, got .* \(fails on axis 1 \(x\)\)"),
        (lambda: Box((0.0, 0.0, 0.0), (1.0, 0.0, 0.0)), ValueError, r"upper > lower on every axis, .*axis 1 \(y\), 2 \(x\)"),
        (lambda: Box((0.0, 0.0), (1.0, 1.0, 1.0)), ValueError, r"Box lower and upper must have the same length .* got 2 and 3"),
        (lambda: Box((0.0,), (1.0,)), ValueError, r"Box lower must be a \(y, x\) pair or a \(z, y, x\) triple of finite numbers"),
        (lambda: Box((0.0, 0.0), "ab"), ValueError, r"Box upper must be a \(y, x\) pair"),
        (lambda: Mask([[1.0]]), TypeError, r"Mask fluid must be a torch.Tensor"),
        (lambda: Mask(torch.ones(1, 2, 4, 4)), ValueError,
            r"Mask fluid must have shape \(1 or B, 1, H, W\) .* got \(1, 2, 4, 4\)"),
        (lambda: Mask(torch.ones(4, 4)), ValueError, r"Mask fluid must have shape .* got \(4, 4\)"),
        (lambda: Mask(torch.ones(1, 1, 4, 4, dtype=torch.int64)), TypeError,
            r"bool or floating-point tensor, got dtype torch.int64"),
        (lambda: Mask(torch.full((1, 1, 4, 4), 0.5)), ValueError, r"Mask fluid must hold only 0 \(solid\) and 1 \(fluid\)"),
        (lambda: Union(), ValueError, r"Union needs at least one shape"),
        (lambda: Union(Disc((0.0, 0.0), 1.0), 3), TypeError, r"Union shapes\[1\] must be a shape"),
        (lambda: Union(Disc((0.0, 0.0), 1.0), Sphere((0.0, 0.0, 0.0), 1.0)), ValueError, r"Union mixes 2D, 3D shapes"),
        (lambda: Union(Mask(torch.ones(2, 1, 4, 4)), Mask(torch.ones(3, 1, 4, 4))), ValueError,
            r"different batch sizes \[2, 3\]"),
        # calls: the shape against the grid
        (lambda: Disc((0.0, 0.0), 1.0)(GRID3), ValueError,
            r"Disc\(.*\) is 2D \(\(y, x\) coordinates\) but the grid is 3D \(shape \(6, 8, 10\)\); in 3D use Sphere"),
        (lambda: Sphere((0.0, 0.0, 0.0), 1.0)(GRID2), ValueError,
            r"Sphere\(.*\) is 3D \(\(z, y, x\) coordinates\) but the grid is 2D \(shape \(12, 18\)\); in 2D use Disc"),
        (lambda: Cylinder((0.0, 0.0, 0.0), 1.0, 0)(GRID2), ValueError,
            r"Cylinder\(.*\) is 3D .* grid is 2D \(shape \(12, 18\)\)"),
        (lambda: Box((0.0, 0.0), (1.0, 1.0))(GRID3), ValueError, r"Box\(.*\) is 2D .* but the grid is 3D \(shape \(6, 8, 10\)\)"),
        (lambda: Box((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(GRID2), ValueError, r"Box\(.*\) is 3D .* but the grid is 2D"),
        (lambda: Union(Box((0.0, 0.0), (1.0, 1.0)))(GRID3), ValueError, r"Union\(.*\) is 2D .* the grid is 3D"),
        (lambda: Disc((0.0, 0.0), 1.0)((12, 18)), TypeError, r"Disc\(.*\) needs a taichi_dp.Grid, got tuple"),
        (lambda: Box((0.0, 0.0), (1.0, 1.0))(Grid.line(8)), ValueError,
            r"obstacle geometry needs a 2D or 3D grid, got shape \(8,\)"),
        (lambda: Mask(M2)(Grid.rect((12, 16))), ValueError,
            r"Mask\(shape=\(1, 1, 12, 18\).* has spatial shape \(12, 18\) but the grid has shape \(12, 16\)"),
        (lambda: Mask(M2)(GRID3), ValueError, r"has spatial shape \(12, 18\) but the grid has shape \(6, 8, 10\)"),
        (lambda: Union(lambda g: 3)(GRID2), TypeError, r"Union shapes\[0\] .* must return a torch.Tensor mask, got int"),
        (lambda: Union(lambda g: torch.ones(1, 1, 3, 3))(GRID2), ValueError,
            r"returned shape \(1, 1, 3, 3\), expected \(1 or B, 1, \*\(12, 18\)\)"),
        # functional forms keep their messages
        (lambda: disc(GRID2, (0.0, 0.0), -1.0), ValueError, r"^radius must be > 0, got -1.0"),
        (lambda: box(GRID2, (0.0, 0.0), (1.0, -1.0)), ValueError,
            r"^box needs upper > lower on both axes, got lower=\(0.0, 0.0\)"),
        (lambda: box(GRID3, (0.0, 0.0, 0.0), (1.0, 1.0, 0.0)), ValueError, r"^box needs upper > lower on every axis"),
        # fluid_masks
        (lambda: fluid_masks(GRID2, []), ValueError, r"shapes_per_sample must be a non-empty list"),
        (lambda: fluid_masks(GRID2, Disc((0.0, 0.0), 1.0)), ValueError, r"shapes_per_sample must be a non-empty list"),
        (lambda: fluid_masks(GRID2, [None, 3]), TypeError,
            r"shapes_per_sample\[1\] must be a shape, a list of shapes or None, got int"),
        (lambda: fluid_masks(GRID2, [Mask(torch.ones(2, 1, 12, 18))]), ValueError,
            r"shapes_per_sample\[0\] .* must give one mask \(1, 1, \*\(12, 18\)\), got \(2, 1, 12, 18\)"),
        (lambda: fluid_masks(GRID2, [Sphere((0.0, 0.0, 0.0), 1.0)]), ValueError, r"is 3D .* the grid is 2D"),
        (lambda: fluid_masks("grid", [None]), TypeError, r"fluid_masks needs a taichi_dp.Grid, got str"),
    ],
)  # fmt: skip
def test_validation_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
