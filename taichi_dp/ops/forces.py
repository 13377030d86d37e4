"""Forces of a flow on obstacles: pressure and viscous parts per batch element and per obstacle, and the
force coefficients of the literature. Plain differentiable torch (no kernel): a few shifted products per
grid, cheap next to one solver step.

Two estimators on the MAC grid (layout in :mod:`taichi_dp.grid.staggered`; obstacles are fluid masks,
1 = fluid, whose solid cells form a staircase):

- :func:`surface_forces` integrates over the staircase surface of each obstacle. Pressure: ``−p n`` on every
  cell face between a solid cell of the obstacle and a fluid cell, with ``p`` extrapolated linearly from
  the two fluid cells in front of the face (the cell value when only one is fluid), so that a linear
  pressure gives the exact force on the staircase (Archimedes: ``ρ g`` × the solid area). Viscous: the
  discrete diffusive momentum flux ``ρ ν (v_q − v_r) / h_a`` between every open face ``q`` and each
  neighbouring face ``r`` closed by the obstacle (``v_r = 0``), i.e. exactly the momentum the solver's
  viscosity (:mod:`taichi_dp.ops.staggered_diffusion`, which reads closed faces as 0: a no-slip surface
  through the centres of the solid cells next to the staircase) takes out of the fluid there. It
  converges at first order with the staircase; use it for the split into pressure and viscous parts and
  when no control volume fits around the body.
- :func:`control_volume_forces` is the steady momentum balance over a box ``C`` around the obstacle,

      F = ∮_C ( −p n + ρ ν (∇v + ∇vᵀ) n − ρ v (v · n) ) dS      (n: outward normal of the box),

  with second-order central differences on the box faces. It never looks at the near-wall cells, so it
  carries only the error of the flow field itself, not that of a one-sided wall gradient; its pressure
  and viscous parts are those of the box surface (only the total is the body's). It needs a steady flow
  and no body force inside the box, and the box must hold one obstacle and no domain boundary.

Both return :class:`ObstacleForces` with components in axis order (2D ``(F_y, F_x)``); :func:`force_coefficients`
turns a force into ``c = 2 F / (ρ U² L)`` (the DFG benchmark's drag and lift coefficients with ``U`` the
mean inflow speed and ``L`` the diameter). The pressure is the physical one: the projection of
:class:`~taichi_dp.solvers.NavierStokes` returns ``Δt p / ρ``, so pass ``p_step / Δt`` (times ``ρ``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..grid import Grid, Periodic
from ..grid.staggered import FlowBoundary, Outflow, check_staggered, open_faces, staggered_shape
from ..runtime import check_positive, check_state

__all__ = ["ObstacleForces", "control_volume_forces", "force_coefficients", "free_seam", "obstacle_masks", "surface_forces"]


@dataclass(frozen=True)
class ObstacleForces:
    """Force of the fluid on each obstacle, per batch element: ``pressure`` and ``viscous`` ``(B, K, nd)``
    (``K`` obstacles, components in axis order: 2D ``(F_y, F_x)``, 3D ``(F_z, F_y, F_x)``), per unit
    length in 2D. ``total = pressure + viscous``."""

    pressure: torch.Tensor
    viscous: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.pressure + self.viscous


def force_coefficients(force: torch.Tensor, speed: float, length: float, rho: float = 1.0) -> torch.Tensor:
    """``c = 2 F / (ρ U² L)``: the drag/lift coefficient convention of Schäfer & Turek (1996) with ``U``
    the mean inflow speed and ``L`` the body's diameter (2D; in 3D pass ``L`` = the reference area).

    Args:
        force: any tensor of forces (e.g. ``ObstacleForces.total``).
        speed: reference speed ``U`` > 0.
        length: reference length ``L`` > 0.
        rho: density ``ρ`` > 0.
    """
    for name, x in (("speed", speed), ("length", length), ("rho", rho)):
        check_positive(name, x)
    return 2.0 * force / (rho * speed * speed * length)


def obstacle_masks(obstacles: torch.Tensor | Sequence[torch.Tensor], grid: Grid) -> list[torch.Tensor]:
    """``obstacles`` (one fluid mask ``(B or 1, 1, *spatial)`` or a sequence of them, one per obstacle;
    1 = fluid, 0 = solid) as a list of float masks, validated against ``grid``."""
    items = [obstacles] if isinstance(obstacles, torch.Tensor) else obstacles
    if not isinstance(items, (list, tuple)) or len(items) == 0:
        raise TypeError(
            "obstacles must be a fluid mask tensor (B or 1, 1, *spatial) or a non-empty sequence of them (one per "
            f"obstacle, 1 = fluid), got {type(obstacles).__name__}"
        )
    out = []
    for k, m in enumerate(items):
        name = "obstacles" if isinstance(obstacles, torch.Tensor) else f"obstacles[{k}]"
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor fluid mask, got {type(m).__name__}")
        if m.ndim != grid.ndim + 2 or m.shape[1] != 1 or tuple(m.shape[2:]) != tuple(grid.shape):
            spatial = ", ".join(str(n) for n in grid.shape)
            raise ValueError(f"{name} must be a fluid mask of shape (B or 1, 1, {spatial}), got {tuple(m.shape)}")
        out.append((m.detach() > 0.5).to(torch.float64))
    return out


def _batch_viscosity(nu: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """``ν`` as a ``(B,)`` tensor of ``like``'s dtype and device (differentiable when a tensor)."""
    if isinstance(nu, torch.Tensor):
        t = nu.to(like.dtype).reshape(-1)
        if t.numel() not in (1, batch):
            raise ValueError(f"nu must be a float or a (1 or {batch},) tensor, got shape {tuple(nu.shape)}")
        return t.expand(batch)
    if isinstance(nu, bool) or not isinstance(nu, numbers.Real) or not (math.isfinite(nu) and nu >= 0):
        raise ValueError(f"nu must be a finite number >= 0 or a (B,) tensor, got {nu!r}")
    return torch.full((batch,), float(nu), dtype=like.dtype, device=like.device)


def _check_inputs(
    v: torch.Tensor, p: torch.Tensor, grid: Grid, obstacles: torch.Tensor | Sequence[torch.Tensor], rho: float
) -> list[torch.Tensor]:
    check_staggered("v", v, grid)
    check_state("p", p, grid.shape, channels=1, batch=v.shape[0])
    check_positive("rho", rho)
    masks = obstacle_masks(obstacles, grid)
    for k, m in enumerate(masks):
        if m.shape[0] not in (1, v.shape[0]):
            raise ValueError(f"obstacles[{k}] must have batch size 1 or {v.shape[0]} (v's), got {m.shape[0]}")
    return [m.to(device=v.device, dtype=v.dtype) for m in masks]


def _sl(nd: int, axis: int, s: slice) -> tuple:
    """Index ``[:, :, ..., s (on spatial axis), ...]`` of a ``(B, C, *spatial)`` tensor."""
    idx: list = [slice(None)] * (2 + nd)
    idx[2 + axis] = s
    return tuple(idx)


def _sl1(nd: int, axis: int, s: slice) -> tuple:
    """Index ``[:, ..., s (on spatial axis), ...]`` of a ``(B, *spatial)`` tensor."""
    idx: list = [slice(None)] * (1 + nd)
    idx[1 + axis] = s
    return tuple(idx)


def _pad_axis(x: torch.Tensor, axis: int, nd: int, before: int, after: int, value: float = 0.0) -> torch.Tensor:
    pad = [0, 0] * nd
    pad[2 * (nd - 1 - axis)], pad[2 * (nd - 1 - axis) + 1] = before, after
    return torch.nn.functional.pad(x, pad, value=value)


# ------------------------------------------------------------------------------------ surface
def surface_forces(
    v: torch.Tensor,
    p: torch.Tensor,
    grid: Grid,
    obstacles: torch.Tensor | Sequence[torch.Tensor],
    nu: float | torch.Tensor,
    rho: float = 1.0,
    boundary: FlowBoundary | None = None,
) -> ObstacleForces:
    """Force on each obstacle by integration over its staircase surface (module docstring), 2D or 3D.

    Args:
        v: staggered velocity ``(B, nd, *(N + 1))`` with the obstacle faces closed (as the solver leaves it).
        p: physical pressure ``(B, 1, *N)`` (the solver's projection pressure divided by ``Δt``, times ``ρ``).
        grid: the 2D or 3D grid.
        obstacles: one fluid mask ``(B or 1, 1, *N)`` or a sequence of them, one per obstacle (1 = fluid).
            The fluid is where every mask is 1.
        nu: kinematic viscosity, float or ``(B,)`` tensor.
        rho: density.
        boundary: the flow's boundary, needed only on periodic axes (face ``N`` there duplicates face
            ``0`` and is counted once). An obstacle must not cross a periodic seam.

    Returns:
        :class:`ObstacleForces` ``(B, K, nd)``, differentiable in ``v``, ``p`` and ``nu``.
    """
    masks = _check_inputs(v, p, grid, obstacles, rho)
    if boundary is not None and (not isinstance(boundary, FlowBoundary) or boundary.ndim != grid.ndim):
        raise TypeError(f"boundary must be None or a {grid.ndim}D FlowBoundary, got {boundary!r}")
    nd, b = grid.ndim, v.shape[0]
    nu_b = _batch_viscosity(nu, b, v).view(b, *([1] * nd))
    fluid = masks[0]
    for m in masks[1:]:
        fluid = fluid * m
    fluid = fluid.expand(b, *fluid.shape[1:])
    cell_volume = math.prod(grid.spacing)
    # faces of the fluid that the flow may cross: closed faces read as 0 in the viscosity stencil
    open_ = open_faces(fluid, _open_boundary(nd))
    if boundary is not None:
        open_ = open_ * free_seam(grid, boundary, v)
    pressure, viscous = [], []
    for m in masks:
        solid = (1.0 - m).expand(b, *m.shape[1:])
        f_p, f_v = [], []
        for a in range(nd):
            f_p.append(_pressure_on(p, fluid, solid, a, nd) * (cell_volume / grid.spacing[a]))
        for c in range(nd):
            touch = _touches(solid, c, nd)  # faces of component c next to a solid cell of this obstacle
            share = touch / _touches_any(masks, c, nd, b).clamp_min(1.0)
            vc, oc = v[:, c], open_[:, c]
            total = torch.zeros(b, dtype=v.dtype, device=v.device)
            for a in range(nd):
                lo, hi = (slice(0, -1), slice(1, None))
                vq_lo, vq_hi = vc[_sl1(nd, a, lo)], vc[_sl1(nd, a, hi)]
                o_lo, o_hi = oc[_sl1(nd, a, lo)], oc[_sl1(nd, a, hi)]
                s_lo, s_hi = share[_sl1(nd, a, lo)], share[_sl1(nd, a, hi)]
                # pair (lo, hi) along a: momentum ν (v_q − v_r)/h_a through their interface, into the closed one
                flux = nu_b * (o_lo * s_hi * (vq_lo - vq_hi) + o_hi * s_lo * (vq_hi - vq_lo)) / grid.spacing[a]
                total = total + flux.flatten(1).sum(1) * (cell_volume / grid.spacing[a])
            f_v.append(total)
        pressure.append(torch.stack(f_p, dim=-1))
        viscous.append(rho * torch.stack(f_v, dim=-1))
    return ObstacleForces(torch.stack(pressure, dim=1), torch.stack(viscous, dim=1))


def _open_boundary(nd: int) -> FlowBoundary:
    """A boundary whose outside counts as fluid for :func:`open_faces`."""
    return FlowBoundary(tuple((Outflow(), Outflow()) for _ in range(nd)))


def free_seam(grid: Grid, boundary: FlowBoundary, like: torch.Tensor) -> torch.Tensor:
    """``(1, nd, *(N + 1))`` mask: 0 on face ``N`` of each periodic axis (the duplicate of face ``0``), else 1."""
    nd = grid.ndim
    m = torch.ones(1, nd, *(n + 1 for n in grid.shape), dtype=like.dtype, device=like.device)
    for c, (lo, _) in enumerate(boundary.sides):
        if isinstance(lo, Periodic):
            m[_sl(nd, c, slice(grid.shape[c], None))] = m[_sl(nd, c, slice(grid.shape[c], None))] * torch.tensor(
                [1.0 if a != c else 0.0 for a in range(nd)], dtype=like.dtype, device=like.device
            ).view(1, nd, *([1] * nd))
    return m


def _touches(solid: torch.Tensor, c: int, nd: int) -> torch.Tensor:
    """``(B, *(N + 1 along c, N elsewhere))``: 1 on the faces of component ``c`` with a solid cell on
    either side, padded to the staggered extent with zeros."""
    s = _pad_axis(solid, c, nd, 1, 1)
    both = torch.maximum(s[_sl(nd, c, slice(0, -1))], s[_sl(nd, c, slice(1, None))])[:, 0]
    pad: list[int] = []
    for a in reversed(range(nd)):
        pad += [0, 0] if a == c else [0, 1]
    return torch.nn.functional.pad(both, pad)


def _touches_any(masks: list[torch.Tensor], c: int, nd: int, b: int) -> torch.Tensor:
    out = None
    for m in masks:
        t = _touches((1.0 - m).expand(b, *m.shape[1:]), c, nd)
        out = t if out is None else out + t
    return out


def _pressure_on(p: torch.Tensor, fluid: torch.Tensor, solid: torch.Tensor, a: int, nd: int) -> torch.Tensor:
    """``Σ −p n_a`` (per unit face area) over the faces normal to axis ``a`` between a solid cell of the
    obstacle and a fluid cell, ``p`` extrapolated to the face from the fluid side; ``(B,)``."""
    pp, ff = _pad_axis(p, a, nd, 2, 2), _pad_axis(fluid, a, nd, 2, 2)
    ss = _pad_axis(solid, a, nd, 2, 2)
    n = p.shape[2 + a]

    def at(x: torch.Tensor, shift: int) -> torch.Tensor:  # x at cell i + shift for the faces i = 0..n (lo cell i−1)
        return x[_sl(nd, a, slice(2 + shift, 2 + shift + n + 1))]

    # solid below (cell i−1), fluid above (cell i): outward normal +e_a, force −p_face
    p_up = torch.where(at(ff, 1) > 0.5, 1.5 * at(pp, 0) - 0.5 * at(pp, 1), at(pp, 0))
    up = at(ss, -1) * at(ff, 0)
    # fluid below (cell i−1), solid above (cell i): outward normal −e_a, force +p_face
    p_dn = torch.where(at(ff, -2) > 0.5, 1.5 * at(pp, -1) - 0.5 * at(pp, -2), at(pp, -1))
    dn = at(ss, 0) * at(ff, -1)
    return (dn * p_dn - up * p_up).flatten(1).sum(1)


# ----------------------------------------------------------------------------- control volume
def control_volume_forces(
    v: torch.Tensor,
    p: torch.Tensor,
    grid: Grid,
    box: Sequence[tuple[float, float]],
    nu: float | torch.Tensor,
    rho: float = 1.0,
) -> ObstacleForces:
    """Force on the body inside ``box`` by the steady momentum balance over the box's surface (module
    docstring), 2D or 3D; one obstacle (``K = 1``).

    Args:
        v: staggered velocity ``(B, nd, *(N + 1))`` of a steady flow.
        p: physical pressure ``(B, 1, *N)`` (the solver's projection pressure divided by ``Δt``, times ``ρ``).
        grid: the 2D or 3D grid.
        box: ``((lo, hi) per axis)`` in physical coordinates, axis order; each side is moved to the nearest
            cell face, which must lie at least two cells inside the domain. The box must enclose the whole
            body and nothing else (no other obstacle, no inflow region).
        nu: kinematic viscosity, float or ``(B,)`` tensor.
        rho: density.

    Returns:
        :class:`ObstacleForces` ``(B, 1, nd)``: ``pressure`` is the ``−p n`` part of the box integral,
        ``viscous`` the rest (stress and momentum flux); their sum is the force on the body.
    """
    check_staggered("v", v, grid)
    check_state("p", p, grid.shape, channels=1, batch=v.shape[0])
    check_positive("rho", rho)
    nd, b = grid.ndim, v.shape[0]
    faces = _box_faces(box, grid)
    nu_b = _batch_viscosity(nu, b, v).view(b, *([1] * nd))
    h = grid.spacing
    # cell-centred velocity components (B, *N)
    centred = []
    for c in range(nd):
        vc = v[:, c][tuple([slice(None)] + [slice(None) if a == c else slice(0, grid.shape[a]) for a in range(nd)])]
        centred.append(0.5 * (vc[_sl1(nd, c, slice(0, -1))] + vc[_sl1(nd, c, slice(1, None))]))
    f_p = [torch.zeros(b, dtype=v.dtype, device=v.device) for _ in range(nd)]
    f_v = [torch.zeros(b, dtype=v.dtype, device=v.device) for _ in range(nd)]
    for a in range(nd):
        area = math.prod(h) / h[a]
        # tangential extent of the box: cells faces[e][0] .. faces[e][1] − 1 along every other axis e
        cells = [slice(faces[e][0], faces[e][1]) for e in range(nd)]
        va = v[:, a][tuple([slice(None)] + [slice(None) if e == a else slice(0, grid.shape[e]) for e in range(nd)])]
        for m, sign in ((faces[a][0], -1.0), (faces[a][1], 1.0)):

            def face(x: torch.Tensor, idx: int, a: int = a, cells: list[slice] = cells) -> torch.Tensor:
                """``x`` ``(B, *)`` at index ``idx`` along ``a``, the box's cell range elsewhere."""
                return x[tuple([slice(None)] + [idx if e == a else cells[e] for e in range(nd)])]

            p_f = 0.5 * (face(p[:, 0], m - 1) + face(p[:, 0], m))
            va_f = face(va, m)
            nu_f = nu_b.view(b, *([1] * (nd - 1)))
            for c in range(nd):
                if c == a:
                    stress = 2.0 * nu_f * (face(va, m + 1) - face(va, m - 1)) / (2.0 * h[a])
                    vc_f = va_f
                else:
                    vc_f = 0.5 * (face(centred[c], m - 1) + face(centred[c], m))
                    dvc_da = (face(centred[c], m) - face(centred[c], m - 1)) / h[a]
                    dva_dc = (_shifted(va, c, 1, a, m, cells, nd) - _shifted(va, c, -1, a, m, cells, nd)) / (2.0 * h[c])
                    stress = nu_f * (dvc_da + dva_dc)
                if c == a:
                    f_p[c] = f_p[c] - sign * p_f.flatten(1).sum(1) * area
                f_v[c] = f_v[c] + sign * rho * (stress - vc_f * va_f).flatten(1).sum(1) * area
    return ObstacleForces(torch.stack(f_p, dim=-1)[:, None], torch.stack(f_v, dim=-1)[:, None])


def _shifted(va: torch.Tensor, c: int, shift: int, a: int, m: int, cells: list[slice], nd: int) -> torch.Tensor:
    """``va`` (faces normal to ``a``) at the box faces, shifted by ``shift`` cells along axis ``c``."""
    sel: list = [slice(None)]
    for e in range(nd):
        if e == a:
            sel.append(m)
        elif e == c:
            sel.append(slice(cells[e].start + shift, cells[e].stop + shift))
        else:
            sel.append(cells[e])
    return va[tuple(sel)]


def _box_faces(box: object, grid: Grid) -> list[tuple[int, int]]:
    """``box`` snapped to face indices ``(lo, hi)`` per axis, each at least 2 cells inside the domain."""
    nd = grid.ndim
    if not isinstance(box, (tuple, list)) or len(box) != nd or any(not isinstance(s, (tuple, list)) or len(s) != 2 for s in box):
        raise ValueError(f"box must be one (lo, hi) pair per axis ({nd} pairs, axis order), got {box!r}")
    out = []
    for a, (lo, hi) in enumerate(box):
        for x in (lo, hi):
            if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
                raise ValueError(f"box[{a}] must hold finite numbers, got {box[a]!r}")
        g_lo, _ = grid.bounds[a]
        i0, i1 = round((lo - g_lo) / grid.spacing[a]), round((hi - g_lo) / grid.spacing[a])
        n = grid.shape[a]
        if not (2 <= i0 < i1 <= n - 2):
            raise ValueError(
                f"box[{a}] = {tuple(box[a])} must be an interval at least two cells inside the domain "
                f"{grid.bounds[a]} (h = {grid.spacing[a]:g}); snapped to faces {i0}..{i1} of 0..{n}"
            )
        out.append((i0, i1))
    staggered_shape(grid)
    return out
