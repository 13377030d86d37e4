"""Cut cells: a signed-distance obstacle as the flow solver sees it without staircasing.

:class:`CutCells` holds what :class:`~taichi_dp.solvers.NavierStokes` needs of an obstacle that cuts through
cells, every array in the staggered layout ``(1, nd, *(N + 1))`` (padding 0) and differentiable with respect
to the SDF's tensor parameters (centre, radius, angle, ...):

- ``openings``: the open (fluid) fraction ``θ_f`` of each face (:func:`~taichi_dp.grid.sdf.face_fractions`),
  used by the cut-cell projection (:mod:`taichi_dp.ops.cut_cell`: ``D(θ v) = 0``);
- ``wall``: the no-slip coefficient of each face, ``k_f = Σ (1 − δ) / (δ h_d²)`` over the neighbouring faces
  (same component, one cell away along each axis ``d``) that lie across the wall, where ``δ ∈ (0, 1]`` is the
  wall's distance from this face's centre in units of ``h_d``, ``δ = φ_f / (φ_f − φ_nb)`` (φ linear between
  the two face centres);
- ``exterior``: 1 on faces whose centre is in the fluid (``φ_f > 0``), 0 inside the body;
- ``closing``: ``exterior`` ramped linearly to 0 as a face centre comes within :data:`CLOSING` (0.1) of a
  cell of the wall (``min(1, δ / 0.1)`` with ``δ`` the smallest of the axis distances above and the face
  centre's own distance ``φ_f / h``, which bounds it where a thin tip or a corner crosses the face centre
  with no axis neighbour inside): the factor that closes a face continuously as the body covers it.

**Viscous no-slip (ghost fluid).** The MAC viscous stencil takes the neighbour across the wall at a full
cell's distance. With the body's surface at ``δ h`` instead, the ghost value that makes the linear profile
vanish on the wall is ``u_g = u_f (1 − 1/δ)`` (Gibou, Fedkiw, Cheng & Kang, J. Comput. Phys. 176, 2002), so
the stencil's neighbour term changes by ``−u_f (1/δ − 1) / h²``: a linear drag ``−k_f u_f`` on near-wall faces.
:meth:`CutCells.no_slip` applies it implicitly, ``u ← u / (1 + ν Δt k)`` (unconditionally stable however small
``δ``), and sets faces whose centre is inside the body to 0 — before the explicit viscosity, whose stencil then
reads 0 across the wall as the ghost rule assumes (it multiplies by ``closing``, which is ``exterior``
ramped to 0 within a tenth of a cell of the wall, so that it too is continuous). After the viscosity the velocity is multiplied by
``closing``, so that faces inside the body stay 0 through advection. Both factors go to 0 continuously as a
face centre approaches the surface, so the flow depends continuously on the body's position (no cell-sized
jumps) and is differentiable in it (``tests/test_shape_gradients.py``).

Measured on the DFG cylinder benchmark (``benchmarks/RESULTS.md``): with cut cells the drag converges
towards the reference instead of scattering by several per cent under sub-cell shifts of the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._cartesian import Grid
from .sdf import SDF, face_fractions
from .staggered import face_coordinates, staggered_shape, valid_faces

DELTA_MIN = 1e-6
"""Smallest wall distance (in cells) the no-slip coefficient uses (``k ≤ 1/(δ h²)`` stays finite)."""
CLOSING = 0.1
"""Wall distance (in cells) below which :attr:`CutCells.closing` ramps a face's velocity linearly to 0."""


@dataclass(frozen=True, eq=False)
class CutCells:
    """A cut-cell obstacle on a grid (module docstring): ``openings``, ``wall`` and ``exterior``, each
    ``(1 or B, nd, *(N + 1))``. Build it with :meth:`from_sdf`."""

    openings: torch.Tensor
    wall: torch.Tensor
    exterior: torch.Tensor
    closing: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("openings", "wall", "exterior", "closing"):
            x = getattr(self, name)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"CutCells.{name} must be a torch.Tensor, got {type(x).__name__}")
        shapes = {tuple(getattr(self, n).shape) for n in ("openings", "wall", "exterior", "closing")}
        if len(shapes) != 1:
            raise ValueError(f"CutCells arrays must share one shape, got {sorted(shapes)}")

    @classmethod
    def from_sdf(
        cls, sdf: SDF, grid: Grid, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None
    ) -> CutCells:
        """The cut cells of ``sdf`` (``φ < 0`` solid) on ``grid``, in ``dtype``/``device`` (default the
        runtime's). Differentiable with respect to the SDF's tensor parameters."""
        openings = face_fractions(sdf, grid, dtype=dtype, device=device)
        dtype, device = openings.dtype, openings.device
        nd = staggered_shape(grid)[0]
        yx = face_coordinates(grid, dtype, device)
        walls, exteriors, closings = [], [], []
        for c in range(nd):
            phi = sdf(torch.stack([yx[c, a] for a in range(nd)], dim=-1))
            k = torch.zeros_like(phi)
            nearest = torch.ones_like(phi)  # the closest wall across any neighbour, in cells
            for d, h in enumerate(grid.spacing):
                for shift in (1, -1):  # the neighbour below (shift 1) and above (−1) along d
                    nb = torch.roll(phi, shift, dims=d)
                    index = torch.arange(phi.shape[d], device=device).view(*([1] * d), -1, *([1] * (nd - 1 - d)))
                    wrapped = index == (0 if shift == 1 else phi.shape[d] - 1)  # no neighbour beyond the domain
                    cross = (phi > 0) & (nb < 0) & ~wrapped
                    gap = torch.where(cross, phi - nb, torch.ones_like(phi))
                    delta = torch.where(cross, phi / gap, torch.ones_like(phi)).clamp_min(DELTA_MIN)
                    k = k + torch.where(cross, (1 - delta) / (delta * h * h), torch.zeros_like(phi))
                    nearest = torch.minimum(nearest, delta)
            # the face's own distance bounds it too: a thin tip or sharp corner can cross the face centre
            # with no axis neighbour inside the body (distance in cells of the finest spacing)
            nearest = torch.minimum(nearest, phi.clamp_min(0) / min(grid.spacing))
            walls.append(k)
            exterior = (phi.detach() > 0).to(dtype)
            exteriors.append(exterior)
            closings.append(exterior * (nearest / CLOSING).clamp(max=1.0))
        faces = valid_faces(grid, dtype, device)
        arrays = (torch.stack(x)[None] * faces for x in (walls, exteriors, closings))
        return cls(openings, *arrays)

    @property
    def open_faces(self) -> torch.Tensor:
        """``(1 or B, nd, *(N + 1))``: 1 on faces with an open fraction (the projection's faces), else 0."""
        return (self.openings.detach() > 0).to(self.openings.dtype)

    def no_slip(self, v: torch.Tensor, nu_dt: torch.Tensor) -> torch.Tensor:
        """The wall's viscous no-slip on a staggered ``v`` ``(B, nd, *(N + 1))`` before an explicit viscous
        step of ``ν Δt`` (``nu_dt`` ``(B,)``): ``v / (1 + ν Δt k) · closing`` (module docstring)."""
        scale = nu_dt.view(-1, *([1] * (v.ndim - 1)))
        return v / (1 + scale * self.wall) * self.closing
