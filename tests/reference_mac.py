"""Plain-PyTorch reference for the staggered (MAC) operators, written from the documented semantics.

Vectorised, differentiable by torch autograd, works in the dtype of its inputs (f32/f64). Positions are in
cell-index space (cell ``(i, j)`` centred at ``(i, j)``); the ``v_y`` face ``(i, j)`` sits at ``(i − ½, j)``
and the ``v_x`` face ``(i, j)`` at ``(i, j − ½)``. Staggered tensors are ``(B, 2, H + 1, W + 1)`` with
zero padding (column ``W`` of channel 0, row ``H`` of channel 1).

The functions without suffix are the original 2D ground truth; the ``*_nd`` functions at the end are the
separately written 2D/3D versions (``(B, nd, *(N + 1))``, face ``idx`` of component ``c`` at ``idx − ½ e_c``),
used by ``tests/test_staggered_3d.py`` and checked there against the 2D ones.
"""

import torch
import torch.nn.functional as F
from reference import axis_map, clamp_position, laplacian_nd, maccormack_nd, semi_lagrangian_nd, stencil_nd

from taichi_dp.grid import Boundary, Dirichlet, Grid, Periodic, ZeroGradient
from taichi_dp.grid.staggered import FlowBoundary, Inflow, Outflow


# ------------------------------------------------------------------------------------- helpers
def _take(u: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """``u[b, c, iy[b, m], ix[b, m]]`` for ``u`` (B, C, ny, nx) and indices (B, M): returns (B, C, M)."""
    b, c, _, nx = u.shape
    flat = (iy * nx + ix).unsqueeze(1).expand(b, c, iy.shape[1])
    return u.reshape(b, c, -1).gather(2, flat)


def _clamp(p: torch.Tensor, n: int, lo, hi) -> torch.Tensor:
    """:func:`reference.clamp_position` with the sides given separately."""
    return clamp_position(p, n, (lo, hi))


def _ghost(i: torch.Tensor, n: int, lo, hi, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`reference.axis_map` with the sides given separately: ``(j, a, s)``, value ``a + s·u[j]``."""
    return axis_map(i, n, (lo, hi), dtype)


def _floor_split(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.floor(q)
    return f.long(), q - f


# --------------------------------------------------------------------------- cell-centred scalar
def scalar_stencil(q: torch.Tensor, py: torch.Tensor, px: torch.Tensor, boundary: Boundary) -> tuple[torch.Tensor, ...]:
    """Corners ``(q00, q01, q10, q11)`` (B, C, M) and weights ``(wy, wx)`` (B, 1, M) of bilinear interpolation of a
    cell-centred ``q`` (B, C, H, W) at positions ``py, px`` (B, M), with ghost values of ``boundary``."""
    _, _, h, w = q.shape
    (ylo, yhi), (xlo, xhi) = boundary.sides
    iy, wy = _floor_split(_clamp(py, h, ylo, yhi))
    ix, wx = _floor_split(_clamp(px, w, xlo, xhi))
    corners = []
    for di in (0, 1):
        ji, ai, si = _ghost(iy + di, h, ylo, yhi, q.dtype)
        for dk in (0, 1):
            jk, ak, sk = _ghost(ix + dk, w, xlo, xhi, q.dtype)
            u = _take(q, ji, jk)
            corners.append(ai.unsqueeze(1) + si.unsqueeze(1) * (ak.unsqueeze(1) + sk.unsqueeze(1) * u))
    return (*corners, wy.unsqueeze(1), wx.unsqueeze(1))


def _bilinear(v00, v01, v10, v11, wy, wx):
    return (1.0 - wy) * ((1.0 - wx) * v00 + wx * v01) + wy * ((1.0 - wx) * v10 + wx * v11)


def _limit(x, v00, v01, v10, v11):
    lo = torch.minimum(torch.minimum(v00, v01), torch.minimum(v10, v11))
    hi = torch.maximum(torch.maximum(v00, v01), torch.maximum(v10, v11))
    return torch.minimum(torch.maximum(x, lo), hi)


def sample_scalar(q: torch.Tensor, py: torch.Tensor, px: torch.Tensor, boundary: Boundary) -> torch.Tensor:
    """Bilinear interpolation of ``q`` (B, C, H, W) at cell-space positions (B, M) → (B, C, M)."""
    return _bilinear(*scalar_stencil(q, py, px, boundary))


# ------------------------------------------------------------------------------ staggered velocity
def _normal(p: torch.Tensor, n: int, periodic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Face-index position ``p`` on a normal axis with faces ``0..n`` → ``(i0, i1, w)``."""
    if periodic:
        i, w = _floor_split(p)
        return torch.remainder(i, n), torch.remainder(i + 1, n), w
    i, w = _floor_split(torch.clamp(p, 0.0, float(n)))
    return i, torch.clamp(i + 1, max=n), w


def _tangential(p: torch.Tensor, n: int, lo, hi, dtype) -> tuple[torch.Tensor, ...]:
    """Cell-space position on a tangential axis (wall velocity as Dirichlet value / zero gradient) →
    ``(j0, a0, s0, j1, a1, s1, w)``: the values are ``a + s·u[j]``."""
    i, w = _floor_split(_clamp(p, n, lo, hi))
    j0, a0, s0 = _ghost(i, n, lo, hi, dtype)
    j1, a1, s1 = _ghost(i + 1, n, lo, hi, dtype)
    return j0, a0, s0, j1, a1, s1, w


def _tangential_sides(boundary: FlowBoundary, c: int):
    """Ghost conditions of component ``c`` along its tangential axis (Dirichlet = the wall's tangential
    velocity, 0 for inflows; zero gradient for slip walls and outflows; periodic)."""
    return boundary.component(c).sides[1 - c]


def velocity_stencil(
    v: torch.Tensor, c: int, py: torch.Tensor, px: torch.Tensor, boundary: FlowBoundary
) -> tuple[torch.Tensor, ...]:
    """Corners ``(v00, v01, v10, v11)`` (B, M) and weights ``(wy, wx)`` for sampling component ``c`` of the
    staggered ``v`` at cell-space positions ``(py, px)`` (B, M); ``v01`` is one step in x."""
    _, _, h1, w1 = v.shape
    h, w = h1 - 1, w1 - 1
    u = v[:, c : c + 1]
    lo, hi = _tangential_sides(boundary, c)
    periodic = isinstance(boundary.sides[c][0], Periodic)
    if c == 0:
        i0, i1, wy = _normal(py + 0.5, h, periodic)
        j0, a0, s0, j1, a1, s1, wx = _tangential(px, w, lo, hi, v.dtype)
        zero, one = torch.zeros_like(s0), torch.ones_like(s0)
        rows, cols = ((i0, zero, one), (i1, zero, one)), ((j0, a0, s0), (j1, a1, s1))
    else:
        i0, a0, s0, i1, a1, s1, wy = _tangential(py, h, lo, hi, v.dtype)
        j0, j1, wx = _normal(px + 0.5, w, periodic)
        zero, one = torch.zeros_like(s0), torch.ones_like(s0)
        rows, cols = ((i0, a0, s0), (i1, a1, s1)), ((j0, zero, one), (j1, zero, one))
    corners = []
    for r, ar, sr in rows:
        for k, ak, sk in cols:  # only the tangential index has a ghost offset (a = 0 on the normal axis)
            corners.append(ar + ak + sr * sk * _take(u, r, k)[:, 0])
    return (*corners, wy, wx)


def sample_velocity(v: torch.Tensor, c: int, py: torch.Tensor, px: torch.Tensor, boundary: FlowBoundary) -> torch.Tensor:
    """Component ``c`` of the staggered ``v`` (B, 2, H+1, W+1) at cell-space positions (B, M) → (B, M)."""
    return _bilinear(*velocity_stencil(v, c, py, px, boundary))


def face_positions(grid: Grid, c: int, batch: int, dtype: torch.dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-space positions (B, M) of the real faces of component ``c``, row-major over its face grid."""
    h, w = grid.shape
    rows = torch.arange(h + (c == 0), dtype=dtype, device=device) - (0.5 if c == 0 else 0.0)
    cols = torch.arange(w + (c == 1), dtype=dtype, device=device) - (0.5 if c == 1 else 0.0)
    py, px = torch.meshgrid(rows, cols, indexing="ij")
    return py.reshape(1, -1).expand(batch, -1), px.reshape(1, -1).expand(batch, -1)


def cell_positions(grid: Grid, batch: int, dtype: torch.dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = grid.shape
    py, px = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=device), torch.arange(w, dtype=dtype, device=device), indexing="ij"
    )
    return py.reshape(1, -1).expand(batch, -1), px.reshape(1, -1).expand(batch, -1)


def _shifts(vel, dt, py, px, grid, boundary):
    hy, hx = grid.spacing
    d = dt.reshape(-1, 1)
    return d * sample_velocity(vel, 0, py, px, boundary) / hy, d * sample_velocity(vel, 1, py, px, boundary) / hx


def _assemble(vals: list[torch.Tensor], grid: Grid) -> torch.Tensor:
    """Real-face values of both components (B, M_c) → staggered (B, 2, H+1, W+1) with zero padding."""
    h, w = grid.shape
    vy = F.pad(vals[0].reshape(-1, h + 1, w), (0, 1))
    vx = F.pad(vals[1].reshape(-1, h, w + 1), (0, 0, 0, 1))
    return torch.stack([vy, vx], dim=1)


def _real(v: torch.Tensor, c: int) -> torch.Tensor:
    """Real faces of component ``c`` flattened to (B, M_c)."""
    return (v[:, 0, :, :-1] if c == 0 else v[:, 1, :-1, :]).reshape(v.shape[0], -1)


def velocity_advection(
    v: torch.Tensor, velocity: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: FlowBoundary, scheme: str
) -> torch.Tensor:
    """Advect the staggered ``v`` by the staggered ``velocity`` for ``dt`` (B,); boundary faces not re-imposed."""
    b = v.shape[0]
    traces = []
    for c in (0, 1):
        py, px = face_positions(grid, c, b, v.dtype, v.device)
        sy, sx = _shifts(velocity, dt, py, px, grid, boundary)
        traces.append((py, px, sy, sx))
    v_hat = _assemble([sample_velocity(v, c, py - sy, px - sx, boundary) for c, (py, px, sy, sx) in enumerate(traces)], grid)
    if scheme == "semi_lagrangian":
        return v_hat
    assert scheme == "maccormack", scheme
    out = []
    for c, (py, px, sy, sx) in enumerate(traces):
        bar = sample_velocity(v_hat, c, py + sy, px + sx, boundary)
        corrected = _real(v_hat, c) + 0.5 * (_real(v, c) - bar)
        corners = velocity_stencil(v, c, py - sy, px - sx, boundary)[:4]
        out.append(_limit(corrected, *corners))
    return _assemble(out, grid)


def scalar_advection(
    q: torch.Tensor,
    velocity: torch.Tensor,
    dt: torch.Tensor,
    grid: Grid,
    scalar_boundary: Boundary,
    boundary: FlowBoundary,
    scheme: str,
) -> torch.Tensor:
    """Advect a cell-centred ``q`` (B, C, H, W) by the staggered ``velocity`` sampled at the cell centres."""
    b, ch, h, w = q.shape
    py, px = cell_positions(grid, b, q.dtype, q.device)
    sy, sx = _shifts(velocity, dt, py, px, grid, boundary)
    q_hat = sample_scalar(q, py - sy, px - sx, scalar_boundary).reshape(b, ch, h, w)
    if scheme == "semi_lagrangian":
        return q_hat
    assert scheme == "maccormack", scheme
    bar = sample_scalar(q_hat, py + sy, px + sx, scalar_boundary)
    corrected = q_hat.reshape(b, ch, -1) + 0.5 * (q.reshape(b, ch, -1) - bar)
    corners = scalar_stencil(q, py - sy, px - sx, scalar_boundary)[:4]
    return _limit(corrected, *corners).reshape(b, ch, h, w)


# ----------------------------------------------------------------------------------- diffusion
def _normal_index(i: torch.Tensor, n: int, periodic: bool) -> torch.Tensor:
    return torch.remainder(i, n) if periodic else torch.clamp(i, 0, n)


def velocity_laplacian(v: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> list[torch.Tensor]:
    """5-point Laplacian of each component on its own face grid: ``[(B, H+1, W), (B, H, W+1)]``."""
    h, w = grid.shape
    hy, hx = grid.spacing
    out = []
    for c in (0, 1):
        u = v[:, 0, :, :w] if c == 0 else v[:, 1, :h, :]
        ny, nx = u.shape[1:]
        lo, hi = _tangential_sides(boundary, c)
        periodic = isinstance(boundary.sides[c][0], Periodic)
        ir, ic = torch.arange(ny, device=v.device), torch.arange(nx, device=v.device)
        if c == 0:
            up, down = u[:, _normal_index(ir - 1, h, periodic)], u[:, _normal_index(ir + 1, h, periodic)]
            (jl, al, sl), (jr, ar, sr) = _ghost(ic - 1, w, lo, hi, v.dtype), _ghost(ic + 1, w, lo, hi, v.dtype)
            left, right = al + sl * u[:, :, jl], ar + sr * u[:, :, jr]
        else:
            (ju, au, su), (jd, ad, sd) = _ghost(ir - 1, h, lo, hi, v.dtype), _ghost(ir + 1, h, lo, hi, v.dtype)
            up, down = au.view(-1, 1) + su.view(-1, 1) * u[:, ju], ad.view(-1, 1) + sd.view(-1, 1) * u[:, jd]
            left, right = u[:, :, _normal_index(ic - 1, w, periodic)], u[:, :, _normal_index(ic + 1, w, periodic)]
        out.append((up - 2.0 * u + down) / hy**2 + (left - 2.0 * u + right) / hx**2)
    return out


def velocity_diffusion(v: torch.Tensor, nu: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> torch.Tensor:
    """Explicit viscosity step ``v + ν Δt L(v)`` on every real face (padding 0); ``nu``, ``dt``: (B,)."""
    k = (nu * dt).reshape(-1, 1, 1)
    lap = velocity_laplacian(v, grid, boundary)
    return _assemble([(_real(v, c).reshape(lap[c].shape) + k * lap[c]).reshape(v.shape[0], -1) for c in (0, 1)], grid)


# --------------------------------------------------------------------- conservative (flux-form) advection
def _mc_slope(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Monotonised-central limited slope from the upwind difference ``a`` and the downwind one ``b``:
    ``sign(b)·min(2|a|, 2|b|, |a+b|/2)`` where ``a`` and ``b`` have the same sign, else 0."""
    m = torch.minimum(torch.minimum(2.0 * a.abs(), 2.0 * b.abs()), 0.5 * (a + b).abs())
    return torch.where(a * b > 0, torch.sign(b) * m, torch.zeros_like(m))


def _axis_fluxes(
    q: torch.Tensor, u: torch.Tensor, fluid: torch.Tensor, dt: torch.Tensor, h: float, sides, scalar_sides
) -> torch.Tensor:
    """Face fluxes ``(B, C, T, n+1)`` along the last axis of ``q`` (B, C, T, n) for the face velocities ``u``
    (B, T, n+1) and the fluid mask (B or 1, 1, T, n): every face computed once, face-by-face semantics."""
    n = q.shape[-1]
    periodic = isinstance(sides[0], Periodic)
    if periodic:
        u = torch.cat([u[..., :n], u[..., :1]], dim=-1)  # the seam face n is face 0
        ext = torch.cat([q[..., -2:], q, q[..., :2]], dim=-1)
        fext = torch.cat([fluid[..., -2:], fluid, fluid[..., :2]], dim=-1)
    else:

        def outside(k: int) -> torch.Tensor:  # the value beyond side k (0 lo, 1 hi) as the scheme sees it
            adjacent = q[..., :1] if k == 0 else q[..., -1:]
            if isinstance(sides[k], (Inflow, Outflow)) and isinstance(scalar_sides[k], Dirichlet):
                return torch.full_like(adjacent, float(scalar_sides[k].value))
            return adjacent

        lo, hi = outside(0), outside(1)
        ext = torch.cat([lo, lo, q, hi, hi], dim=-1)
        ones = torch.ones_like(fluid[..., :2])
        fext = torch.cat([ones, fluid, ones], dim=-1)
    # face f (0..n) sits between extended cells f+1 (l) and f+2 (h); f (ll) and f+3 (hh) behind them
    q_ll, q_l, q_h, q_hh = (ext[..., s : s + n + 1] for s in (0, 1, 2, 3))
    f_ll, f_l, f_h, f_hh = (fext[..., s : s + n + 1] for s in (0, 1, 2, 3))
    q_ll = torch.where(f_ll > 0.5, q_ll, q_l)
    q_hh = torch.where(f_hh > 0.5, q_hh, q_h)
    uu = u.unsqueeze(1)
    pos = uu > 0
    q_up, q_down, q_back = torch.where(pos, q_l, q_h), torch.where(pos, q_h, q_l), torch.where(pos, q_ll, q_hh)
    c = uu.abs() * dt.view(-1, 1, 1, 1) / h
    q_face = q_up + 0.5 * torch.clamp(1.0 - c, min=0.0) * _mc_slope(q_up - q_back, q_down - q_up)
    weight = (f_l > 0.5) & (f_h > 0.5)
    weight = weight.expand(q_face.shape).clone()
    if not periodic:
        q_face = q_face.clone()
        q_face[..., 0] = torch.where(pos[..., 0], q_l[..., 0], q_h[..., 0])  # first-order upwind on boundary faces
        q_face[..., n] = torch.where(pos[..., n], q_l[..., n], q_h[..., n])
        for k, f in ((0, 0), (1, n)):
            if not isinstance(sides[k], (Inflow, Outflow)):
                weight[..., f] = False  # walls: no flux
    return weight.to(q.dtype) * uu * q_face


def flux_advection(
    q: torch.Tensor,
    velocity: torch.Tensor,
    dt: torch.Tensor,
    grid: Grid,
    scalar_boundary: Boundary,
    boundary: FlowBoundary,
    fluid: torch.Tensor | None = None,
    substeps: int = 1,
) -> torch.Tensor:
    """Conservative MC-limited flux-form advection (:mod:`taichi_dp.ops.flux_advection`) of ``q`` (B, C, H, W)
    by the staggered ``velocity`` for ``dt`` (B,), in ``substeps`` equal sub-steps:
    ``q ← q − Δt Σ_axes (F_hi − F_lo)/h`` with ``F = u·q_face`` (walls and solid faces: 0; open sides:
    first-order upwind with the scalar's boundary value entering)."""
    hy, hx = grid.spacing
    if fluid is None:
        fluid = torch.ones(1, 1, *q.shape[2:], dtype=q.dtype, device=q.device)
    step = dt / substeps
    uy = velocity[:, 0, :, :-1].transpose(1, 2)  # (B, W, H+1): faces along y, per column
    ux = velocity[:, 1, :-1, :]  # (B, H, W+1)
    for _ in range(substeps):
        fy = _axis_fluxes(q.transpose(2, 3), uy, fluid.transpose(2, 3), step, hy, boundary.sides[0], scalar_boundary.sides[0])
        fx = _axis_fluxes(q, ux, fluid, step, hx, boundary.sides[1], scalar_boundary.sides[1])
        div = (fy[..., 1:] - fy[..., :-1]).transpose(2, 3) / hy + (fx[..., 1:] - fx[..., :-1]) / hx
        q = q - step.view(-1, 1, 1, 1) * div
    return q


# =============================================================================== any dimension (2D, 3D)
# Written separately from the 2D functions above (which stay the original 2D ground truth), on top of the
# n-D cell-centred reference of ``reference.py``: a component of a staggered velocity is a field on its own
# face grid, and sampling / differencing it is the cell-centred n-D operation on that grid with
#
# - along the component's own (normal) axis, face-index coordinates (the face ``i`` at ``i``; a cell-space
#   position ``p`` is at ``p + ½``) and the boundary faces holding their values: positions and neighbours
#   beyond faces ``0``/``N`` clamp onto them (zero gradient on the ``N + 1`` faces); a periodic axis wraps
#   with period ``N`` (faces ``0..N−1``; face ``N`` is face ``0``);
# - along every other axis, cell-centred faces with the ghost values of ``FlowBoundary.component(c)``.
def face_field(v: torch.Tensor, c: int, periodic: bool) -> torch.Tensor:
    """Component ``c`` of the staggered ``v`` ``(B, nd, *(N+1))`` on its face grid, ``(B, 1, *M_c)``:
    ``N_c + 1`` faces along axis ``c`` (``N_c`` on a periodic axis: face ``N`` is face ``0``), the
    ``N_a`` real faces along the others (padding dropped)."""
    nd = v.shape[1]
    index = [slice(None), slice(c, c + 1)]
    for a in range(nd):
        n = v.shape[2 + a] - 1
        index.append(slice(0, n) if a != c or periodic else slice(None))
    return v[tuple(index)]


def face_boundary(boundary: FlowBoundary, c: int) -> Boundary:
    """The cell-centred boundary of :func:`face_field` ``c``: periodic or zero gradient (clamp onto the
    boundary faces) along axis ``c``, ``boundary.component(c)`` along the others."""
    comp = boundary.component(c).sides
    normal = comp[c] if isinstance(boundary.sides[c][0], Periodic) else (ZeroGradient(), ZeroGradient())
    return Boundary(tuple(normal if a == c else comp[a] for a in range(boundary.ndim)))


def _is_periodic(boundary: FlowBoundary, a: int) -> bool:
    return isinstance(boundary.sides[a][0], Periodic)


def _face_space(pos: list[torch.Tensor], c: int) -> list[torch.Tensor]:
    """Cell-space positions → :func:`face_field` ``c`` index space (``+ ½`` along axis ``c``)."""
    return [p + 0.5 if a == c else p for a, p in enumerate(pos)]


def velocity_stencil_nd(
    v: torch.Tensor, c: int, pos: list[torch.Tensor], boundary: FlowBoundary
) -> tuple[dict, list[torch.Tensor]]:
    """Corners ``{offsets: (B, 1, *S)}`` and weights of multilinear interpolation of component ``c`` of the
    staggered ``v`` at cell-space positions ``pos`` (one tensor per axis, broadcastable to ``(B, 1, *S)``)."""
    field = face_field(v, c, _is_periodic(boundary, c))
    return stencil_nd(field, _face_space(pos, c), face_boundary(boundary, c))


def lerp_nd(corners: dict, w: list[torch.Tensor]) -> torch.Tensor:
    """Multilinear combination of :func:`reference.stencil_nd`'s corners, one axis at a time from the last
    (in 2D ``(1 − w_y)((1 − w_x) u00 + w_x u01) + w_y((1 − w_x) u10 + w_x u11)``, as the 2D reference). On a
    wall the tangential velocity ``½(2g − u) + ½ u`` is then exactly ``g``, whatever the other axes do:
    a no-slip wall's zero velocity traces back to exact cell positions, where the MacCormack limiter's
    stencil would otherwise hinge on the sign of a round-off residue."""
    level = dict(corners)
    for a in reversed(range(len(w))):
        level = {off[:a]: (1.0 - w[a]) * level[(*off[:a], 0)] + w[a] * level[(*off[:a], 1)] for off in level if off[a] == 0}
    return level[()]


def sample_velocity_nd(v: torch.Tensor, c: int, pos: list[torch.Tensor], boundary: FlowBoundary) -> torch.Tensor:
    """Component ``c`` of the staggered ``v`` ``(B, nd, *(N+1))`` at cell-space positions ``pos`` → ``(B, 1, *S)``."""
    return lerp_nd(*velocity_stencil_nd(v, c, pos, boundary))


def face_positions_nd(grid: Grid, c: int, dtype: torch.dtype, device=None) -> list[torch.Tensor]:
    """Cell-space positions of component ``c``'s real faces (``idx − ½ e_c``), one tensor per axis,
    broadcastable to ``(1, 1, *M_c)`` with ``M_c = N + e_c``."""
    nd = grid.ndim
    out = []
    for a, n in enumerate(grid.shape):
        x = torch.arange(n + 1, dtype=dtype, device=device) - 0.5 if a == c else torch.arange(n, dtype=dtype, device=device)
        out.append(x.view(1, 1, *([1] * a), -1, *([1] * (nd - a - 1))))
    return out


def cell_positions_nd(grid: Grid, dtype: torch.dtype, device=None) -> list[torch.Tensor]:
    """Cell-space positions of the cell centres, one tensor per axis, broadcastable to ``(1, 1, *N)``."""
    nd = grid.ndim
    return [
        torch.arange(n, dtype=dtype, device=device).view(1, 1, *([1] * a), -1, *([1] * (nd - a - 1)))
        for a, n in enumerate(grid.shape)
    ]


def real_faces_nd(v: torch.Tensor, c: int) -> torch.Tensor:
    """The real faces of component ``c``, ``(B, 1, *M_c)`` (the stored values, seam face ``N`` included)."""
    return face_field(v, c, periodic=False)


def assemble_nd(comps: list[torch.Tensor], grid: Grid) -> torch.Tensor:
    """Real-face values ``(B, 1, *M_c)`` per component → staggered ``(B, nd, *(N+1))`` with zero padding."""
    out = []
    for c, x in enumerate(comps):
        pad: list[int] = []
        for a in reversed(range(grid.ndim)):
            pad += [0, 0] if a == c else [0, 1]
        out.append(F.pad(x, pad))
    return torch.cat(out, dim=1)


def velocity_at_nd(velocity: torch.Tensor, pos: list[torch.Tensor], boundary: FlowBoundary) -> list[torch.Tensor]:
    """Every component of the staggered ``velocity`` interpolated at cell-space ``pos``: ``[(B, 1, *S)]``."""
    return [sample_velocity_nd(velocity, d, pos, boundary) for d in range(boundary.ndim)]


def _dt_view(dt: torch.Tensor, nd: int) -> torch.Tensor:
    return dt.reshape(-1, *([1] * (nd + 1)))


def velocity_advection_nd(
    v: torch.Tensor, velocity: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: FlowBoundary, scheme: str
) -> torch.Tensor:
    """Advect the staggered ``v`` ``(B, nd, *(N+1))`` by the staggered ``velocity`` for ``dt`` (B,): each
    real face ``x_f`` of component ``c`` takes ``v_c(x_f − Δt u(x_f)/h)`` (semi-Lagrangian), with ``u(x_f)``
    the velocity interpolated at the face; MacCormack: ``clamp(v̂ + ½ (v − v̂(x_f + Δt u/h)), corners)``
    with the ``2**nd`` corners of the back-trace. Padding 0; boundary faces not re-imposed."""
    nd = grid.ndim
    d = _dt_view(dt, nd)
    traces = []
    for c in range(nd):
        pos = face_positions_nd(grid, c, v.dtype, v.device)
        u = velocity_at_nd(velocity, pos, boundary)
        shift = [d * ua / h for ua, h in zip(u, grid.spacing, strict=True)]
        traces.append(([p - s for p, s in zip(pos, shift)], [p + s for p, s in zip(pos, shift)]))
    v_hat = assemble_nd([sample_velocity_nd(v, c, back, boundary) for c, (back, _) in enumerate(traces)], grid)
    if scheme == "semi_lagrangian":
        return v_hat
    assert scheme == "maccormack", scheme
    out = []
    for c, (back, fwd) in enumerate(traces):
        bar = sample_velocity_nd(v_hat, c, fwd, boundary)
        corrected = real_faces_nd(v_hat, c) + 0.5 * (real_faces_nd(v, c) - bar)
        corners = torch.stack(list(velocity_stencil_nd(v, c, back, boundary)[0].values()))
        out.append(torch.minimum(torch.maximum(corrected, corners.min(0).values), corners.max(0).values))
    return assemble_nd(out, grid)


def centred_velocity_nd(velocity: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> torch.Tensor:
    """The staggered ``velocity`` interpolated at the cell centres, ``(B, nd, *N)``."""
    return torch.cat(velocity_at_nd(velocity, cell_positions_nd(grid, velocity.dtype, velocity.device), boundary), dim=1)


def scalar_advection_nd(
    q: torch.Tensor,
    velocity: torch.Tensor,
    dt: torch.Tensor,
    grid: Grid,
    scalar_boundary: Boundary,
    boundary: FlowBoundary,
    scheme: str,
) -> torch.Tensor:
    """Advect a cell-centred ``q`` ``(B, C, *N)`` by the staggered ``velocity``: the cell-centred n-D
    advection of ``reference.py`` with the velocity interpolated at the cell centres."""
    centred = centred_velocity_nd(velocity, grid, boundary)
    if scheme == "semi_lagrangian":
        return semi_lagrangian_nd(q, centred, dt, grid, scalar_boundary)
    assert scheme == "maccormack", scheme
    return maccormack_nd(q, centred, dt, grid, scalar_boundary)


def velocity_laplacian_nd(v: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> list[torch.Tensor]:
    """The ``(2 nd + 1)``-point Laplacian of each component on its face grid: ``[(B, 1, *M_c)]`` (the real faces).

    On a periodic axis the Laplacian lives on faces ``0..N−1``; the seam face ``N`` (equal to face ``0`` on
    valid input) has its own centre value ``v_N`` and face ``0``'s neighbours, i.e.
    ``L_N = L_0 + 2 (v_0 − v_N) Σ_a 1/h_a²``."""
    out = []
    for c in range(grid.ndim):
        periodic = _is_periodic(boundary, c)
        field = face_field(v, c, periodic)
        spacing = Grid(tuple(field.shape[2:]), tuple((0.0, h * n) for h, n in zip(grid.spacing, field.shape[2:])))
        lap = laplacian_nd(field, spacing, face_boundary(boundary, c))
        if periodic:
            v_0, v_n = (real_faces_nd(v, c).narrow(2 + c, i, 1) for i in (0, grid.shape[c]))
            seam = lap.narrow(2 + c, 0, 1) + 2.0 * (v_0 - v_n) * sum(1.0 / h**2 for h in grid.spacing)
            lap = torch.cat([lap, seam], dim=2 + c)
        out.append(lap)
    return out


def velocity_diffusion_nd(
    v: torch.Tensor, nu: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: FlowBoundary
) -> torch.Tensor:
    """Explicit viscosity step ``v + ν Δt L(v)`` on every real face (padding 0); ``nu``, ``dt``: (B,)."""
    k = _dt_view(nu * dt, grid.ndim)
    lap = velocity_laplacian_nd(v, grid, boundary)
    return assemble_nd([real_faces_nd(v, c) + k * lap[c] for c in range(grid.ndim)], grid)


def flux_advection_nd(
    q: torch.Tensor,
    velocity: torch.Tensor,
    dt: torch.Tensor,
    grid: Grid,
    scalar_boundary: Boundary,
    boundary: FlowBoundary,
    fluid: torch.Tensor | None = None,
    substeps: int = 1,
) -> torch.Tensor:
    """:func:`flux_advection` in any dimension: ``q ← q − Δt Σ_a (F^a_hi − F^a_lo)/h_a`` per sub-step, each
    axis' face fluxes from :func:`_axis_fluxes` with that axis moved last and the others flattened into rows."""
    nd = grid.ndim
    if fluid is None:
        fluid = torch.ones(1, 1, *q.shape[2:], dtype=q.dtype, device=q.device)
    step = dt / substeps
    faces = [real_faces_nd(velocity, a)[:, 0] for a in range(nd)]  # (B, *M_a)

    def rows(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Size]:
        """Move ``dim`` last and flatten the spatial dimensions before it: ``(lead..., T, n)``."""
        moved = x.movedim(dim, -1)
        lead = 2 if x.dim() == nd + 2 else 1
        return moved.reshape(*moved.shape[:lead], -1, moved.shape[-1]), moved.shape

    for _ in range(substeps):
        div = torch.zeros_like(q)
        for a, h in enumerate(grid.spacing):
            qa, moved = rows(q, 2 + a)
            ua, _ = rows(faces[a], 1 + a)
            fa, _ = rows(fluid, 2 + a)
            flux = _axis_fluxes(qa, ua, fa, step, h, boundary.sides[a], scalar_boundary.sides[a])  # (B, C, T, n+1)
            diff = (flux[..., 1:] - flux[..., :-1]).reshape(moved).movedim(-1, 2 + a)
            div = div + diff / h
        q = q - step.view(-1, *([1] * (nd + 1))) * div
    return q


# ------------------------------------------------------------------------ explicit advection rate
def velocity_advection_rate_nd(v: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> torch.Tensor:
    """The advection rate ``−(v·∇)v`` of the staggered ``v`` ``(B, nd, *(N+1))`` by central differences on
    each component's face grid: ``−Σ_a u_a (v_c[f + e_a] − v_c[f − e_a]) / 2h_a``, with the neighbours of
    :func:`face_field`/:func:`face_boundary` (clamped along the normal axis, ghost values across) and the
    advecting velocity ``u`` multilinearly interpolated at the face (its own component: the face value).
    On a periodic axis the rate lives on faces ``0..N−1`` and the seam face ``N`` repeats face ``0``'s.
    Padding 0; boundary faces not re-imposed."""
    from reference import value_nd

    out = []
    for c in range(grid.ndim):
        periodic = _is_periodic(boundary, c)
        field = face_field(v, c, periodic)  # (B, 1, *M)
        pos = face_positions_nd(grid, c, v.dtype, v.device)
        if periodic:
            pos[c] = pos[c].narrow(2 + c, 0, grid.shape[c])
        u = velocity_at_nd(v, pos, boundary)
        centres = [
            torch.arange(n, device=v.device).view(1, 1, *([1] * a), n, *([1] * (grid.ndim - a - 1)))
            for a, n in enumerate(field.shape[2:])
        ]
        fb = face_boundary(boundary, c)
        rate = torch.zeros_like(field)
        for a, h in enumerate(grid.spacing):
            hi = value_nd(field, [x + 1 if k == a else x for k, x in enumerate(centres)], fb)
            lo = value_nd(field, [x - 1 if k == a else x for k, x in enumerate(centres)], fb)
            rate = rate - u[a] * (hi - lo) / (2.0 * h)
        if periodic:
            rate = torch.cat([rate, rate.narrow(2 + c, 0, 1)], dim=2 + c)
        out.append(rate)
    return assemble_nd(out, grid)
