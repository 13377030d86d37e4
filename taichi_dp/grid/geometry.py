"""Obstacle geometry → fluid masks ``(1, 1, H, W)`` (1 = fluid, 0 = solid) on a 2D grid.

A cell is solid when its centre lies inside the shape. Combine masks by multiplication
(``disc(...) * box(...)``) and stack samples with ``torch.cat`` for per-batch obstacles.
Coordinates are physical, ``(y, x)`` like the grid.
"""

from __future__ import annotations

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
