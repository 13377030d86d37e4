"""Plain-PyTorch dense reference of the pressure projection in any dimension (2D and 3D), written from the
documented semantics (:mod:`taichi_dp.ops.pressure`, :mod:`taichi_dp.grid.staggered`), not from the
kernels: Python loops over faces assemble dense ``D``, ``G`` and ``A`` for small grids, then a dense solve.

Staggered layout ``(B, nd, *(N + 1))``: component ``c``'s face at per-axis index ``ix`` lies between
cells ``ix − e_c`` and ``ix``; on every other axis ``a`` the index is a cell index and ``ix[a] = N_a`` is
padding. The 2D functions of :mod:`reference` are an independent, older ground truth; the tests check
that both agree in 2D.
"""

from __future__ import annotations

import itertools
import math

import torch

from taichi_dp.grid import Grid, Periodic
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall


def padded(grid: Grid) -> tuple[int, ...]:
    return tuple(n + 1 for n in grid.shape)


def face_flat(c: int, ix: tuple[int, ...], grid: Grid) -> int:
    """Flat index of component ``c``'s entry ``ix`` in one sample's ``(nd, *(N + 1))`` tensor."""
    k = c
    for a, n in enumerate(padded(grid)):
        k = k * n + ix[a]
    return k


def cell_flat(ix: tuple[int, ...], grid: Grid) -> int:
    k = 0
    for a, n in enumerate(grid.shape):
        k = k * n + ix[a]
    return k


def real_faces(grid: Grid) -> list[tuple[int, tuple[int, ...]]]:
    """``(c, ix)`` of every real (non-padding) face."""
    out = []
    for c in range(grid.ndim):
        ranges = [range(n + 1) if a == c else range(n) for a, n in enumerate(grid.shape)]
        out += [(c, ix) for ix in itertools.product(*ranges)]
    return out


def _resolve(cell: tuple[int, ...], axis: int, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor):
    """``(flat cell, pressure coefficient, fluid weight)`` of a cell one step across ``axis`` (maybe outside):
    periodic wraps (the wrapped cell's mask applies); an outflow ghost is ``−p`` of the nearest cell; a
    wall/inflow ghost is ``+p``; outside cells count as fluid."""
    n = grid.shape[axis]
    idx = list(cell)
    coef, outside = 1.0, not 0 <= idx[axis] < n
    if outside:
        side = boundary.sides[axis][0 if idx[axis] < 0 else 1]
        if isinstance(side, Periodic):
            idx[axis] %= n
            outside = False
        else:
            idx[axis] = min(max(idx[axis], 0), n - 1)
            coef = -1.0 if isinstance(side, Outflow) else 1.0
    weight = 1.0 if outside else float(fluid[tuple(idx)])
    return cell_flat(tuple(idx), grid), coef, weight


def _face_cells(c: int, ix: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lo = list(ix)
    lo[c] -= 1
    return tuple(lo), tuple(ix)


def divergence_matrix(grid: Grid, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Dense ``D``: cells × faces, ``(D v)_cell = Σ_c (v_c[cell + e_c] − v_c[cell]) / h_c``."""
    n, nf = math.prod(grid.shape), grid.ndim * math.prod(padded(grid))
    d = torch.zeros(n, nf, dtype=dtype)
    for ix in itertools.product(*(range(m) for m in grid.shape)):
        row = cell_flat(ix, grid)
        for c, h in enumerate(grid.spacing):
            up = list(ix)
            up[c] += 1
            d[row, face_flat(c, tuple(up), grid)] += 1.0 / h
            d[row, face_flat(c, ix, grid)] -= 1.0 / h
    return d


def gradient_matrix(grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Dense ``G``: faces × cells for one fluid mask ``(*spatial)``: ``(p_hi − p_lo) / h`` on open faces
    with the boundary's ghost values; 0 on closed faces and padding."""
    n, nf = math.prod(grid.shape), grid.ndim * math.prod(padded(grid))
    g = torch.zeros(nf, n, dtype=dtype)
    for c, ix in real_faces(grid):
        lo, hi = _face_cells(c, ix)
        j_lo, s_lo, w_lo = _resolve(lo, c, grid, boundary, fluid)
        j_hi, s_hi, w_hi = _resolve(hi, c, grid, boundary, fluid)
        if w_lo * w_hi == 0.0:
            continue
        row = face_flat(c, ix, grid)
        g[row, j_hi] += s_hi / grid.spacing[c]
        g[row, j_lo] -= s_lo / grid.spacing[c]
    return g


def open_faces(fluid: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> torch.Tensor:
    """``(nd, *(N + 1))`` 0/1 mask of open faces (both neighbouring cells fluid) for one mask ``(*spatial)``."""
    out = torch.zeros(grid.ndim, *padded(grid), dtype=torch.float64)
    for c, ix in real_faces(grid):
        lo, hi = _face_cells(c, ix)
        out[(c, *ix)] = _resolve(lo, c, grid, boundary, fluid)[2] * _resolve(hi, c, grid, boundary, fluid)[2]
    return out


def apply_boundary(v: torch.Tensor, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None = None) -> torch.Tensor:
    """Normal-face conditions of a staggered ``v`` ``(B, nd, *(N + 1))``: wall faces 0, inflow faces their
    speed, outflow faces unchanged, faces touching a solid cell 0, padding 0; on a periodic axis face ``N``
    is set to face ``0``."""
    b, nd = v.shape[0], grid.ndim
    keep = torch.zeros(b, nd, *padded(grid), dtype=v.dtype)
    fixed = torch.zeros_like(keep)
    for c, ix in real_faces(grid):
        pos, n = ix[c], grid.shape[c]
        side = boundary.sides[c][0] if pos == 0 else boundary.sides[c][1] if pos == n else None
        if isinstance(side, Wall):
            continue
        if isinstance(side, Inflow):
            fixed[(slice(None), c, *ix)] = float(side.speed)
        else:
            keep[(slice(None), c, *ix)] = 1.0
    if fluid is not None:
        masks = torch.stack([open_faces(fluid[s, 0], grid, boundary).to(v.dtype) for s in range(fluid.shape[0])])
        open_ = masks.expand(b, *masks.shape[1:])
        keep, fixed = keep * open_, fixed * open_
    out = v * keep + fixed
    for c, (lo, _) in enumerate(boundary.sides):
        if isinstance(lo, Periodic):  # face N := face 0 of component c
            n = grid.shape[c]
            dst = [slice(None), c] + [slice(0, m) for m in grid.shape]
            dst[2 + c] = n
            src = list(dst)
            src[2 + c] = 0
            out = out.clone()
            out[tuple(dst)] = out[tuple(src)]
    return out


def project(
    v: torch.Tensor, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense reference of :func:`taichi_dp.ops.pressure.project`: conditions imposed, ``A p = −D v`` on fluid
    cells (``p = 0`` on solid cells), ``v⁺ = v − G p``. Without an outflow side the right-hand side has its
    fluid mean removed and the solution has zero fluid mean (solved as ``(A + f fᵀ/n_f) p = rhs``)."""
    b, shape = v.shape[0], tuple(grid.shape)
    if fluid is None:
        fluid = torch.ones(1, 1, *shape, dtype=v.dtype)
    fluid = (fluid > 0.5).to(v.dtype)
    singular = not boundary.has_outflow
    v_bc = apply_boundary(v, grid, boundary, fluid)
    d = divergence_matrix(grid, v.dtype)
    outs, ps = [], []
    for s in range(b):
        fs = fluid[s % fluid.shape[0], 0]
        f = fs.reshape(-1)
        g = gradient_matrix(grid, boundary, fs, v.dtype)
        a = -f[:, None] * (d @ g) + torch.diag(1.0 - f)
        vs = v_bc[s].reshape(-1)
        rhs = -(d @ vs) * f
        if singular:
            rhs = rhs - (rhs * f).sum() / f.sum() * f
            a = a + torch.outer(f, f) / f.sum()
        p = torch.linalg.solve(a, rhs)
        outs.append((vs - g @ p).reshape(grid.ndim, *padded(grid)))
        ps.append(p.reshape(1, *shape))
    return torch.stack(outs), torch.stack(ps)
