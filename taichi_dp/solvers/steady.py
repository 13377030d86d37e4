"""Run a stepper until its state stops changing: :func:`run_to_steady`.

Residual (dimension: 1/time, independent of the step size): every ``check_every = k`` steps,

    r = max |v_{n+k} − v_n| / (k Δt · V),      V = max |v_{n+k}|   (or the fixed ``velocity_scale``),

i.e. the largest rate of change ``|∂v/∂t|`` averaged over the last ``k`` steps, relative to the largest
velocity: ``r = 1e-6`` means the flow changes by a millionth of its peak velocity per unit time. Per
batch sample; the largest is reported. A flow that decays towards rest (Taylor–Green) keeps a constant
relative rate and never converges by this measure: pass ``velocity_scale`` (an absolute reference) there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..runtime import check_positive
from .base import check_count


class SteadyState(NamedTuple):
    """What :func:`run_to_steady` returns: the final state, the number of steps taken, and the last
    residual (``residual <= tol`` unless ``on_fail="warn"`` let a non-converged run through)."""

    v: torch.Tensor
    steps: int
    residual: float


class SteadyStateError(RuntimeError):
    """:func:`run_to_steady` did not reach ``tol`` within ``max_steps`` (or the state stopped being finite).
    The last state, step count and residual are attached, so a caller can continue from them."""

    def __init__(self, message: str, v: torch.Tensor, steps: int, residual: float) -> None:
        super().__init__(message)
        self.v, self.steps, self.residual = v, steps, residual


def _step_size(stepper: object, dt: float | torch.Tensor | None, batch: int) -> torch.Tensor:
    """``Δt`` per sample ``(B,)`` (float64, CPU): ``dt`` if given, else ``stepper.dt``."""
    value = getattr(stepper, "dt", None) if dt is None else dt
    if value is None:
        raise TypeError("run_to_steady needs the step size: the stepper has no .dt attribute; pass dt=")
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu", torch.float64).reshape(-1)
        if t.numel() not in (1, batch) or not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
            raise ValueError(f"dt must be finite and > 0, a float or a (1 or {batch},) tensor; got {t.tolist()}")
        return t.expand(batch)
    return torch.full((batch,), check_positive("dt", value), dtype=torch.float64)


def run_to_steady(
    stepper: Callable[[torch.Tensor], torch.Tensor],
    v0: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_steps: int = 10_000,
    check_every: int = 10,
    dt: float | torch.Tensor | None = None,
    velocity_scale: float | None = None,
    on_fail: str = "raise",
    grad: bool = False,
) -> SteadyState:
    """Step ``v0`` until the residual (module docstring: the largest ``|∂v/∂t|`` relative to the largest
    ``|v|``, in 1/time) is at most ``tol``, checking every ``check_every`` steps.

    Args:
        stepper: any ``state_next = stepper(state)``, e.g. ``scene.stepper`` of
            :func:`taichi_dp.scenes.lid_driven_cavity`; states ``(B, C, *spatial)``.
        v0: initial state.
        tol: residual to reach, > 0 (1/time; ``1e-6`` ≈ a millionth of the peak velocity per unit time).
        max_steps: give up after this many steps (≥ 1).
        check_every: steps between residual checks (≥ 1); the residual averages over them.
        dt: the step size, when the stepper has no ``.dt`` (or to override it): a float or ``(B,)`` tensor.
        velocity_scale: an absolute reference speed ``V`` instead of ``max |v|`` (for flows that decay
            to rest).
        on_fail: ``"raise"`` (default) raises :class:`SteadyStateError` when ``max_steps`` pass without
            convergence; ``"warn"`` issues a ``RuntimeWarning`` and returns the unconverged result (its
            ``residual > tol`` says so). A state that stops being finite always raises.
        grad: keep the autograd graph (default ``False``: runs under ``torch.no_grad()``; a long run with
            a graph holds every intermediate state).

    Returns:
        :class:`SteadyState` ``(v, steps, residual)``.
    """
    if not callable(stepper):
        raise TypeError(f"stepper must be a callable state -> next state, got {type(stepper).__name__}")
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"v0 must be a torch.Tensor, got {type(v0).__name__}")
    if v0.ndim < 2:
        raise ValueError(f"v0 must have layout (B, C, *spatial), got shape {tuple(v0.shape)}")
    tol = check_positive("tol", tol)
    max_steps, check_every = check_count("max_steps", max_steps), check_count("check_every", check_every)
    scale = None if velocity_scale is None else check_positive("velocity_scale", velocity_scale)
    if on_fail not in ("raise", "warn"):
        raise ValueError(f"on_fail must be 'raise' or 'warn', got {on_fail!r}")
    step_size = _step_size(stepper, dt, v0.shape[0])

    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        v, steps, residual = v0, 0, math.inf
        while steps < max_steps:
            k = min(check_every, max_steps - steps)
            start = v
            for _ in range(k):
                v = stepper(v)
            steps += k
            residual = _residual(start, v, k * step_size, scale)
            if not math.isfinite(residual):
                raise SteadyStateError(
                    f"run_to_steady: the state is no longer finite after {steps} steps (diverged; try a smaller dt)",
                    v,
                    steps,
                    residual,
                )
            if residual <= tol:
                return SteadyState(v, steps, residual)
    message = (
        f"run_to_steady: not converged after max_steps={max_steps} steps: residual {residual:.3g} > tol {tol:g} "
        "(raise max_steps or tol, or use a larger dt)"
    )
    if on_fail == "raise":
        raise SteadyStateError(message, v, steps, residual)
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return SteadyState(v, steps, residual)


def _residual(before: torch.Tensor, after: torch.Tensor, elapsed: torch.Tensor, scale: float | None) -> float:
    """``max_b max |after − before| / (elapsed_b · V_b)``; ``inf``/``nan`` when the state is not finite."""
    with torch.no_grad():
        b = after.shape[0]
        change = (after - before).detach().reshape(b, -1).abs().amax(1).to("cpu", torch.float64)
        if scale is None:
            peak = after.detach().reshape(b, -1).abs().amax(1).to("cpu", torch.float64)
            peak = peak.clamp_min(torch.finfo(torch.float64).tiny)
        else:
            peak = torch.full_like(change, scale)
        r = change / (elapsed * peak)
        if not bool(torch.isfinite(after.detach()).all()):
            return math.nan
        return float(r.max())
