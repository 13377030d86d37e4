"""Obstacle geometry → fluid masks ``(1, 1, H, W)`` (1 = fluid, 0 = solid) on a 2D grid.

A cell is solid when its centre lies inside the shape. Combine masks by multiplication
(``disc(...) * box(...)``) and stack samples with ``torch.cat`` for per-batch obstacles.
Coordinates are physical, ``(y, x)`` like the grid.

:class:`Disc` and :class:`Box` describe the same shapes without a grid: calling one with a grid gives
its mask, so a scene can take obstacles before it has built its grid (``karman(obstacles=[Disc(...)])``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..runtime import ensure_init
from ._cartesian import Grid


def _centres(grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    rt = ensure_init()
    if grid.ndim != 2:
        raise ValueError(f"obstacle geometry needs a 2D grid, got shape {grid.shape}")
    y = grid.centers(0, rt.dtype, rt.device)[:, None]
    x = grid.centers(1, rt.dtype, rt.device)[None, :]
    return y, x


def disc(grid: Grid, centre: tuple[float, float], radius: float) -> torch.Tensor:
    """Fluid mask with a solid disc (a cylinder in 2D) of ``radius`` at ``centre = (y, x)``."""
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    y, x = _centres(grid)
    inside = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2
    return (~inside).to(y.dtype)[None, None].contiguous()


def box(grid: Grid, lower: tuple[float, float], upper: tuple[float, float]) -> torch.Tensor:
    """Fluid mask with a solid axis-aligned box ``lower ≤ (y, x) ≤ upper``."""
    if not (upper[0] > lower[0] and upper[1] > lower[1]):
        raise ValueError(f"box needs upper > lower on both axes, got lower={lower}, upper={upper}")
    y, x = _centres(grid)
    inside = (y >= lower[0]) & (y <= upper[0]) & (x >= lower[1]) & (x <= upper[1])
    return (~inside).to(y.dtype)[None, None].contiguous()


def _point(name: str, p: object) -> tuple[float, float]:
    ok = isinstance(p, (tuple, list)) and len(p) == 2
    ok = ok and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in p)
    if not ok:
        raise ValueError(f"{name} must be a (y, x) pair of finite numbers, got {p!r}")
    return float(p[0]), float(p[1])


@dataclass(frozen=True)
class Disc:
    """A solid disc of ``radius`` at ``centre = (y, x)``; ``Disc(...)(grid)`` is :func:`disc`'s mask."""

    centre: tuple[float, float]
    radius: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "centre", _point("Disc centre", self.centre))
        r = self.radius
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (math.isfinite(r) and r > 0):
            raise ValueError(f"Disc radius must be a finite number > 0, got {r!r}")
        object.__setattr__(self, "radius", float(r))

    def __call__(self, grid: Grid) -> torch.Tensor:
        """Fluid mask ``(1, 1, H, W)`` on ``grid``."""
        return disc(grid, self.centre, self.radius)


@dataclass(frozen=True)
class Box:
    """A solid axis-aligned box ``lower ≤ (y, x) ≤ upper``; ``Box(...)(grid)`` is :func:`box`'s mask."""

    lower: tuple[float, float]
    upper: tuple[float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "lower", _point("Box lower", self.lower))
        object.__setattr__(self, "upper", _point("Box upper", self.upper))
        if not (self.upper[0] > self.lower[0] and self.upper[1] > self.lower[1]):
            raise ValueError(f"Box needs upper > lower on both axes, got lower={self.lower}, upper={self.upper}")

    def __call__(self, grid: Grid) -> torch.Tensor:
        """Fluid mask ``(1, 1, H, W)`` on ``grid``."""
        return box(grid, self.lower, self.upper)
