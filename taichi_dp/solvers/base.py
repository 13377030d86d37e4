"""The stepper protocol: an immutable callable ``u_next = stepper(u)``, and :func:`rollout`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from ..grid import Boundary, Grid, check_grid_boundary
from ..ops.advection import SCHEMES as ADVECTION_SCHEMES
from ..ops.diffusion import SCHEMES as DIFFUSION_SCHEMES
from ..ops.diffusion import check_explicit_stability
from ..runtime import as_batch_param, check_param, check_state


class Stepper(ABC):
    """Base of all time steppers: validates the state once, then calls :meth:`step`.

    Subclasses are frozen dataclasses with ``grid``, ``boundary`` and ``dt`` fields and fill two hooks:
    :attr:`channels` (how many channels a state has, ``None`` for any) and :meth:`step` (one time step
    on a validated state, composed from the operators in :mod:`taichi_dp.ops`). A stepper holds no
    mutable state: two rollouts or two backward passes never interfere.
    """

    grid: Grid
    boundary: Boundary
    dt: float | torch.Tensor
    diffusion: str  # "explicit" | "implicit", for steppers with a diffusion term
    advection: str  # "semi_lagrangian" | "maccormack", for steppers with an advection term

    @property
    def channels(self) -> int | None:
        """Number of channels of the state, or ``None`` if any number is accepted."""
        return None

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """Advance ``u`` of shape ``(B, C, *grid.shape)`` by one step of size ``dt``."""
        check_state("u", u, self.grid.shape, channels=self.channels)
        return self.step(u)

    @abstractmethod
    def step(self, u: torch.Tensor) -> torch.Tensor:
        """One step on a validated state (no checks here)."""

    def _check_fields(self, diffusivity: str) -> None:
        """Constructor checks shared by the advection–diffusion-type steppers: grid/boundary match;
        ``dt`` and the diffusivity field named ``diffusivity`` finite and ≥ 0; known ``diffusion`` and
        ``advection`` schemes; explicit diffusion stable."""
        check_grid_boundary(self.grid, self.boundary)
        for name in ("dt", diffusivity):
            check_param(name, getattr(self, name), positive=True)
        diffusion, advection = self.diffusion, self.advection
        if diffusion not in DIFFUSION_SCHEMES:
            raise ValueError(f"diffusion must be one of {DIFFUSION_SCHEMES}, got {diffusion!r}")
        if advection not in ADVECTION_SCHEMES:
            raise ValueError(f"advection must be one of {ADVECTION_SCHEMES}, got {advection!r}")
        if diffusion == "explicit":
            check_explicit_stability(getattr(self, diffusivity), self.dt, self.grid)

    def param(self, name: str, batch: int) -> torch.Tensor:
        """Field ``name`` (a float or tensor) as a ``(B,)`` tensor of the runtime dtype."""
        return as_batch_param(name, getattr(self, name), batch)


def rollout(
    stepper: Callable[[torch.Tensor], torch.Tensor],
    u0: torch.Tensor,
    steps: int,
    *,
    include_initial: bool = True,
    checkpoint_every: int = 0,
) -> torch.Tensor:
    """Apply ``stepper`` ``steps`` times from ``u0``.

    Args:
        stepper: any callable ``u_next = stepper(u)`` (a :class:`Stepper`, a hybrid step, ...).
        u0: ``(B, C, *spatial)`` initial state.
        steps: number of steps ≥ 0.
        include_initial: whether the trajectory starts with ``u0``.
        checkpoint_every: if > 0, recompute the steps in chunks of this length during backward instead
            of storing every intermediate state (trades compute for memory on long unrolls).

    Returns:
        ``(B, T, C, *spatial)`` trajectory with ``T = steps + include_initial``.
    """
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    states = [u0] if include_initial else []
    u = u0
    if checkpoint_every > 0 and torch.is_grad_enabled():

        def chunk(x: torch.Tensor, n: int) -> torch.Tensor:
            outs = []
            for _ in range(n):
                x = stepper(x)
                outs.append(x)
            return torch.stack(outs, dim=1)

        done = 0
        while done < steps:
            n = min(checkpoint_every, steps - done)
            block = checkpoint(chunk, u, n, use_reentrant=False)
            states.extend(block.unbind(1))
            u = block[:, -1].contiguous()
            done += n
    else:
        for _ in range(steps):
            u = stepper(u)
            states.append(u)
    if not states:
        return u0.new_empty((u0.shape[0], 0, *u0.shape[1:]))
    return torch.stack(states, dim=1)
