"""Time integrators of :class:`~taichi_dp.solvers.NavierStokes`, injected as strategies:
``NavierStokes(..., time_stepping=SSPRK3())``.

- :class:`SplitStep` (the default): the operator-split step (forcing, viscosity, boundaries,
  semi-Lagrangian/MacCormack self-advection, projection), first order in time;
- :class:`RungeKutta`: an explicit Runge–Kutta method in Shu–Osher form with a pressure projection ``P``
  (boundaries and inflow region imposed, then projected) after every stage, on the explicit rate
  ``F(v) = −(v·∇)v + ν∇²v + f`` (:mod:`taichi_dp.ops.staggered_advection_rate`, central differences):

      v⁽⁰⁾ = vⁿ,    v⁽ⁱ⁾ = P( Σ_{k<i} α_ik v⁽ᵏ⁾ + Δt β_ik F(v⁽ᵏ⁾) ),    vⁿ⁺¹ = v⁽ˢ⁾.

  Presets: :class:`ForwardEuler` (one stage, first order), :class:`SSPRK2` (Heun, second order),
  :class:`SSPRK3` (Shu–Osher, third order):

      SSPRK3:  v¹ = P(vⁿ + Δt F(vⁿ)),  v² = P(¾ vⁿ + ¼ (v¹ + Δt F(v¹))),  vⁿ⁺¹ = P(⅓ vⁿ + ⅔ (v² + Δt F(v²))).

  The projected stages are divergence-free and every row of ``α`` sums to 1, so only the rate terms
  bring divergence for ``P`` to remove; a projection per stage keeps each stage on the divergence-free
  manifold, which keeps the velocity's temporal order (the pressure is a Lagrange multiplier).

**Stability** (checked): the central advection rate has imaginary eigenvalues up to the advective Courant
number ``C = Δt Σ_a max|v_a| / h_a`` (:func:`advective_courant`), the Laplacian real ones down to
``−4 ν Δt Σ_a 1/h_a²``. Each method carries both bounds as data: ``courant_limit`` on ``C`` (checked on
``vⁿ`` at every step, a ``ValueError`` if exceeded; skipped when the runtime's ``check_inputs`` is off)
and ``diffusion_limit`` on ``ν Δt Σ 1/h²`` (checked when the stepper is built): the real stability
interval of the method's polynomial over 4 (Euler and SSPRK2: ``2/4``; SSPRK3: ``2.5127/4``). SSPRK3's
region contains the imaginary axis up to ``√3``, its ``courant_limit``. Forward Euler's and SSPRK2's do not
contain it at all: undamped central advection modes grow by ``√(1 + C²)`` (Euler) or ``√(1 + C⁴/4)``
(SSPRK2) per step, which viscosity must damp; their ``courant_limit = 1`` bounds that growth (SSPRK2:
≤ 12 % per step at ``C = 1``, ≤ 0.8 % at ``C = ½``). Use SSPRK3 for (nearly) inviscid flows. The two
checks bound each term alone; with both large, keep each well inside its limit.

Every stage is made of differentiable operators (the rate kernel, the projection with its implicit
adjoint), so gradients flow to ``vⁿ``, ``ν``, ``Δt`` and the forcing.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from ..grid import Grid
from ..runtime import ensure_init

__all__ = [
    "SPLIT_STEP",
    "SSPRK2",
    "SSPRK3",
    "ForwardEuler",
    "ProjectedSystem",
    "RungeKutta",
    "SplitStep",
    "TimeStepping",
    "advective_courant",
]


class ProjectedSystem(Protocol):
    """What an integrator needs from a stepper (``NavierStokes`` provides it)."""

    grid: Grid

    def split_step(self, v: torch.Tensor, pressure_guess: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The operator-split step ``(v⁺, p)``."""
        ...

    def rate(self, v: torch.Tensor) -> torch.Tensor:
        """The explicit rate ``F(v)`` (a staggered tensor of ``v``'s shape)."""
        ...

    def constrain(self, v: torch.Tensor, pressure_guess: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``P(v)``: boundaries imposed and projected; returns ``(v, p)``."""
        ...

    def impose(self, v: torch.Tensor) -> torch.Tensor:
        """Boundary conditions, obstacle faces and the inflow region imposed on ``v``."""
        ...

    def param(self, name: str, batch: int) -> torch.Tensor:
        """A float or ``(B,)`` field as a ``(B,)`` tensor."""
        ...


class TimeStepping(ABC):
    """Base of the integrators: :meth:`step` advances a :class:`ProjectedSystem` by one ``Δt``."""

    order: int
    """The temporal order of accuracy of the velocity."""

    @abstractmethod
    def step(
        self, system: ProjectedSystem, v: torch.Tensor, pressure_guess: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step ``(v⁺, p)`` of ``system`` from ``v`` (validated by the caller)."""


@dataclass(frozen=True)
class SplitStep(TimeStepping):
    """The operator-split step of :class:`~taichi_dp.solvers.NavierStokes` (its default): forcing, viscosity
    (explicit sub-steps or implicit), boundaries, semi-Lagrangian/MacCormack self-advection, projection.
    First order in time; semi-Lagrangian advection is stable at any Courant number."""

    order: ClassVar[int] = 1

    def step(
        self, system: ProjectedSystem, v: torch.Tensor, pressure_guess: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return system.split_step(v, pressure_guess)


SPLIT_STEP = SplitStep()
"""The default ``time_stepping`` of :class:`~taichi_dp.solvers.NavierStokes`."""


def advective_courant(v: torch.Tensor, dt: torch.Tensor, grid: Grid) -> torch.Tensor:
    """The advective Courant number ``C_b = Δt_b Σ_a max|v_a| / h_a`` per sample ``(B,)`` of a staggered
    velocity ``(B, nd, *(N+1))`` (padding is 0, so it does not count); not differentiable (it only checks
    stability). ``dt``: ``(B,)``."""
    with torch.no_grad():
        per_axis = v.detach().abs().flatten(2).amax(dim=2)  # (B, nd)
        inv_h = torch.tensor([1.0 / h for h in grid.spacing], dtype=per_axis.dtype, device=per_axis.device)
        return dt.detach().abs() * (per_axis * inv_h).sum(dim=1)


def _rows(name: str, rows: object, stages: int | None = None) -> tuple[tuple[float, ...], ...]:
    """Validate a lower-triangular Shu–Osher table: row ``i`` has ``i + 1`` finite entries."""
    if not isinstance(rows, tuple | list) or len(rows) == 0 or (stages is not None and len(rows) != stages):
        want = "a non-empty tuple of rows" if stages is None else f"{stages} rows (one per stage)"
        raise ValueError(f"{name} must be {want}, got {rows!r}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, tuple | list) or len(row) != i + 1:
            raise ValueError(f"{name}[{i}] must have {i + 1} entries (stage {i + 1} combines stages 0..{i}), got {row!r}")
        for x in row:
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                raise TypeError(f"{name}[{i}] entries must be finite floats, got {row!r}")
        out.append(tuple(float(x) for x in row))
    return tuple(out)


@dataclass(frozen=True)
class RungeKutta(TimeStepping):
    """An explicit Runge–Kutta method in Shu–Osher form with a projection after each stage (module
    docstring), its coefficients as data.

    Args:
        alpha: lower-triangular ``((α_10,), (α_20, α_21), ...)``: row ``i`` weights the stages ``0..i``
            (``v⁽⁰⁾ = vⁿ``) in stage ``i + 1``; every row sums to 1.
        beta: the same shape, the weights ``β_ik`` of ``Δt F(v⁽ᵏ⁾)``; every row sums to a value > 0.
        order: the method's order of accuracy (documentation and tests; not derived from the tables).
        courant_limit: the largest advective Courant number ``Δt Σ_a max|v_a|/h_a`` accepted (checked on
            ``vⁿ`` every step).
        diffusion_limit: the largest ``ν Δt Σ_a 1/h_a²`` accepted (checked when the stepper is built).
    """

    alpha: tuple[tuple[float, ...], ...]
    beta: tuple[tuple[float, ...], ...]
    order: int
    courant_limit: float
    diffusion_limit: float

    def __post_init__(self) -> None:
        alpha = _rows("alpha", self.alpha)
        beta = _rows("beta", self.beta, len(alpha))
        for i, (a, b) in enumerate(zip(alpha, beta)):
            if abs(sum(a) - 1.0) > 1e-12:
                raise ValueError(f"alpha[{i}] must sum to 1 (a consistent combination of stages), got {a!r} (sum {sum(a)})")
            if not sum(b) > 0:
                raise ValueError(f"beta[{i}] must sum to a value > 0 (each stage advances by a rate), got {b!r}")
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"order must be an integer >= 1, got {self.order!r}")
        for name in ("courant_limit", "diffusion_limit"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, int | float) or not (math.isfinite(x) and x > 0):
                raise ValueError(f"{name} must be a finite float > 0, got {x!r}")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)

    @property
    def stages(self) -> int:
        """The number of stages (rate evaluations and projections per step)."""
        return len(self.alpha)

    @property
    def name(self) -> str:
        """The class name, for messages."""
        return type(self).__name__

    def check_courant(self, v: torch.Tensor, dt: torch.Tensor, grid: Grid) -> None:
        """``ValueError`` if the advective Courant number of ``v`` (:func:`advective_courant`) exceeds
        ``courant_limit`` (one host read)."""
        c = float(advective_courant(v, dt, grid).max())
        if not c <= self.courant_limit * (1.0 + 1e-12):
            raise ValueError(
                f"dt too large for {self.name} time stepping: the advective Courant number dt*sum_a(max|v_a|/h_a) = "
                f"{c:.4g} exceeds {self.courant_limit:.4g} (central advection is unstable beyond); reduce dt by a "
                f"factor {c / self.courant_limit:.3g} or more, or use time_stepping=SplitStep()"
            )

    def integrate(
        self,
        v: torch.Tensor,
        dt: torch.Tensor,
        rate: Callable[[torch.Tensor], torch.Tensor],
        constrain: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]],
        pressure_guess: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stages on their own: ``v⁽ⁱ⁾ = constrain(Σ_k α_ik v⁽ᵏ⁾ + Δt β_ik rate(v⁽ᵏ⁾))``.

        Args:
            v: the state ``vⁿ`` ``(B, ...)`` (boundaries already imposed).
            dt: ``(B,)`` time steps.
            rate: ``F``; evaluated once per stage whose ``β`` column is non-zero.
            constrain: ``P``, returning ``(v, p)`` with ``p`` the projection's potential for the stage's
                increment ``Δt Σ_k β_ik (…)``.
            pressure_guess: warm start in the units this method returns (see below), or ``None``.

        Returns:
            ``(vⁿ⁺¹, p)`` with ``p`` the last stage's potential divided by that stage's ``Σ_k β_ik``: the
            same ``Δt``-scaled pressure as the split step's (each stage's guess is the previous one's
            ``p`` rescaled that way).
        """
        scale = dt.view(-1, *([1] * (v.ndim - 1)))
        stages, rates = [v], {}
        p_step = pressure_guess  # Δt-scaled pressure estimate
        for a_row, b_row in zip(self.alpha, self.beta):
            total = None
            for k, (a, b) in enumerate(zip(a_row, b_row)):
                term = None
                if a != 0.0:
                    term = a * stages[k]
                if b != 0.0:
                    if k not in rates:
                        rates[k] = rate(stages[k])
                    inc = (b * scale) * rates[k]
                    term = inc if term is None else term + inc
                if term is not None:
                    total = term if total is None else total + term
            weight = sum(b_row)
            guess = None if p_step is None else p_step * weight
            v_next, p = constrain(total, guess)
            stages.append(v_next)
            p_step = p / weight
        return stages[-1], p_step

    def step(
        self, system: ProjectedSystem, v: torch.Tensor, pressure_guess: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Impose the boundaries on ``vⁿ``, check the Courant number, then :meth:`integrate`."""
        dt = system.param("dt", v.shape[0])
        v = system.impose(v)
        if ensure_init().check_inputs:
            self.check_courant(v, dt, system.grid)
        return self.integrate(v, dt, system.rate, system.constrain, pressure_guess)


@dataclass(frozen=True)
class ForwardEuler(RungeKutta):
    """One stage, first order: ``vⁿ⁺¹ = P(vⁿ + Δt F(vⁿ))`` (for order studies: its stability region
    misses the imaginary axis, so it needs viscosity to damp central advection; module docstring)."""

    alpha: tuple[tuple[float, ...], ...] = ((1.0,),)
    beta: tuple[tuple[float, ...], ...] = ((1.0,),)
    order: int = 1
    courant_limit: float = 1.0
    diffusion_limit: float = 0.5


@dataclass(frozen=True)
class SSPRK2(RungeKutta):
    """Heun's method, the optimal two-stage strong-stability-preserving RK (second order):
    ``v¹ = P(vⁿ + Δt F(vⁿ))``, ``vⁿ⁺¹ = P(½ vⁿ + ½ (v¹ + Δt F(v¹)))``."""

    alpha: tuple[tuple[float, ...], ...] = ((1.0,), (0.5, 0.5))
    beta: tuple[tuple[float, ...], ...] = ((1.0,), (0.0, 0.5))
    order: int = 2
    courant_limit: float = 1.0
    diffusion_limit: float = 0.5


@dataclass(frozen=True)
class SSPRK3(RungeKutta):
    """Shu–Osher's three-stage strong-stability-preserving RK (third order):
    ``v¹ = P(vⁿ + Δt F(vⁿ))``, ``v² = P(¾ vⁿ + ¼ (v¹ + Δt F(v¹)))``, ``vⁿ⁺¹ = P(⅓ vⁿ + ⅔ (v² + Δt F(v²)))``."""

    alpha: tuple[tuple[float, ...], ...] = ((1.0,), (0.75, 0.25), (1.0 / 3.0, 0.0, 2.0 / 3.0))
    beta: tuple[tuple[float, ...], ...] = ((1.0,), (0.0, 0.25), (0.0, 0.0, 2.0 / 3.0))
    order: int = 3
    courant_limit: float = math.sqrt(3.0)
    diffusion_limit: float = 0.628  # 2.5127/4: the real stability interval of 1 + z + z²/2 + z³/6
