"""The solver object: one :class:`PoissonSolver` per mask, its buffers, the choice between the one-launch
serial path and the per-iteration parallel path, and the solve driver shared by the three launch modes
(:mod:`.modes`): start, iterate, finish, report.

Launches. The CPU arch runs the whole solve in three launches (start, all iterations with a per-sample
convergence test inside the kernel, finish), with serial loops: on this hardware a parallel Taichi loop
costs ~100 µs of hand-off, more than a whole V-cycle on the karman grids. Other archs run one launch
per iteration with parallel loops and read the convergence flags on the host every :data:`CHECK_EVERY`
iterations.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ... import bridge
from ...bridge import launch
from ...grid import Grid
from ...runtime import ensure_init
from .. import linear_solve
from ..linear_solve import NotConvergedWarning
from .hierarchy import build
from .modes import Mode, Project, ProjectAdjoint, Solve
from .pcg import _pcg_all, _pcg_one
from .plan import _BB, _DONE, _ITERS, _NSC, _RR
from .stencil import _apply_only
from .vcycle import _vcycle_only

PARALLEL_ABOVE = 1 << 21
"""On the CPU arch, solves with at least this many cells (batch × grid) use parallel loops and one launch
per iteration; smaller ones run serially in one launch (measured on 2 cores: serial wins up to ~1M cells)."""

CHECK_EVERY = 4
"""Off the serial CPU path, PCG iterations launched between two host reads of the convergence flags (a
converged sample takes zero steps, so the extra iterations change nothing; one host round trip per
``CHECK_EVERY`` iterations instead of one per iteration)."""


class PoissonSolver:
    """Multigrid-preconditioned CG for ``A x = b`` on ``grid`` with obstacle mask ``fluid`` and pressure
    boundary codes ``bc`` (see :mod:`taichi_dp.ops.multigrid`); one instance per mask, reused across calls.

    Args:
        grid: the 2D or 3D grid; fluid: ``(B or 1, 1, *spatial)`` 0/1 mask; bc: pressure boundary codes.
        sweeps: red–black Gauss–Seidel sweeps before and after each coarse correction.
        alpha: coarse-correction scaling (over-correction), ``0 < α < 2``.

    The defaults were chosen by measurement (karman scene, rtol 1e-3, 2-core CPU): α = 1 needs 10 / 20 /
    28 iterations at 32×64 / 128×256 / 256×512, α = 1.8 needs 5 / 6 / 6; one sweep was faster than two or
    three (fewer passes per iteration outweigh the extra iteration).
        min_size: stop coarsening when an axis would drop below this many cells (or become odd).
        openings: the face open fractions of the cut-cell operator ``A = −D θ G`` instead of the mask's
            (:func:`.hierarchy.face_operator`; ``fluid`` is then its cells with an open face).
    """

    def __init__(
        self,
        grid: Grid,
        fluid: torch.Tensor,
        bc: tuple[int, ...],
        *,
        sweeps: int = 1,
        alpha: float = 1.8,
        min_size: int = 4,
        openings: torch.Tensor | None = None,
    ) -> None:
        if not 0.0 < alpha < 2.0:
            raise ValueError(f"alpha must be in (0, 2) to keep the V-cycle positive definite, got {alpha}")
        rt = ensure_init()
        self.grid, self.bc, self.dtype, self.device = grid, tuple(bc), fluid.dtype, fluid.device
        self.plan, self.stat, self.n_levels = build(
            grid, fluid, bc, rt, sweeps=sweeps, alpha=alpha, min_size=min_size, openings=openings
        )
        self.mask_batch = fluid.shape[0]
        self._work: dict[int, torch.Tensor] = {}

    # -- buffers
    def _buffers(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask_batch not in (1, batch):
            raise ValueError(f"the solver's mask has batch size {self.mask_batch} but the right-hand side has {batch}")
        work = self._work.get(batch)
        if work is None:
            work = self._work[batch] = torch.zeros(batch * self.plan.nw, dtype=self.stat.dtype, device=self.device)
        return work, torch.zeros(batch * _NSC, dtype=self.stat.dtype, device=self.device)

    def serial(self, batch: int) -> bool:
        """Whole solves in one launch with serial loops (the CPU arch below :data:`PARALLEL_ABOVE`, unless
        :data:`taichi_dp.bridge.FORCE_PARALLEL`)."""
        return ensure_init().arch == "cpu" and batch * self.plan.n < PARALLEL_ABOVE and not bridge.FORCE_PARALLEL

    # -- the solve
    def solve(
        self,
        b: torch.Tensor,
        x0: torch.Tensor | None = None,
        *,
        rtol: float = 1e-5,
        max_iter: int = 5000,
        adjoint: bool = False,
    ) -> torch.Tensor:
        """Solve ``A x = b`` for ``b`` ``(B, 1, *spatial)`` without autograd: CG on the fluid cells to
        ``‖r‖ ≤ rtol·‖b_f‖`` per sample (warm start ``x0``), ``x = b`` on solid cells; for a singular
        system ``b`` is projected onto the range and ``x`` has zero fluid mean. Records
        :data:`taichi_dp.ops.linear_solve.last_solve`; warns :class:`NotConvergedWarning` with the residual
        when ``max_iter`` is reached."""
        bf = b.detach().contiguous().view(-1)
        out = torch.empty_like(bf)
        self._run(b.shape[0], Solve(b=bf, x=out, x0=_flat(x0), adjoint=adjoint), rtol, max_iter)
        return out.view(b.shape)

    def project(
        self, v: torch.Tensor, x0: torch.Tensor | None = None, *, rtol: float = 1e-5, max_iter: int = 5000
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pressure projection of a staggered velocity ``v`` ``(B, nd, *(N + 1))`` (boundary conditions
        already imposed), without autograd: ``p = S(−f·D v)``, ``v⁺ = v − G p`` (padding copied), in three
        launches. Returns ``(v⁺, p)`` with ``p`` ``(B, 1, *spatial)``."""
        batch = v.shape[0]
        vf = v.detach().contiguous().view(-1)
        p = torch.empty(batch * self.plan.n, dtype=vf.dtype, device=vf.device)
        out = torch.empty_like(vf)
        self._run(batch, Project(v=vf, p=p, v_out=out, x0=_flat(x0)), rtol, max_iter)
        return out.view(v.shape), p.view(batch, 1, *self.grid.shape)

    def project_adjoint(
        self, g_out: torch.Tensor, g_p: torch.Tensor, *, rtol: float = 1e-5, max_iter: int = 5000
    ) -> torch.Tensor:
        """The vector–Jacobian product of :meth:`project`: ``g_v = g_out − Dᵀ(f·λ)`` with
        ``λ = S(g_p − Gᵀ g_out)`` (``S`` symmetric: one more solve, ``rtol`` relative to its rhs; the
        derivation is in :mod:`.adjoint`)."""
        gf, pf = g_out.detach().contiguous().view(-1), g_p.detach().contiguous().view(-1)
        g_v = torch.empty_like(gf)
        self._run(g_out.shape[0], ProjectAdjoint(g_v_out=gf, g_p=pf, lam=torch.empty_like(pf), g_v=g_v), rtol, max_iter)
        return g_v.view(g_out.shape)

    def _run(self, batch: int, mode: Mode, rtol: float, max_iter: int) -> None:
        """Start (the mode's right-hand side), iterate, finish (the mode's outputs), report."""
        work, sc = self._buffers(batch)
        serial = self.serial(batch)
        if serial and ensure_init().arch != "cpu":  # measured: on Vulkan (SPIR-V) the one-launch solve
            # leaves every sample after the first unsolved; the parallel path is the one GPUs use
            raise RuntimeError("the one-launch serial PCG solve is CPU-only; other archs use the parallel path")
        mode.start(work, self.stat, sc, batch, self.plan, float(rtol), serial)
        if serial:
            launch(_pcg_all, work, self.stat, sc, batch, self.plan, int(max_iter))
        else:  # converged samples take zero steps, so reading the flags every few iterations is exact
            done = 0
            while done < max_iter and not bool((sc[_DONE::_NSC] != 0).all()):
                for _ in range(min(CHECK_EVERY, max_iter - done)):
                    launch(_pcg_one, work, self.stat, sc, batch, self.plan)
                done += CHECK_EVERY
        mode.finish(work, self.stat, sc, batch, self.plan, serial)
        self._report(sc, rtol, max_iter, mode.adjoint)

    def _report(self, sc: torch.Tensor, rtol: float, max_iter: int, adjoint: bool) -> None:
        rows = sc.view(-1, _NSC).tolist()  # one device → host copy, then plain Python
        info = linear_solve.last_solve
        info.iterations = int(max(r[_ITERS] for r in rows))
        info.residual = max(math.sqrt(r[_RR] / r[_BB]) if r[_BB] > 0 else 0.0 for r in rows)
        info.converged, info.adjoint = all(r[_DONE] != 0 for r in rows), adjoint
        if not info.converged:
            warnings.warn(
                f"{'adjoint ' if adjoint else ''}multigrid-PCG did not converge in {max_iter} iterations: "
                f"relative residual {info.residual:.3e} > rtol {rtol:.1e}",
                NotConvergedWarning,
                stacklevel=4,
            )

    # -- the pieces, for tests and diagnostics
    def _run_piece(self, kernel: Any, vec: torch.Tensor, into: int, out_of: int) -> torch.Tensor:
        batch, n = vec.shape[0], self.plan.n
        work, sc = self._buffers(batch)
        w = work.view(batch, self.plan.nw)
        w[:, into : into + n] = vec.reshape(batch, n)
        launch(kernel, work, self.stat, sc, batch, self.plan, self.serial(batch))
        return w[:, out_of : out_of + n].clone().view(vec.shape)

    def vcycle(self, r: torch.Tensor) -> torch.Tensor:
        """The preconditioner ``M⁻¹ r`` for ``r`` ``(B, 1, *spatial)`` (zero on solid cells)."""
        return self._run_piece(_vcycle_only, r, self.plan.r, self.plan.levels[0][1])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` ``(B, 1, *spatial)``."""
        return self._run_piece(_apply_only, x, self.plan.p, self.plan.ap)


def _flat(x: torch.Tensor | None) -> torch.Tensor | None:
    """A warm start as the flat contiguous array the kernels read (``None`` stays ``None``)."""
    return None if x is None else x.detach().contiguous().view(-1)
