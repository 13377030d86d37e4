"""Obstacles from signed-distance functions (SDFs) → fractional cell volumes, face openings and binary masks.

Sign convention: ``φ < 0`` inside the SOLID, ``φ > 0`` in the FLUID, ``φ = 0`` on the obstacle's surface.
Points are physical and in axis order, like the grid and :mod:`taichi_dp.grid.geometry`: ``(..., 2)``
holding ``(y, x)`` in 2D, ``(..., 3)`` holding ``(z, y, x)`` in 3D; ``sdf(points)`` returns ``φ`` with
shape ``points.shape[:-1]``.

Shapes (each a frozen dataclass, validated on construction):

- :class:`SphereSDF` (a circle in 2D, a ball in 3D: the centre's length decides; :class:`CircleSDF` is
  the 2D-only spelling), :class:`BoxSDF` (axis-aligned, ``lower``/``upper`` corners like
  :class:`~taichi_dp.grid.geometry.Box`; rotate it with :func:`rotate`), :class:`CylinderSDF` (3D,
  along grid axis 0 = z, 1 = y or 2 = x, infinite or of finite ``length``, like
  :class:`~taichi_dp.grid.geometry.Cylinder`), :class:`CapsuleSDF` (the points within ``radius`` of the
  segment ``a``–``b``, 2D or 3D);
- combinators :func:`union` (``min``, also ``a | b``), :func:`intersection` (``max``, also ``a & b``)
  and :func:`difference` (``max(φ_a, −φ_b)``, also ``a - b``). These are exact min/max of the members'
  φ: the zero level set (the surface) is exact, but away from it the result is a bound on the distance
  rather than the distance itself (inside a union, outside an intersection);
- transforms :func:`translate`, :func:`rotate` (2D: by an angle, counter-clockwise in the (x, y) plane;
  3D: by an angle about an axis, right-handed in (x, y, z)) and :func:`scale` (uniform, so φ stays a
  distance), each optionally ``about`` a point. The methods ``sdf.translate(...)``, ``sdf.rotate(...)``
  and ``sdf.scale(...)`` do the same.

Every parameter (centre, radius, corners, angle, offset, factor, ...) may be a Python number or a torch
tensor (a 0-d tensor for a scalar, a 1-d tensor for a point; a tuple may mix numbers and 0-d tensors).
With ``requires_grad=True`` the φ values, and therefore the fractions below, are differentiable with
respect to them (position, radius, rotation, ...).

On a :class:`~taichi_dp.grid.Grid` (φ is evaluated at the physical positions, no periodic wrap):

- :func:`cell_fractions`: fluid volume fraction of every cell, ``(1, 1, *spatial)`` in ``[0, 1]``;
- :func:`face_fractions`: open (fluid) fraction of every staggered face, in the staggered layout
  ``(1, nd, *(N + 1))`` of :mod:`taichi_dp.grid.staggered` (padding 0);
- :func:`binary_mask`: ``1`` where the cell centre has ``φ > 0`` (fluid), the same mask as the shapes of
  :mod:`taichi_dp.grid.geometry` (a cell whose centre lies on the surface is solid). Calling an SDF
  with a grid, ``sdf(grid)``, gives this mask too, so an SDF can go wherever a geometry shape goes
  (``karman(obstacles=[...])``, :class:`~taichi_dp.grid.geometry.Union`, ``fluid_masks``).

Both fractions come from φ at the cell corners and are exact when φ is linear (a half-plane): φ is
interpolated linearly on a simplex decomposition (Min & Gibou, J. Comput. Phys. 2007, "Geometric
integration over irregular domains with application to level-set methods") and the solid part of
each simplex is measured exactly. In 2D each cell is split into two triangles along either diagonal
and the two results averaged (no diagonal bias); in 3D into the six Kuhn tetrahedra around each of
the cube's four main diagonals, averaged (no bias either, and a body extruded along an axis gets, in
every slice, exactly its 2D fractions). A 2D face (a segment) is open by the linear-interpolation fraction of its
end values (``φ₊ / (φ₊ − φ₋)`` when they differ in sign); a 3D face (a square) by the 2D cell formula
on its four corners. The surface of the piecewise-linear interpolant is ``O(h²)`` from the true one, so
the total fluid volume converges at second order for smooth bodies. The formulas are continuous,
piecewise-rational functions of the corner φ (no threshold on the parameters' path), so their
gradients exist almost everywhere. Only the cut cells and faces (corners of both signs) go through the
formulas, so the cost beyond evaluating φ at the corners scales with the surface.

>>> grid = Grid.rect((64, 128), (1.0, 2.0))
>>> body = SphereSDF((0.5, 0.5), 0.1) | rotate(BoxSDF((0.4, 1.0), (0.6, 1.4)), 0.3, about=(0.5, 1.2))
>>> vol = cell_fractions(body, grid)       # (1, 1, 64, 128), fluid volume fraction
>>> open_ = face_fractions(body, grid)     # (1, 2, 65, 129), open fraction of each MAC face
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..runtime import ensure_init
from ._cartesian import Grid

__all__ = [
    "SDF",
    "BoxSDF",
    "CapsuleSDF",
    "CircleSDF",
    "CylinderSDF",
    "DifferenceSDF",
    "IntersectionSDF",
    "RotatedSDF",
    "ScaledSDF",
    "SphereSDF",
    "TranslatedSDF",
    "UnionSDF",
    "binary_mask",
    "cell_fractions",
    "difference",
    "face_fractions",
    "intersection",
    "rotate",
    "scale",
    "translate",
    "union",
]

Scalar = float | torch.Tensor
"""A scalar parameter: a Python number or a 0-d (or one-element) floating-point tensor."""
Point = tuple[float, ...] | torch.Tensor
"""A point parameter: a tuple of numbers / 0-d tensors in axis order, or a 1-d floating-point tensor."""

_AXES = {2: "(y, x)", 3: "(z, y, x)"}
_POINT = {2: "pair", 3: "triple"}


# --------------------------------------------------------------------------------------------------
# Parameter validation and conversion
# --------------------------------------------------------------------------------------------------


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _scalar(name: str, v: object, *, positive: bool = False) -> Scalar:
    """``v`` as a float or a 0-d floating tensor (finite; ``> 0`` when ``positive``), or an error naming ``name``."""
    want = "a finite number > 0" if positive else "a finite number"
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or not v.dtype.is_floating_point:
            raise TypeError(
                f"{name} must be {want} or a one-element floating-point tensor, got a {v.dtype} tensor of shape {tuple(v.shape)}"
            )
        v = v.reshape(())
        value = float(v.detach())
    elif _is_number(v):
        value = v = float(v)
    else:
        raise TypeError(f"{name} must be {want} or a 0-d floating-point tensor, got {type(v).__name__} {v!r}")
    if not math.isfinite(value) or (positive and not value > 0):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return v


def _point(name: str, p: object, ndims: tuple[int, ...]) -> Point:
    """``p`` as a tuple of floats or a 1-d floating tensor with a length in ``ndims`` (finite entries),
    or an error naming ``name``. A tuple holding any tensor becomes one tensor (gradients flow)."""
    what = " or a ".join(f"{_AXES[n]} {_POINT[n]}" for n in ndims)
    if isinstance(p, torch.Tensor):
        if p.ndim != 1 or p.shape[0] not in ndims or not p.dtype.is_floating_point:
            raise ValueError(
                f"{name} must be a {what} (a 1-d floating-point tensor of that length), got a {p.dtype} tensor "
                f"of shape {tuple(p.shape)}"
            )
        values = p.detach()
    elif isinstance(p, (tuple, list)) and len(p) in ndims:
        entries = [_scalar(f"{name}[{k}]", c) for k, c in enumerate(p)]
        tensors = [c for c in entries if isinstance(c, torch.Tensor)]
        if not tensors:
            return tuple(entries)  # type: ignore[arg-type]
        like = tensors[0]
        p = torch.stack([_t(c, like) for c in entries])
        values = p.detach()
    else:
        raise ValueError(f"{name} must be a {what} of finite numbers (or a tensor), got {p!r}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} must have finite entries, got {values.tolist()}")
    return p


def _values(p: Point) -> tuple[float, ...]:
    """The numbers in a point parameter (detached)."""
    return tuple(float(c) for c in (p.detach().tolist() if isinstance(p, torch.Tensor) else p))


def _t(v: Scalar | Point, like: torch.Tensor) -> torch.Tensor:
    """A parameter as a tensor of ``like``'s dtype and device (differentiable for tensor parameters)."""
    if isinstance(v, torch.Tensor):
        return v.to(dtype=like.dtype, device=like.device)
    return torch.tensor(v, dtype=like.dtype, device=like.device)


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis, with a zero (not NaN) gradient at the zero vector."""
    s = (v * v).sum(-1)
    pos = s > 0
    return torch.where(pos, torch.where(pos, s, torch.ones_like(s)).sqrt(), torch.zeros_like(s))


# --------------------------------------------------------------------------------------------------
# SDF base and primitives
# --------------------------------------------------------------------------------------------------


class SDF:
    """Base of the signed-distance shapes: ``sdf(points)`` is ``φ`` (``< 0`` in the solid) at
    ``points (..., ndim)`` in axis order; ``sdf(grid)`` is :func:`binary_mask`. ``a | b``, ``a & b`` and
    ``a - b`` are :func:`union`, :func:`intersection` and :func:`difference`."""

    @property
    def ndim(self) -> int:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _phi(self, p: torch.Tensor) -> torch.Tensor:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def __call__(self, points: torch.Tensor | Grid) -> torch.Tensor:
        """φ at ``points (..., ndim)`` (shape ``points.shape[:-1]``, ``points``' dtype and device), or, given
        a :class:`~taichi_dp.grid.Grid`, the fluid mask :func:`binary_mask` ``(1, 1, *grid.shape)``."""
        if isinstance(points, Grid):
            return binary_mask(self, points)
        if not isinstance(points, torch.Tensor) or not points.dtype.is_floating_point:
            got = f"a {points.dtype} tensor" if isinstance(points, torch.Tensor) else type(points).__name__
            raise TypeError(f"points must be a floating-point tensor (..., {self.ndim}) or a Grid, got {got}")
        if points.ndim < 1 or points.shape[-1] != self.ndim:
            raise ValueError(
                f"points must have shape (..., {self.ndim}) holding {_AXES[self.ndim]} coordinates for this "
                f"{self.ndim}D {type(self).__name__}, got shape {tuple(points.shape)}"
            )
        return self._phi(points)

    def __or__(self, other: object) -> UnionSDF:
        return union(self, other) if isinstance(other, SDF) else NotImplemented

    def __and__(self, other: object) -> IntersectionSDF:
        return intersection(self, other) if isinstance(other, SDF) else NotImplemented

    def __sub__(self, other: object) -> DifferenceSDF:
        return difference(self, other) if isinstance(other, SDF) else NotImplemented

    def translate(self, offset: Point) -> TranslatedSDF:
        """This shape moved by ``offset`` (see :func:`translate`)."""
        return TranslatedSDF(self, offset)

    def rotate(self, angle: Scalar, axis: Point | None = None, about: Point | None = None) -> RotatedSDF:
        """This shape rotated by ``angle`` radians (see :func:`rotate`)."""
        return RotatedSDF(self, angle, axis, about)

    def scale(self, factor: Scalar, about: Point | None = None) -> ScaledSDF:
        """This shape scaled by ``factor`` (see :func:`scale`)."""
        return ScaledSDF(self, factor, about)


@dataclass(frozen=True, eq=False)
class SphereSDF(SDF):
    """A solid disc (2D, ``centre = (y, x)``) or ball (3D, ``centre = (z, y, x)``) of ``radius``:
    ``φ = |p − centre| − radius``."""

    centre: Point
    radius: Scalar

    def __post_init__(self) -> None:
        name = type(self).__name__
        object.__setattr__(self, "centre", _point(f"{name} centre", self.centre, self._ndims))
        object.__setattr__(self, "radius", _scalar(f"{name} radius", self.radius, positive=True))

    _ndims = (2, 3)

    @property
    def ndim(self) -> int:
        return len(self.centre)

    def _phi(self, p: torch.Tensor) -> torch.Tensor:
        return _norm(p - _t(self.centre, p)) - _t(self.radius, p)


@dataclass(frozen=True, eq=False)
class CircleSDF(SphereSDF):
    """2D only: a solid disc of ``radius`` at ``centre = (y, x)`` (a :class:`SphereSDF` that refuses 3D)."""

    _ndims = (2,)


@dataclass(frozen=True, eq=False)
class BoxSDF(SDF):
    """A solid axis-aligned box ``lower ≤ p ≤ upper`` (``(y, x)`` pairs in 2D, ``(z, y, x)`` triples in 3D;
    a rotated box is ``rotate(BoxSDF(...), angle, ...)``). Exact distance: with ``c`` the centre, ``e``
    the half-extents and ``q = |p − c| − e``, ``φ = |max(q, 0)| + min(maxᵢ qᵢ, 0)``."""

    lower: Point
    upper: Point

    def __post_init__(self) -> None:
        lower = _point("BoxSDF lower", self.lower, (2, 3))
        upper = _point("BoxSDF upper", self.upper, (2, 3))
        if len(lower) != len(upper):
            raise ValueError(
                f"BoxSDF lower and upper must have the same length (2 for (y, x), 3 for (z, y, x)), got "
                f"{len(lower)} and {len(upper)}"
            )
        lo, hi = _values(lower), _values(upper)
        bad = [a for a in range(len(lo)) if not hi[a] > lo[a]]
        if bad:
            raise ValueError(f"BoxSDF needs upper > lower on every axis, got lower={lo}, upper={hi} (fails on axis {bad})")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @property
    def ndim(self) -> int:
        return len(self.lower)

    def _phi(self, p: torch.Tensor) -> torch.Tensor:
        lo, hi = _t(self.lower, p), _t(self.upper, p)
        q = (p - 0.5 * (lo + hi)).abs() - 0.5 * (hi - lo)
        return _norm(q.clamp(min=0)) + q.amax(-1).clamp(max=0)


@dataclass(frozen=True, eq=False)
class CylinderSDF(SDF):
    """3D: a solid circular cylinder of ``radius`` whose axis runs along grid axis ``axis`` (0 = z, 1 = y,
    2 = x) through ``centre = (z, y, x)``; ``length=None`` makes it infinite, a finite ``length`` spans
    ``centre[axis] ± length / 2`` (flat end caps). With ``d = (|p⊥ − c⊥| − radius, |p_axis − c_axis| −
    length / 2)``: ``φ = min(max(d), 0) + |max(d, 0)|`` (infinite: ``φ = d₀``)."""

    centre: Point
    radius: Scalar
    axis: int
    length: Scalar | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "centre", _point("CylinderSDF centre", self.centre, (3,)))
        object.__setattr__(self, "radius", _scalar("CylinderSDF radius", self.radius, positive=True))
        a = self.axis
        if not (isinstance(a, numbers.Integral) and not isinstance(a, bool) and 0 <= a <= 2):
            raise ValueError(f"CylinderSDF axis must be a grid axis 0 (z), 1 (y) or 2 (x), got {a!r}")
        object.__setattr__(self, "axis", int(a))
        if self.length is not None:
            object.__setattr__(self, "length", _scalar("CylinderSDF length", self.length, positive=True))

    @property
    def ndim(self) -> int:
        return 3

    def _phi(self, p: torch.Tensor) -> torch.Tensor:
        d = p - _t(self.centre, p)
        across = [a for a in range(3) if a != self.axis]
        radial = _norm(d[..., across]) - _t(self.radius, p)
        if self.length is None:
            return radial
        along = d[..., self.axis].abs() - 0.5 * _t(self.length, p)
        both = torch.stack([radial, along], -1)
        return both.amax(-1).clamp(max=0) + _norm(both.clamp(min=0))


@dataclass(frozen=True, eq=False)
class CapsuleSDF(SDF):
    """The solid points within ``radius`` of the segment from ``a`` to ``b`` (2D ``(y, x)`` or 3D
    ``(z, y, x)``): ``φ = |p − a − t (b − a)| − radius`` with ``t = clamp((p − a)·(b − a) / |b − a|², 0, 1)``."""

    a: Point
    b: Point
    radius: Scalar

    def __post_init__(self) -> None:
        a = _point("CapsuleSDF a", self.a, (2, 3))
        b = _point("CapsuleSDF b", self.b, (2, 3))
        if len(a) != len(b):
            raise ValueError(
                f"CapsuleSDF a and b must have the same length (2 for (y, x), 3 for (z, y, x)), got {len(a)} and {len(b)}"
            )
        if _values(a) == _values(b):
            raise ValueError(f"CapsuleSDF a and b must differ (a segment), got a = b = {_values(a)}; use SphereSDF for a ball")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "radius", _scalar("CapsuleSDF radius", self.radius, positive=True))

    @property
    def ndim(self) -> int:
        return len(self.a)

    def _phi(self, p: torch.Tensor) -> torch.Tensor:
        a, b = _t(self.a, p), _t(self.b, p)
        ab, ap = b - a, p - a
        t = ((ap * ab).sum(-1, keepdim=True) / (ab * ab).sum()).clamp(0, 1)
        return _norm(ap - t * ab) - _t(self.radius, p)


# --------------------------------------------------------------------------------------------------
# Combinators
# --------------------------------------------------------------------------------------------------


def _members(cls: type, sdfs: Sequence[object]) -> tuple[SDF, ...]:
    """Validated members of a combinator ``cls``: SDFs of one dimension, nested ``cls`` flattened."""
    name = cls.__name__
    if len(sdfs) == 1 and isinstance(sdfs[0], (list, tuple)):
        sdfs = tuple(sdfs[0])
    if len(sdfs) == 0:
        raise ValueError(f"{name} needs at least one SDF, got none")
    for k, s in enumerate(sdfs):
        if not isinstance(s, SDF):
            raise TypeError(f"{name} sdfs[{k}] must be an SDF (SphereSDF, BoxSDF, ...), got {type(s).__name__} {s!r}")
    dims = sorted({s.ndim for s in sdfs})
    if len(dims) > 1:
        raise ValueError(f"{name} mixes {' and '.join(f'{d}D' for d in dims)} SDFs: {tuple(sdfs)!r}")
    flat: list[SDF] = []
    for s in sdfs:  # nested combinations of the same kind are flattened
        flat.extend(s.sdfs if isinstance(s, cls) else (s,))
    return tuple(flat)


@dataclass(frozen=True, eq=False, init=False)
class UnionSDF(SDF):
    """Solid wherever any member is solid: ``φ = minᵢ φᵢ`` (see :func:`union`)."""

    sdfs: tuple[SDF, ...]

    def __init__(self, *sdfs: SDF) -> None:
        object.__setattr__(self, "sdfs", _members(UnionSDF, sdfs))

    @property
    def ndim(self) -> int:
        return self.sdfs[0].ndim

    def _phi(self, p: torch.Tensor) -> torch.Tensor:
        return torch.stack([s._phi(p) for s in self.sdfs]).amin(0)


@dataclass(frozen=True, eq=False, init=False)
class IntersectionSDF(SDF):
    """Solid where every member is solid: ``φ = maxᵢ φᵢ`` (see :func:`intersection`)."""

    sdfs: tuple[SDF, ...]

    def __init__(self, *sdfs: SDF) -> None:
        object.__setattr__(self, "sdfs", _members(IntersectionSDF, sdfs))

    @property
    def ndim(self) -> int:
        return self.sdfs[0].ndim

    def _phi(self, p: torch.Tensor) -> torch.Tensor:
        return torch.stack([s._phi(p) for s in self.sdfs]).amax(0)


@dataclass(frozen=True, eq=False)
class DifferenceSDF(SDF):
    """Solid where ``a`` is solid and ``b`` is not: ``φ = max(φ_a, −φ_b)`` (see :func:`difference`)."""

    a: SDF
    b: SDF

    def __post_init__(self) -> None:
        _members(DifferenceSDF, (self.a, self.b))

    @property
    def ndim(self) -> int:
        return self.a.ndim

    def _phi(self, p: torch.Tensor) -> torch.Tensor:
        return torch.maximum(self.a._phi(p), -self.b._phi(p))


def union(*sdfs: SDF) -> UnionSDF:
    """The union of ``sdfs`` (solid where any is solid), ``φ = min φᵢ``; also ``a | b``. ``union([a, b])``
    is ``union(a, b)``.

    Args:
        *sdfs: SDFs of one dimension (nested unions are flattened).
    """
    return UnionSDF(*sdfs)


def intersection(*sdfs: SDF) -> IntersectionSDF:
    """The intersection of ``sdfs`` (solid where all are solid), ``φ = max φᵢ``; also ``a & b``.

    Args:
        *sdfs: SDFs of one dimension (nested intersections are flattened).
    """
    return IntersectionSDF(*sdfs)


def difference(a: SDF, b: SDF) -> DifferenceSDF:
    """``a`` with ``b`` carved out (solid where ``a`` is solid and ``b`` is not), ``φ = max(φ_a, −φ_b)``;
    also ``a - b``.

    Args:
        a: the body.
        b: the part removed from it (same dimension).
    """
    return DifferenceSDF(a, b)


# --------------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------------


def _check_sdf(name: str, sdf: object) -> SDF:
    if not isinstance(sdf, SDF):
        raise TypeError(f"{name} must be an SDF (SphereSDF, BoxSDF, ...), got {type(sdf).__name__} {sdf!r}")
    return sdf


@dataclass(frozen=True, eq=False)
class TranslatedSDF(SDF):
    """``sdf`` moved by ``offset``: ``φ(p) = φ_sdf(p − offset)`` (see :func:`translate`)."""

    sdf: SDF
    offset: Point

    def __post_init__(self) -> None:
        nd = _check_sdf("TranslatedSDF sdf", self.sdf).ndim
        object.__setattr__(self, "offset", _point("TranslatedSDF offset", self.offset, (nd,)))

    @property
    def ndim(self) -> int:
        return self.sdf.ndim

    def _phi(self, p: torch.Tensor) -> torch.Tensor:
        return self.sdf._phi(p - _t(self.offset, p))


def _rotation(angle: torch.Tensor, axis: torch.Tensor | None, nd: int) -> torch.Tensor:
    """Rotation matrix in axis-order coordinates ((y, x) or (z, y, x)) that maps a column vector ``v`` to
    its image rotated by ``angle``: counter-clockwise in the (x, y) plane in 2D; right-handed about
    ``axis`` (in (z, y, x) order) in (x, y, z) in 3D (Rodrigues' formula)."""
    c, s = torch.cos(angle), torch.sin(angle)
    if nd == 2:  # (x, y) -> (x c - y s, x s + y c), written in (y, x) order
        return torch.stack([torch.stack([c, s]), torch.stack([-s, c])])
    k = (axis / _norm(axis)).flip(0)  # unit axis in (x, y, z) order
    zero = torch.zeros_like(k[0])
    cross = torch.stack([torch.stack([zero, -k[2], k[1]]), torch.stack([k[2], zero, -k[0]]), torch.stack([-k[1], k[0], zero])])
    eye = torch.eye(3, dtype=k.dtype, device=k.device)
    r_xyz = c * eye + s * cross + (1 - c) * torch.outer(k, k)
    return r_xyz.flip(0).flip(1)  # back to (z, y, x) order


@dataclass(frozen=True, eq=False)
class RotatedSDF(SDF):
    """``sdf`` rotated by ``angle`` (radians) about the point ``about`` (default the origin); in 3D about
    the direction ``axis`` (a ``(z, y, x)`` vector). ``φ(p) = φ_sdf(R⁻¹ (p − about) + about)`` (see
    :func:`rotate`)."""

    sdf: SDF
    angle: Scalar
    axis: Point | None = None
    about: Point | None = None

    def __post_init__(self) -> None:
        nd = _check_sdf("RotatedSDF sdf", self.sdf).ndim
        object.__setattr__(self, "angle", _scalar("RotatedSDF angle", self.angle))
        if nd == 2:
            if self.axis is not None:
                raise ValueError(f"RotatedSDF axis must be None for a 2D SDF (rotation in the (y, x) plane), got {self.axis!r}")
        else:
            if self.axis is None:
                raise ValueError(
                    "RotatedSDF axis is required for a 3D SDF: a (z, y, x) direction such as (1, 0, 0) for the z axis, got None"
                )
            axis = _point("RotatedSDF axis", self.axis, (3,))
            if not any(_values(axis)):
                raise ValueError(f"RotatedSDF axis must be a non-zero (z, y, x) direction, got {_values(axis)}")
            object.__setattr__(self, "axis", axis)
        if self.about is not None:
            object.__setattr__(self, "about", _point("RotatedSDF about", self.about, (nd,)))

    @property
    def ndim(self) -> int:
        return self.sdf.ndim

    def _phi(self, p: torch.Tensor) -> torch.Tensor:
        r = _rotation(_t(self.angle, p), None if self.axis is None else _t(self.axis, p), self.ndim)
        about = torch.zeros(self.ndim, dtype=p.dtype, device=p.device) if self.about is None else _t(self.about, p)
        return self.sdf._phi((p - about) @ r + about)  # row vectors: (Rᵀ (p − about))ᵀ = (p − about)ᵀ R


@dataclass(frozen=True, eq=False)
class ScaledSDF(SDF):
    """``sdf`` scaled uniformly by ``factor > 0`` about ``about`` (default the origin):
    ``φ(p) = factor · φ_sdf((p − about) / factor + about)``, still a distance (see :func:`scale`)."""

    sdf: SDF
    factor: Scalar
    about: Point | None = None

    def __post_init__(self) -> None:
        nd = _check_sdf("ScaledSDF sdf", self.sdf).ndim
        object.__setattr__(self, "factor", _scalar("ScaledSDF factor", self.factor, positive=True))
        if self.about is not None:
            object.__setattr__(self, "about", _point("ScaledSDF about", self.about, (nd,)))

    @property
    def ndim(self) -> int:
        return self.sdf.ndim

    def _phi(self, p: torch.Tensor) -> torch.Tensor:
        f = _t(self.factor, p)
        about = torch.zeros(self.ndim, dtype=p.dtype, device=p.device) if self.about is None else _t(self.about, p)
        return f * self.sdf._phi((p - about) / f + about)


def translate(sdf: SDF, offset: Point) -> TranslatedSDF:
    """``sdf`` moved by ``offset``.

    Args:
        sdf: the shape.
        offset: displacement in axis order, ``(y, x)`` or ``(z, y, x)`` (numbers or a tensor).
    """
    return TranslatedSDF(sdf, offset)


def rotate(sdf: SDF, angle: Scalar, axis: Point | None = None, about: Point | None = None) -> RotatedSDF:
    """``sdf`` rotated by ``angle`` radians.

    Args:
        sdf: the shape.
        angle: 2D: counter-clockwise in the (x, y) plane (x to the right, y up); 3D: right-handed about
            ``axis`` in (x, y, z). A number or a 0-d tensor.
        axis: 3D only (required there): the rotation axis as a ``(z, y, x)`` direction, e.g. ``(1, 0, 0)``
            for the z axis (which makes a 3D rotation the 2D one of every z slice).
        about: the fixed point, ``(y, x)`` or ``(z, y, x)``; default the origin.
    """
    return RotatedSDF(sdf, angle, axis, about)


def scale(sdf: SDF, factor: Scalar, about: Point | None = None) -> ScaledSDF:
    """``sdf`` scaled uniformly by ``factor``.

    Args:
        sdf: the shape.
        factor: the scale factor, ``> 0`` (a number or a 0-d tensor).
        about: the fixed point; default the origin.
    """
    return ScaledSDF(sdf, factor, about)


# --------------------------------------------------------------------------------------------------
# On a grid: fractions and masks
# --------------------------------------------------------------------------------------------------


def _setup(who: str, sdf: object, grid: object, dtype: torch.dtype | None, device: str | torch.device | None) -> tuple:
    """Validate ``sdf``/``grid`` and resolve ``dtype``/``device`` (default: the runtime's)."""
    _check_sdf(f"{who} sdf", sdf)
    if not isinstance(grid, Grid):
        raise TypeError(f"{who} grid must be a taichi_dp.Grid, got {type(grid).__name__}")
    if grid.ndim not in _AXES:
        raise ValueError(f"{who} grid must be 2D or 3D, got shape {grid.shape}")
    if grid.ndim != sdf.ndim:
        raise ValueError(
            f"{who}: the SDF is {sdf.ndim}D ({_AXES[sdf.ndim]} points) but the grid is {grid.ndim}D (shape {grid.shape})"
        )
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"{who} dtype must be a floating-point torch.dtype or None (the runtime's), got {dtype!r}")
    if dtype is None or device is None:
        rt = ensure_init()
        dtype = rt.dtype if dtype is None else dtype
        device = rt.device if device is None else device
    return dtype, torch.device(device)


def _lattice(grid: Grid, dtype: torch.dtype, device: torch.device, centres: bool) -> torch.Tensor:
    """Points ``(*shape, nd)``: the cell corners (``N + 1`` per axis) or the cell centres (``N``)."""
    axes = []
    for (lo, _), h, n in zip(grid.bounds, grid.spacing, grid.shape):
        i = torch.arange(n if centres else n + 1, dtype=dtype, device=device)
        axes.append(lo + (i + 0.5 if centres else i) * h)
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)


def _ratio(num: torch.Tensor, den: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``valid`` (``den ≠ 0`` there), 0 elsewhere, with finite gradients everywhere."""
    return torch.where(valid, num / torch.where(valid, den, torch.ones_like(den)), torch.zeros_like(num))


def _simplex_solid(phis: Sequence[torch.Tensor]) -> torch.Tensor:
    """Solid fraction ``|{φ < 0}| / |simplex|`` of triangles (3 vertex values) or tetrahedra (4), φ linear.

    With the vertex values sorted ``v₀ ≤ v₁ ≤ …`` and ``k`` of them negative, the fractions are products of
    edge ratios ``t = v_neg / (v_neg − v_pos) ∈ [0, 1]`` (denominators > 0, so no cancellation):
    triangle ``k=1``: ``t₀₁ t₀₂``; ``k=2``: ``1 − s₂₀ s₂₁`` (``s`` from the one non-negative vertex).
    Tetrahedron ``k=1``: ``t₀₁ t₀₂ t₀₃``; ``k=3``: ``1 − s₃₀ s₃₁ s₃₂``; ``k=2`` (a triangular prism split
    into three tetrahedra): ``t₀₂ t₀₃ + t₀₂ t₁₃ (1 − t₀₃) + (1 − t₀₂) t₁₂ t₁₃``.
    """
    v, _ = torch.sort(torch.stack(list(phis), -1), -1)
    k = (v < 0).sum(-1)
    n = v.shape[-1]
    full = (k == n).to(v.dtype)
    if n == 3:
        one, two = k == 1, k == 2
        t1, t2 = _ratio(v[..., 0], v[..., 0] - v[..., 1], one), _ratio(v[..., 0], v[..., 0] - v[..., 2], one)
        s0, s1 = _ratio(v[..., 2], v[..., 2] - v[..., 0], two), _ratio(v[..., 2], v[..., 2] - v[..., 1], two)
        return torch.where(one, t1 * t2, torch.where(two, 1 - s0 * s1, full))
    one, two, three = k == 1, k == 2, k == 3
    a = [_ratio(v[..., 0], v[..., 0] - v[..., j], one) for j in (1, 2, 3)]
    s = [_ratio(v[..., 3], v[..., 3] - v[..., j], three) for j in (0, 1, 2)]
    t02, t03 = _ratio(v[..., 0], v[..., 0] - v[..., 2], two), _ratio(v[..., 0], v[..., 0] - v[..., 3], two)
    t12, t13 = _ratio(v[..., 1], v[..., 1] - v[..., 2], two), _ratio(v[..., 1], v[..., 1] - v[..., 3], two)
    prism = t02 * t03 + t02 * t13 * (1 - t03) + (1 - t02) * t12 * t13
    return torch.where(
        one, a[0] * a[1] * a[2], torch.where(two, prism, torch.where(three, 1 - s[0] * s[1] * s[2], full))
    )


def _where_cut(corners: Sequence[torch.Tensor], fraction: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Solid fraction of elements (segments, squares, cubes) from their corner φ (tensors of one shape):
    1 where every corner is negative, 0 where none is, ``fraction(*corners)`` evaluated only on the cut
    elements (gradients flow through those; the others are constant). An element whose corners are all
    exactly on the surface (φ = 0: it lies on a flat side, or is a chord of a convex body) is solid, as a
    cell centre on the surface is for masks: open, it would pass flow into cells wholly inside the body."""
    c = torch.stack([x.reshape(-1) for x in corners], -1)
    lo, hi = c.amin(-1), c.amax(-1)
    base = ((hi < 0) | ((hi == 0) & (lo == 0))).to(c.dtype)
    cut = ((lo < 0) & (hi >= 0)).nonzero().squeeze(-1)
    if cut.numel():
        base = base.index_put((cut,), fraction(*c[cut].unbind(-1)))
    return base.view(corners[0].shape)


def _square_solid(p00: torch.Tensor, p01: torch.Tensor, p10: torch.Tensor, p11: torch.Tensor) -> torch.Tensor:
    """Solid fraction of squares from their corner φ: two triangles along each diagonal, averaged."""
    return 0.25 * (
        _simplex_solid((p00, p01, p11)) + _simplex_solid((p00, p10, p11))
        + _simplex_solid((p00, p01, p10)) + _simplex_solid((p11, p01, p10))
    )


_CUBE = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
"""Corner offsets of a cube, index ``4 a + 2 b + c``."""
_KUHN = [
    [tuple(o) for o in itertools.accumulate(perm, lambda o, a: [*o[:a], 1 - o[a], *o[a + 1 :]], initial=list(flip))]
    for flip in ((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1))  # the cube's four main diagonals
    for perm in itertools.permutations(range(3))  # 0 → e_σ0 → e_σ0 + e_σ1 → (1, 1, 1), reflected by flip
]
"""The 24 Kuhn tetrahedra (4 corner offsets each) of the four main diagonals."""


def _cube_solid(*corners: torch.Tensor) -> torch.Tensor:
    """Solid fraction of cubes from their 8 corner φ (in :data:`_CUBE` order): the 24 Kuhn tetrahedra, averaged."""
    at = dict(zip(_CUBE, corners))
    return sum(_simplex_solid([at[o] for o in tet]) for tet in _KUHN) / len(_KUHN)


def _corner(phi: torch.Tensor, offset: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """``phi[o₀ : o₀ + n₀, o₁ : o₁ + n₁, ...]``."""
    return phi[tuple(slice(o, o + n) for o, n in zip(offset, shape))]


def _segment_solid(p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
    """Solid fraction of segments from their end φ (linear interpolation: ``φ₋ / (φ₋ − φ₊)`` when cut)."""
    lo, hi = torch.minimum(p0, p1), torch.maximum(p0, p1)
    cut = (lo < 0) & (hi >= 0)
    return torch.where(cut, _ratio(lo, lo - hi, cut), (hi < 0).to(p0.dtype))


def cell_fractions(
    sdf: SDF, grid: Grid, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> torch.Tensor:
    """Fluid volume fraction of every cell of ``grid``, ``(1, 1, *grid.shape)`` in ``[0, 1]``.

    φ is evaluated at the cell corners and interpolated linearly on a simplex decomposition of each cell
    (2D: both diagonals' triangle pairs, averaged; 3D: the 24 Kuhn tetrahedra of the four main diagonals,
    averaged); the solid part of each
    simplex is measured exactly (module docstring). Exact for a planar surface; second-order for smooth
    ones. Differentiable with respect to tensor parameters of ``sdf``.

    Args:
        sdf: the obstacle (``φ < 0`` solid), of the grid's dimension.
        grid: a 2D or 3D grid.
        dtype: floating-point dtype of the result (default: the runtime's).
        device: torch device of the result (default: the runtime's).
    """
    dtype, device = _setup("cell_fractions", sdf, grid, dtype, device)
    phi = sdf._phi(_lattice(grid, dtype, device, centres=False))
    n = grid.shape
    if grid.ndim == 2:
        solid = _where_cut([_corner(phi, o, n) for o in ((0, 0), (0, 1), (1, 0), (1, 1))], _square_solid)
    else:
        solid = _where_cut([_corner(phi, o, n) for o in _CUBE], _cube_solid)
    return (1 - solid)[None, None].contiguous()


def face_fractions(
    sdf: SDF, grid: Grid, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> torch.Tensor:
    """Open (fluid) fraction of every staggered face, ``(1, nd, *(N + 1))`` in the layout of
    :mod:`taichi_dp.grid.staggered` (channel ``c``: the faces normal to axis ``c``; padding entries 0).

    2D faces are segments: the fluid length fraction from φ at their two end corners, linearly
    interpolated. 3D faces are squares: the 2D cell formula on their four corners. Exact for a planar
    surface; differentiable with respect to tensor parameters of ``sdf``. A face lying on the surface
    (every corner φ = 0, e.g. a box side on a grid line) is closed.

    Args:
        sdf: the obstacle (``φ < 0`` solid), of the grid's dimension.
        grid: a 2D or 3D grid.
        dtype: floating-point dtype of the result (default: the runtime's).
        device: torch device of the result (default: the runtime's).
    """
    dtype, device = _setup("face_fractions", sdf, grid, dtype, device)
    phi = sdf._phi(_lattice(grid, dtype, device, centres=False))
    nd = grid.ndim
    out = []
    for c in range(nd):
        others = [a for a in range(nd) if a != c]
        shape = [n + 1 if a == c else n for a, n in enumerate(grid.shape)]  # faces normal to c, before padding

        def at(*steps: int, shape: list[int] = shape, others: list[int] = others) -> torch.Tensor:
            o = [0] * nd
            for a, s in zip(others, steps):
                o[a] = s
            return _corner(phi, o, shape)

        if nd == 2:
            solid = _where_cut([at(0), at(1)], _segment_solid)
        else:
            solid = _where_cut([at(0, 0), at(0, 1), at(1, 0), at(1, 1)], _square_solid)
        pad = []
        for a in reversed(range(nd)):  # F.pad order: last axis first
            pad += [0, 0 if a == c else 1]
        out.append(torch.nn.functional.pad(1 - solid, pad))
    return torch.stack(out)[None].contiguous()


def binary_mask(
    sdf: SDF, grid: Grid, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> torch.Tensor:
    """Fluid mask ``(1, 1, *grid.shape)``: 1 where the cell centre has ``φ > 0``, else 0 (the convention of
    :mod:`taichi_dp.grid.geometry`: a centre on the surface is solid). Not differentiable (a step).

    Args:
        sdf: the obstacle (``φ < 0`` solid), of the grid's dimension.
        grid: a 2D or 3D grid.
        dtype: floating-point dtype of the result (default: the runtime's).
        device: torch device of the result (default: the runtime's).
    """
    dtype, device = _setup("binary_mask", sdf, grid, dtype, device)
    with torch.no_grad():
        phi = sdf._phi(_lattice(grid, dtype, device, centres=True))
    return (phi > 0).to(dtype)[None, None].contiguous()
