"""Storage layout of a multigrid solve: the compile-time :class:`Plan` (levels, offsets, flags) and the
per-sample scalar slots.

Storage is flat per sample: ``work[b·NW + offset + i·w + j]`` holds CG's vectors and every level's
``x``/rhs; ``stat[b·NS + offset + …]`` (``b = 0`` for one shared mask) holds every level's ``d, 1/d,
c_y, c_x``, the fine fluid mask and its cell count, and the dense coarse inverse; ``sc[b·NSC + slot]``
holds the per-sample CG scalars.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations at definition time.

from dataclasses import dataclass

import taichi as ti

nd1 = ti.types.ndarray(ndim=1)

# Per-sample scalar slots of the ``sc`` buffer.
_RZ, _ACC, _RR, _TARGET, _DONE, _ITERS, _BB, _MEAN = range(8)
_NSC = 8


@dataclass(frozen=True)
class Plan:
    """Compile-time description of the solver (one hashable ``ti.template()`` argument).

    ``levels[l] = (h, w, x_offset, rhs_offset, stat_offset)``; level 0's ``x`` is CG's ``z`` and its rhs
    is CG's residual. ``stat`` holds per level ``d, 1/d, c_y, c_x`` (``n_l`` each)."""

    levels: tuple
    periodic: tuple  # (y, x): periodic axes wrap their couplings
    n: int  # fine cells per sample
    nw: int  # work floats per sample
    ns: int  # stat floats per mask sample
    mask_batched: bool  # one mask per sample (else one shared mask)
    fluid: int  # stat offset of the fine fluid mask (then the fluid cell count)
    coarse: tuple  # (0, inverse offset): dense; (1, sweeps): Gauss–Seidel
    sweeps: int
    alpha: float
    singular: bool  # no Dirichlet side: constant null space
    inv_h: tuple  # (1/h_y, 1/h_x) of the fine grid
    dirichlet: tuple  # ((y_lo, y_hi), (x_lo, x_hi)): Dirichlet (outflow) pressure sides
    parallel_level: int  # levels with fewer cells per sample run serial loops

    # CG vectors in ``work``: x, r, p, A p, z
    @property
    def x(self) -> int:
        return 0

    @property
    def r(self) -> int:
        return self.n

    @property
    def p(self) -> int:
        return 2 * self.n

    @property
    def ap(self) -> int:
        return 3 * self.n


@ti.func
def _stat_base(b, plan: ti.template()):
    """Offset of sample ``b``'s operator arrays in ``stat`` (0 when every sample shares one mask)."""
    base = 0
    if ti.static(plan.mask_batched):
        base = b * plan.ns
    return base
