"""Plain-PyTorch reference implementations of the taichi_dp discretizations: the project's ground truth.

Everything here is written from the documented semantics only (no Taichi): vectorised torch code,
differentiable by torch autograd, in whatever float dtype the inputs have (float32 or float64).

Conventions (the same as :mod:`taichi_dp.grid`):

- states are ``(B, C, *spatial)``, with ``spatial = (N,)`` in 1D, ``(H, W)`` = (y, x) in 2D and
  ``(D, H, W)`` = (z, y, x) in 3D;
- velocities are ``(B, ndim, *spatial)`` with components in axis order (2D: ``(v_y, v_x)``, 3D:
  ``(v_z, v_y, v_x)``);
- cell ``i`` sits at index-space position ``i``; the boundary faces are at ``-0.5`` and ``N - 0.5``;
- per-batch parameters (``dt``, ``nu``) are floats, 0-d or ``(B,)`` tensors.

Boundary conditions come as :class:`taichi_dp.Boundary` (plain dataclasses), one ``(low, high)`` pair
per axis. A value at an integer index outside ``[0, N)`` is an affine function ``a + s * u[j]`` of one
interior value:

- periodic: ``j = i mod N``, ``a = 0``, ``s = 1``;
- Dirichlet ``g``: ``j`` = the nearest interior cell, ``a = 2 g``, ``s = -1`` (ghost ``2 g - u[j]``);
- zero-gradient: ``j`` = the nearest interior cell, ``a = 0``, ``s = 1`` (ghost ``u[j]``);
- constant-outside ``g``: ``a = g``, ``s = 0`` (every value outside is ``g``).

In 2D the two axes compose: ``value(i, k) = a_y + s_y * (a_x + s_x * u[i', k'])``; in n-D likewise,
innermost the last axis (the ``*_nd`` functions, used for 3D; the 1D/2D functions are the original,
separately written ground truth of the 1D/2D tests).
"""

from __future__ import annotations

import itertools

import torch

from taichi_dp.grid import Boundary, ConstantOutside, Dirichlet, Grid, Periodic, ZeroGradient

Side = Periodic | Dirichlet | ZeroGradient | ConstantOutside


# ------------------------------------------------------------------------------------------ helpers
def as_batch(value: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A per-batch parameter as a ``(B,)`` tensor of ``like``'s dtype/device (keeps autograd history)."""
    if isinstance(value, torch.Tensor):
        return value.to(like.dtype).reshape(-1).expand(batch)
    return torch.full((batch,), float(value), dtype=like.dtype, device=like.device)


def _per_batch(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a ``(B,)`` tensor as ``(B, 1, ...)`` broadcastable against ``ndim``-dimensional states."""
    return x.view(-1, *([1] * (ndim - 1)))


# ------------------------------------------------------------------------------------ ghost values
def axis_map(idx: torch.Tensor, n: int, sides: tuple[Side, Side], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Map integer indices along one axis of ``n`` cells to ``(j, a, s)`` with ``value = a + s * u[j]``.

    ``idx`` may be any integer (periodic) or in ``[-1, n]`` (walls); ``j`` is always in ``[0, n)``.
    """
    lo, hi = sides
    a = torch.zeros(idx.shape, dtype=dtype, device=idx.device)
    s = torch.ones(idx.shape, dtype=dtype, device=idx.device)
    if isinstance(lo, Periodic):
        return torch.remainder(idx, n), a, s
    j = idx.clamp(0, n - 1)
    for side, outside in ((lo, idx < 0), (hi, idx >= n)):
        if isinstance(side, Dirichlet):
            a = torch.where(outside, torch.full_like(a, 2.0 * float(side.value)), a)
            s = torch.where(outside, -torch.ones_like(s), s)
        elif isinstance(side, ConstantOutside):
            a = torch.where(outside, torch.full_like(a, float(side.value)), a)
            s = torch.where(outside, torch.zeros_like(s), s)
    return j, a, s


def value_1d(u: torch.Tensor, idx: torch.Tensor, boundary: Boundary) -> torch.Tensor:
    """``u[b, c, idx]`` with ghost values; ``u``: ``(B, C, N)``, ``idx``: integer, broadcastable to
    ``(B, 1 or C, M)``. Returns ``(B, C, M)``."""
    b, c, n = u.shape
    j, a, s = axis_map(idx, n, boundary.sides[0], u.dtype)
    shape = (b, c, j.shape[-1])
    vals = torch.gather(u, 2, j.expand(shape))
    return a.expand(shape) + s.expand(shape) * vals


def value_2d(u: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor, boundary: Boundary) -> torch.Tensor:
    """``u[b, c, iy, ix]`` with ghost values on both axes; ``u``: ``(B, C, H, W)``; ``iy``, ``ix``:
    integer tensors broadcastable to ``(B, 1 or C, H', W')``. Returns ``(B, C, H', W')``."""
    b, c, h, w = u.shape
    iy, ix = torch.broadcast_tensors(iy, ix)
    jy, ay, sy = axis_map(iy, h, boundary.sides[0], u.dtype)
    jx, ax, sx = axis_map(ix, w, boundary.sides[1], u.dtype)
    shape = (b, c, *iy.shape[2:])
    flat = (jy * w + jx).expand(shape).reshape(b, c, -1)
    vals = torch.gather(u.reshape(b, c, h * w), 2, flat).view(shape)
    return ay.expand(shape) + sy.expand(shape) * (ax.expand(shape) + sx.expand(shape) * vals)


# ------------------------------------------------------------------------------------ interpolation
def clamp_position(p: torch.Tensor, n: int, sides: tuple[Side, Side]) -> torch.Tensor:
    """Clamp index-space positions to where values are defined: ``[-0.5, n - 0.5]`` at Dirichlet walls
    (the boundary faces), ``[0, n - 1]`` at zero-gradient sides (the outer centres), ``[-1, n]`` at
    constant-outside sides (the ghost centres); periodic: unchanged."""
    lo, hi = sides
    if isinstance(lo, Dirichlet):
        p = torch.clamp(p, min=-0.5)
    elif isinstance(lo, ZeroGradient):
        p = torch.clamp(p, min=0.0)
    elif isinstance(lo, ConstantOutside):
        p = torch.clamp(p, min=-1.0)
    if isinstance(hi, Dirichlet):
        p = torch.clamp(p, max=n - 0.5)
    elif isinstance(hi, ZeroGradient):
        p = torch.clamp(p, max=n - 1.0)
    elif isinstance(hi, ConstantOutside):
        p = torch.clamp(p, max=float(n))
    return p


def stencil_1d(u: torch.Tensor, p: torch.Tensor, boundary: Boundary) -> tuple[torch.Tensor, ...]:
    """The two values and the weight of linear interpolation of ``u`` (``(B, C, N)``) at positions
    ``p`` (``(B, 1, N)``): ``(u0, u1, w)`` with ``u(p) = (1 - w) u0 + w u1``."""
    q = clamp_position(p, u.shape[2], boundary.sides[0])
    f = torch.floor(q)
    i = f.long()
    return value_1d(u, i, boundary), value_1d(u, i + 1, boundary), q - f


def interp_1d(u: torch.Tensor, p: torch.Tensor, boundary: Boundary) -> torch.Tensor:
    """Linear interpolation of ``u`` at index-space positions ``p`` (see :func:`stencil_1d`)."""
    u0, u1, w = stencil_1d(u, p, boundary)
    return (1.0 - w) * u0 + w * u1


def stencil_2d(u: torch.Tensor, py: torch.Tensor, px: torch.Tensor, boundary: Boundary) -> tuple[torch.Tensor, ...]:
    """The four corners and two weights of bilinear interpolation of ``u`` (``(B, C, H, W)``) at
    ``(py, px)`` (``(B, 1, H, W)`` each): ``(u00, u01, u10, u11, wy, wx)``, ``u01`` one step in x."""
    h, w = u.shape[2:]
    qy = clamp_position(py, h, boundary.sides[0])
    qx = clamp_position(px, w, boundary.sides[1])
    fy, fx = torch.floor(qy), torch.floor(qx)
    i, k = fy.long(), fx.long()
    u00 = value_2d(u, i, k, boundary)
    u01 = value_2d(u, i, k + 1, boundary)
    u10 = value_2d(u, i + 1, k, boundary)
    u11 = value_2d(u, i + 1, k + 1, boundary)
    return u00, u01, u10, u11, qy - fy, qx - fx


def interp_2d(u: torch.Tensor, py: torch.Tensor, px: torch.Tensor, boundary: Boundary) -> torch.Tensor:
    """Bilinear interpolation of ``u`` at index-space positions ``(py, px)`` (see :func:`stencil_2d`)."""
    u00, u01, u10, u11, wy, wx = stencil_2d(u, py, px, boundary)
    return (1.0 - wy) * ((1.0 - wx) * u00 + wx * u01) + wy * ((1.0 - wx) * u10 + wx * u11)


# ------------------------------------------------------------------------------- any dimension (3D)
def value_nd(u: torch.Tensor, idx: list[torch.Tensor], boundary: Boundary) -> torch.Tensor:
    """``u[b, c, *idx]`` with ghost values on every axis; ``u``: ``(B, C, *S)``; ``idx``: one integer
    tensor per spatial axis, broadcastable to ``(B, 1 or C, *S')``. Returns ``(B, C, *S')``.

    The flat index is ``Σ_a j_a · stride_a`` (row-major); axes compose from the last one outwards."""
    b, c, *spatial = u.shape
    idx = list(torch.broadcast_tensors(*idx))
    maps = [axis_map(i, n, sides, u.dtype) for i, n, sides in zip(idx, spatial, boundary.sides, strict=True)]
    shape = (b, c, *idx[0].shape[2:])
    flat = torch.zeros_like(idx[0])
    for (j, _, _), n in zip(maps, spatial, strict=True):
        flat = flat * n + j
    vals = torch.gather(u.reshape(b, c, -1), 2, flat.expand(shape).reshape(b, c, -1)).view(shape)
    for _, a, s in reversed(maps):
        vals = a.expand(shape) + s.expand(shape) * vals
    return vals


def stencil_nd(u: torch.Tensor, pos: list[torch.Tensor], boundary: Boundary) -> tuple[dict, list[torch.Tensor]]:
    """Corners and weights of multilinear interpolation of ``u`` at index-space positions ``pos`` (one
    ``(B, 1, *S)`` tensor per axis): ``({offsets: value}, [w_a])`` with ``offsets`` in ``{0, 1}^nd``."""
    spatial = u.shape[2:]
    q = [clamp_position(p, n, sides) for p, n, sides in zip(pos, spatial, boundary.sides, strict=True)]
    base = [torch.floor(x) for x in q]
    corners = {
        off: value_nd(u, [f.long() + o for f, o in zip(base, off, strict=True)], boundary)
        for off in itertools.product((0, 1), repeat=len(spatial))
    }
    return corners, [x - f for x, f in zip(q, base, strict=True)]


def interp_nd(u: torch.Tensor, pos: list[torch.Tensor], boundary: Boundary) -> torch.Tensor:
    """Multilinear interpolation: ``Σ_corners Π_a (w_a if offset_a else 1 - w_a) · u[corner]``."""
    corners, w = stencil_nd(u, pos, boundary)
    total = None
    for off, val in corners.items():
        term = val
        for o, wa in zip(off, w, strict=True):
            term = term * (wa if o else 1.0 - wa)
        total = term if total is None else total + term
    return total


def _centres_nd(grid: Grid, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    """Index-space cell positions per axis, broadcastable against ``(B, 1, *spatial)``."""
    nd = grid.ndim
    return [
        torch.arange(n, dtype=dtype, device=device).view(1, 1, *([1] * a), n, *([1] * (nd - a - 1)))
        for a, n in enumerate(grid.shape)
    ]


def semi_lagrangian_nd(
    q: torch.Tensor, v: torch.Tensor, dt: float | torch.Tensor, grid: Grid, boundary: Boundary
) -> torch.Tensor:
    """Semi-Lagrangian step in any dimension: ``q⁺[x] = q(x - dt v[x] / h)`` by multilinear interpolation."""
    dt_b = as_batch(dt, q.shape[0], q)
    pos = [x - s for x, s in zip(_centres_nd(grid, q.device, q.dtype), _shifts(v, dt_b, grid), strict=True)]
    return interp_nd(q, pos, boundary)


def maccormack_nd(q: torch.Tensor, v: torch.Tensor, dt: float | torch.Tensor, grid: Grid, boundary: Boundary) -> torch.Tensor:
    """MacCormack with the min/max limiter over the ``2**nd`` back-trace corners, any dimension."""
    dt_b = as_batch(dt, q.shape[0], q)
    q_hat = semi_lagrangian_nd(q, v, dt_b, grid, boundary)
    shifts = _shifts(v, dt_b, grid)
    centres = _centres_nd(grid, q.device, q.dtype)
    corners, _ = stencil_nd(q, [x - s for x, s in zip(centres, shifts, strict=True)], boundary)
    stacked = torch.stack(list(corners.values()))
    lo, hi = stacked.min(0).values, stacked.max(0).values
    q_bar = interp_nd(q_hat, [x + s for x, s in zip(centres, shifts, strict=True)], boundary)
    return torch.minimum(torch.maximum(q_hat + 0.5 * (q - q_bar), lo), hi)


def laplacian_nd(u: torch.Tensor, grid: Grid, boundary: Boundary) -> torch.Tensor:
    """The ``(2 nd + 1)``-point Laplacian ``Σ_a (u[x - e_a] - 2 u[x] + u[x + e_a]) / h_a²``, any dimension."""
    centres = [
        torch.arange(n, device=u.device).view(1, 1, *([1] * a), n, *([1] * (grid.ndim - a - 1))) for a, n in enumerate(grid.shape)
    ]
    out = torch.zeros_like(u)
    for a, h in enumerate(grid.spacing):
        lo = [x - 1 if k == a else x for k, x in enumerate(centres)]
        hi = [x + 1 if k == a else x for k, x in enumerate(centres)]
        out = out + (value_nd(u, lo, boundary) - 2.0 * u + value_nd(u, hi, boundary)) / h**2
    return out


# ----------------------------------------------------------------------------------------- advection
def _shifts(v: torch.Tensor, dt: torch.Tensor, grid: Grid) -> list[torch.Tensor]:
    """Index-space displacement ``dt[b] * v_a / h_a`` per axis, each ``(B, 1, *spatial)``."""
    dt_b = _per_batch(dt, v.ndim)
    return [dt_b * v[:, a : a + 1] / h for a, h in enumerate(grid.spacing)]


def _centres(grid: Grid, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    """Index-space cell positions per axis, broadcastable against ``(B, 1, *spatial)``."""
    if grid.ndim == 1:
        return [torch.arange(grid.shape[0], dtype=dtype, device=device).view(1, 1, -1)]
    h, w = grid.shape
    return [
        torch.arange(h, dtype=dtype, device=device).view(1, 1, h, 1),
        torch.arange(w, dtype=dtype, device=device).view(1, 1, 1, w),
    ]


def semi_lagrangian(q: torch.Tensor, v: torch.Tensor, dt: float | torch.Tensor, grid: Grid, boundary: Boundary) -> torch.Tensor:
    """One semi-Lagrangian step: ``q⁺[i] = q(i - dt v[i] / h)`` (index space, per axis), by linear
    (1D) or bilinear (2D) interpolation with the boundary's ghost values."""
    if grid.ndim > 2:
        return semi_lagrangian_nd(q, v, dt, grid, boundary)
    dt_b = as_batch(dt, q.shape[0], q)
    shifts = _shifts(v, dt_b, grid)
    pos = [x - s for x, s in zip(_centres(grid, q.device, q.dtype), shifts, strict=True)]
    if grid.ndim == 1:
        return interp_1d(q, pos[0], boundary)
    return interp_2d(q, pos[0], pos[1], boundary)


def maccormack(q: torch.Tensor, v: torch.Tensor, dt: float | torch.Tensor, grid: Grid, boundary: Boundary) -> torch.Tensor:
    """MacCormack with the min/max limiter.

    ``q̂ = SL(q)``; ``q̄`` = ``q̂`` interpolated at the forward trace ``i + dt v / h``;
    ``q⁺ = clamp(q̂ + ½ (q - q̄), lo, hi)`` where ``[lo, hi]`` is the range of the 2 (1D) / 4 (2D)
    values of ``q`` that the back-trace ``i - dt v / h`` interpolated from.
    """
    if grid.ndim > 2:
        return maccormack_nd(q, v, dt, grid, boundary)
    dt_b = as_batch(dt, q.shape[0], q)
    q_hat = semi_lagrangian(q, v, dt_b, grid, boundary)
    shifts = _shifts(v, dt_b, grid)
    centres = _centres(grid, q.device, q.dtype)
    back = [x - s for x, s in zip(centres, shifts, strict=True)]
    fwd = [x + s for x, s in zip(centres, shifts, strict=True)]
    if grid.ndim == 1:
        q0, q1, _ = stencil_1d(q, back[0], boundary)
        lo, hi = torch.minimum(q0, q1), torch.maximum(q0, q1)
        q_bar = interp_1d(q_hat, fwd[0], boundary)
    else:
        q00, q01, q10, q11, _, _ = stencil_2d(q, back[0], back[1], boundary)
        lo = torch.minimum(torch.minimum(q00, q01), torch.minimum(q10, q11))
        hi = torch.maximum(torch.maximum(q00, q01), torch.maximum(q10, q11))
        q_bar = interp_2d(q_hat, fwd[0], fwd[1], boundary)
    corrected = q_hat + 0.5 * (q - q_bar)
    return torch.minimum(torch.maximum(corrected, lo), hi)


def advect(
    q: torch.Tensor,
    v: torch.Tensor,
    dt: float | torch.Tensor,
    grid: Grid,
    boundary: Boundary,
    scheme: str = "semi_lagrangian",
) -> torch.Tensor:
    """Reference for :func:`taichi_dp.ops.advect`."""
    if scheme == "semi_lagrangian":
        return semi_lagrangian(q, v, dt, grid, boundary)
    if scheme == "maccormack":
        return maccormack(q, v, dt, grid, boundary)
    raise ValueError(f"unknown scheme {scheme!r}")


# ----------------------------------------------------------------------------------------- diffusion
def laplacian(u: torch.Tensor, grid: Grid, boundary: Boundary) -> torch.Tensor:
    """The 3-point (1D) / 5-point (2D) / 7-point (3D) Laplacian ``L(u)`` with the boundary's ghost values."""
    if grid.ndim > 2:
        return laplacian_nd(u, grid, boundary)
    if grid.ndim == 1:
        (n,) = grid.shape
        (h,) = grid.spacing
        i = torch.arange(n, device=u.device).view(1, 1, n)
        return (value_1d(u, i - 1, boundary) - 2.0 * u + value_1d(u, i + 1, boundary)) / h**2
    (hh, ww), (hy, hx) = grid.shape, grid.spacing
    i = torch.arange(hh, device=u.device).view(1, 1, hh, 1)
    k = torch.arange(ww, device=u.device).view(1, 1, 1, ww)
    lap_y = value_2d(u, i - 1, k, boundary) - 2.0 * u + value_2d(u, i + 1, k, boundary)
    lap_x = value_2d(u, i, k - 1, boundary) - 2.0 * u + value_2d(u, i, k + 1, boundary)
    return lap_y / hy**2 + lap_x / hx**2


def diffuse_explicit(
    u: torch.Tensor, nu: float | torch.Tensor, dt: float | torch.Tensor, grid: Grid, boundary: Boundary
) -> torch.Tensor:
    """Forward Euler: ``u + nu dt L(u)``."""
    k = as_batch(nu, u.shape[0], u) * as_batch(dt, u.shape[0], u)
    return u + _per_batch(k, u.ndim) * laplacian(u, grid, boundary)


def laplacian_matrix_1d(n: int, h: float, sides: tuple[Side, Side], dtype: torch.dtype) -> torch.Tensor:
    """Dense ``(n, n)`` matrix of the homogeneous 1D Laplacian ``L₀`` (Dirichlet values set to 0):
    ``-2/h²`` on the diagonal, ``1/h²`` to each neighbour; a missing neighbour is the wrapped cell
    (periodic), ``-u₀`` (Dirichlet: ghost ``-u₀``), ``+u₀`` (zero-gradient: ghost ``u₀``) or nothing
    (constant-outside: the ghost is the constant, all in the boundary term)."""
    m = torch.zeros(n, n, dtype=dtype)
    lo, hi = sides
    for i in range(n):
        m[i, i] -= 2.0
        for j, side in ((i - 1, lo), (i + 1, hi)):
            if 0 <= j < n:
                m[i, j] += 1.0
            elif isinstance(side, Periodic):
                m[i, j % n] += 1.0
            elif isinstance(side, Dirichlet):
                m[i, i] -= 1.0
            elif isinstance(side, ZeroGradient):
                m[i, i] += 1.0
    return m / h**2


def laplacian_matrix(grid: Grid, boundary: Boundary, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Dense matrix of ``L₀`` on the flattened (row-major, ``i * W + k``) grid; 2D is the Kronecker
    sum ``L_y ⊗ I + I ⊗ L_x`` of the 1D operators, n-D ``Σ_a I ⊗ … ⊗ L_a ⊗ … ⊗ I``."""
    axes = zip(grid.shape, grid.spacing, boundary.sides, strict=True)
    mats = [laplacian_matrix_1d(n, h, s, dtype) for n, h, s in axes]
    if grid.ndim == 1:
        return mats[0]
    if grid.ndim == 2:
        (hh, ww) = grid.shape
        return torch.kron(mats[0], torch.eye(ww, dtype=dtype)) + torch.kron(torch.eye(hh, dtype=dtype), mats[1])
    terms = []
    for a in range(grid.ndim):
        term = torch.ones(1, 1, dtype=dtype)
        for k, n in enumerate(grid.shape):
            term = torch.kron(term, mats[k] if k == a else torch.eye(n, dtype=dtype))
        terms.append(term)
    return sum(terms[1:], terms[0])


def boundary_term(grid: Grid, boundary: Boundary, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``l_g = L(0)``: the Dirichlet values' contribution, ``2 g / h²`` in the cells next to each
    Dirichlet face (``g / h²`` next to a constant-outside side; summed in corners), on the grid's shape."""
    out = torch.zeros(grid.shape, dtype=dtype)
    for axis, ((lo, hi), h) in enumerate(zip(boundary.sides, grid.spacing, strict=True)):
        for side, index in ((lo, 0), (hi, -1)):
            if isinstance(side, Dirichlet | ConstantOutside):
                sl = [slice(None)] * grid.ndim
                sl[axis] = index
                out[tuple(sl)] += (2.0 if isinstance(side, Dirichlet) else 1.0) * float(side.value) / h**2
    return out


def diffuse_implicit(
    u: torch.Tensor, nu: float | torch.Tensor, dt: float | torch.Tensor, grid: Grid, boundary: Boundary
) -> torch.Tensor:
    """Backward Euler by a dense solve: ``(I - nu dt L₀) u⁺ = u + nu dt L(0)`` per batch and channel."""
    b, c = u.shape[:2]
    k = as_batch(nu, b, u) * as_batch(dt, b, u)  # (B,)
    l0 = laplacian_matrix(grid, boundary, u.dtype).to(u.device)
    lg = boundary_term(grid, boundary, u.dtype).to(u.device).reshape(1, 1, -1)
    n = l0.shape[0]
    a = torch.eye(n, dtype=u.dtype, device=u.device) - k.view(b, 1, 1) * l0  # (B, n, n)
    rhs = u.reshape(b, c, n) + k.view(b, 1, 1) * lg  # (B, C, n)
    x = torch.linalg.solve(a.unsqueeze(1), rhs.unsqueeze(-1))  # (B, C, n, 1)
    return x.reshape(u.shape)


def diffuse(
    u: torch.Tensor,
    nu: float | torch.Tensor,
    dt: float | torch.Tensor,
    grid: Grid,
    boundary: Boundary,
    scheme: str = "explicit",
) -> torch.Tensor:
    """Reference for :func:`taichi_dp.ops.diffuse`."""
    if scheme == "explicit":
        return diffuse_explicit(u, nu, dt, grid, boundary)
    if scheme == "implicit":
        return diffuse_implicit(u, nu, dt, grid, boundary)
    raise ValueError(f"unknown scheme {scheme!r}")


# ------------------------------------------------------------- staggered (MAC) velocity and pressure projection
# Written from the docstrings of taichi_dp.grid.staggered and taichi_dp.ops.pressure, with dense matrices
# assembled by plain Python loops (small grids only). A staggered velocity is packed as (B, 2, H+1, W+1):
# channel 0 (v_y) face (i, k) lies between cells (i-1, k) and (i, k), i in [0, H], k in [0, W);
# channel 1 (v_x) face (i, k) lies between cells (i, k-1) and (i, k), i in [0, H), k in [0, W]; the other
# entries are padding. Flattening is row-major over (2, H+1, W+1); cells are row-major over (H, W).

from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow, Wall  # noqa: E402


def face_index(c: int, i: int, k: int, grid: Grid) -> int:
    """Flat index of the packed staggered entry ``(c, i, k)``."""
    h, w = grid.shape
    return (c * (h + 1) + i) * (w + 1) + k


def real_faces(grid: Grid) -> list[tuple[int, int, int]]:
    """``(c, i, k)`` of every real (non-padding) face."""
    h, w = grid.shape
    return [(0, i, k) for i in range(h + 1) for k in range(w)] + [(1, i, k) for i in range(h) for k in range(w + 1)]


def _face_cells(c: int, i: int, k: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (possibly outside) cells below/left (``lo``) and above/right (``hi``) of face ``(c, i, k)``."""
    return ((i - 1, k), (i, k)) if c == 0 else ((i, k - 1), (i, k))


def _resolve(
    cell: tuple[int, int], axis: int, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor
) -> tuple[int, float, float]:
    """``(flat cell, pressure coefficient, fluid weight)`` of a cell one step across ``axis`` (maybe
    outside): periodic wraps (the wrapped cell's mask applies); an outflow ghost is ``-p`` of the nearest
    cell (Dirichlet 0 on the face); a wall/inflow ghost is ``+p`` (zero gradient); outside cells count as
    fluid."""
    h, w = grid.shape
    n = (h, w)[axis]
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
    weight = 1.0 if outside else float(fluid[idx[0], idx[1]])
    return idx[0] * w + idx[1], coef, weight


def ref_open_faces(fluid: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> torch.Tensor:
    """``(2, H+1, W+1)`` 0/1 mask of open faces for one ``(H, W)`` fluid mask (padding 0)."""
    h, w = grid.shape
    out = torch.zeros(2, h + 1, w + 1, dtype=torch.float64)
    for c, i, k in real_faces(grid):
        lo, hi = _face_cells(c, i, k)
        out[c, i, k] = _resolve(lo, c, grid, boundary, fluid)[2] * _resolve(hi, c, grid, boundary, fluid)[2]
    return out


def divergence_matrix(grid: Grid, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Dense ``D``: ``(H W, 2 (H+1) (W+1))``, ``(D v)[i, k] = (v_y[i+1,k] - v_y[i,k]) / h_y + (v_x[i,k+1] - v_x[i,k]) / h_x``
    (padding columns are zero)."""
    h, w = grid.shape
    hy, hx = grid.spacing
    d = torch.zeros(h * w, 2 * (h + 1) * (w + 1), dtype=dtype)
    for i in range(h):
        for k in range(w):
            row = i * w + k
            d[row, face_index(0, i + 1, k, grid)] += 1.0 / hy
            d[row, face_index(0, i, k, grid)] -= 1.0 / hy
            d[row, face_index(1, i, k + 1, grid)] += 1.0 / hx
            d[row, face_index(1, i, k, grid)] -= 1.0 / hx
    return d


def gradient_matrix(grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Dense pressure gradient ``G``: ``(2 (H+1) (W+1), H W)`` for one ``(H, W)`` fluid mask:
    ``(p_hi - p_lo) / h`` on open faces with the boundary's ghost values, 0 on closed faces and padding."""
    h, w = grid.shape
    g = torch.zeros(2 * (h + 1) * (w + 1), h * w, dtype=dtype)
    for c, i, k in real_faces(grid):
        lo, hi = _face_cells(c, i, k)
        j_lo, s_lo, w_lo = _resolve(lo, c, grid, boundary, fluid)
        j_hi, s_hi, w_hi = _resolve(hi, c, grid, boundary, fluid)
        if w_lo * w_hi == 0.0:
            continue
        row, step = face_index(c, i, k, grid), grid.spacing[c]
        g[row, j_hi] += s_hi / step
        g[row, j_lo] -= s_lo / step
    return g


def pressure_matrix(grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``A = -D G`` on fluid rows, identity rows on solid cells."""
    f = fluid.reshape(-1).to(dtype)
    return -f[:, None] * (divergence_matrix(grid, dtype) @ gradient_matrix(grid, boundary, fluid, dtype)) + torch.diag(1.0 - f)


def ref_apply_boundary(v: torch.Tensor, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None = None) -> torch.Tensor:
    """Normal-face boundary conditions of a staggered ``v`` (B, 2, H+1, W+1): wall faces 0, inflow faces
    their speed, outflow faces unchanged, faces touching a solid cell 0, padding 0; on a periodic axis the
    seam face ``H`` (``W``) is set to face ``0`` (the implementation's choice of "seams equal")."""
    h, w = grid.shape
    b = v.shape[0]
    keep = torch.zeros(b, 2, h + 1, w + 1, dtype=v.dtype)
    fixed = torch.zeros_like(keep)
    for c, i, k in real_faces(grid):
        n, pos = (h, i) if c == 0 else (w, k)
        side = boundary.sides[c][0] if pos == 0 else boundary.sides[c][1] if pos == n else None
        if isinstance(side, Wall):
            continue
        if isinstance(side, Inflow):
            fixed[:, c, i, k] = float(side.speed)
        else:
            keep[:, c, i, k] = 1.0
    if fluid is not None:
        masks = [ref_open_faces(fluid[s, 0], grid, boundary).to(v.dtype) for s in range(fluid.shape[0])]
        open_ = torch.stack(masks).expand(b, -1, -1, -1)
        keep, fixed = keep * open_, fixed * open_
    out = v * keep + fixed
    seam = torch.zeros(1, 2, h + 1, w + 1, dtype=torch.bool)
    if isinstance(boundary.sides[0][0], Periodic):  # v_y[H] := v_y[0]
        seam[:, 0, h, :w] = True
        out = torch.where(seam, out.roll(h, 2), out)
    if isinstance(boundary.sides[1][0], Periodic):  # v_x[:, W] := v_x[:, 0]
        seam = torch.zeros_like(seam)
        seam[:, 1, :h, w] = True
        out = torch.where(seam, out.roll(w, 3), out)
    return out


def ref_project(
    v: torch.Tensor, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense reference of :func:`taichi_dp.ops.pressure.project`: ``v_bc`` = boundary conditions imposed,
    ``A p = -D v_bc`` on fluid cells (``p = 0`` on solid cells), ``v⁺ = v_bc - G p``. Without an outflow
    side the right-hand side has its fluid mean removed and the null space (constant on fluid cells) is
    fixed by solving ``(A + f fᵀ / n_f) p = rhs`` (which gives the zero-fluid-mean solution of ``A p = rhs``)."""
    h, w = grid.shape
    b = v.shape[0]
    if fluid is None:
        fluid = torch.ones(1, 1, h, w, dtype=v.dtype)
    fluid = (fluid > 0.5).to(v.dtype)
    singular = not any(isinstance(side, Outflow) for pair in boundary.sides for side in pair)
    v_bc = ref_apply_boundary(v, grid, boundary, fluid)
    d = divergence_matrix(grid, v.dtype)
    outs, ps = [], []
    for s in range(b):
        f2 = fluid[s % fluid.shape[0], 0]
        f = f2.reshape(-1)
        g = gradient_matrix(grid, boundary, f2, v.dtype)
        a = -f[:, None] * (d @ g) + torch.diag(1.0 - f)
        vs = v_bc[s].reshape(-1)
        rhs = -(d @ vs) * f
        if singular:
            rhs = rhs - (rhs * f).sum() / f.sum() * f
            a = a + torch.outer(f, f) / f.sum()
        p = torch.linalg.solve(a, rhs)
        outs.append((vs - g @ p).reshape(2, h + 1, w + 1))
        ps.append(p.reshape(1, h, w))
    return torch.stack(outs), torch.stack(ps)
