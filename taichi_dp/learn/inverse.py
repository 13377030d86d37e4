"""Inverse problem: recover the initial state of Burgers from a later observation.

The PBDL book's "Burgers optimization" setup: 128 periodic cells on [−1, 1], dt = 1/32, viscosity
0.01/(128π). The observation is the state at step 16 of the simulation started from u₀ = −sin(πx);
starting from u₀ = 0 we minimise

    L(u₀) = mean((S¹⁶(u₀) − u_obs)²)

by gradient descent through all 16 solver steps (the gradient comes from the differentiable solver).

:func:`smoke_control` is the Navier–Stokes counterpart (the PBDL "Navier–Stokes forward and inverse"
setup): find the initial velocity that carries a smoke blob to a target position.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..scenes import pbdl_burgers, smoke_plume
from ..solvers import SmokePlume, pack_smoke, rollout, unpack_smoke


@dataclass
class InverseResult:
    losses: list[float] = field(default_factory=list)
    initial_true: torch.Tensor | None = None  # (N,)
    initial_estimate: torch.Tensor | None = None  # (N,)
    observed: torch.Tensor | None = None  # (N,)
    reached: torch.Tensor | None = None  # (N,): S¹⁶(estimate)
    seconds: float = 0.0

    @property
    def reduction(self) -> float:
        """Initial loss / final loss."""
        return self.losses[0] / max(self.losses[-1], 1e-300)


def burgers_inverse(
    iterations: int = 300,
    lr: float = 0.02,
    observe_step: int = 16,
    *,
    progress: bool = True,
) -> InverseResult:
    """Recover ``u₀`` from the state at ``observe_step`` by Adam through the solver.

    Returns the loss history (one value per iteration, the last one after the final update) and
    the true/estimated initial states.
    """
    scene = pbdl_burgers()
    with torch.no_grad():
        observed = rollout(scene.stepper, scene.state0, observe_step)[:, -1]
    u0 = torch.zeros_like(scene.state0, requires_grad=True)
    opt = torch.optim.Adam([u0], lr=lr)

    def loss_of(u: torch.Tensor) -> torch.Tensor:
        return torch.mean((rollout(scene.stepper, u, observe_step, include_initial=False)[:, -1] - observed) ** 2)

    result = InverseResult()
    t0 = time.perf_counter()
    for _ in tqdm(range(iterations), desc="inverse", disable=not progress, leave=False):
        loss = loss_of(u0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.losses.append(float(loss.detach()))
    with torch.no_grad():
        reached = rollout(scene.stepper, u0, observe_step)[:, -1]
        result.losses.append(float(torch.mean((reached - observed) ** 2)))
    result.seconds = time.perf_counter() - t0
    result.initial_true = scene.state0[0, 0].detach().cpu()
    result.initial_estimate = u0[0, 0].detach().cpu()
    result.observed = observed[0, 0].cpu()
    result.reached = reached[0, 0].cpu()
    return result


@dataclass
class SmokeControlConfig:
    """The smoke-control problem and its optimiser; the defaults are ``python -m demos.control``'s.

    A Gaussian smoke blob (standard deviation ``radius``) at rest at ``start`` in the 100 × 100 closed
    box of :func:`~taichi_dp.scenes.smoke_plume` (``n × n`` cells, dt = 1, no source, buoyancy
    ``buoyancy``) should, ``steps`` solver steps later, look like the same blob centred at ``target``.
    Positions are ``(y, x)``.
    """

    n: int = 32
    steps: int = 12
    start: tuple[float, float] = (30.0, 30.0)
    target: tuple[float, float] = (62.0, 68.0)
    radius: float = 10.0
    buoyancy: float = 0.1
    iterations: int = 60
    lr: float = 0.2

    def __post_init__(self) -> None:
        for name, low in (("n", 8), ("steps", 1), ("iterations", 1)):
            value = getattr(self, name)
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("start", "target"):
            y, x = getattr(self, name)
            if not (0.0 < y < 100.0 and 0.0 < x < 100.0):
                raise ValueError(f"{name} must be a (y, x) position inside the 100 x 100 box, got {(y, x)}")
        if not (self.radius > 0 and self.lr > 0):
            raise ValueError(f"radius and lr must be > 0, got radius={self.radius}, lr={self.lr}")


@dataclass
class ControlResult:
    """Progress and outcome of :func:`smoke_control` (filled in as the optimisation runs)."""

    losses: list[float] = field(default_factory=list)
    velocity: torch.Tensor | None = None  # (2, n+1, n+1): current v₀ estimate (projected by the first step)
    density: torch.Tensor | None = None  # (steps+1, n, n): density trajectory of `velocity`
    target: torch.Tensor | None = None  # (n, n)
    seconds: float = 0.0

    @property
    def reduction(self) -> float:
        """Initial loss / final loss."""
        return self.losses[0] / max(self.losses[-1], 1e-300)


def smoke_control_problem(cfg: SmokeControlConfig) -> tuple[SmokePlume, torch.Tensor, torch.Tensor]:
    """The stepper, the initial density ``(1, 1, n, n)`` and the target density ``(1, 1, n, n)``."""
    scene = smoke_plume(cfg.n, buoyancy=cfg.buoyancy)
    stepper = SmokePlume(scene.stepper.flow, buoyancy=cfg.buoyancy)  # no source: only the blob
    rho = unpack_smoke(scene.state0)[1]
    y = stepper.grid.centers(0, rho.dtype, rho.device)[:, None]
    x = stepper.grid.centers(1, rho.dtype, rho.device)[None, :]

    def blob(c: tuple[float, float]) -> torch.Tensor:
        return torch.exp(-((y - c[0]) ** 2 + (x - c[1]) ** 2) / (2 * cfg.radius**2))[None, None].contiguous()

    return stepper, blob(cfg.start), blob(cfg.target)


def smoke_control(
    cfg: SmokeControlConfig | None = None,
    *,
    callback: Callable[[int, ControlResult], bool | None] | None = None,
    progress: bool = True,
) -> ControlResult:
    """Find the initial velocity that carries the smoke blob to the target, by Adam through the solver.

    Minimises ``L(v₀) = mean((ρ_T(v₀) − ρ_target)²)`` over the staggered initial velocity ``v₀``
    ``(1, 2, n+1, n+1)`` (starting at rest), where ``ρ_T`` is the density after ``cfg.steps`` steps of
    the smoke solver; the gradient flows back through every advection, buoyancy and pressure projection.

    Args:
        cfg: the problem and optimiser (default :class:`SmokeControlConfig()`).
        callback: called after each iteration's forward pass as ``callback(iteration, result)`` with the
            losses so far and the trajectory of the current estimate; returning ``False`` stops early.
        progress: show a progress bar.

    Returns:
        A :class:`ControlResult`; ``losses`` has one value per iteration plus the loss after the last
        update, ``velocity``/``density`` are the final estimate and its trajectory.
    """
    cfg = cfg or SmokeControlConfig()
    stepper, rho0, target = smoke_control_problem(cfg)
    v0 = torch.zeros(1, 2, cfg.n + 1, cfg.n + 1, dtype=rho0.dtype, device=rho0.device, requires_grad=True)
    opt = torch.optim.Adam([v0], lr=cfg.lr)
    result = ControlResult(target=target[0, 0].detach().cpu())

    def simulate() -> tuple[torch.Tensor, torch.Tensor]:  # (T, n, n) density trajectory of v0, its loss
        traj = rollout(stepper, pack_smoke(v0, rho0), cfg.steps)
        rho = traj[0, :, 2, :-1, :-1]  # the density channel of every packed state
        return rho, torch.mean((rho[-1] - target[0, 0]) ** 2)

    t0 = time.perf_counter()
    for it in tqdm(range(cfg.iterations), desc="control", disable=not progress, leave=False):
        rho, loss = simulate()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        result.losses.append(float(loss.detach()))
        result.velocity, result.density = v0.detach()[0].cpu().clone(), rho.detach().cpu()
        if callback is not None and callback(it, result) is False:
            break
        opt.step()
    else:
        with torch.no_grad():
            rho, loss = simulate()
        result.losses.append(float(loss))
        result.velocity, result.density = v0.detach()[0].cpu().clone(), rho.cpu()
    result.seconds = time.perf_counter() - t0
    return result
