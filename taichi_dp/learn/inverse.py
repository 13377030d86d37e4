"""Inverse problem: recover the initial state of Burgers from a later observation.

The PBDL book's "Burgers optimization" setup: 128 periodic cells on [−1, 1], dt = 1/32, viscosity
0.01/(128π). The observation is the state at step 16 of the simulation started from u₀ = −sin(πx);
starting from u₀ = 0 we minimise

    L(u₀) = mean((S¹⁶(u₀) − u_obs)²)

by gradient descent through all 16 solver steps (the gradient comes from the differentiable solver).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..scenes import pbdl_burgers
from ..solvers import rollout


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
        observed = rollout(scene.stepper, scene.u0, observe_step)[:, -1]
    u0 = torch.zeros_like(scene.u0, requires_grad=True)
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
    result.initial_true = scene.u0[0, 0].detach().cpu()
    result.initial_estimate = u0[0, 0].detach().cpu()
    result.observed = observed[0, 0].cpu()
    result.reached = reached[0, 0].cpu()
    return result
