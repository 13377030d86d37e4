"""Obstacle geometry → fluid masks ``(1, 1, *spatial)`` (1 = fluid, 0 = solid) on a 2D or 3D grid.

Coordinates are physical and in axis order, like the grid: ``(y, x)`` in 2D (``spatial = (H, W)``),
``(z, y, x)`` in 3D (``spatial = (D, H, W)``). A cell is solid when its centre lies inside the shape
(boundaries included). Every shape is a frozen, validated dataclass; calling it with a grid gives its
mask in the runtime dtype on the runtime device, so a scene can take obstacles before it has built its
grid (``karman(obstacles=[Disc(...)])``):

- 2D: :class:`Disc` (a circle; the cross-section of a cylinder), :class:`Box`;
- 3D: :class:`Sphere`, :class:`Cylinder` (along grid axis 0 = z, 1 = y or 2 = x; infinite, or of finite
  ``length`` centred at ``centre``), :class:`Box`;
- any dimension: :class:`Union` (solid where any member is solid; also ``a | b``) and :class:`Mask`
  (your own fluid mask tensor, 1/True = FLUID like every mask in taichi_dp; :meth:`Mask.from_solid`
  takes the opposite convention).

>>> grid = Grid.box((32, 32, 64), (1.0, 1.0, 2.0))                    # (z, y, x)
>>> fluid = Union(Sphere((0.5, 0.5, 0.5), 0.2), Box((0.0, 0.0, 1.2), (0.3, 1.0, 1.4)))(grid)  # (1, 1, 32, 32, 64)

Per-batch obstacles: :func:`fluid_masks` stacks one shape per sample into ``(B, 1, *spatial)``. Masks
combine by multiplication too (``disc(...) * box(...)`` is the union of the two obstacles). The
functional forms :func:`disc`, :func:`box`, :func:`sphere` and :func:`cylinder` take the grid first.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..runtime import ensure_init
from ._cartesian import Grid

__all__ = ["Box", "Cylinder", "Disc", "Mask", "Shape", "Sphere", "Union", "box", "cylinder", "disc", "fluid_masks", "sphere"]

_AXES = {2: "(y, x)", 3: "(z, y, x)"}
_AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}
_POINT = {2: "pair", 3: "triple"}


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _point(name: str, p: object, ndims: tuple[int, ...]) -> tuple[float, ...]:
    """``p`` as a tuple of floats with a length in ``ndims``, or a ``ValueError`` naming ``name``."""
    ok = isinstance(p, (tuple, list)) and len(p) in ndims and all(_is_number(c) and math.isfinite(c) for c in p)
    if not ok:
        what = " or a ".join(f"{_AXES[n]} {_POINT[n]}" for n in ndims)
        raise ValueError(f"{name} must be a {what} of finite numbers, got {p!r}")
    return tuple(float(c) for c in p)


def _positive(name: str, v: object) -> float:
    if not (_is_number(v) and math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


def _coordinates(grid: object, shape: object, ndim: int | None) -> list[torch.Tensor]:
    """Cell-centre coordinates per axis, each shaped to broadcast over ``grid.shape``; checks that
    ``grid`` is a 2D/3D :class:`Grid` with ``ndim`` axes (``None``: any)."""
    _check_grid(grid, repr(shape), ndim, type(shape).__name__)
    rt = ensure_init()
    nd = grid.ndim
    return [grid.centers(a, rt.dtype, rt.device).view([-1 if b == a else 1 for b in range(nd)]) for a in range(nd)]


def _check_grid(grid: object, who: str, ndim: int | None, kind: str = "") -> None:
    """``grid`` must be a 2D or 3D :class:`Grid` with ``ndim`` axes (``None``: either); ``who`` names the
    caller in the message, ``kind`` (a class name) picks a hint."""
    if not isinstance(grid, Grid):
        raise TypeError(f"{who} needs a taichi_dp.Grid, got {type(grid).__name__}")
    if grid.ndim not in _AXES:
        raise ValueError(f"obstacle geometry needs a 2D or 3D grid, got shape {grid.shape}")
    if ndim is not None and grid.ndim != ndim:
        hint = {"Disc": "; in 3D use Sphere or Cylinder", "Sphere": "; in 2D use Disc", "Cylinder": "; in 2D use Disc"}
        raise ValueError(
            f"{who} is {ndim}D ({_AXES.get(ndim, '?')} coordinates) but the grid is {grid.ndim}D "
            f"(shape {grid.shape}){hint.get(kind, '')}"
        )


def _fluid(solid: torch.Tensor) -> torch.Tensor:
    """``(1, 1, *spatial)`` fluid mask in the runtime dtype from a boolean ``solid`` array."""
    rt = ensure_init()
    return (~solid).to(rt.dtype)[None, None].contiguous()


class Shape:
    """Base of the obstacle shapes: ``shape(grid)`` is a fluid mask ``(1, 1, *grid.shape)`` (a
    :class:`Mask` may carry a batch), ``a | b`` their :class:`Union`. :attr:`ndim` is the grid
    dimension the shape needs (``None``: any)."""

    ndim: int | None = None

    def __call__(self, grid: Grid) -> torch.Tensor:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def __or__(self, other: object) -> Union:
        if not callable(other):
            return NotImplemented
        return Union(self, other)

    def __ror__(self, other: object) -> Union:
        if not callable(other):
            return NotImplemented
        return Union(other, self)


@dataclass(frozen=True)
class Disc(Shape):
    """2D: a solid disc of ``radius`` at ``centre = (y, x)``; ``Disc(...)(grid)`` is :func:`disc`'s mask."""

    centre: tuple[float, float]
    radius: float
    ndim = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "centre", _point("Disc centre", self.centre, (2,)))
        object.__setattr__(self, "radius", _positive("Disc radius", self.radius))

    def __call__(self, grid: Grid) -> torch.Tensor:
        """Fluid mask ``(1, 1, H, W)`` on ``grid``."""
        y, x = _coordinates(grid, self, 2)
        return _fluid((y - self.centre[0]) ** 2 + (x - self.centre[1]) ** 2 <= self.radius**2)


@dataclass(frozen=True)
class Sphere(Shape):
    """3D: a solid ball of ``radius`` at ``centre = (z, y, x)``."""

    centre: tuple[float, float, float]
    radius: float
    ndim = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "centre", _point("Sphere centre", self.centre, (3,)))
        object.__setattr__(self, "radius", _positive("Sphere radius", self.radius))

    def __call__(self, grid: Grid) -> torch.Tensor:
        """Fluid mask ``(1, 1, D, H, W)`` on ``grid``."""
        xs = _coordinates(grid, self, 3)
        return _fluid(sum((x - c) ** 2 for x, c in zip(xs, self.centre)) <= self.radius**2)


@dataclass(frozen=True)
class Cylinder(Shape):
    """3D: a solid circular cylinder of ``radius`` whose axis runs along grid axis ``axis`` (0 = z,
    1 = y, 2 = x) through ``centre = (z, y, x)``. ``length=None`` makes it infinite (the entry of
    ``centre`` along ``axis`` is then irrelevant); a finite ``length`` spans
    ``centre[axis] ± length / 2`` (end caps included)."""

    centre: tuple[float, float, float]
    radius: float
    axis: int
    length: float | None = None
    ndim = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "centre", _point("Cylinder centre", self.centre, (3,)))
        object.__setattr__(self, "radius", _positive("Cylinder radius", self.radius))
        a = self.axis
        if not (isinstance(a, numbers.Integral) and not isinstance(a, bool) and 0 <= a <= 2):
            raise ValueError(f"Cylinder axis must be a grid axis 0 (z), 1 (y) or 2 (x), got {a!r}")
        object.__setattr__(self, "axis", int(a))
        if self.length is not None:
            if not (_is_number(self.length) and math.isfinite(self.length) and self.length > 0):
                raise ValueError(f"Cylinder length must be None (infinite) or a finite number > 0, got {self.length!r}")
            object.__setattr__(self, "length", float(self.length))

    def __call__(self, grid: Grid) -> torch.Tensor:
        """Fluid mask ``(1, 1, D, H, W)`` on ``grid``."""
        xs = _coordinates(grid, self, 3)
        across = sum((xs[a] - self.centre[a]) ** 2 for a in range(3) if a != self.axis)
        solid = across <= self.radius**2
        if self.length is not None:
            solid = solid & ((xs[self.axis] - self.centre[self.axis]).abs() <= self.length / 2)
        return _fluid(solid.expand(grid.shape))


@dataclass(frozen=True)
class Box(Shape):
    """A solid axis-aligned box ``lower ≤ point ≤ upper``: ``(y, x)`` pairs in 2D, ``(z, y, x)``
    triples in 3D; ``Box(...)(grid)`` is :func:`box`'s mask."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]

    def __post_init__(self) -> None:
        lower = _point("Box lower", self.lower, (2, 3))
        upper = _point("Box upper", self.upper, (2, 3))
        if len(lower) != len(upper):
            raise ValueError(
                f"Box lower and upper must have the same length (2 for (y, x), 3 for (z, y, x)), "
                f"got {len(lower)} and {len(upper)}: lower={lower}, upper={upper}"
            )
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        bad = [a for a in range(len(lower)) if not upper[a] > lower[a]]
        if bad:
            names = _AXIS_NAMES[len(lower)]
            which = ", ".join(f"{a} ({names[a]})" for a in bad)
            raise ValueError(
                f"Box needs upper > lower on {'both axes' if len(lower) == 2 else 'every axis'}, "
                f"got lower={lower}, upper={upper} (fails on axis {which})"
            )

    @property
    def ndim(self) -> int:  # type: ignore[override]
        return len(self.lower)

    def __call__(self, grid: Grid) -> torch.Tensor:
        """Fluid mask ``(1, 1, *grid.shape)`` on ``grid``."""
        xs = _coordinates(grid, self, self.ndim)
        solid = torch.ones(grid.shape, dtype=torch.bool, device=xs[0].device)
        for x, lo, hi in zip(xs, self.lower, self.upper):
            solid = solid & (x >= lo) & (x <= hi)
        return _fluid(solid)


@dataclass(frozen=True, eq=False, repr=False)
class Mask(Shape):
    """Your own obstacle as a FLUID mask ``(1 or B, 1, *spatial)``: ``True``/1 = fluid, ``False``/0 = solid,
    like every mask in taichi_dp (bool, or floating point holding only 0 and 1). For a solid mask
    (1 = solid) use :meth:`from_solid`. The tensor is copied (later edits to yours do not change the
    shape); calling the shape checks ``spatial`` against the grid and returns the mask in the runtime
    dtype on the runtime device. Masks compare by identity."""

    fluid: torch.Tensor

    def __post_init__(self) -> None:
        m = self.fluid
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"Mask fluid must be a torch.Tensor (1 or B, 1, *spatial), got {type(m).__name__}")
        if m.ndim not in (4, 5) or m.shape[1] != 1 or m.shape[0] < 1:
            raise ValueError(f"Mask fluid must have shape (1 or B, 1, H, W) or (1 or B, 1, D, H, W), got {tuple(m.shape)}")
        if m.dtype != torch.bool and not m.dtype.is_floating_point:
            raise TypeError(f"Mask fluid must be a bool or floating-point tensor, got dtype {m.dtype}")
        m = m.detach()
        if m.dtype != torch.bool:
            if not bool(((m == 0) | (m == 1)).all()):
                raise ValueError(f"Mask fluid must hold only 0 (solid) and 1 (fluid), got values in [{m.min()}, {m.max()}]")
            m = m != 0
        object.__setattr__(self, "fluid", m.clone())

    @staticmethod
    def from_solid(solid: torch.Tensor) -> Mask:
        """A :class:`Mask` from a SOLID mask (``True``/1 = solid), the opposite of the library's convention."""
        if isinstance(solid, torch.Tensor) and solid.dtype == torch.bool:
            return Mask(~solid)
        if isinstance(solid, torch.Tensor) and solid.dtype.is_floating_point:
            return Mask(1 - solid)  # Mask checks the values are 0/1
        return Mask(solid)  # Mask raises its TypeError

    @property
    def ndim(self) -> int:  # type: ignore[override]
        return self.fluid.ndim - 2

    @property
    def batch(self) -> int:
        return self.fluid.shape[0]

    def __repr__(self) -> str:
        return f"Mask(shape={tuple(self.fluid.shape)}, solid cells={int((~self.fluid).sum())})"

    def __call__(self, grid: Grid) -> torch.Tensor:
        """The fluid mask ``(1 or B, 1, *grid.shape)``, runtime dtype and device."""
        _check_grid(grid, repr(self), None)
        if tuple(self.fluid.shape[2:]) != tuple(grid.shape):
            raise ValueError(f"{self!r} has spatial shape {tuple(self.fluid.shape[2:])} but the grid has shape {grid.shape}")
        rt = ensure_init()
        return self.fluid.to(device=rt.device, dtype=rt.dtype).contiguous()


@dataclass(frozen=True, init=False)
class Union(Shape):
    """Solid wherever any of ``shapes`` is solid (the fluid masks multiplied). Members are shapes of
    this module or any callable ``grid -> fluid mask``; nested unions are flattened and
    ``Union([a, b])`` is ``Union(a, b)``. All members with a known dimension must agree."""

    shapes: tuple[Callable[[Grid], torch.Tensor], ...]

    def __init__(self, *shapes: Callable[[Grid], torch.Tensor]) -> None:
        if len(shapes) == 1 and isinstance(shapes[0], (list, tuple)):
            shapes = tuple(shapes[0])
        object.__setattr__(self, "shapes", shapes)
        self.__post_init__()

    def __post_init__(self) -> None:
        if len(self.shapes) == 0:
            raise ValueError("Union needs at least one shape, got none")
        flat: list = []
        for k, s in enumerate(self.shapes):
            if isinstance(s, Union):
                flat.extend(s.shapes)
            elif callable(s):
                flat.append(s)
            else:
                raise TypeError(f"Union shapes[{k}] must be a shape (Disc, Box, ...) or a callable grid -> mask, got {s!r}")
        dims = {s.ndim for s in flat if isinstance(s, Shape) and s.ndim is not None}
        if len(dims) > 1:
            raise ValueError(f"Union mixes {'D, '.join(str(d) for d in sorted(dims))}D shapes: {tuple(flat)!r}")
        batches = {s.batch for s in flat if isinstance(s, Mask) and s.batch != 1}
        if len(batches) > 1:
            raise ValueError(f"Union holds Masks with different batch sizes {sorted(batches)}")
        object.__setattr__(self, "shapes", tuple(flat))

    @property
    def ndim(self) -> int | None:  # type: ignore[override]
        dims = {s.ndim for s in self.shapes if isinstance(s, Shape)} - {None}
        return dims.pop() if dims else None

    def __call__(self, grid: Grid) -> torch.Tensor:
        """Fluid mask ``(1 or B, 1, *grid.shape)``: the product of the members' masks."""
        _check_grid(grid, repr(self), self.ndim)
        out = None
        for k, s in enumerate(self.shapes):
            m = s(grid)
            if not isinstance(m, torch.Tensor):
                raise TypeError(f"Union shapes[{k}] ({s!r}) must return a torch.Tensor mask, got {type(m).__name__}")
            if m.ndim != grid.ndim + 2 or m.shape[1] != 1 or tuple(m.shape[2:]) != grid.shape:
                raise ValueError(
                    f"Union shapes[{k}] ({s!r}) returned shape {tuple(m.shape)}, expected (1 or B, 1, *{grid.shape})"
                )
            if out is not None and m.shape[0] != out.shape[0] and 1 not in (m.shape[0], out.shape[0]):
                raise ValueError(f"Union shapes[{k}] has batch {m.shape[0]} but the others have {out.shape[0]}")
            out = m if out is None else out * m
        return out.contiguous()


def fluid_masks(grid: Grid, shapes_per_sample: Sequence[object]) -> torch.Tensor:
    """Per-batch obstacles: one entry per sample, stacked into a fluid mask ``(B, 1, *grid.shape)``.

    An entry is a shape (or any callable ``grid -> (1, 1, *spatial)`` mask), a list/tuple of shapes
    (their :class:`Union`), or ``None`` (no obstacle: all fluid).

    >>> fluid_masks(grid, [Sphere((0.5, 0.5, 0.5), 0.2), [Sphere((0.5, 0.5, 0.3), 0.1), Box(...)], None])
    """
    if not isinstance(shapes_per_sample, (list, tuple)) or len(shapes_per_sample) == 0:
        raise ValueError(f"shapes_per_sample must be a non-empty list (one entry per sample), got {shapes_per_sample!r}")
    _check_grid(grid, "fluid_masks", None)
    rt = ensure_init()
    masks = []
    for b, entry in enumerate(shapes_per_sample):
        if entry is None:
            masks.append(torch.ones((1, 1, *grid.shape), dtype=rt.dtype, device=rt.device))
            continue
        if isinstance(entry, (list, tuple)):
            entry = Union(*entry) if entry else None
            if entry is None:
                masks.append(torch.ones((1, 1, *grid.shape), dtype=rt.dtype, device=rt.device))
                continue
        if not callable(entry):
            raise TypeError(f"shapes_per_sample[{b}] must be a shape, a list of shapes or None, got {type(entry).__name__}")
        m = entry(grid)
        if not isinstance(m, torch.Tensor) or tuple(m.shape) != (1, 1, *grid.shape):
            got = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"shapes_per_sample[{b}] ({entry!r}) must give one mask (1, 1, *{grid.shape}), got {got}")
        masks.append(m.to(device=rt.device, dtype=rt.dtype))
    return torch.cat(masks).contiguous()


def disc(grid: Grid, centre: tuple[float, float], radius: float) -> torch.Tensor:
    """2D fluid mask with a solid disc (a cylinder in 2D) of ``radius`` at ``centre = (y, x)``."""
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    return Disc(centre, radius)(grid)


def sphere(grid: Grid, centre: tuple[float, float, float], radius: float) -> torch.Tensor:
    """3D fluid mask with a solid ball of ``radius`` at ``centre = (z, y, x)``."""
    return Sphere(centre, radius)(grid)


def cylinder(
    grid: Grid, centre: tuple[float, float, float], radius: float, axis: int, length: float | None = None
) -> torch.Tensor:
    """3D fluid mask with a solid circular cylinder along grid ``axis`` (see :class:`Cylinder`)."""
    return Cylinder(centre, radius, axis, length)(grid)


def box(grid: Grid, lower: tuple[float, ...], upper: tuple[float, ...]) -> torch.Tensor:
    """Fluid mask with a solid axis-aligned box ``lower ≤ point ≤ upper`` (``(y, x)`` or ``(z, y, x)``)."""
    pairs = isinstance(lower, (tuple, list)) and isinstance(upper, (tuple, list)) and len(lower) == len(upper)
    if pairs and all(_is_number(c) for c in (*lower, *upper)) and not all(u > lo for lo, u in zip(lower, upper)):
        axes = "both axes" if len(lower) == 2 else "every axis"
        raise ValueError(f"box needs upper > lower on {axes}, got lower={lower}, upper={upper}")
    return Box(lower, upper)(grid)
