"""Plain-PyTorch reference of PhiFlow 3.4's karman step (``benchmarks/pbdl_karman_reference.py``), written
from PhiFlow's source, independent of taichi_dp's operators and boundary machinery.

Layout: ``(B, 2, H+1, W+1)`` staggered tensors (channel 0 = ``v_y`` on the faces ``y = i h``, channel 1 =
``v_x`` on the faces ``x = j h``), square cells ``h``, domain 200 (y) × 100 (x), boundary
``{"x": 0, "y-": ZERO_GRADIENT, "y+": ZERO_GRADIENT}`` (``open_bottom=True``) or ``"y-": 0``: the side
faces of ``v_x`` (and a closed bottom face of ``v_y``) are the constant 0; open ``v_y`` faces are
stored (zero-gradient beyond). Differentiable by torch
autograd (the pressure solve is a dense ``torch.linalg.solve``: small grids only).

PhiFlow semantics reproduced (phiml pads one layer with the extrapolation, then clamps):

- Laplacian of a component: neighbours beyond a constant-0 side are 0 *at the ghost-cell centre*; beyond
  a zero-gradient side they copy the last row; the stored outer faces of ``v_y`` get Laplacian 0.
- Linear sampling of a component at any point: the same one-layer padding, positions clamped to it.
- ``make_incompressible``: ``v ← v (1 − m)`` with the soft mask ``m = clip(1 − (d − r)/ρ, 0, 1)``,
  ``ρ = h/√2``; cells with centre outside the disc are ``accessible``; face weights ``min`` of the two
  cells (walls and a closed bottom 0, open sides: the inner cell); solve ``div(w ∇p) = div v`` on
  accessible cells with ``p = 0`` inside the disc and on the ghost centres beyond open sides;
  ``v ← v − w ∇p``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

LY, LX = 200.0, 100.0
CENTRE, RADIUS, BAND = (50.0, 50.0), 10.0, 5.0


def _zero_bc(v: torch.Tensor, open_bottom: bool = True) -> torch.Tensor:
    """Constant faces (side ``v_x``, a closed bottom ``v_y``) and padding set to 0."""
    v = v.clone()
    h, w = v.shape[2] - 1, v.shape[3] - 1
    if not open_bottom:
        v[:, 0, 0] = 0
    v[:, 0, :, w] = 0
    v[:, 1, h] = 0
    v[:, 1, :, 0] = 0
    v[:, 1, :, w] = 0
    return v


def _pad_rows(x: torch.Tensor, open_bottom: bool) -> torch.Tensor:
    """One row below (copy if open, else 0) and one above (copy: zero-gradient top) of ``x`` (B, n, m)."""
    below = x[:, :1] if open_bottom else torch.zeros_like(x[:, :1])
    return torch.cat([below, x, x[:, -1:]], dim=1)


def _pad_vy(v: torch.Tensor, open_bottom: bool) -> torch.Tensor:
    """``v_y`` faces rows −1..H+1, columns −1..W (0 beyond the walls): index (r+1, c+1) = face (r, c)."""
    return torch.nn.functional.pad(_pad_rows(v[:, 0, :, :-1], open_bottom), (1, 1))


def _pad_vx(v: torch.Tensor, open_bottom: bool) -> torch.Tensor:
    """``v_x`` faces rows −1..H, columns 0..W (walls 0): index (r+1, c) = face (r, c)."""
    return _pad_rows(v[:, 1, :-1, :], open_bottom)


def laplacian(v: torch.Tensor, h: float, open_bottom: bool = True) -> torch.Tensor:
    """PhiFlow's explicit 5-point Laplacian of the stored faces (0 on the constant and outer faces)."""
    out = torch.zeros_like(v)
    H = v.shape[2] - 1
    p = _pad_vy(v, open_bottom)
    c = p[:, 1:-1, 1:-1]
    lap = (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * c) / h**2  # faces 0..H
    out[:, 0, 1:H, :-1] = lap[:, 1:H]
    q = _pad_vx(v, open_bottom)
    c = q[:, 1:-1, 1:-1]
    out[:, 1, :H, 1:-1] = (q[:, :-2, 1:-1] + q[:, 2:, 1:-1] + q[:, 1:-1, :-2] + q[:, 1:-1, 2:] - 4 * c) / h**2
    return out


def _sample(grid: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of ``grid`` (B, ny, nx) at index positions ``py, px`` (B, ...), clamped."""
    b, ny, nx = grid.shape
    py = py.clamp(0, ny - 1)
    px = px.clamp(0, nx - 1)
    y0 = torch.floor(py).long().clamp(max=ny - 2)
    x0 = torch.floor(px).long().clamp(max=nx - 2)
    wy, wx = py - y0, px - x0
    flat = grid.reshape(b, -1)

    def at(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return flat.gather(1, (yi * nx + xi).reshape(b, -1)).reshape(yi.shape)

    return (at(y0, x0) * (1 - wy) * (1 - wx) + at(y0, x0 + 1) * (1 - wy) * wx
            + at(y0 + 1, x0) * wy * (1 - wx) + at(y0 + 1, x0 + 1) * wy * wx)  # fmt: skip


def advect(v: torch.Tensor, dt: float, h: float, open_bottom: bool = True) -> torch.Tensor:
    """PhiFlow's semi-Lagrangian self-advection of the stored faces (positions in cell units)."""
    b, _, h1, w1 = v.shape
    H, W = h1 - 1, w1 - 1
    lo = 0 if open_bottom else 1  # first stored v_y face
    py_, px_ = _pad_vy(v, open_bottom), _pad_vx(v, open_bottom)
    out = torch.zeros_like(v)
    f = dict(dtype=v.dtype, device=v.device)
    n = H + 1 - lo
    Y = torch.arange(lo, H + 1, **f)[:, None].expand(n, W).expand(b, n, W)
    X = (torch.arange(W, **f) + 0.5)[None, :].expand(n, W).expand(b, n, W)
    uy = v[:, 0, lo:, :W]
    ux = _sample(px_, Y - 0.5 + 1, X)
    out[:, 0, lo:, :W] = _sample(py_, Y - dt * uy / h + 1, X - dt * ux / h - 0.5 + 1)
    Y = (torch.arange(H, **f) + 0.5)[:, None].expand(H, W - 1).expand(b, H, W - 1)
    X = torch.arange(1, W, **f)[None, :].expand(H, W - 1).expand(b, H, W - 1)
    ux = v[:, 1, :H, 1:W]
    uy = _sample(py_, Y + 1, X - 0.5 + 1)
    out[:, 1, :H, 1:W] = _sample(px_, Y - dt * uy / h - 0.5 + 1, X - dt * ux / h)
    return out


def masks(H: int, W: int, dtype: torch.dtype = torch.float64, open_bottom: bool = True) -> tuple[torch.Tensor, ...]:
    """``(m, accessible, weights)``: soft face mask (2, H+1, W+1), accessible cells (H, W), face weights."""
    h = LX / W
    cy, cx = CENTRE
    rho = h / math.sqrt(2.0)
    m = np.zeros((2, H + 1, W + 1))
    i, j = np.meshgrid(np.arange(H + 1), np.arange(W), indexing="ij")
    m[0, :, :W] = np.clip(1 - (np.hypot(i * h - cy, (j + 0.5) * h - cx) - RADIUS) / rho, 0, 1)
    i, j = np.meshgrid(np.arange(H), np.arange(W + 1), indexing="ij")
    m[1, :H, :] = np.clip(1 - (np.hypot((i + 0.5) * h - cy, j * h - cx) - RADIUS) / rho, 0, 1)
    i, j = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    acc = (((i + 0.5) * h - cy) ** 2 + ((j + 0.5) * h - cx) ** 2 > RADIUS**2).astype(float)
    wgt = np.zeros((2, H + 1, W + 1))
    wgt[0, 1:H, :W] = np.minimum(acc[:-1], acc[1:])
    wgt[0, H, :W] = acc[H - 1]
    if open_bottom:
        wgt[0, 0, :W] = acc[0]
    wgt[1, :H, 1:W] = np.minimum(acc[:, :-1], acc[:, 1:])
    return tuple(torch.tensor(a, dtype=dtype) for a in (m, acc, wgt))


def _poisson_matrix(acc: np.ndarray, wgt: np.ndarray, h: float) -> np.ndarray:
    """Dense ``L`` with ``(L p)_c = Σ_f w_f (p_n − p_c)/h²`` on accessible cells (ghost ``p = 0`` beyond
    open sides), identity rows on the others."""
    H, W = acc.shape
    n = H * W
    A = np.zeros((n, n))
    for i in range(H):
        for j in range(W):
            k = i * W + j
            if not acc[i, j]:
                A[k, k] = 1.0
                continue
            faces = (
                (wgt[0, i, j], i - 1, j),
                (wgt[0, i + 1, j], i + 1, j),
                (wgt[1, i, j], i, j - 1),
                (wgt[1, i, j + 1], i, j + 1),
            )
            for w, ni, nj in faces:
                A[k, k] -= w / h**2
                if 0 <= ni < H and 0 <= nj < W:
                    A[k, ni * W + nj] += w / h**2
    return A


def make_incompressible(v: torch.Tensor, open_bottom: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """PhiFlow's ``make_incompressible(v, Obstacle(Sphere((50, 50), 10)))`` (exact dense solve)."""
    b, _, h1, w1 = v.shape
    H, W = h1 - 1, w1 - 1
    h = LX / W
    m, acc, wgt = (t.to(v.device) for t in masks(H, W, v.dtype, open_bottom))
    v = _zero_bc(v * (1 - m), open_bottom)
    div = ((v[:, 0, 1:, :W] - v[:, 0, :-1, :W]) + (v[:, 1, :H, 1:] - v[:, 1, :H, :-1])) / h * acc
    A = torch.tensor(_poisson_matrix(acc.cpu().numpy(), wgt.cpu().numpy(), h), dtype=v.dtype, device=v.device)
    p = torch.linalg.solve(A, div.reshape(b, -1, 1)).reshape(b, H, W)
    grad = torch.zeros_like(v)
    padded = torch.cat([torch.zeros_like(p[:, :1]), p, torch.zeros_like(p[:, :1])], dim=1)
    grad[:, 0, :, :W] = (padded[:, 1:] - padded[:, :-1]) / h
    grad[:, 1, :H, 1:W] = (p[:, :, 1:] - p[:, :, :-1]) / h
    return v - wgt * grad, p


def inflow(v: torch.Tensor, open_bottom: bool = True) -> torch.Tensor:
    """``v (1 − f) + f (0, 1)`` with ``f`` the stored faces whose centre has ``y ≤ 5``."""
    H, W = v.shape[2] - 1, v.shape[3] - 1
    h = LX / W
    f = torch.zeros_like(v[:1])
    f[:, 0, :, :W] = ((torch.arange(H + 1, dtype=v.dtype) * h) <= BAND)[:, None].to(v)
    if not open_bottom:
        f[:, 0, 0] = 0
    f[:, 1, :H, 1:W] = (((torch.arange(H, dtype=v.dtype) + 0.5) * h) <= BAND)[:, None].to(v)
    u = torch.zeros_like(f)
    u[:, 0] = f[:, 0]
    return v * (1 - f) + u


def step(v: torch.Tensor, nu: float | torch.Tensor, dt: float = 1.0, open_bottom: bool = True) -> torch.Tensor:
    """One PhiFlow karman step: diffuse → inflow → advect → make_incompressible."""
    h = LX / (v.shape[3] - 1)
    nu = torch.as_tensor(nu, dtype=v.dtype).reshape(-1, 1, 1, 1)
    v = _zero_bc(v, open_bottom)
    v = v + nu * dt * laplacian(v, h, open_bottom)
    v = inflow(v, open_bottom)
    v = advect(v, dt, h, open_bottom)
    return make_incompressible(v, open_bottom)[0]
