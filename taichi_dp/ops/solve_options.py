"""How to solve one linear system: :class:`SolveOptions` (tolerance, iteration cap, method).

One object per linear solve of a step (as PhiFlow's ``Solve``): ``NavierStokes(pressure=..., viscosity=...)``.
It lives in :mod:`taichi_dp.ops` (it imports nothing but the standard library) so that operators can take
it as well as steppers. Each ``method`` names one algorithm:

- ``"mgpcg"``: conjugate gradients preconditioned by a geometric multigrid V-cycle (the pressure
  Poisson solve's default; :mod:`taichi_dp.ops.multigrid`);
- ``"cg"``: plain conjugate gradients (:func:`taichi_dp.ops.linear_solve.solve_spd`);
- ``"fft"``: the exact spectral pressure solve of a fully periodic box without obstacles
  (:mod:`taichi_dp.ops.spectral_projection`; :func:`~taichi_dp.ops.spectral_projection.spectral_applicable`
  says when it applies). Not iterative: ``rtol`` and ``max_iter`` are validated but unused.

The adjoint solve of the backward pass uses the same options (its tolerance relative to the incoming
gradient).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

METHODS = ("mgpcg", "cg", "fft")
"""The solver algorithms a :class:`SolveOptions` can name."""

_PRECONDITIONER = {"mgpcg": "multigrid", "cg": "none", "fft": "fft"}  # method -> ops.pressure's ``preconditioner=``


@dataclass(frozen=True)
class SolveOptions:
    """Options of one iterative linear solve, validated at construction.

    Args:
        rtol: relative residual tolerance, a finite number in ``(0, 1)``.
        max_iter: iteration cap, an integer ≥ 1 (a ``NotConvergedWarning`` reports a solve that hits it).
        method: the algorithm, one of :data:`METHODS` (``"mgpcg"`` multigrid-preconditioned CG, ``"cg"``
            plain CG, ``"fft"`` the exact spectral pressure solve of a fully periodic box without obstacles,
            for which ``rtol`` and ``max_iter`` are unused). Not every solve offers every method: the
            stepper that takes the options says which.

    ``SolveOptions()`` is the pressure solve's default: ``rtol=1e-5, max_iter=5000, method="mgpcg"``.
    """

    rtol: float = 1e-5
    max_iter: int = 5000
    method: str = "mgpcg"

    def __post_init__(self) -> None:
        rtol, max_iter, method = self.rtol, self.max_iter, self.method
        if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real):
            raise TypeError(f"rtol must be a float in (0, 1), got {type(rtol).__name__} {rtol!r}")
        if not (math.isfinite(rtol) and 0 < rtol < 1):
            raise ValueError(f"rtol must be a finite float in (0, 1), got {rtol!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
            raise TypeError(f"max_iter must be an integer >= 1, got {type(max_iter).__name__} {max_iter!r}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        object.__setattr__(self, "rtol", float(rtol))
        object.__setattr__(self, "max_iter", int(max_iter))


def check_solve_options(name: str, options: object, methods: tuple[str, ...] = METHODS) -> SolveOptions:
    """``options`` if it is a :class:`SolveOptions` whose method is among ``methods``; otherwise a
    ``TypeError``/``ValueError`` naming the argument ``name``."""
    if not isinstance(options, SolveOptions):
        raise TypeError(
            f"{name} must be a SolveOptions(rtol=..., max_iter=..., method=...), got {type(options).__name__} {options!r}"
        )
    if options.method not in methods:
        raise ValueError(f"{name}.method must be one of {methods} for this solve, got {options.method!r}")
    return options


def projection_kwargs(options: SolveOptions) -> dict[str, Any]:
    """The keyword arguments of :func:`taichi_dp.ops.pressure.project` / ``apply_projection`` for
    ``options``: ``rtol``, ``max_iter`` and ``preconditioner`` (``"multigrid"`` for ``"mgpcg"``,
    ``"none"`` for ``"cg"``, ``"fft"`` for ``"fft"``)."""
    return {"rtol": options.rtol, "max_iter": options.max_iter, "preconditioner": _PRECONDITIONER[options.method]}
