"""Fused multigrid-preconditioned conjugate gradients for the masked pressure Poisson system.

The operator is :mod:`taichi_dp.ops.pressure` 's ``A`` (the −Laplacian on fluid cells with face weights
from the fluid mask, identity rows on solid cells), written with precomputed couplings:

    (A x)_c = d_c x_c − Σ_faces f  c_f x_{n(f)}          c_f = w_c w_n / h²   (0 into a solid cell)

``d`` is the diagonal (Dirichlet boundary faces add ``2/h²``; 1 on solid cells) and each cell stores the
coupling through its *lower* face per axis (the upper face's is the next cell's), so ``A`` is symmetric
by construction. Everything boundary- and obstacle-specific lives in these arrays, computed once per
mask in torch; the kernels only read them.

Solver. Preconditioned CG (``rtol`` relative to ``‖b‖``) with one geometric V-cycle per iteration
(Galerkin hierarchy, red–black Gauss–Seidel smoothing in symmetric order, over-corrected coarse
correction, dense or Gauss–Seidel coarsest solve), so the preconditioner is a fixed symmetric positive
definite operator. On the CPU arch a whole solve is three launches with serial loops; other archs launch
one parallel iteration at a time. Differentiation: :func:`project` is linear in ``v`` and the solution
operator is symmetric, so its backward pass is one more solve (derivation in :mod:`.adjoint`).

One concern per module:

- :mod:`.plan` — storage layout: the compile-time :class:`~.plan.Plan` and the per-sample scalar slots;
- :mod:`.stencil` — neighbours, off-diagonal sum and ``(A x)`` at a cell of any level;
- :mod:`.vcycle` — Gauss–Seidel colours, restriction, prolongation, coarsest solve, the V-cycle;
- :mod:`.pcg` — the mode-independent CG start, iteration, iteration loops and solution pieces;
- :mod:`.faces` — divergence and gradient face operators and their transposes (right-hand sides and
  face outputs of the projection and its adjoint);
- :mod:`.modes` — the launch modes :class:`Solve`, :class:`Project`, :class:`ProjectAdjoint`: the arrays
  each reads and writes, and its start and finish kernels;
- :mod:`.hierarchy` — operator arrays, Galerkin coarse levels, dense coarsest inverse, packing;
- :mod:`.solver` — :class:`PoissonSolver`: buffers, serial/parallel path, the solve driver, reporting;
- :mod:`.adjoint` — the differentiable :func:`project` with its hand-written adjoint;
- :mod:`.cache` — :func:`solver_for`, the per-mask solver cache keyed on the runtime too.
"""

from ..linear_solve import NotConvergedWarning
from .adjoint import project
from .cache import CACHE_SIZE, cut_cell_solver_for, solver_for
from .hierarchy import COARSE_SWEEPS, MAX_DENSE_COARSE, PARALLEL_LEVEL, coupled_faces, couplings, diagonal, face_operator
from .hierarchy import _dense as _dense  # tests assemble levels with these
from .hierarchy import _galerkin as _galerkin
from .modes import Mode, Project, ProjectAdjoint, Solve
from .plan import Plan
from .solver import CHECK_EVERY, PARALLEL_ABOVE, PoissonSolver

__all__ = [
    "CACHE_SIZE",
    "CHECK_EVERY",
    "COARSE_SWEEPS",
    "MAX_DENSE_COARSE",
    "PARALLEL_ABOVE",
    "PARALLEL_LEVEL",
    "Mode",
    "NotConvergedWarning",
    "Plan",
    "PoissonSolver",
    "Project",
    "ProjectAdjoint",
    "Solve",
    "coupled_faces",
    "couplings",
    "cut_cell_solver_for",
    "diagonal",
    "face_operator",
    "project",
    "solver_for",
]
