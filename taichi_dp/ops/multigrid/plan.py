"""Storage layout of a multigrid solve: the compile-time :class:`Plan` (levels, offsets, flags) and the
per-sample scalar slots.

Storage is flat per sample, cells in row-major order (the last axis fastest, as in the tensors):
``work[b·NW + offset + k]`` holds CG's vectors and every level's ``x``/rhs; ``stat[b·NS + offset + …]``
(``b = 0`` for one shared mask) holds every level's ``d, 1/d`` and one lower-face coupling array per axis
(``c_0 … c_{nd−1}``), the fine fluid mask and its cell count, and the dense coarse inverse;
``sc[b·NSC + slot]`` holds the per-sample CG scalars.

Loops. Every cell loop runs over ``(sample, row)`` in parallel and over the row (the last axis) inside;
a *row* is the flat index over all axes but the last, decoded into per-axis indices by :func:`row_index`
only where a stencil needs them. In 2D a row is ``i`` and the loops are the familiar ``(b, i)`` × ``j``.
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

    ``levels[l] = (shape, x_offset, rhs_offset, stat_offset)`` with ``shape`` the level's cells per axis;
    level 0's ``x`` is CG's ``z`` and its rhs is CG's residual. ``stat`` holds per level ``d, 1/d`` and the
    couplings ``c_0 … c_{nd−1}`` (``n_l`` each)."""

    levels: tuple
    periodic: tuple  # per axis: periodic axes wrap their couplings
    n: int  # fine cells per sample
    nw: int  # work floats per sample
    ns: int  # stat floats per mask sample
    mask_batched: bool  # one mask per sample (else one shared mask)
    fluid: int  # stat offset of the fine fluid mask (then the fluid cell count)
    coarse: tuple  # (0, inverse offset): dense; (1, sweeps): Gauss–Seidel
    sweeps: int
    alpha: float
    singular: bool  # no Dirichlet side: constant null space
    inv_h: tuple  # 1/h per axis of the fine grid
    dirichlet: tuple  # per axis (lo, hi): Dirichlet (outflow) pressure sides
    parallel_level: int  # levels with fewer cells per sample run serial loops

    @property
    def nd(self) -> int:
        """Spatial axes."""
        return len(self.periodic)

    @property
    def shape(self) -> tuple:
        """Fine cells per axis."""
        return self.levels[0][0]

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


def rows(shape: tuple) -> int:
    """Rows of a level (cells over the row length ``shape[-1]``)."""
    n = 1
    for s in shape[:-1]:
        n *= s
    return n


@ti.func
def row_index(row, j, shape: ti.template()):
    """The per-axis cell index (``ti.Vector`` of ``nd`` ints) of entry ``j`` of flat ``row`` on a level of
    ``shape``: the row decoded axis by axis (last of the leading axes fastest), then ``j``."""
    nd = ti.static(len(shape))
    ix = ti.Vector([0] * nd, dt=ti.i32)
    r = row
    for a in ti.static(range(nd - 2, -1, -1)):
        if ti.static(a > 0):
            ix[a] = r % shape[a]
            r = r // shape[a]
        else:
            ix[a] = r
    ix[nd - 1] = j
    return ix


def strides(shape: tuple) -> tuple:
    """Row-major strides (in cells) of a level of ``shape``."""
    out, s = [], 1
    for n in reversed(shape):
        out.append(s)
        s *= n
    return tuple(reversed(out))
