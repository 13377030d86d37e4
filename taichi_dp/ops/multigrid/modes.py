"""The three launch modes of a solve, one spec each: the arrays the mode reads and writes (a frozen
dataclass, nothing else), and its start and finish kernels. Between them, the iterations
(:mod:`.pcg`) do not depend on the mode.

- :class:`Solve` reads ``b`` (cells) and an optional warm start ``x0``; writes ``x = A⁻¹ b`` (cells;
  solid cells keep ``x = b``);
- :class:`Project` reads ``v`` (faces) and an optional ``x0``; writes ``p = S(−D v)`` (cells) and
  ``v_out = v − G p`` (faces);
- :class:`ProjectAdjoint` reads ``g_v_out`` (faces) and ``g_p`` (cells); writes ``lam = S(g_p − Gᵀ g_v_out)``
  (cells) and ``g_v = g_v_out − Dᵀ lam`` (faces).

Every array is flat and contiguous (``view(-1)``), of the solver's dtype and device; cells are
``(B, 1, *spatial)``, faces the staggered ``(B, nd, *(N + 1))``. A warm start ``x0`` (cells) selects the start
kernel that reads it; the projection's adjoint always starts cold.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

from dataclasses import dataclass

import taichi as ti
import torch

from ...bridge import launch
from .faces import _faces_minus, _rhs_adjoint, _rhs_minus_divergence
from .pcg import _clear_scalars, _solution_mean, _solution_row, _start_cg, _write_solution
from .plan import Plan, _stat_base, nd1, rows


# ------------------------------------------------------------------------------------ kernels
@ti.func
def _rhs_cells(b: ti.template(), work: ti.template(), nb, plan: ti.template(), serial: ti.template()):
    """CG's ``r`` = ``b`` (cells)."""
    h, w = ti.static(rows(plan.shape), plan.shape[plan.nd - 1])  # rows, row length
    ti.loop_config(serialize=serial)
    for s, i in ti.ndrange(nb, h):
        wb = s * plan.nw + i * w
        for j in range(w):
            work[wb + plan.r + j] = b[s * plan.n + i * w + j]


@ti.kernel
def _start_solve(b: nd1, work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(), rtol: float,
                 serial: ti.template()):
    """Start of :class:`Solve` from ``x = 0``: clear the scalars, ``r = b``, then :func:`.pcg._start_cg`."""
    _clear_scalars(sc, nb, serial)
    _rhs_cells(b, work, nb, plan, serial)
    _start_cg(None, work, stat, sc, nb, plan, False, rtol, serial)


@ti.kernel
def _start_solve_warm(b: nd1, x0: nd1, work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(), rtol: float,
                      serial: ti.template()):
    """Start of :class:`Solve` from ``x = f·x0``."""
    _clear_scalars(sc, nb, serial)
    _rhs_cells(b, work, nb, plan, serial)
    _start_cg(x0, work, stat, sc, nb, plan, True, rtol, serial)


@ti.kernel
def _start_project(v: nd1, work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(), rtol: float,
                   serial: ti.template()):
    """Start of :class:`Project` from ``p = 0``: ``r = −D v``."""
    _clear_scalars(sc, nb, serial)
    _rhs_minus_divergence(v, work, nb, plan, serial)
    _start_cg(None, work, stat, sc, nb, plan, False, rtol, serial)


@ti.kernel
def _start_project_warm(v: nd1, x0: nd1, work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(),
                        rtol: float, serial: ti.template()):
    """Start of :class:`Project` from ``p = f·x0``."""
    _clear_scalars(sc, nb, serial)
    _rhs_minus_divergence(v, work, nb, plan, serial)
    _start_cg(x0, work, stat, sc, nb, plan, True, rtol, serial)


@ti.kernel
def _start_adjoint(g_v_out: nd1, g_p: nd1, work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(),
                   rtol: float, serial: ti.template()):
    """Start of :class:`ProjectAdjoint` from ``λ = 0``: ``r = g_p − Gᵀ g_v_out``."""
    _clear_scalars(sc, nb, serial)
    _rhs_adjoint(g_v_out, g_p, work, stat, nb, plan, serial)
    _start_cg(None, work, stat, sc, nb, plan, False, rtol, serial)


@ti.kernel
def _finish_solve(b: nd1, x: nd1, work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(),
                  serial: ti.template()):
    """``x = live·f·(x_cg − mean) + (1 − f)·b``: the identity rows of solid cells keep ``b``."""
    h, w, n = ti.static(rows(plan.shape), plan.shape[plan.nd - 1], plan.n)  # rows, row length, cells
    _solution_mean(work, stat, sc, nb, plan, serial)
    ti.loop_config(serialize=serial)
    for s, i in ti.ndrange(nb, h):
        wb, sb = s * plan.nw + i * w, _stat_base(s, plan) + plan.fluid + i * w
        mean, live = _solution_row(sc, s, plan)
        for j in range(w):
            f = stat[sb + j]
            xs = live * f * (work[wb + plan.x + j] - mean)
            xs += (1.0 - f) * b[s * n + i * w + j]
            x[s * n + i * w + j] = xs


@ti.kernel
def _finish_project(v: nd1, p: nd1, v_out: nd1, work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(),
                    serial: ti.template()):
    """``p = live·f·(x_cg − mean)``, ``v_out = v − G p`` on real faces (padding copied)."""
    _solution_mean(work, stat, sc, nb, plan, serial)
    _write_solution(p, work, stat, sc, nb, plan, serial)
    _faces_minus(v, p, v_out, stat, nb, plan, serial, False)


@ti.kernel
def _finish_adjoint(g_v_out: nd1, lam: nd1, g_v: nd1, work: nd1, stat: nd1, sc: nd1, nb: int, plan: ti.template(),
                    serial: ti.template()):
    """``λ = live·f·(x_cg − mean)``, ``g_v = g_v_out − Dᵀ λ`` on real faces (padding copied)."""
    _solution_mean(work, stat, sc, nb, plan, serial)
    _write_solution(lam, work, stat, sc, nb, plan, serial)
    _faces_minus(g_v_out, lam, g_v, stat, nb, plan, serial, True)


# ------------------------------------------------------------------------------------ the specs
class Mode:
    """A launch mode: its arrays (dataclass fields) and its start and finish launches. ``adjoint`` only
    labels the solve in :data:`taichi_dp.ops.linear_solve.last_solve` and in warnings."""

    adjoint: bool = False

    def start(self, work: torch.Tensor, stat: torch.Tensor, sc: torch.Tensor, batch: int, plan: Plan,
              rtol: float, serial: bool) -> None:
        """Write the right-hand side into CG's residual and initialise CG (one launch)."""
        raise NotImplementedError

    def finish(self, work: torch.Tensor, stat: torch.Tensor, sc: torch.Tensor, batch: int, plan: Plan,
               serial: bool) -> None:
        """Write the outputs from CG's ``x`` (one launch)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Solve(Mode):
    """``A x = b``: reads ``b`` (cells) and the warm start ``x0`` (cells, optional); writes ``x`` (cells)."""

    b: torch.Tensor
    x: torch.Tensor
    x0: torch.Tensor | None = None
    adjoint: bool = False

    def start(self, work: torch.Tensor, stat: torch.Tensor, sc: torch.Tensor, batch: int, plan: Plan,
              rtol: float, serial: bool) -> None:
        if self.x0 is None:
            launch(_start_solve, self.b, work, stat, sc, batch, plan, rtol, serial)
        else:
            launch(_start_solve_warm, self.b, self.x0, work, stat, sc, batch, plan, rtol, serial)

    def finish(self, work: torch.Tensor, stat: torch.Tensor, sc: torch.Tensor, batch: int, plan: Plan,
               serial: bool) -> None:
        launch(_finish_solve, self.b, self.x, work, stat, sc, batch, plan, serial)


@dataclass(frozen=True)
class Project(Mode):
    """The pressure projection: reads ``v`` (faces) and the warm start ``x0`` (cells, optional); writes
    the pressure ``p`` (cells) and the projected velocity ``v_out`` (faces)."""

    v: torch.Tensor
    p: torch.Tensor
    v_out: torch.Tensor
    x0: torch.Tensor | None = None

    def start(self, work: torch.Tensor, stat: torch.Tensor, sc: torch.Tensor, batch: int, plan: Plan,
              rtol: float, serial: bool) -> None:
        if self.x0 is None:
            launch(_start_project, self.v, work, stat, sc, batch, plan, rtol, serial)
        else:
            launch(_start_project_warm, self.v, self.x0, work, stat, sc, batch, plan, rtol, serial)

    def finish(self, work: torch.Tensor, stat: torch.Tensor, sc: torch.Tensor, batch: int, plan: Plan,
               serial: bool) -> None:
        launch(_finish_project, self.v, self.p, self.v_out, work, stat, sc, batch, plan, serial)


@dataclass(frozen=True)
class ProjectAdjoint(Mode):
    """The projection's vector–Jacobian product: reads ``g_v_out`` (faces) and ``g_p`` (cells); writes
    the multiplier ``lam`` (cells) and the velocity gradient ``g_v`` (faces). Always starts cold."""

    g_v_out: torch.Tensor
    g_p: torch.Tensor
    lam: torch.Tensor
    g_v: torch.Tensor
    adjoint = True

    def start(self, work: torch.Tensor, stat: torch.Tensor, sc: torch.Tensor, batch: int, plan: Plan,
              rtol: float, serial: bool) -> None:
        launch(_start_adjoint, self.g_v_out, self.g_p, work, stat, sc, batch, plan, rtol, serial)

    def finish(self, work: torch.Tensor, stat: torch.Tensor, sc: torch.Tensor, batch: int, plan: Plan,
               serial: bool) -> None:
        launch(_finish_adjoint, self.g_v_out, self.lam, self.g_v, work, stat, sc, batch, plan, serial)
